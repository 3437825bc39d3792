"""Coordinate Attention (Hou et al., CVPR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention


class HSigmoid(nn.Module):
    """Hard sigmoid as the official code writes it: ``relu6(x + 3) / 6``."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class HSwish(nn.Module):
    """Hard swish as the official code writes it: ``x * relu6(x + 3) / 6``."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.sigmoid = HSigmoid(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


@register_attention("coordatt")
class CoordAtt(nn.Module):
    """Coordinate attention: direction-aware pooling along H and along W.

    ``z_h = AvgPool_W(x)`` (C×H×1), ``z_w = AvgPool_H(x)`` (C×1×W);
    ``f = h_swish(BN(conv1x1([z_h; z_wᵀ])))`` split back into ``f_h``, ``f_w``;
    ``y = x * sigmoid(conv_h(f_h)) * sigmoid(conv_w(f_wᵀ))``,
    with ``mip = max(8, C // reduction)`` middle channels.
    Parameters: ``3·C·mip + 3·mip + 2·C`` (convs with bias, BN affine; running stats are buffers).

    Paper: Q. Hou, D. Zhou, J. Feng, "Coordinate Attention for Efficient Mobile Network Design",
    CVPR 2021, arXiv:2103.02907. Written as the official ``CoordAtt`` (``pool_h``/``pool_w`` are
    ``AdaptiveAvgPool2d((None, 1))``/``((1, None))``), with ``oup = inp = channels``.

    Args:
        channels: input (and output) channels C.
        reduction: reduction ratio for the middle width (32).
    """

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HSwish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        _, _, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.act(self.bn1(self.conv1(y)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w).sigmoid()
        return identity * a_w * a_h
