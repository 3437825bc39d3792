"""FP16 graph conversion with a mixed-precision policy for attention blocks.

TensorRT 11 builds strongly typed networks only, so FP16 is decided here, in the ONNX graph: every node either
runs in FP16 (its float inputs and outputs become ``float16``) or stays FP32 by policy
(:func:`attn_deploy.precision.policy.fp32_nodes`), and a ``Cast`` is placed wherever a tensor crosses between
the two. Graph inputs and outputs stay ``float32`` by default (``fp16.keep_io_fp32``). Nodes are emitted in
topological order (TensorRT's ONNX parser needs it), initializers are converted once (an FP16 copy is added
when FP32 nodes share them), and the result is checked with ONNX's strict type inference.

Pass a config with an empty policy to get a plain conversion (every float node in FP16), e.g. to show what
the policy prevents: :func:`plain_fp16_config`. Beware when checking FP16 graphs on ONNX Runtime's CPU
provider: ops without CPU FP16 kernels run in FP32 behind inserted casts (InsertCastTransformer), which hides
overflow; tests/test_fp16.py checks with ``onnx.reference``, which keeps every FP16 tensor in FP16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from attn_deploy.config import Fp16Config
from attn_deploy.errors import ExportError, UnsupportedOpError, exception_summary
from attn_deploy.precision.graph import GraphView, ensure_node_names
from attn_deploy.precision.policy import fp32_nodes

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
# Ops that take any element type and do not compute on floats, or that generate floats from attributes:
# left untouched; their consumers cast what they need.
NEUTRAL_OPS = frozenset(
    {"Shape", "Size", "Cast", "Constant", "ConstantOfShape", "RandomNormal", "RandomUniform"}
)
# Float inputs that ONNX types independently of the data input (Resize's roi and float32-only scales).
FIXED_FLOAT_INPUTS = {"Resize": (1, 2)}


@dataclass
class Fp16Report:
    """What the conversion did: node counts per precision, why nodes stayed FP32, casts, clamped weights."""

    fp16_nodes: int = 0
    fp32_nodes: dict[str, str] = field(default_factory=dict)  # node name -> reason
    casts: int = 0
    clamped_values: int = 0  # initializer values beyond +-65504, clamped (0 under the default policy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return dataclasses.asdict(self)


def plain_fp16_config(keep_io_fp32: bool = True) -> Fp16Config:
    """A policy that keeps nothing in FP32: the naive conversion, for comparisons."""
    return Fp16Config(
        keep_io_fp32=keep_io_fp32, keep_fp32_ops=(), keep_norm_patterns=False, large_reduction=2**62
    )


def convert_fp16(
    model: onnx.ModelProto,
    config: Fp16Config | None = None,
    keep_also: Callable[[GraphView], dict[str, str]] | None = None,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return an FP16 copy of ``model`` under the policy ``config`` (default: :class:`Fp16Config`).

    ``keep_also`` names further nodes to keep FP32 (name -> reason), e.g.
    :func:`attn_deploy.precision.policy.quantized_nodes` to convert only the float regions of a Q/DQ graph.
    """
    config = config or Fp16Config()
    work = onnx.ModelProto()
    work.CopyFrom(model)
    ensure_node_names(work)
    view = GraphView(work)
    graph = view.graph
    _refuse_control_flow(graph)

    keep = {**fp32_nodes(view, config), **(keep_also(view) if keep_also else {})}
    report = Fp16Report()
    precision: dict[str, int | None] = {}
    for node in graph.node:
        touches_float = any(view.elem_type(t) == FLOAT for t in (*node.input, *node.output) if t)
        if not touches_float or node.op_type in NEUTRAL_OPS:
            precision[node.name] = None
        elif node.name in keep:
            precision[node.name] = FLOAT
            report.fp32_nodes[node.name] = keep[node.name]
        else:
            precision[node.name] = FLOAT16
            report.fp16_nodes += 1

    def required(node: onnx.NodeProto, index: int) -> int | None:
        """The element type ``node`` needs at float input ``index`` (None: takes what it gets)."""
        want = precision[node.name]
        if want is None or view.elem_type(node.input[index]) != FLOAT:
            return None
        return FLOAT if index in FIXED_FLOAT_INPUTS.get(node.op_type, ()) else want

    current: dict[str, int] = {}  # tensors whose element type changes to FLOAT16
    for node in graph.node:
        if precision[node.name] == FLOAT16:
            current.update({o: FLOAT16 for o in node.output if view.elem_type(o) == FLOAT})
    if not config.keep_io_fp32:
        for inp in graph.input:
            if inp.type.tensor_type.elem_type == FLOAT and inp.name not in view.initializers:
                inp.type.tensor_type.elem_type = FLOAT16
                current[inp.name] = FLOAT16
    fp16_copies = _convert_initializers(view, graph, required, current, report)

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def as_type(name: str, to: int) -> str:
        if current.get(name, view.elem_type(name)) == to:
            return name
        if to == FLOAT16 and name in fp16_copies:
            return fp16_copies[name]
        if (name, to) not in casts:
            out = f"{name}_as_{'fp16' if to == FLOAT16 else 'fp32'}"
            new_nodes.append(onnx.helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=to))
            casts[(name, to)] = out
            report.casts += 1
        return casts[(name, to)]

    for node in graph.node:
        for i, name in enumerate(node.input):
            want = required(node, i) if name else None
            if want is not None:
                node.input[i] = as_type(name, want)
        new_nodes.append(node)
    new_nodes.extend(_cast_outputs(graph, current, config.keep_io_fp32, report))
    del graph.node[:]
    graph.node.extend(new_nodes)
    for vi in graph.value_info:
        if current.get(vi.name) == FLOAT16:
            vi.type.tensor_type.elem_type = FLOAT16
    _check(view.model)
    return view.model, report


def _refuse_control_flow(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise UnsupportedOpError(
                f"FP16 conversion does not handle control flow ({node.op_type} node {node.name!r}); "
                "export without data-dependent branches or use precision fp32"
            )


def _convert_initializers(
    view: GraphView,
    graph: onnx.GraphProto,
    required: Callable[[onnx.NodeProto, int], int | None],
    current: dict[str, int],
    report: Fp16Report,
) -> dict[str, str]:
    """Convert float initializers used only by FP16 nodes in place; add FP16 copies of shared ones."""
    needs: dict[str, set[int]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in view.initializers and view.initializers[name].data_type == FLOAT:
                want = required(node, i)
                if want is not None:
                    needs.setdefault(name, set()).add(want)
    copies: dict[str, str] = {}
    for init in list(graph.initializer):
        if FLOAT16 not in needs.get(init.name, set()):
            continue
        value = numpy_helper.to_array(init)
        limit = float(np.finfo(np.float16).max)
        report.clamped_values += int(np.count_nonzero(np.abs(value) > limit))
        half = numpy_helper.from_array(np.clip(value, -limit, limit).astype(np.float16))
        if needs[init.name] == {FLOAT16}:
            half.name = init.name
            init.CopyFrom(half)
            current[init.name] = FLOAT16
        else:
            half.name = copies[init.name] = f"{init.name}_fp16"
            graph.initializer.append(half)
    return copies


def _cast_outputs(
    graph: onnx.GraphProto, current: dict[str, int], keep_io_fp32: bool, report: Fp16Report
) -> list[onnx.NodeProto]:
    """Graph outputs produced in FP16: cast back to float32 (keep_io_fp32) or retype them."""
    casts: list[onnx.NodeProto] = []
    for out in graph.output:
        if current.get(out.name) != FLOAT16:
            continue
        if not keep_io_fp32:
            out.type.tensor_type.elem_type = FLOAT16
            continue
        internal = f"{out.name}_fp16"
        for node in graph.node:
            node.input[:] = [internal if n == out.name else n for n in node.input]
            node.output[:] = [internal if n == out.name else n for n in node.output]
        for vi in graph.value_info:
            if vi.name == out.name:
                vi.name = internal
        current[internal] = FLOAT16
        casts.append(
            onnx.helper.make_node("Cast", [internal], [out.name], name=f"{out.name}_to_fp32", to=FLOAT)
        )
        report.casts += 1
    return casts


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"FP16 conversion produced an invalid graph: {exception_summary(exc)}") from None
