"""Train a zoo YOLOv8 on a dataset in Ultralytics' convention (``data.yaml``): :func:`train_detector`.

Images are letterboxed to ``imgsz`` once and held in memory (the synthetic sets are small); each epoch visits
them in a new order, each image flipped left-right and/or up-down at random (the synthetic classes are
symmetric shapes). Loss: :class:`~attn_deploy.train.detect_loss.DetectionLoss`; loop:
:func:`~attn_deploy.train.loop.fit` (AdamW, warm-up, EMA). Returns the EMA model in eval mode.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch

from attn_deploy.data.preprocess import to_tensor
from attn_deploy.data.yolo_dataset import load_data_yaml, load_split
from attn_deploy.errors import InputError
from attn_deploy.models.yolov8 import YOLOv8
from attn_deploy.train.detect_loss import DetectionLoss
from attn_deploy.train.loop import TrainResult, TrainSettings, fit


def train_detector(
    model: YOLOv8,
    data_yaml: str | os.PathLike[str],
    epochs: float,
    imgsz: int = 256,
    batch: int = 16,
    settings: TrainSettings | None = None,
    limit: int | None = None,
    on_step: Callable[[int, int, list[float]], None] | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Train ``model`` (its class count must match ``names``) on the ``train`` split for ``epochs`` epochs
    (fractions allowed) of ``limit`` images at most, at ``imgsz`` x ``imgsz``; ``time_limit`` (seconds) ends it
    sooner (see :func:`~attn_deploy.train.loop.fit`)."""
    if not isinstance(model, YOLOv8):
        raise InputError(f"train_detector trains a zoo YOLOv8, got {type(model).__name__}")
    dataset = load_data_yaml(data_yaml)
    nc = model.model[-1].nc
    if nc != dataset.num_classes:
        raise InputError(f"the model has {nc} classes, {dataset.yaml_path} names {dataset.num_classes}")
    if imgsz % 32 or not 32 <= imgsz <= 2048 or batch < 1 or epochs <= 0:
        raise InputError(
            f"imgsz must be a multiple of 32 in 32..2048, batch >= 1, epochs > 0 (got {imgsz}, {batch}, {epochs})"
        )
    images, boxes = load_split(dataset, "train", (imgsz, imgsz), limit)
    per_epoch = math.ceil(len(images) / batch)
    steps = max(1, round(epochs * per_epoch))
    settings = settings or TrainSettings()
    rng = np.random.default_rng(settings.seed)
    order: list[int] = []
    loss = DetectionLoss(model, nc)

    def step_loss(net: torch.nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step % per_epoch == 0:
            order[:] = rng.permutation(len(images)).tolist()
        picks = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        batch_images, targets = _augment(images[picks], [boxes[i] for i in picks], rng)
        return loss(net, torch.from_numpy(to_tensor(batch_images)), torch.from_numpy(targets))

    try:
        return fit(model, step_loss, steps, settings, on_step, time_limit)
    finally:
        loss.tap.remove()


def _augment(
    images: np.ndarray, boxes: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random left-right / up-down flips; targets as ``(N, 6)`` float32 rows ``image, class, x1, y1, x2, y2``."""
    images = images.copy()
    h, w = images.shape[1:3]
    rows = []
    for i, b in enumerate(boxes):
        b = b.copy()
        if rng.random() < 0.5:
            images[i] = images[i, :, ::-1]
            b[:, [1, 3]] = w - b[:, [3, 1]]
        if rng.random() < 0.5:
            images[i] = images[i, ::-1]
            b[:, [2, 4]] = h - b[:, [4, 2]]
        rows.append(np.concatenate([np.full((len(b), 1), i), b], axis=1))
    targets = np.concatenate(rows) if rows else np.zeros((0, 6))
    return images, targets.astype(np.float32)
