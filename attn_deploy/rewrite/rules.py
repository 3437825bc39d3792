"""The rewrite rules. Each one answers one torch function call with deploy-friendly ops, or declines.

A rule gets the called function's arguments and returns either the replacement result or ``None`` (not
applicable: the original op runs). Rules compare sizes with ``statically_known_true`` so a symbolic size
(dynamic H/W during export) is only treated as equal when it provably is; no guard is added to the trace.

Equivalences used (all exact in real arithmetic, checked in tests against PyTorch):

* adaptive avg/max pool to (1, 1)            == mean / amax over (H, W), keepdim
* adaptive avg/max pool to (H, 1) or (None, 1) == mean / amax over W;  to (1, W) or (1, None) == over H
* avg/max pool whose kernel is the whole (runtime) H x W, no padding == mean / amax over (H, W)
  (likewise a kernel covering one full axis and 1 on the other)
* GroupNorm(G, C)  == InstanceNorm over (B, G, C/G*H*W) then the per-channel affine; GroupNorm(C, C) == affine
  InstanceNorm. Exported as ONNX InstanceNormalization, which TensorRT parses at every opset, instead of
  GroupNormalization-21 (rejected by TensorRT 10.7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

from attn_deploy.errors import UnsupportedOpError


@dataclass(frozen=True)
class RewriteRule:
    """A named rule and the torch functions it answers."""

    name: str
    targets: tuple[Callable[..., Any], ...]
    apply: Callable[..., torch.Tensor | None]


def _same(a: Any, b: Any) -> bool:
    """True when two sizes are provably equal (works for ints and symbolic sizes, adds no guard).

    Under the TorchScript tracer (``dynamo=False``) a dynamic size is a traced tensor holding the example's
    value: equal there proves nothing about other sizes, so it is never treated as equal.
    """
    if a is None or b is None or isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return bool(statically_known_true(a == b))


def _pair(value: Any) -> tuple[Any, Any]:
    if isinstance(value, (list, tuple)):
        return (value[0], value[1]) if len(value) == 2 else (value[0], value[0])
    return (value, value)


def _is_symbolic(x: torch.Tensor, dims: tuple[int, ...]) -> bool:
    return any(isinstance(x.shape[d], torch.SymInt) for d in dims)


def _reduce_axes_for_output(x: torch.Tensor, out_h: Any, out_w: Any) -> tuple[int, ...] | None:
    """Axes to reduce when an adaptive pool's output size is 1 or the full input size on each axis."""
    keep_h = out_h is None or _same(out_h, x.shape[-2])
    keep_w = out_w is None or _same(out_w, x.shape[-1])
    axes: list[int] = []
    for size, keep, axis in ((out_h, keep_h, -2), (out_w, keep_w, -1)):
        if keep:
            continue
        if not _same(size, 1):
            return None
        axes.append(axis)
    return tuple(axes) if axes else None


def _adaptive_pool(reduce: Callable[..., torch.Tensor], op_name: str) -> Callable[..., torch.Tensor | None]:
    def apply(x: torch.Tensor, output_size: Any, *args: Any, **kwargs: Any) -> torch.Tensor | None:
        if x.dim() not in (3, 4) or args or kwargs.get("return_indices", False):
            return None
        out_h, out_w = _pair(output_size)
        axes = _reduce_axes_for_output(x, out_h, out_w)
        if axes is not None:
            return reduce(x, dim=axes, keepdim=True)
        if _is_symbolic(x, (-2, -1)):
            raise UnsupportedOpError(
                f"{op_name} to output size {(out_h, out_w)} "
                "depends on the input's H/W, which ONNX cannot express with dynamic H/W; "
                "export with static H/W (drop --dynamic / dynamic_hw=False) or pool to 1 along each axis"
            )
        return None

    return apply


def _global_pool(reduce: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor | None]:
    def apply(
        x: torch.Tensor,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        *rest: Any,
        **kwargs: Any,
    ) -> torch.Tensor | None:
        padding = kwargs.get("padding", padding)
        stride = kwargs.get("stride", stride)
        if x.dim() not in (3, 4) or rest or kwargs.get("divisor_override") or kwargs.get("return_indices"):
            return None
        if kwargs.get("dilation", 1) not in (1, (1, 1), [1, 1]):
            return None
        if any(not _same(p, 0) for p in _pair(padding)):
            return None
        k_h, k_w = _pair(kernel_size)
        full_h, full_w = _same(k_h, x.shape[-2]), _same(k_w, x.shape[-1])
        one_h, one_w = _same(k_h, 1), _same(k_w, 1)
        if not ((full_h or one_h) and (full_w or one_w)) or (one_h and one_w):
            return None
        if stride not in (None, [], ()):
            s_h, s_w = _pair(stride)
            # With a full-size kernel the stride along that axis is irrelevant; with kernel 1 it must be 1.
            if (one_h and not _same(s_h, 1)) or (one_w and not _same(s_w, 1)):
                return None
        axes = tuple(axis for axis, full in ((-2, full_h and not one_h), (-1, full_w and not one_w)) if full)
        return reduce(x, dim=axes, keepdim=True)

    return apply


def _group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor | None:
    if x.dim() < 3:
        return None
    channels = x.shape[1]
    if _same(num_groups, channels):
        return F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    grouped = F.instance_norm(x.reshape(x.shape[0], num_groups, -1), eps=eps).reshape(x.shape)
    view = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        grouped = grouped * weight.reshape(view)
    if bias is not None:
        grouped = grouped + bias.reshape(view)
    return grouped


def _topk(x: torch.Tensor, k: Any, *args: Any, **kwargs: Any) -> torch.Tensor | None:
    if isinstance(k, (torch.SymInt, torch.Tensor)):  # a Tensor: a size traced by the TorchScript exporter
        raise UnsupportedOpError(
            f"torch.topk with k={k} computed from the input's shape: TensorRT needs a constant K; "
            "use a fixed k (e.g. self.topk) or export with static H/W"
        )
    return None


RULES: tuple[RewriteRule, ...] = (
    RewriteRule(
        "adaptive_avg_pool->reduce_mean",
        (F.adaptive_avg_pool2d, F.adaptive_avg_pool1d),
        _adaptive_pool(torch.mean, "adaptive_avg_pool"),
    ),
    RewriteRule(
        "adaptive_max_pool->reduce_max",
        (F.adaptive_max_pool2d, F.adaptive_max_pool1d),
        _adaptive_pool(torch.amax, "adaptive_max_pool"),
    ),
    RewriteRule("global_avg_pool->reduce_mean", (F.avg_pool2d,), _global_pool(torch.mean)),
    RewriteRule("global_max_pool->reduce_max", (F.max_pool2d,), _global_pool(torch.amax)),
    RewriteRule("group_norm->instance_norm", (F.group_norm,), _group_norm),
    RewriteRule("topk:constant-k-check", (torch.topk, torch.Tensor.topk), _topk),
)
