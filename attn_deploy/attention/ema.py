"""Efficient Multi-Scale Attention (Ouyang et al., ICASSP 2023)."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention
from attn_deploy.errors import ConfigError


def _check_factor(channels: int, factor: int) -> None:
    """Raise ConfigError unless ``factor`` groups split ``channels`` evenly."""
    if factor < 1 or channels % factor != 0:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        raise ConfigError(
            f"EMA needs channels divisible by factor, got channels={channels}, factor={factor}; "
            f"use a factor that divides {channels}: {', '.join(map(str, divisors))}"
        )


@register_attention("ema")
class EMA(nn.Module):
    """EMA: grouped cross-spatial attention with a 1x1 (coordinate) branch and a 3x3 branch.

    Channels are split into G = ``factor`` groups of ``c = C/G`` (folded into the batch). Per group:
    ``x1 = GN(x * sigmoid(conv1x1(pool_h)) * sigmoid(conv1x1(pool_w)))`` (shared 1x1 on [pool_h; pool_wᵀ]),
    ``x2 = conv3x3(x)``;
    ``w = softmax(GAP(x1)) · x2 + softmax(GAP(x2)) · x1`` (softmax over the c channels, a 1×HW map),
    ``y = x * sigmoid(w)``. ``GN`` is ``GroupNorm(c, c)``.
    Parameters: ``10·c² + 4·c`` (conv1x1 ``c²+c``, conv3x3 ``9c²+c``, GroupNorm ``2c``).

    Paper: D. Ouyang, S. He, G. Zhang, M. Luo, H. Guo, J. Zhan, Z. Huang, "Efficient Multi-Scale
    Attention Module with Cross-Spatial Learning", ICASSP 2023, arXiv:2305.13563.
    Written as the official ``EMA`` (``AdaptiveAvgPool2d`` pools, ``GroupNorm``, ``nn.Softmax``).

    Args:
        channels: input (and output) channels C; must be divisible by ``factor``.
        factor: number of groups G (32).

    Raises:
        ConfigError: ``channels`` is not divisible by ``factor``.
    """

    def __init__(self, channels: int, factor: int = 32) -> None:
        super().__init__()
        _check_factor(channels, factor)
        self.groups = factor
        group_channels = channels // factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(group_channels, group_channels)
        self.conv1x1 = nn.Conv2d(group_channels, group_channels, kernel_size=1, stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(group_channels, group_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)  # (b*g, c//g, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)  # (b*g, c//g, hw)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)  # (b*g, c//g, hw)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)
