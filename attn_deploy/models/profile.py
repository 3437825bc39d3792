"""Model size and compute: parameter count and GFLOPs.

GFLOPs here are ``torch.utils.flop_counter.FlopCounterMode`` totals / 1e9. That counter counts a
multiply-accumulate as 2 FLOPs (a convolution or matmul costs 2 * MACs), the convention behind
Ultralytics' "GFLOPs" (thop MACs * 2). It counts convolutions, matmuls and attention products, not
elementwise ops, BatchNorm, pooling or activations, so it reads a little below thop-based figures
on unfused models (yolov8s: 28.4 here vs Ultralytics' 28.6 fused / 28.8 unfused).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not, e.g. YOLOv8's fixed DFL weights), as Ultralytics counts."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 640, 640)) -> float:
    """GFLOPs (2 * multiply-accumulates / 1e9) of one forward pass of ``model`` on a zero input."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(input_shape, device=device))
    return counter.get_total_flops() / 1e9
