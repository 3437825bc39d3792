"""Efficient Channel Attention (Wang et al., CVPR 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention
from attn_deploy.errors import ConfigError


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel size ``k = |log2(C)/gamma + b/gamma|`` made odd, as the official code does.

    ``t = int(|(log2(C) + b) / gamma|)``; ``k = t`` if ``t`` is odd else ``t + 1``
    (C=64 -> 3, C=128 to 1024 -> 5, C=2048 -> 7 with gamma=2, b=1).
    """
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


@register_attention("eca")
class EfficientChannelAttention(nn.Module):
    """ECA: channel attention by a 1-D convolution across the pooled channel vector.

    ``s = sigmoid(conv1d_k(GAP(x)))`` over the channel axis (no bias, zero padding ``(k-1)/2``),
    ``y = x * s``. Parameters: ``k``.

    Paper: Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention for Deep
    Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151. Written as the official ``eca_layer``.

    Args:
        channels: input (and output) channels C.
        kernel_size: odd kernel size k; ``None`` picks it from C with :func:`eca_kernel_size`.
        gamma: gamma of the adaptive kernel rule (2).
        beta: b of the adaptive kernel rule (1).
    """

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1
    ) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, beta) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"ECA kernel_size must be a positive odd number, got {k}; use e.g. 3 or 5")
        self.kernel_size = k
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # (B, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)  # conv over (B, 1, C)
        y = self.sigmoid(y)
        return x * y.expand_as(x)
