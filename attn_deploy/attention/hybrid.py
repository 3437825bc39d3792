"""HybridAttention: ECA channel attention then CBAM spatial attention, corrected to run."""

from __future__ import annotations

import torch
from torch import nn

from attn_deploy.attention.cbam import SpatialAttention
from attn_deploy.attention.eca import EfficientChannelAttention
from attn_deploy.attention.registry import register_attention


@register_attention("hybrid")
class HybridAttention(nn.Module):
    """Channel attention (ECA) followed by spatial attention (CBAM's), a corrected copy of a common block.

    ``x' = x * sigmoid(conv1d_k(GAP(x)))`` over the channel axis (ECA, adaptive odd k);
    ``y = x' * sigmoid(conv_s×s([mean_C(x'); max_C(x')]))`` (CBAM spatial, s = 7).
    Parameters: ``k + 2·s²``.

    What the commonly copied "hybrid" block did wrong: it pooled to (B, C, 1, 1) and handed the
    Conv1d a tensor with an extra axis, (B, 1, C, 1, 1), a 5-D tensor. ``nn.Conv1d`` takes only
    (C, L) or (B, C, L) input, so the block raised ``RuntimeError`` on every 4-D feature map.
    What changed here: the channel branch is ECA's own reshaping, ``squeeze(-1).transpose(-1, -2)``
    to (B, 1, C), the 1-D conv across channels, and back to (B, C, 1, 1) (see
    :class:`~attn_deploy.attention.eca.EfficientChannelAttention`); the spatial branch is CBAM's
    unchanged. Both are reused, not rewritten.

    Papers: Wang et al., "ECA-Net", CVPR 2020 (arXiv:1910.03151); Woo et al., "CBAM", ECCV 2018
    (arXiv:1807.06521).

    Args:
        channels: input (and output) channels C.
        kernel_size: ECA kernel size k; ``None`` picks it from C (gamma, beta rule).
        gamma: ECA gamma (2).
        beta: ECA b (1).
        spatial_kernel_size: spatial convolution size s (7, odd).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        spatial_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.channel_attention = EfficientChannelAttention(channels, kernel_size, gamma, beta)
        self.spatial_attention = SpatialAttention(spatial_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))
