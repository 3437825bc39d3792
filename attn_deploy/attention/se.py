"""Squeeze-and-Excitation (Hu et al., CVPR 2018)."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention


@register_attention("se")
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation block.

    ``s = sigmoid(W2 · relu(W1 · GAP(x) + b1) + b2)``,  ``y = x * s`` (broadcast over H, W),
    with ``W1: C -> C/r`` and ``W2: C/r -> C`` fully connected layers.

    Parameters: ``2·C·C/r + C/r + C`` (weights and biases), hidden width ``max(1, C // reduction)``.

    Paper: J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.
    Written as the common PyTorch port writes it: ``AdaptiveAvgPool2d(1)`` then ``nn.Linear``.

    Args:
        channels: input (and output) channels C.
        reduction: reduction ratio r (16 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)
