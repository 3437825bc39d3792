"""Model size and compute: parameter count and GFLOPs.

GFLOPs here are ``torch.utils.flop_counter.FlopCounterMode`` totals / 1e9. That counter counts a
multiply-accumulate as 2 FLOPs (a convolution or matmul costs 2 * MACs), the convention behind
Ultralytics' "GFLOPs" (thop MACs * 2). It counts convolutions, matmuls and attention products, not
elementwise ops, BatchNorm, pooling or activations; on YOLOv8 that matches Ultralytics' figures
for the BN-fused models (yolov8n 8.74, s 28.60, m 78.94 here; published 8.7 / 28.6 / 78.9).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from attn_deploy.models import create_model, list_models, model_spec
from attn_deploy.models.registry import ARCH_ALIASES


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not, e.g. YOLOv8's fixed DFL weights), as Ultralytics counts."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 640, 640)) -> float:
    """GFLOPs (2 * multiply-accumulates / 1e9) of one forward pass of ``model`` at ``input_shape``.

    The pass runs on the meta device (shapes only, no arithmetic: ~0.1 s for YOLOv8m at 640); a
    model whose forward needs real values (``.item()``, data-dependent shapes) is run for real on a
    zero input instead. The model's own tensors are never touched.
    """
    try:
        meta = {
            name: torch.empty_like(t, device="meta")
            for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
        }
        return _count(lambda: functional_call(model, meta, (torch.empty(input_shape, device="meta"),)))
    except (RuntimeError, NotImplementedError):
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        return _count(lambda: model(torch.zeros(input_shape, device=device)))


def _count(forward: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    return counter.get_total_flops() / 1e9


def zoo_table(names: list[str] | None = None) -> dict[str, Any]:
    """The rows of `attn-deploy list` for ``names`` (default every zoo model), built on the meta device
    (shapes and FLOPs, no weights, no compute), plus the architecture aliases: the static table
    ``attn_deploy/data/zoo_table.json`` that `list` prints without importing torch (rewrite it with
    ``python -m benchmarks.zoo_table``; ``tests/test_front_door.py`` checks it is current)."""
    rows = []
    for name in names if names is not None else list_models():
        spec = model_spec(name)
        with torch.device("meta"):
            model = create_model(name, calibrate=False)
        rows.append(
            {
                "model": name,
                "arch": spec.arch,
                "task": spec.task,
                "attention": spec.attention,
                "input": list(spec.input_size),
                "params_m": round(count_params(model) / 1e6, 2),
                "gflops": round(count_gflops(model, (1, 3, *spec.input_size)), 2),
            }
        )
    return {"aliases": dict(sorted(ARCH_ALIASES.items())), "models": rows}
