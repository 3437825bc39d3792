"""DynamicAttentionSelector: a softmax gate mixing SE, ECA and identity per image."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.eca import EfficientChannelAttention
from attn_deploy.attention.registry import register_attention
from attn_deploy.attention.se import SqueezeExcite

NUM_BRANCHES = 3  # se, eca, identity


@register_attention("dynamic")
class DynamicAttentionSelector(nn.Module):
    """Per-image soft selection between SE, ECA and no attention.

    ``g = softmax(W · GAP(x) + b)`` (3 weights per image, summing to 1),
    ``y = g_0 · SE(x) + g_1 · ECA(x) + g_2 · x``.
    Parameters: SE's ``2·C·C/r + C/r + C`` + ECA's ``k`` + the gate's ``3·C + 3``.

    Not from a single paper: a dynamic-selection block as commonly written, built from
    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507) and
    Wang et al., "ECA-Net", CVPR 2020 (arXiv:1910.03151).

    Args:
        channels: input (and output) channels C.
        reduction: SE reduction ratio r (16).
        kernel_size: ECA kernel size; ``None`` picks it from C.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int | None = None) -> None:
        super().__init__()
        self.se = SqueezeExcite(channels, reduction)
        self.eca = EfficientChannelAttention(channels, kernel_size)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, NUM_BRANCHES),
            nn.Softmax(dim=1),
        )

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 3) branch weights for ``x``, in the order se, eca, identity; each row sums to 1."""
        return self.gate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_weights(x)[:, :, None, None]  # (B, 3, 1, 1)
        return g[:, 0:1] * self.se(x) + g[:, 1:2] * self.eca(x) + g[:, 2:3] * x
