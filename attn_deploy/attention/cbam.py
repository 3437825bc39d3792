"""Convolutional Block Attention Module (Woo et al., ECCV 2018)."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``y = x * sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))``.

    The shared MLP is two bias-free 1x1 convolutions ``C -> max(1, C//r) -> C`` with a ReLU between.
    Parameters: ``2·C·(C//r)``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))
        return x * attn


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``y = x * sigmoid(conv_kxk([mean_C(x); max_C(x)]))``.

    One bias-free ``2 -> 1`` convolution with ``kernel_size`` (7) and same padding. Parameters: ``2·k²``.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        attn = self.sigmoid(self.conv(torch.cat([avg_out, max_out], dim=1)))
        return x * attn


@register_attention("cbam")
class CBAM(nn.Module):
    """CBAM: channel attention, then spatial attention.

    ``x' = x * M_c(x)``, ``M_c = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))``;
    ``y = x' * M_s(x')``, ``M_s = sigmoid(conv7x7([mean_C(x'); max_C(x')]))``.
    Parameters: ``2·C·(C//r) + 2·k²`` (98 for k=7); no biases, as in the widely used official-style
    PyTorch code (``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` and a 1x1-conv MLP).

    Paper: S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional Block Attention Module",
    ECCV 2018, arXiv:1807.06521.

    Args:
        channels: input (and output) channels C.
        reduction: MLP reduction ratio r (16).
        kernel_size: spatial convolution size (7, odd).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction)
        self.spatial_attention = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))
