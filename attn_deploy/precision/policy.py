"""Precision policies for attention blocks: which nodes stay FP32 in an FP16 graph, which are attention gates.

FP16 (max 65504, 11-bit mantissa) fails in attention blocks in predictable places:

* normalization statistics: the variance's squared deviations overflow once |x - mean| > 256 (EMA's
  GroupNorm, exported as InstanceNormalization; SimAM's energy term; hand-written LayerNorm/GroupNorm);
* softmax inputs: exp() of large logits, and the sum of many exponentials;
* large reductions: a sum over thousands of elements leaves the FP16 range or loses the small terms.

:func:`fp32_nodes` names the nodes of a graph that stay FP32 under a :class:`~attn_deploy.config.Fp16Config`
and why. :func:`attention_gate_nodes` names the gates (sigmoid/softmax) and the multiplies they scale,
which the INT8 pass may leave unquantized; :func:`outer_product_gates` the products of two directional gates
(CoordAtt, EMA), which ``ort-int8`` leaves float for speed; :func:`output_tail` the decoding after the last
weighted layer, which it always leaves float.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from attn_deploy.config import Fp16Config
from attn_deploy.export.ort_passes import is_stretched
from attn_deploy.precision.graph import GraphView

REDUCE_OPS = ("ReduceMean", "ReduceSum")
POOL_REDUCTIONS = ("ReduceMean", "GlobalAveragePool")
# Elementwise steps between a variance and the normalizing division: + eps, sqrt, 1/x, scaling by constants.
STAT_CHAIN_OPS = ("Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Pow", "Max", "Clip", "Cast")
# Ops whose float inputs ONNX defines without float16 (NonMaxSuppression: float32 only; Range: float, double
# and integers, which a dynamic YOLO export's anchor grid uses): never converted.
FP32_ONLY_OPS = ("NonMaxSuppression", "Range")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def fp32_nodes(view: GraphView, config: Fp16Config) -> dict[str, str]:
    """Node name -> reason, for every node the FP16 policy keeps in FP32."""
    keep: dict[str, str] = {}
    for node in view.graph.node:
        if node.op_type in FP32_ONLY_OPS:
            keep[node.name] = "ONNX defines no float16 form of it"
        elif node.op_type in config.keep_fp32_ops:
            keep[node.name] = f"{node.op_type} kept FP32 (fp16.keep_fp32_ops)"
        elif node.domain not in ("", "ai.onnx"):
            keep[node.name] = f"custom domain {node.domain!r}"
        elif node.op_type in POOL_REDUCTIONS:
            extent = reduced_extent(view, node)
            if extent is None or extent >= config.large_reduction:
                shown = "unknown (dynamic)" if extent is None else str(extent)
                keep[node.name] = (
                    f"reduction over {shown} elements (fp16.large_reduction={config.large_reduction})"
                )
        elif _weights_exceed_fp16(view, node):
            keep[node.name] = "constant input exceeds the FP16 range"
    if config.keep_norm_patterns:
        for name in normalization_statistics(view):
            keep.setdefault(name, "normalization statistics (mean/variance chain)")
    return keep


def reduced_extent(view: GraphView, node: onnx.NodeProto) -> int | None:
    """How many elements one output value of a ReduceMean/GlobalAveragePool sums; ``None`` if not static."""
    shape = view.shape(node.input[0])
    if shape is None:
        return None
    if node.op_type == "GlobalAveragePool":
        axes = list(range(2, len(shape)))
    else:
        axes_value = view.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        attr = next((a for a in node.attribute if a.name == "axes"), None)
        if axes_value is not None:
            axes = [int(a) for a in np.ravel(axes_value)]
        elif attr is not None:
            axes = list(attr.ints)
        else:
            axes = list(range(len(shape)))  # reduce over everything (noop_with_empty_axes=0)
    dims = [shape[a % len(shape)] for a in axes]
    if not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(int(d) for d in dims)  # type: ignore[arg-type]


def normalization_statistics(view: GraphView) -> list[str]:
    """Nodes of decomposed mean/variance computations: ``r = Reduce((x - mean)^2)`` and what follows.

    Found by what is computed, not by module names: a square (``Pow(d, 2)`` or ``Mul(d, d)``) feeding a
    ReduceMean/ReduceSum. Kept: the centering ``Sub`` and its mean, the square, the reduction, and the
    elementwise chain after it (+eps, sqrt, reciprocal, constant scaling) up to and including the first node
    that combines the statistic with a tensor outside the chain (the normalizing division/multiply).
    """
    names: set[str] = set()
    for square in view.graph.node:
        if not _is_square(view, square):
            continue
        reductions = [c for c in view.consumers[square.output[0]] if c.op_type in REDUCE_OPS]
        if not reductions:
            continue
        names.add(square.name)
        centered = view.producer.get(square.input[0])
        if centered is not None and centered.op_type == "Sub":
            names.add(centered.name)
            mean = view.producer.get(centered.input[1])
            if mean is not None and mean.op_type in REDUCE_OPS:
                names.add(mean.name)
        for reduction in reductions:
            names.add(reduction.name)
            names.update(_statistic_chain(view, reduction, stat_tensors={square.output[0]}))
    return sorted(names)


def _statistic_chain(view: GraphView, start: onnx.NodeProto, stat_tensors: set[str]) -> list[str]:
    """Follow the statistic from ``start`` through elementwise ops until it meets a full-size tensor."""
    chain: list[str] = []
    frontier = [start]
    stats = set(stat_tensors) | set(start.output)
    while frontier:
        node = frontier.pop()
        for consumer in view.consumers[node.output[0]]:
            if consumer.op_type not in STAT_CHAIN_OPS or consumer.name in chain:
                continue
            chain.append(consumer.name)
            others = [i for i in consumer.input if i and i not in stats and view.constant(i) is None]
            if others:  # combines the statistic with another tensor: the normalizing step, stop here
                continue
            stats.update(consumer.output)
            frontier.append(consumer)
    return chain


def _is_square(view: GraphView, node: onnx.NodeProto) -> bool:
    if node.op_type == "Mul":
        return len(node.input) == 2 and node.input[0] == node.input[1]
    if node.op_type == "Pow":
        exponent = view.constant(node.input[1])
        return exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0
    return False


def _weights_exceed_fp16(view: GraphView, node: onnx.NodeProto) -> bool:
    fp16_max = float(np.finfo(np.float16).max)
    for name in node.input:
        if name in view.initializers and view.initializers[name].data_type == onnx.TensorProto.FLOAT:
            value = view.constant(name)
            if value is not None and value.size and float(np.abs(value).max()) > fp16_max:
                return True
    return False


# Ops that move or reshape a gate's values without computing on them.
PASSTHROUGH_OPS = ("Reshape", "Expand", "Unsqueeze", "Squeeze", "Transpose", "Flatten", "Identity")


def attention_gate_nodes(view: GraphView, gate_op_types: tuple[str, ...]) -> list[str]:
    """Gate nodes (``gate_op_types``: sigmoid, softmax, ...) and the ``Mul`` nodes they scale.

    A gate's output may reach its multiply through shape-only ops (Reshape, Expand, Unsqueeze, ...), as in
    SE/ECA (gate of shape B x C x 1 x 1) or CoordAtt (two directional gates). A ``Mul`` counts as gating when
    one of its inputs is such a gate output; Swish/SiLU (``x * sigmoid(x)``) is not a gate and is skipped.
    """
    names: list[str] = []
    for gate in view.graph.node:
        if gate.op_type not in gate_op_types:
            continue
        gate_inputs = {gate.input[0]}
        muls: list[str] = []
        frontier = list(gate.output)
        while frontier:
            tensor = frontier.pop()
            for consumer in view.consumers[tensor]:
                if consumer.op_type in PASSTHROUGH_OPS:
                    frontier.extend(consumer.output)
                elif consumer.op_type == "Mul" and not gate_inputs & set(consumer.input):
                    muls.append(consumer.name)
        if muls:
            names.append(gate.name)
            names.extend(muls)
    return sorted(set(names))


def outer_product_gates(view: GraphView, gate_op_types: tuple[str, ...]) -> list[str]:
    """``Mul`` nodes that multiply two gates into an outer product, with the gates and the shape-only ops between.

    CoordAtt's and EMA's ``sigmoid(h) * sigmoid(w)``, shapes (N,C,H,1) and (N,C,1,W), after the export's
    ``gate_chain->gate_product`` pass (``export/ort_passes.py``). Each input has a 1 on an axis where the other
    does not, so both broadcast. ONNX Runtime's ``QLinearMul`` walks such a product one row at a time and
    requantizes every row: on resnet50-ema (AMD EPYC, AVX2, 2 threads) its 16 products took 0.6-0.7 ms each
    against 0.2 ms for a same-shape ``QLinearMul``, and 0.16 ms for the float ``Mul``. A product fed by a
    dequantized tensor would still fuse into ``QLinearMul``, hence the gates and shape-only ops stay float too.
    """
    names: set[str] = set()
    for node in view.graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        a, b = (view.shape(t) for t in node.input)
        if a is None or b is None or len(a) != len(b) or not (is_stretched(a, b) and is_stretched(b, a)):
            continue
        sources = [_gate_source(view, t, gate_op_types) for t in node.input]
        if all(sources):
            names.add(node.name)
            for chain in sources:
                names.update(chain or [])
    return sorted(names)


def _gate_source(view: GraphView, tensor: str, gate_op_types: tuple[str, ...]) -> list[str] | None:
    """The gate node making ``tensor`` and the shape-only nodes after it, or ``None`` if no gate makes it."""
    chain: list[str] = []
    node = view.producer.get(tensor)
    while node is not None and node.op_type in PASSTHROUGH_OPS:
        chain.append(node.name)
        node = view.producer.get(node.input[0])
    if node is None or node.op_type not in gate_op_types:
        return None
    return [node.name, *chain]


def output_tail(view: GraphView) -> list[str]:
    """The nodes after the last weighted layer (Conv/Gemm/MatMul) on every path to the outputs, and the weighted
    layers that feed only them: YOLO's box decoding (DFL softmax expectation conv, anchor arithmetic, stride
    scaling), its score sigmoid and output Concat. A classifier whose last Gemm makes the output has none."""
    feeds_weighted: dict[int, bool] = {}
    for node in reversed(view.graph.node):  # ONNX lists nodes in topological order
        consumers = [c for out in node.output for c in view.consumers.get(out, [])]
        feeds_weighted[id(node)] = any(c.op_type in WEIGHTED_OPS or feeds_weighted[id(c)] for c in consumers)
    tail = {
        id(n): n.name for n in view.graph.node if n.op_type not in WEIGHTED_OPS and not feeds_weighted[id(n)]
    }
    names = set(tail.values())
    for node in view.graph.node:
        consumers = [c for out in node.output for c in view.consumers.get(out, [])]
        if node.op_type in WEIGHTED_OPS and consumers and all(id(c) in tail for c in consumers):
            names.add(node.name)
    return sorted(names)


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def quantized_nodes(view: GraphView) -> dict[str, str]:
    """Node name -> reason, for the INT8 part of a Q/DQ graph that an FP16 conversion of its float regions
    leaves as the quantizer wrote it: the Q/DQ nodes, the layers whose weights come through a
    DequantizeLinear, and ops that sit wholly between Q/DQ pairs (every float input dequantized, every output
    quantized again): TensorRT fuses each with its Q/DQ into an INT8 kernel. Everything else (attention gates
    kept float, layers left unquantized) is a float region, which FP16 suits: NVIDIA's INT8 recipe runs it in
    FP16, where a strongly typed network would otherwise run it in FP32."""
    keep: dict[str, str] = {}
    dequantized = {n.output[0] for n in view.graph.node if n.op_type == "DequantizeLinear"}
    weights = {
        n.output[0]
        for n in view.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in view.initializers
    }
    for node in view.graph.node:
        floats = [
            t for t in node.input if t and (t in dequantized or view.elem_type(t) == onnx.TensorProto.FLOAT)
        ]
        requantized = all(
            view.consumers.get(o) and all(c.op_type == "QuantizeLinear" for c in view.consumers[o])
            for o in node.output
            if o
        )
        if node.op_type in QDQ_OPS:
            keep[node.name] = "Q/DQ node (INT8 boundary)"
        elif any(t in weights for t in node.input):
            keep[node.name] = "INT8 layer (weights through DequantizeLinear)"
        elif floats and all(t in dequantized for t in floats) and requantized:
            keep[node.name] = "INT8 op (between Q/DQ pairs)"
    return keep
