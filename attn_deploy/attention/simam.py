"""SimAM, a parameter-free attention module (Yang et al., ICML 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention


@register_attention("simam")
class SimAM(nn.Module):
    """SimAM: weights each neuron by the inverse of its minimal energy, with no parameters.

    Per channel, with ``n = H·W - 1``, ``d = (x - mean_HW(x))²``:
    ``e = d / (4·(sum_HW(d)/n + lambda)) + 0.5``,  ``y = x * sigmoid(e)``. Parameters: 0.

    As in the official code, ``n`` is 0 for a 1x1 feature map (the result is NaN there): use H·W >= 2.

    Paper: L. Yang, R.-Y. Zhang, L. Li, X. Xie, "SimAM: A Simple, Parameter-Free Attention Module for
    Convolutional Neural Networks", ICML 2021. Written as the official ``simam_module``.

    Args:
        channels: accepted so every attention module is built the same way; SimAM does not use it.
        e_lambda: the regulariser lambda (1e-4).
    """

    def __init__(self, channels: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.activation = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = (
            x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda))
            + 0.5
        )
        return x * self.activation(y)
