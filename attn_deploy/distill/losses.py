"""The distillation loss: attention maps at every site, the outputs, and the task loss when labels are given.

``total = attention * L_attn + output * L_out + task * L_task`` with the weights of :class:`LossWeights`:

* ``L_attn``: mean over sites (and map kinds) of the MSE between student and teacher maps. Gates (values in
  0..1) are compared as they are; output features, whose scale differs from site to site, by MSE divided by
  the teacher features' mean square (a relative error, so deep and shallow sites count alike).
* ``L_out``, classifiers: Hinton's KL divergence between the teacher's and the student's class distributions
  softened by ``temperature`` T, times T^2 (keeps its gradient scale independent of T).
  Detectors (a YOLOv8/Ultralytics ``Detect`` head: ``cv2`` box branches with 16-bin DFL logits, ``cv3`` class
  branches): KL between the teacher's and the student's box-side distributions (softmax over the 16 bins at T),
  each anchor weighted by the teacher's top class score so that background anchors do not swamp the objects,
  plus binary cross-entropy of the student's class logits against the teacher's class scores.
* ``L_task``: cross-entropy against labels (classifiers), or the YOLOv8 detection loss (box + class + DFL, per
  image, :class:`~attn_deploy.train.detect_loss.DetectionLoss`) against the boxes of a ``data.yaml`` (detectors);
  only when the images come with labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy.distill.sites import FEATURES
from attn_deploy.errors import ConfigError

EPS = 1e-6


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms and the softening temperature (every term 1, T = 4 unless given).

    :func:`default_weights` holds the measured defaults per task, which :func:`~attn_deploy.distill.distill` uses
    when no weights are given.
    """

    attention: float = 1.0
    output: float = 1.0
    task: float = 1.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            low = 0.0 if name != "temperature" else EPS
            if not isinstance(value, int | float) or not math.isfinite(value) or value < low:
                what = "a positive number" if name == "temperature" else "a number >= 0"
                raise ConfigError(f"loss weight {name} must be {what}, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        """JSON form."""
        return {k: float(v) for k, v in asdict(self).items()}


CLASSIFIER_WEIGHTS = LossWeights(attention=10.0, output=1.0, task=1.0, temperature=1.0)
"""Classifiers: the attention-site term 10x the KL, at T = 1. Measured on resnet50-ema -> resnet50-eca (150 steps
of 16 unlabeled scenes, BatchNorm frozen): top-1 agreement 91.8% with every weight 1, 94.6% with attention 10
(also with 50), 91.6% with output 4; T = 1 no worse than T = 4 (``benchmarks/results/distill-sweep.md``)."""
DETECTOR_WEIGHTS = LossWeights()
"""Detectors: every term 1, T = 4 (the DFL bins are soft targets): the settings of the yolov8n-ema -> yolov8n-eca
record (mAP50-95 drop 0.19 points)."""


def default_weights(detector: bool) -> LossWeights:
    """The measured default loss weights of a detector or a classifier distillation."""
    return DETECTOR_WEIGHTS if detector else CLASSIFIER_WEIGHTS


def map_loss(student_maps: dict[str, torch.Tensor], teacher_maps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the captured maps (``"<site>/<kind>"``) of the gate MSE or the relative feature MSE.

    The two dicts hold the same keys in the same order (teacher sites renamed to the student's); a shape
    that differs is a one-line ``ConfigError`` naming the sites.
    """
    bad = [
        f"{k} {tuple(s.shape)} vs {tuple(teacher_maps[k].shape)}"
        for k, s in student_maps.items()
        if s.shape != teacher_maps[k].shape
    ]
    if bad:
        raise ConfigError(
            f"attention sites do not line up in shape (student vs teacher): {', '.join(bad[:4])}; "
            "use a student of the teacher's architecture and width"
        )
    terms = []
    for key, s in student_maps.items():
        t = teacher_maps[key]
        mse = F.mse_loss(s, t)
        terms.append(mse / (t.pow(2).mean() + EPS) if key.endswith(f"/{FEATURES}") else mse)
    return torch.stack(terms).mean()


def logits_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's KL(teacher || student) of ``(B, classes)`` logits softened by ``temperature``, times T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def find_detect_head(model: nn.Module) -> nn.Module | None:
    """The detection head of ``model`` (a module with ``cv2``/``cv3`` branch lists and a ``dfl``, as
    Ultralytics' and the zoo's ``Detect``); ``None`` for a classifier."""
    for module in model.modules():
        if all(hasattr(module, a) for a in ("cv2", "cv3", "dfl")) and isinstance(module.cv2, nn.ModuleList):
            return module
    return None


@contextmanager
def capture_head(head: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Hooks recording the raw outputs of a ``Detect`` head's box (``"box"``) and class (``"cls"``) branches,
    one tensor per level, while the block runs."""
    raw: dict[str, list[torch.Tensor]] = {"box": [], "cls": []}
    handles = []

    def record(kind: str, level: int):
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            levels = raw[kind]
            if level == 0:
                levels.clear()
            levels.append(output)

        return hook

    try:
        for kind, branches in (("box", head.cv2), ("cls", head.cv3)):
            for level, branch in enumerate(branches):
                handles.append(branch.register_forward_hook(record(kind, level)))
        yield raw
    finally:
        for handle in handles:
            handle.remove()


def detection_kd(
    student: dict[str, list[torch.Tensor]], teacher: dict[str, list[torch.Tensor]], temperature: float
) -> dict[str, torch.Tensor]:
    """Box-distribution KL (``"box"``) and class-score BCE (``"cls"``) between two ``Detect`` heads' raw outputs."""
    s_box, t_box = _flat(student["box"]), _flat(teacher["box"])  # (B, 4 * bins, A)
    s_cls, t_cls = _flat(student["cls"]), _flat(teacher["cls"])  # (B, nc, A)
    b, _, anchors = s_box.shape
    t = temperature
    s_dist = F.log_softmax(s_box.view(b, 4, -1, anchors) / t, dim=2)
    t_dist = F.log_softmax(t_box.view(b, 4, -1, anchors) / t, dim=2)
    kl = (t_dist.exp() * (t_dist - s_dist)).sum(2).mean(1) * (t * t)  # (B, A)
    weight = t_cls.sigmoid().amax(1)  # (B, A): the teacher's confidence that an object is there
    box = (kl * weight).sum() / (weight.sum() + EPS)
    cls = F.binary_cross_entropy_with_logits(s_cls, t_cls.sigmoid())
    return {"box": box, "cls": cls}


def _flat(levels: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.flatten(2) for x in levels], 2)


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum of the loss ``terms`` (``attention``; ``kl`` or ``box`` + ``cls``; ``task``)."""
    factor: dict[str, Any] = {"attention": weights.attention, "task": weights.task}
    return torch.stack([v * factor.get(k, weights.output) for k, v in terms.items()]).sum()
