"""Score a detector on a labelled split: run it batch by batch, postprocess as ``yolo val``, compute mAP."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attn_deploy.backends.base import Runner
from attn_deploy.data.preprocess import to_tensor
from attn_deploy.validate.detection_map import DetectionMetrics, GroundTruth, evaluate_detections
from attn_deploy.validate.postprocess import postprocess


def runner_predict(runner: Runner) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(batch)`` of a single-input, single-output runner (activated on first use)."""
    runner.activate()
    name, out = runner.input_names[0], runner.output_names[0]
    return lambda batch: runner.infer({name: batch})[out]


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
    if outputs.shape[1] != 4 + num_classes:
        raise ValueError(f"outputs have {outputs.shape[1] - 4} classes, the dataset {num_classes}")
    predictions = [postprocess(o) for o in outputs]
    return evaluate_detections(predictions, [GroundTruth.from_rows(t) for t in truths], num_classes)
