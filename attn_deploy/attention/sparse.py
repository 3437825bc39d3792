"""DynamicSparseAttention: non-local attention over H·W positions with top-k sparsification."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.registry import register_attention
from attn_deploy.errors import InputError


@register_attention("sparse")
class DynamicSparseAttention(nn.Module):
    """Non-local (SAGAN-style) self-attention where each position keeps its top-k scores.

    With N = H·W, ``q = W_q x``, ``k = W_k x`` (C -> C/r), ``v = W_v x`` (C -> C), all 1x1 convs:
    ``E = qᵀ k`` (B, N, N), times ``(C/r)^-1/2`` if ``scale``;
    ``S = scatter(F, topk_indices(E), topk_values(E))`` per row, with F the fill;
    ``A = softmax(S)`` over each row;  ``y = gamma · (v Aᵀ) + x``.

    Faithful to the commonly copied code (``masked=False``): F is a ZERO-filled matrix, so the
    softmax runs over the whole row and every non-top-k position still gets weight ``exp(0)/Z``;
    the attention is not actually sparse. ``masked=True`` fills with ``-inf`` instead: a true sparse
    softmax where non-top-k weights are exactly 0.

    ``gamma`` is a learnable scalar. The common code starts it at 0, which makes the block an
    identity until trained; it starts at ``gamma_init`` = 0.1 here so the attention is visible.

    ``topk`` is a constant K (TensorRT needs a constant K <= 3840), so H·W must be >= topk
    (``InputError`` otherwise).
    Cost: one N×N matrix per image, several live at once (scores, scattered, softmax):
    at 80x80 that is 6400² floats = 164 MB each, and O(N²·C) multiply-adds.

    Based on X. Wang, R. Girshick, A. Gupta, K. He, "Non-local Neural Networks", CVPR 2018
    (arXiv:1711.07971) and H. Zhang et al., "Self-Attention Generative Adversarial Networks", ICML 2019
    (arXiv:1805.08318), with top-k row sparsification.

    Args:
        channels: input (and output) channels C.
        topk: scores kept per row, K (32).
        reduction: query/key width is ``max(1, C // reduction)`` (8).
        masked: fill non-top-k scores with ``-inf`` (true sparse softmax) instead of 0 (False).
        scale: scale scores by ``(C/r)^-1/2`` before top-k (False, as the common code).
        gamma_init: initial value of the residual scale gamma (0.1).
    """

    def __init__(
        self,
        channels: int,
        topk: int = 32,
        reduction: int = 8,
        masked: bool = False,
        scale: bool = False,
        gamma_init: float = 0.1,
    ) -> None:
        super().__init__()
        qk_channels = max(1, channels // reduction)
        self.topk = topk
        self.masked = masked
        self.scale = qk_channels**-0.5 if scale else None
        self.query = nn.Conv2d(channels, qk_channels, kernel_size=1)
        self.key = nn.Conv2d(channels, qk_channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.full((1,), gamma_init))
        self.softmax = nn.Softmax(dim=-1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, H·W, H·W) attention matrix A for ``x``; row i holds the weights position i gives."""
        b, _, h, w = x.size()
        if h * w < self.topk:
            raise InputError(
                f"sparse attention keeps topk={self.topk} positions but the feature map is {h}x{w}={h * w}; "
                f"use a larger input or topk <= {h * w}"
            )
        q = self.query(x).view(b, -1, h * w).permute(0, 2, 1)  # (B, N, C/r)
        k = self.key(x).view(b, -1, h * w)  # (B, C/r, N)
        energy = torch.bmm(q, k)  # (B, N, N)
        if self.scale is not None:
            energy = energy * self.scale
        values, indices = torch.topk(energy, self.topk, dim=-1)
        fill = torch.full_like(energy, float("-inf")) if self.masked else torch.zeros_like(energy)
        return self.softmax(fill.scatter(-1, indices, values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        attn = self.attention_map(x)
        v = self.value(x).view(b, c, h * w)  # (B, C, N)
        out = torch.bmm(v, attn.permute(0, 2, 1)).view(b, c, h, w)
        return self.gamma * out + x
