"""One training loop for every task: optimiser, warm-up + linear decay, EMA, gradient clipping, progress.

``step_loss(model, batch_index)`` computes the loss of one batch (it draws the batch itself); the loop does the
rest. :mod:`attn_deploy.train.detector` and :mod:`attn_deploy.train.classifier` build on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from attn_deploy.train.ema import ModelEMA
from attn_deploy.train.optim import build_optimizer, set_learning_rate


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings shared by the trainers (Ultralytics' ``optimizer=auto`` picks AdamW for short runs)."""

    optimizer: str = "adamw"
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    final_fraction: float = 0.01
    ema_tau: float = 2000.0
    clip_norm: float = 10.0
    seed: int = 0


@dataclass
class TrainResult:
    """The EMA model (eval mode), the loss of every step (``[box, cls, dfl]`` or ``[ce]``) and the seconds."""

    model: nn.Module
    losses: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0


StepLoss = Callable[[nn.Module, int], tuple[torch.Tensor, torch.Tensor]]


def fit(
    model: nn.Module,
    step_loss: StepLoss,
    steps: int,
    settings: TrainSettings | None = None,
    on_step: Callable[[int, int, list[float]], None] | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` steps; return its EMA copy and the losses.

    With ``time_limit`` (seconds), as Ultralytics' ``time=`` does, the schedule follows whichever is further
    along, steps or time, and training ends when either runs out (so a slow machine trains fewer steps, with
    the whole schedule).
    """
    settings = settings or TrainSettings()
    torch.manual_seed(settings.seed)
    model.train()
    optimizer = build_optimizer(
        model, settings.optimizer, settings.lr, settings.momentum, settings.weight_decay
    )
    ema = ModelEMA(model, tau=settings.ema_tau)
    warmup = max(1, round(steps * settings.warmup_fraction))
    result = TrainResult(ema.model)
    start = time.perf_counter()
    for step in range(steps):
        progress = step
        if time_limit is not None:
            elapsed = time.perf_counter() - start
            if elapsed >= time_limit:
                break
            progress = max(step, round(steps * elapsed / time_limit))
        set_learning_rate(optimizer, progress, steps, settings.lr, warmup, settings.final_fraction)
        loss, parts = step_loss(model, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        optimizer.step()
        ema.update(model)
        result.losses.append([round(float(v), 5) for v in parts])
        if on_step is not None:
            on_step(step + 1, steps, result.losses[-1])
    result.seconds = round(time.perf_counter() - start, 1)
    model.eval()
    return result
