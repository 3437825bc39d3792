"""Attention modules for CNNs, written as their papers' official code writes them, and a registry.

``create_attention("eca", 256)`` builds a module by name; ``list_attention()`` lists the names.
Every module maps (B, C, H, W) -> (B, C, H, W). The rewrite room, not these modules, makes them
exportable with dynamic shapes.
"""

from __future__ import annotations

from attn_deploy.attention.cbam import CBAM
from attn_deploy.attention.coord import CoordAtt
from attn_deploy.attention.dynamic import DynamicAttentionSelector
from attn_deploy.attention.eca import EfficientChannelAttention, eca_kernel_size
from attn_deploy.attention.ema import EMA
from attn_deploy.attention.hybrid import HybridAttention
from attn_deploy.attention.registry import create_attention, list_attention, register_attention
from attn_deploy.attention.se import SqueezeExcite
from attn_deploy.attention.simam import SimAM
from attn_deploy.attention.sparse import DynamicSparseAttention

__all__ = [
    "CBAM",
    "EMA",
    "CoordAtt",
    "DynamicAttentionSelector",
    "DynamicSparseAttention",
    "EfficientChannelAttention",
    "HybridAttention",
    "SimAM",
    "SqueezeExcite",
    "create_attention",
    "eca_kernel_size",
    "list_attention",
    "register_attention",
]
