"""How close the student came: agreement with the teacher and accuracy on held-out images, size and compute."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.distill.losses import find_detect_head
from attn_deploy.distill.sources import ImageSource
from attn_deploy.models.profile import count_gflops, count_params
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import anchor_box_agreement, box_agreement
from attn_deploy.validate.detection_eval import score_outputs

EVAL_BATCH = 50
DETECT_IOU = 0.5
MAP_KEYS = ("map50", "map50_95", "ap_small")
"""The mAP figures of a labeled detection source in the report (``ap_small`` ``None`` without small boxes)."""
"""IoU at which a student box counts as the teacher's (mAP50's match criterion)."""


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """``model``'s outputs on the preprocessed inputs ``x`` ``(N, 3, H, W)``, in eval mode, in chunks."""
    model.eval()
    return np.concatenate(
        [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    )


def agreement(
    teacher: nn.Module, student: nn.Module, source: ImageSource, preprocess: PreprocessSpec, count: int
) -> dict[str, Any]:
    """Student vs teacher on ``count`` held-out images of ``source``.

    Classifiers: ``top1_agreement`` and, when the images have labels of the teacher's classes, ``teacher_accuracy``
    and ``student_accuracy``. Detectors: ``box_agreement`` (decoded boxes, class-aware, IoU >= 0.5, at the
    teacher's threshold) and ``anchor_box_agreement`` (the teacher's 100 best anchors per image, IoU >= 0.5);
    with a ``data.yaml`` source also ``teacher_map`` and ``student_map`` (:data:`MAP_KEYS`, the project's
    :mod:`~attn_deploy.validate.detection_eval` on the val split) and ``map50_95_drop`` (teacher - student).
    """
    images, labels = source.holdout(count)
    x = preprocess(images)
    t_out, s_out = predict(teacher, x), predict(student, x)
    row: dict[str, Any] = {"images": len(x), "holdout_shared": source.holdout_shared}
    if find_detect_head(student) is not None:
        row["box_agreement"] = box_agreement(t_out, s_out, iou=DETECT_IOU).agreement
        row["anchor_box_agreement"] = anchor_box_agreement(t_out, s_out, iou=DETECT_IOU)
        if source.detection and labels is not None:
            truths = [labels[labels[:, 0] == i, 1:].astype(np.float64) for i in range(len(x))]
            for role, out in (("teacher", t_out), ("student", s_out)):
                metrics = score_outputs(out, truths, int(source.classes or 0)).to_dict()
                row[f"{role}_map"] = {k: metrics[k] for k in MAP_KEYS}
            row["map50_95_drop"] = row["teacher_map"]["map50_95"] - row["student_map"]["map50_95"]
        return row
    row["top1_agreement"] = top1_agreement(t_out, s_out)
    if labels is not None and int(labels.max()) < t_out.shape[1]:
        row["teacher_accuracy"] = float((t_out.argmax(1) == labels).mean())
        row["student_accuracy"] = float((s_out.argmax(1) == labels).mean())
    return row


def size_and_compute(model: nn.Module, size: tuple[int, int]) -> dict[str, float]:
    """Parameters and GFLOPs (2 x MACs, :mod:`attn_deploy.models.profile`) at one ``size`` image."""
    return {"params": count_params(model), "gflops": count_gflops(model, (1, 3, *size))}
