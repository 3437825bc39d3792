"""Score a detector on a labelled split: run it batch by batch, postprocess as ``yolo val``, compute mAP.

Used by ``attn-deploy validate --data`` (:mod:`attn_deploy.validate.validation`) and the benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from attn_deploy.data.preprocess import PreprocessSpec, load_image, to_tensor
from attn_deploy.data.yolo_dataset import DetectionDataset, letterboxed_boxes, load_data_yaml
from attn_deploy.errors import InputError
from attn_deploy.validate.detection_map import DetectionMetrics, GroundTruth, evaluate_detections
from attn_deploy.validate.postprocess import postprocess


def outputs_of(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int) -> np.ndarray:
    """Raw outputs ``(N, 4 + nc, anchors)`` of letterboxed ``uint8 (N, H, W, 3)`` images, ``batch`` at a time
    (a last partial batch is padded with copies of its last image, for fixed-batch graphs)."""
    parts = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        parts.append(np.asarray(predict(to_tensor(chunk)))[:n])
    return np.concatenate(parts)


def score_outputs(outputs: np.ndarray, truths: list[np.ndarray], num_classes: int) -> DetectionMetrics:
    """mAP of raw outputs against per-image ``(n, 5)`` rows ``class, x1, y1, x2, y2`` (input pixels)."""
    if outputs.ndim != 3 or outputs.shape[1] != 4 + num_classes:
        raise InputError(
            f"the model's output {list(outputs.shape)} is not (batch, 4 + {num_classes}, anchors) for the dataset's "
            f"{num_classes} classes; score it on a dataset with the model's classes"
        )
    predictions = [postprocess(o) for o in outputs]
    return evaluate_detections(predictions, [GroundTruth.from_rows(t) for t in truths], num_classes)


def labelled_inputs(
    data_yaml: str | os.PathLike[str], preprocess: PreprocessSpec, limit: int | None, batch: int
) -> tuple[np.ndarray, list[np.ndarray], DetectionDataset]:
    """The val split of ``data_yaml`` (the first ``limit`` images, in whole batches of ``batch``) preprocessed for
    the model, with each image's boxes ``class, x1, y1, x2, y2`` in the model's input pixels."""
    if preprocess.kind != "letterbox":
        raise InputError("--data scores detectors (letterboxed input); this artifact is not one")
    dataset = load_data_yaml(data_yaml)
    files = dataset.images("val")
    count = min(len(files), limit or len(files)) // batch * batch
    if count == 0:
        raise InputError(
            f"{dataset.yaml_path}: the val split holds {len(files)} images, fewer than the export batch {batch}; "
            "add images or export with --dynamic"
        )
    images = [load_image(p) for p in files[:count]]
    truths = [
        letterboxed_boxes(dataset.labels(p), img.shape[:2], preprocess.size)
        for p, img in zip(files[:count], images, strict=True)
    ]
    return preprocess(images), truths, dataset
