"""Optimiser and learning-rate schedule as Ultralytics builds them.

Three parameter groups (``ultralytics/engine/trainer.py`` ``build_optimizer``): weights with weight decay,
normalisation weights and biases without. The schedule warms up linearly over ``warmup`` steps (biases start
at ``warmup_bias_lr``, Ultralytics' 0.1 suits SGD, and move to the lr; the others start at 0), then decays
linearly to ``lr * final_fraction``.
"""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.errors import InputError

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 0.002,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over ``model``'s trainable parameters, decay only on conv/linear weights."""
    decay, no_decay, biases = [], [], []
    norms = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d)
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if pname == "bias":
                biases.append(param)
            elif isinstance(module, norms):
                no_decay.append(param)
            else:
                decay.append(param)
    groups: list[dict] = [
        {"params": biases, "weight_decay": 0.0, "is_bias": True},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise InputError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def set_learning_rate(
    optimizer: torch.optim.Optimizer,
    step: int,
    total: int,
    lr: float,
    warmup: int,
    final_fraction: float = 0.01,
    warmup_bias_lr: float = 0.0,
) -> float:
    """Set every group's learning rate for ``step`` of ``total`` (see the module docstring); return the lr."""
    decayed = lr * ((1 - step / max(total, 1)) * (1 - final_fraction) + final_fraction)
    for group in optimizer.param_groups:
        if step < warmup:
            start = warmup_bias_lr if group.get("is_bias") else 0.0
            group["lr"] = start + (decayed - start) * step / warmup
        else:
            group["lr"] = decayed
    return decayed
