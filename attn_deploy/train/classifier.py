"""Train a zoo classifier on in-memory images: :func:`train_classifier` (cross-entropy, AdamW, warm-up, EMA)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from attn_deploy.errors import InputError
from attn_deploy.train.loop import TrainResult, TrainSettings, fit


def train_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: float,
    batch: int = 32,
    settings: TrainSettings | None = None,
    on_step: Callable[[int, int, list[float]], None] | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Train ``model`` on preprocessed float32 ``images (N, 3, H, W)`` and integer ``labels (N,)`` for ``epochs``
    epochs (a new order each); return the EMA model in eval mode and the per-step losses."""
    if len(images) != len(labels) or not len(images) or batch < 1 or epochs <= 0:
        raise InputError(
            f"train_classifier needs as many labels as images (got {len(images)} and {len(labels)}), batch >= 1, "
            "epochs > 0"
        )
    settings = settings or TrainSettings()
    rng = np.random.default_rng(settings.seed)
    per_epoch = math.ceil(len(images) / batch)
    order: list[int] = []
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))

    def step_loss(net: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step % per_epoch == 0:
            order[:] = rng.permutation(len(images)).tolist()
        picks = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        loss = F.cross_entropy(net(x_all[picks]), y_all[picks])
        return loss, loss.detach().view(1)

    return fit(model, step_loss, max(1, round(epochs * per_epoch)), settings, on_step, time_limit)
