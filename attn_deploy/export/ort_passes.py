"""Deploy-time ONNX graph passes: exact rewrites of attention-module patterns into forms runtimes run faster.

ONNX Runtime's CPU provider runs convolutions in a blocked channel layout (NCHWc, ``NchwcTransformer``) and
inserts a ``ReorderOutput``/``ReorderInput`` pair (each a copy of the full tensor) wherever an op outside
its NCHWc set reads a blocked tensor. Its NCHWc set holds ``Conv``, ``GlobalAveragePool``,
``GlobalMaxPool``, pools, ``Relu``/``Sigmoid``/``Tanh``, same-shape ``Add``/``Sum``/``Mul``, channel
``Concat`` and nearest ``Resize``; ``ReduceMean``, ``Gemm``, ``Reshape`` and ``Expand`` are not in it
(onnxruntime ``core/optimizer/nchwc_transformer.cc``, ``NchwcTransformerImpl::Transform``).

Each pass keeps the values the graph computes, by construction:

* ``expand->broadcast``: ``op(x, Expand(y, s))`` with ``op`` a broadcasting element-wise op (Add, Sub, Mul,
  Div) and ``s`` equal to ``x``'s shape (a constant equal to the inferred static shape, or ``Shape(x)``)
  becomes ``op(x, y)``: broadcasting ``y`` against ``x`` gives the same elements, never materialised.
* ``reduce_mean->global_avg_pool`` (and ``reduce_max->global_max_pool``): a 4-D ``ReduceMean`` /
  ``ReduceMax`` over axes (2, 3) with ``keepdims=1`` is ``GlobalAveragePool`` / ``GlobalMaxPool``
  (the same mean / max per (batch, channel)); the pool stays in NCHWc.
* ``pooled_gemm->conv1x1``: ``Reshape (B,C,1,1)->(B,C)``, then ``Gemm`` layers (constant weights,
  ``transB=1``) and element-wise activations, then ``Reshape (B,C',1,1)``, becomes the same layers as 1x1
  ``Conv`` on the (B,C,1,1) tensor: a 1x1 convolution on a 1x1 map is that matrix product. The squeeze /
  excite MLP of SE then stays in NCHWc with its activation fused, and the two reshapes go.
* ``pooled_instance_norm->bias``: ``GlobalAveragePool(InstanceNormalization(x, scale, B))`` is ``B`` for every
  (batch, channel): per (n, c) the normalised values ``(x - mean) / sqrt(var + eps)`` sum to zero, so the mean
  of ``scale * that + B`` is ``B``, whatever ``x``, ``scale`` and ``eps`` (a constant ``x`` normalises to 0).
  The pooled tensor becomes ``B`` expanded to (N, C, 1, ...): no pass over the normalised map. EMA pools its
  GroupNorm(c, c) branch this way (``softmax(agp(gn(...)))``), once per block; the TorchScript exporter puts a
  Reshape that keeps (N, C) between norm and pool, and the pass looks through it. Exact in real arithmetic; in
  FP32 the pooled mean was ``B`` plus rounding (~1e-7 of ``scale``), now it is ``B`` itself.
* ``unit_transpose->reshape``: a ``Transpose`` that only moves size-1 axes (the non-unit axes keep their order,
  as in ECA's ``(B, C, 1) -> (B, 1, C)`` and EMA's ``(N, c, W, 1) -> (N, c, 1, W)``) leaves every element at
  its place in memory: it becomes a ``Reshape`` to the same shape, which ONNX Runtime runs without a copy.
* ``gate_chain->gate_product``: ``Mul(Mul(x, a), b)`` where ``a`` and ``b`` are gates of ``x`` (each 1 on an
  axis where ``x`` is not, and never larger than ``x``), as CoordAtt's and EMA's ``x * sigmoid(h) * sigmoid(w)``
  with gates (N, C, H, 1) and (N, C, 1, W), becomes ``Mul(x, Mul(a, b))``: the gates multiply first (at most
  ``x``'s size, from two small reads), then one multiply reads ``x``. ONNX Runtime broadcasts a gate over the
  last axis one row (W elements) at a time, so the chain paid two row-by-row passes over ``x``; measured
  0.38 vs 0.63 ms at (32, 32, 14, 14) and 0.71 vs 1.05 ms at (32, 64, 7, 7) on 2 AVX2 cores. Broadcasting
  products are associative, so this is exact in real arithmetic; in FP32 values differ by rounding (~1 ulp).
* ``channel_mean->matmul``: a 4-D ``ReduceMean`` over the channel axis (keepdims, a known channel count C, as
  CBAM's spatial attention ``mean(x, dim=1)``) becomes ``Reshape(x, (N, C, H*W))``, ``MatMul`` by a constant
  (1, C) row of 1/C, and a ``Reshape`` back to (N, 1, H, W): the same mean as a vector-matrix product, which
  ONNX Runtime runs as one GEMM instead of its strided reduction (measured 0.17 vs 0.93 ms at (1, 256, 56, 56)
  and 0.05 vs 0.20 ms at (1, 1024, 14, 14) on 2 AVX2 cores). Exact in real arithmetic (1/C is exact for a power
  of two C; otherwise it rounds once, ~6e-8 relative).
* ``channel_split->convs``: ``Split(act(Conv(x, W, B)), axis=1)``, with no activation, one element-wise
  activation or SiLU (``Mul(c, Sigmoid(c))``), and every piece a multiple of 16 channels, becomes one
  ``act(Conv(x, W[rows], B[rows]))`` per piece: each output channel is computed from its own rows of ``W`` and
  ``B`` as before, so the values are the same. ONNX Runtime has no NCHWc ``Split``: YOLOv8's C2f blocks (which
  split their first convolution in two halves) paid a reorder of the whole tensor out of the blocked layout and
  of each half back in; with a convolution per half every tensor stays blocked (yolov8s: 24 ReorderInput and 32
  ReorderOutput become 1 and 4: FP32 yolov8s 3-4% and yolov8n 5-9% faster on 2 AVX-512 cores). Not only
  attention: the pass speeds every YOLOv8 export.
* ``channel_softmax->last_axis``: ``Conv1x1(Softmax(x, axis=1))`` on a 4-D ``x`` (a plain 1x1 convolution with
  constant weights, the softmax read by nothing else; opset >= 13) becomes ``Softmax(Transpose(x), axis=-1)``,
  a ``MatMul`` by the transposed weights (+ bias) and a Reshape (one output channel) or Transpose back: the same
  softmax per position and the same weighted sums. ONNX Runtime transposes around a softmax over a non-last
  axis, slowly: YOLOv8's DFL (``Transpose -> Softmax(axis=1) -> Conv(16 -> 1)`` on (1, 16, 4, 8400)) took 9.3
  ms, this form 0.9 ms (2 AVX-512 cores); the Transpose before the softmax folds into the new one.

Every export with the deploy rewrites runs these passes before verification, so the graph that is written is
the graph compared with PyTorch (at the export shape and, when dynamic, at unseen shapes). TensorRT parses
every op produced here (``GlobalAveragePool``, ``GlobalMaxPool``, ``Conv``, ``Mul``, ``MatMul``, ``Reshape``, and
``Shape``/``Slice``/``Concat``/``Expand`` on a shape); the lint runs after them. One pass pays on ONNX Runtime
FP32 only: the precision stage turns its sites back (:func:`channel_matmul_to_mean`) before FP16 or INT8.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from attn_deploy.export.lint import opset_of

BROADCASTING_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
ACTIVATIONS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu"})
"""Element-wise activations a pooled MLP may use between its layers (shape-preserving, one input)."""
GLOBAL_POOL_FOR = {"ReduceMean": "GlobalAveragePool", "ReduceMax": "GlobalMaxPool"}
AXES_AS_INPUT = 18
"""The opset from which ReduceMean takes its axes as an input instead of an attribute."""
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})
"""Element types global pools and convolutions take (reductions and Gemm also take integers)."""

Dims = tuple[int | str | None, ...]
"""An inferred shape: an int per static dim, the symbol of a named dynamic dim, ``None`` when unknown."""


@dataclass(frozen=True)
class GraphPass:
    """A named pass: ``apply(graph_view)`` rewrites the graph in place and returns how many sites it changed."""

    name: str
    apply: Callable[[EditableGraph], int]


class EditableGraph:
    """The main graph of a model, edited in place, with what the passes look up: producers, consumers,
    constants, shapes.

    Unlike the read-only :class:`attn_deploy.precision.graph.GraphView` (which holds a shape-inferred copy and
    sits above ``export`` in the import order), the passes edit the model itself, and infer shapes on a copy
    without its large weights (milliseconds instead of seconds on resnet50).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.shapes, self.types = _inferred_shapes(model)
        self.reindex()

    def reindex(self) -> None:
        """Rebuild producers, consumers and constants after an edit.

        Shapes are inferred once: the passes keep every tensor they leave in place at its shape (a rewired
        ``Expand`` reader, a pool replacing a reduce and a chain turned into 1x1 convolutions compute tensors of
        the same shapes), so the inferred shapes stay valid for the tensors later passes look at.
        """
        g = self.graph
        self.producer = {out: node for node in g.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in g.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in g.output}
        self.initializers = {i.name: i for i in g.initializer}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a ``Constant`` node's output, else ``None``."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def shape(self, name: str) -> Dims | None:
        """Inferred shape of a tensor (``None`` when unknown)."""
        return self.shapes.get(name)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The single node reading ``name`` when it is not also a graph output."""
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def remove(self, nodes: list[onnx.NodeProto]) -> None:
        """Drop nodes (by identity), then initializers nothing reads any more."""
        drop = {id(n) for n in nodes}
        keep = [n for n in self.graph.node if id(n) not in drop]
        del self.graph.node[:]
        self.graph.node.extend(keep)
        used = {name for n in self.graph.node for name in n.input} | self.outputs
        unused = [i for i in self.graph.initializer if i.name not in used]
        for init in unused:
            self.graph.initializer.remove(init)

    def fresh_name(self, base: str) -> str:
        """A name no tensor (node output, initializer, graph input) or node has yet: ``base`` or ``base_<k>``.

        The passes name a new node after its output, so one name serves both."""
        taken = set(self.producer) | set(self.initializers) | {i.name for i in self.graph.input}
        taken |= {n.name for n in self.graph.node}
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        return name

    def add_constants(self, stem: str, values: dict[str, np.ndarray]) -> dict[str, str]:
        """An initializer per value, named ``<stem>__<key>`` (made fresh); their names by key."""
        names = {key: self.fresh_name(f"{stem}__{key}") for key in values}
        for key, value in values.items():
            self.graph.initializer.append(numpy_helper.from_array(value, names[key]))
            self.initializers[names[key]] = self.graph.initializer[-1]
        return names

    def replace(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """Put ``nodes`` (in order) where ``node`` stands, drop ``node`` and reindex."""
        position = list(self.graph.node).index(node)
        for offset, new in enumerate(nodes):
            self.graph.node.insert(position + offset, new)
        self.graph.node.remove(node)
        self.reindex()

    def remove_unread(self) -> None:
        """Drop nodes none of whose outputs is read or a graph output (repeatedly: their inputs' producers may
        become unread in turn), then the initializers only they read."""
        while True:
            read = {name for n in self.graph.node for name in n.input} | self.outputs
            unread = [n for n in self.graph.node if not any(out in read for out in n.output)]
            self.remove(unread)  # drops the initializers nothing reads even when no node goes
            if not unread:
                return


SMALL_CONSTANT = 64
"""Initializers up to this many elements keep their values for shape inference (shape tensors, axes)."""


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its large weights (declared as typed inputs instead): shape inference in milliseconds."""
    light = onnx.ModelProto()
    light.CopyFrom(onnx.helper.make_model(onnx.GraphProto(), opset_imports=model.opset_import))
    light.ir_version = model.ir_version
    g = light.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= SMALL_CONSTANT:
            g.initializer.append(init)
        else:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return light


def _inferred_shapes(model: onnx.ModelProto) -> tuple[dict[str, Dims], dict[str, int]]:
    """Inferred shapes and element types (``onnx.TensorProto`` enum) of the tensors shape inference reaches."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model), strict_mode=False, data_prop=True)
    except Exception:  # a graph onnx cannot infer (custom domains): passes then match nothing
        inferred = model
    shapes: dict[str, Dims] = {}
    types: dict[str, int] = {}
    g = inferred.graph
    for value in [*g.input, *g.value_info, *g.output]:
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        if not tensor.HasField("shape"):
            continue
        shapes[value.name] = tuple(
            int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
        )
    return shapes, types


def _known(dims: Dims | None) -> bool:
    return dims is not None and all(d is not None for d in dims)


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


# -- expand -> broadcast ------------------------------------------------------------------------------
def _expand_matches_operand(view: EditableGraph, expand: onnx.NodeProto, other: str) -> bool:
    """True when the Expand's target shape is provably ``other``'s shape."""
    target = expand.input[1]
    source = view.producer.get(target)
    if source is not None and source.op_type == "Shape" and source.input[0] == other:
        return not any(a.name in ("start", "end") for a in source.attribute)
    value = view.constant(target)
    other_shape = view.shape(other)
    if value is not None and _known(other_shape) and all(isinstance(d, int) for d in other_shape or ()):
        return tuple(int(v) for v in value.reshape(-1)) == other_shape
    out_shape = view.shape(expand.output[0])
    return _known(out_shape) and out_shape == other_shape


def drop_broadcast_expand(view: EditableGraph) -> int:
    """``op(x, Expand(y, shape(x)))`` -> ``op(x, y)`` for broadcasting element-wise ops."""
    changed = 0
    dead: list[onnx.NodeProto] = []
    for expand in [n for n in view.graph.node if n.op_type == "Expand"]:
        out = expand.output[0]
        readers = view.consumers.get(out, [])
        if not readers or out in view.outputs:
            continue
        rewired = 0
        for reader in readers:
            if reader.op_type not in BROADCASTING_OPS or len(reader.input) != 2:
                continue
            slot = 0 if reader.input[0] == out else 1
            other = reader.input[1 - slot]
            if other == out or not _expand_matches_operand(view, expand, other):
                continue
            reader.input[slot] = expand.input[0]
            rewired += 1
        changed += rewired
        if rewired == len(readers):
            dead.append(expand)
    if changed:
        view.remove(dead)
    return changed


# -- reduce -> global pool ----------------------------------------------------------------------------
def _reduce_axes(view: EditableGraph, node: onnx.NodeProto) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        value = view.constant(node.input[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    axes = _attr(node, "axes", None)
    return [int(a) for a in axes] if axes is not None else None  # type: ignore[union-attr]


def reduce_to_global_pool(view: EditableGraph) -> int:
    """4-D ``ReduceMean``/``ReduceMax`` over (H, W), keepdims -> ``GlobalAveragePool``/``GlobalMaxPool``."""
    changed = 0
    for node in view.graph.node:
        if node.op_type not in GLOBAL_POOL_FOR or node.domain not in ("", "ai.onnx"):
            continue
        shape = view.shape(node.input[0])
        axes = _reduce_axes(view, node)
        if shape is None or len(shape) != 4 or axes is None or _attr(node, "keepdims", 1) != 1:
            continue
        if view.types.get(node.input[0]) not in FLOAT_TYPES:
            continue
        if sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.op_type = GLOBAL_POOL_FOR[node.op_type]
        del node.input[1:]
        del node.attribute[:]
        changed += 1
    if changed:
        view.remove_unread()  # the axes constants
    return changed


# -- pooled gemm -> 1x1 conv --------------------------------------------------------------------------
def _is_plain_gemm(view: EditableGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Gemm" or _attr(node, "transA", 0) != 0 or _attr(node, "transB", 0) != 1:
        return False
    if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
        return False
    weight = view.constant(node.input[1])
    bias = view.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if weight is None or weight.ndim != 2 or node.input[1] not in view.initializers:
        return False
    if view.initializers[node.input[1]].data_type not in FLOAT_TYPES:
        return False
    if len(node.input) > 2 and node.input[2] and (bias is None or bias.shape != (weight.shape[0],)):
        return False
    return len(view.consumers.get(node.input[1], [])) == 1


def _pooled_chain(
    view: EditableGraph, start: onnx.NodeProto
) -> tuple[list[onnx.NodeProto], onnx.NodeProto] | None:
    """From a Reshape (B,C,1,1)->(B,C): the Gemm/activation chain and the closing Reshape to (B,C',1,1)."""
    src, dst = view.shape(start.input[0]), view.shape(start.output[0])
    if src is None or dst is None or len(src) != 4 or len(dst) != 2 or src[2:] != (1, 1) or src[:2] != dst:
        return None
    chain: list[onnx.NodeProto] = []
    current = start.output[0]
    while True:
        node = view.only_consumer(current)
        if node is None:
            return None
        if node.op_type == "Reshape":
            end = view.shape(node.output[0])
            ok = end is not None and len(end) == 4 and end[2:] == (1, 1) and end[:2] == view.shape(current)
            return (chain, node) if ok and chain else None
        layer = node.op_type == "Gemm" and _is_plain_gemm(view, node)
        if node.input[0] != current or not (layer or node.op_type in ACTIVATIONS):
            return None
        chain.append(node)
        current = node.output[0]


def pooled_gemm_to_conv(view: EditableGraph) -> int:
    """``Reshape -> (Gemm | activation)* -> Reshape`` on a pooled (B,C,1,1) vector -> 1x1 ``Conv`` layers."""
    changed = 0
    reshapes: list[onnx.NodeProto] = []
    for start in [n for n in view.graph.node if n.op_type == "Reshape"]:
        found = _pooled_chain(view, start)
        if found is None:
            continue
        chain, end = found
        for node in chain:
            if node.op_type == "Gemm":
                weight = view.initializers[node.input[1]]
                w = numpy_helper.to_array(weight)
                weight.CopyFrom(numpy_helper.from_array(w.reshape(*w.shape, 1, 1), weight.name))
                node.op_type = "Conv"
                del node.attribute[:]
                changed += 1
        chain[0].input[0] = start.input[0]
        chain[-1].output[0] = end.output[0]
        reshapes += [start, end]
    if reshapes:
        view.remove(reshapes)
    return changed


# -- transpose of unit axes -> reshape -----------------------------------------------------------------
def _reshape_target(dims: Dims, perm: list[int]) -> list[int] | None:
    """The Reshape shape equal to ``Transpose(perm)`` of a ``dims`` tensor, or ``None`` when it is a real
    transpose (non-unit axes reordered) or its shape cannot be written as a constant.

    A symbolic or unknown dim counts as non-unit (whatever it is at run time, the order check then still
    holds). In the target, a dim that stays at its index is 0 (copy the input's), one other unknown dim is -1.
    """
    moving = [axis for axis in perm if dims[axis] != 1]
    if moving != sorted(moving) or any(d == 0 for d in dims):
        return None
    target: list[int] = []
    for position, axis in enumerate(perm):
        dim = dims[axis]
        if isinstance(dim, int):
            target.append(dim)
        elif axis == position:
            target.append(0)
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None


def unit_transpose_to_reshape(view: EditableGraph) -> int:
    """``Transpose`` moving only size-1 axes -> ``Reshape`` (the same elements in the same memory order)."""
    changed = 0
    for node in view.graph.node:
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        dims = view.shape(node.input[0])
        perm = _attr(node, "perm", None)
        if dims is None or perm is None or len(perm) != len(dims):  # type: ignore[arg-type]
            continue
        target = _reshape_target(dims, [int(a) for a in perm])  # type: ignore[union-attr]
        if target is None:
            continue
        names = view.add_constants(node.output[0], {"shape": np.array(target, np.int64)})
        node.op_type = "Reshape"
        node.input.append(names["shape"])
        del node.attribute[:]
        changed += 1
    return changed


# -- global pool of an instance norm -> its bias ------------------------------------------------------
def _keeps_batch_and_channels(view: EditableGraph, reshape: onnx.NodeProto) -> bool:
    """True when a Reshape's input and output both start with the same known or named (N, C)."""
    before, after = view.shape(reshape.input[0]), view.shape(reshape.output[0])
    if before is None or after is None or len(before) < 3 or len(after) < 3:
        return False
    return None not in before[:2] and before[:2] == after[:2]


def _pooled_instance_norm(
    view: EditableGraph, pool: onnx.NodeProto
) -> tuple[onnx.NodeProto, np.ndarray] | None:
    """The InstanceNormalization a GlobalAveragePool reads (directly or through a Reshape that keeps N and C,
    as GroupNorm's TorchScript export has) and its constant bias, when the pool is its mean."""
    norm = view.producer.get(pool.input[0])
    if norm is not None and norm.op_type == "Reshape" and _keeps_batch_and_channels(view, norm):
        norm = view.producer.get(norm.input[0])
    if norm is None or norm.op_type != "InstanceNormalization" or norm.domain not in ("", "ai.onnx"):
        return None
    bias = view.constant(norm.input[2]) if len(norm.input) > 2 else None
    shape = view.shape(pool.input[0])
    if bias is None or bias.ndim != 1 or shape is None or len(shape) < 3:
        return None
    # A known C must be B's length; a symbolic C is B's length at run time, or the norm itself fails.
    if isinstance(shape[1], int) and shape[1] != bias.shape[0]:
        return None
    if view.types.get(pool.input[0]) not in FLOAT_TYPES or not np.all(np.isfinite(bias)):
        return None
    return norm, bias


def pooled_instance_norm_to_bias(view: EditableGraph) -> int:
    """``GlobalAveragePool(InstanceNormalization(x, scale, B))`` -> ``Expand(B, (N, C, 1, ...))``."""
    changed = 0
    for pool in [n for n in view.graph.node if n.op_type == "GlobalAveragePool"]:
        found = _pooled_instance_norm(view, pool)
        if found is None:
            continue
        norm, bias = found
        rank = len(view.shape(pool.input[0]) or ())
        elem = onnx.helper.tensor_dtype_to_np_dtype(view.types[pool.input[0]])
        stem = pool.output[0]
        constants = {
            "bias": bias.astype(elem).reshape(1, -1, *[1] * (rank - 2)),
            "c1": np.array([bias.shape[0], *[1] * (rank - 2)], np.int64),
            "zero": np.array([0], np.int64),
            "one": np.array([1], np.int64),
        }
        names = view.add_constants(stem, constants)
        shape, batch, target = (view.fresh_name(f"{stem}__{key}") for key in ("shape", "batch", "target"))
        nodes = [
            onnx.helper.make_node("Shape", [norm.input[0]], [shape], name=shape),
            onnx.helper.make_node("Slice", [shape, names["zero"], names["one"]], [batch], name=batch),
            onnx.helper.make_node("Concat", [batch, names["c1"]], [target], name=target, axis=0),
            onnx.helper.make_node("Expand", [names["bias"], target], [stem], name=f"{stem}__expand"),
        ]
        view.replace(pool, nodes)
        changed += 1
    if changed:
        view.remove_unread()
    return changed


# -- gate chain -> gate product -----------------------------------------------------------------------
def is_stretched(a: Dims, b: Dims) -> bool:
    """True when ``a`` (same rank as ``b``) is 1 on some axis where ``b`` is not provably 1 (a symbolic or
    unknown dim counts as not 1): broadcasting ``a`` against ``b`` stretches it along that axis."""
    return any(x == 1 and y != 1 for x, y in zip(a, b, strict=True))


def _is_gate_of(gate: Dims | None, full: Dims | None) -> bool:
    """True when ``gate`` is 1 on some axis where ``full`` is not, and ``full`` is 1 only where ``gate`` is 1
    (same rank): broadcasting it over ``full`` never grows ``full``. A symbolic dim counts as not 1."""
    if gate is None or full is None or len(gate) != len(full) or not _known(gate) or not _known(full):
        return False
    return is_stretched(gate, full) and not is_stretched(full, gate)


def _gate_chain(view: EditableGraph, outer: onnx.NodeProto) -> tuple[onnx.NodeProto, int, int] | None:
    """For ``outer = Mul(Mul(x, a), b)`` with gates ``a`` and ``b`` of ``x``: the inner Mul, the slot of the
    inner Mul's output in ``outer`` and the slot of ``x`` in the inner Mul."""
    if outer.op_type != "Mul" or outer.domain not in ("", "ai.onnx") or len(outer.input) != 2:
        return None
    if view.types.get(outer.output[0]) not in FLOAT_TYPES:
        return None
    for slot in (0, 1):
        inner = view.producer.get(outer.input[slot])
        if inner is None or inner.op_type != "Mul" or inner.domain not in ("", "ai.onnx"):
            continue
        if len(inner.input) != 2 or view.only_consumer(inner.output[0]) is not outer:
            continue
        b = view.shape(outer.input[1 - slot])
        for x_slot in (0, 1):
            x, a = view.shape(inner.input[x_slot]), view.shape(inner.input[1 - x_slot])
            if _is_gate_of(a, x) and _is_gate_of(b, x):
                return inner, slot, x_slot
    return None


def gate_chain_to_gate_product(view: EditableGraph) -> int:
    """``Mul(Mul(x, a), b)`` with gates ``a``, ``b`` of ``x`` -> ``Mul(x, Mul(a, b))``.

    Element-wise products with broadcasting are associative (both sides broadcast to the same shape, each
    element the same three factors), so the rewrite is exact for any shapes; the gate conditions only make
    sure it is faster (the gate product is never larger than ``x``)."""
    used: set[int] = set()
    moved: dict[int, onnx.NodeProto] = {}  # id(outer) -> the inner Mul, which now must run just before it
    for outer in view.graph.node:
        found = None if id(outer) in used else _gate_chain(view, outer)
        if found is None or id(found[0]) in used:
            continue
        inner, slot, x_slot = found
        # the inner Mul becomes the gate product a*b under a new output name; the outer one reads x and it
        product = view.fresh_name(f"{outer.output[0]}__gate")
        x, a, b = inner.input[x_slot], inner.input[1 - x_slot], outer.input[1 - slot]
        inner.input[0], inner.input[1] = a, b
        inner.output[0] = product
        outer.input[0], outer.input[1] = x, product
        used |= {id(inner), id(outer)}
        moved[id(outer)] = inner
    if moved:  # b may be computed after the inner Mul's old place: each product goes just before its reader
        inners = {id(n) for n in moved.values()}
        order = [
            m for n in view.graph.node if id(n) not in inners for m in (moved.get(id(n)), n) if m is not None
        ]
        del view.graph.node[:]
        view.graph.node.extend(order)
    return len(moved)


# -- mean over channels -> matmul ---------------------------------------------------------------------
def channel_mean_width(view: EditableGraph, node: onnx.NodeProto) -> int | None:
    """The channel count C when ``node`` is a keepdims ReduceMean over axis 1 of a 4-D float tensor of known C."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or _attr(node, "keepdims", 1) != 1:
        return None
    shape = view.shape(node.input[0])
    axes = _reduce_axes(view, node)
    if shape is None or len(shape) != 4 or axes is None or [a % 4 for a in axes] != [1]:
        return None
    if view.types.get(node.input[0]) != onnx.TensorProto.FLOAT or not isinstance(shape[1], int):
        return None
    return shape[1] if shape[1] > 0 else None


def channel_mean_to_matmul(view: EditableGraph) -> int:
    """``ReduceMean(x, axes=[1], keepdims=1)`` on (N, C, H, W) -> ``Reshape(MatMul(1/C row, Reshape(x)))``."""
    changed = 0
    make = onnx.helper.make_node
    for node in list(view.graph.node):
        channels = channel_mean_width(view, node)
        if channels is None:
            continue
        x, out = node.input[0], node.output[0]
        constants = {
            "flat": np.array([0, channels, -1], np.int64),
            "row": np.full((1, channels), 1.0 / channels, np.float32),
            "zero": np.array([0], np.int64),
            "one": np.array([1], np.int64),
            "two": np.array([2], np.int64),
            "four": np.array([4], np.int64),
        }
        n = view.add_constants(out, constants)
        n.update(
            {key: view.fresh_name(f"{out}__{key}") for key in ("rows", "mean", "shape", "n", "hw", "to")}
        )
        nodes = [  # (N, C, H*W) rows, one (1, C) @ (C, H*W) product per image, back to (N, 1, H, W)
            make("Reshape", [x, n["flat"]], [n["rows"]], name=n["rows"]),
            make("MatMul", [n["row"], n["rows"]], [n["mean"]], name=n["mean"]),
            make("Shape", [x], [n["shape"]], name=n["shape"]),
            make("Slice", [n["shape"], n["zero"], n["one"]], [n["n"]], name=n["n"]),
            make("Slice", [n["shape"], n["two"], n["four"]], [n["hw"]], name=n["hw"]),
            make("Concat", [n["n"], n["one"], n["hw"]], [n["to"]], name=n["to"], axis=0),
            make("Reshape", [n["mean"], n["to"]], [out], name=f"{out}__back"),
        ]
        view.replace(node, nodes)
        changed += 1
    if changed:
        view.remove_unread()  # the axes constants
    return changed


def _is_channel_mean_matmul(view: EditableGraph, back: onnx.NodeProto) -> str | None:
    """The ``x`` of a ``channel_mean->matmul`` site ending in the Reshape ``back``, exactly as that pass writes it:
    ``Reshape(MatMul(row of 1/C, Reshape(x, [0, C, -1])), Concat(Shape(x)[0:1], [1], Shape(x)[2:4]))``."""
    if back.op_type != "Reshape" or len(back.input) != 2:
        return None
    matmul, target = view.producer.get(back.input[0]), view.producer.get(back.input[1])
    if matmul is None or matmul.op_type != "MatMul" or target is None:
        return None
    row, rows = view.constant(matmul.input[0]), view.producer.get(matmul.input[1])
    if row is None or rows is None or rows.op_type != "Reshape" or row.ndim != 2 or row.shape[0] != 1:
        return None
    channels = row.shape[1]
    flat = view.constant(rows.input[1])
    mean_row = np.full((1, channels), 1.0 / channels, np.float32)
    if flat is None or flat.tolist() != [0, channels, -1] or not np.array_equal(row, mean_row):
        return None
    x = rows.input[0]
    parts = [view.producer.get(name) for name in target.input]
    unit = view.constant(target.input[1]) if len(parts) == 3 else None
    if target.op_type != "Concat" or unit is None or unit.tolist() != [1]:
        return None
    for part, bounds in zip((parts[0], parts[2]), ([[0], [1]], [[2], [4]]), strict=True):
        shape = None if part is None or part.op_type != "Slice" else view.producer.get(part.input[0])
        if shape is None or shape.op_type != "Shape" or shape.input[0] != x or len(part.input) != 3:
            return None
        start, end = view.constant(part.input[1]), view.constant(part.input[2])
        if start is None or end is None or [start.tolist(), end.tolist()] != bounds:
            return None
    return x if view.only_consumer(matmul.output[0]) is back else None


def channel_matmul_to_mean(model: onnx.ModelProto) -> int:
    """Undo ``channel_mean->matmul`` in place: each site becomes ``ReduceMean(x, axes=[1], keepdims=1)`` again.

    The matrix product wins on ONNX Runtime FP32 only. In an INT8 graph ONNX Runtime runs the quantized
    convolutions in NHWC, where the channel mean is a contiguous reduction, and a float MatMul would need its
    input dequantized and transposed back to NCHW (resnet50-cbam ort-int8: 4% slower with it); FP16 and TensorRT
    were not measured with it. The precision stage calls this before converting to FP16 or INT8."""
    view = EditableGraph(model)
    opset = opset_of(model)
    changed = 0
    for back in list(view.graph.node):
        x = _is_channel_mean_matmul(view, back)
        if x is None:
            continue
        back.op_type = "ReduceMean"
        del back.input[:], back.attribute[:]
        back.input.append(x)
        back.attribute.append(onnx.helper.make_attribute("keepdims", 1))
        if opset >= AXES_AS_INPUT:
            back.input.append(view.add_constants(back.output[0], {"axes": np.array([1], np.int64)})["axes"])
        else:
            back.attribute.append(onnx.helper.make_attribute("axes", [1]))
        view.reindex()
        changed += 1
    if changed:
        view.remove_unread()
        del model.graph.value_info[:]
    return changed


def _sites(view: EditableGraph, op_type: str) -> Iterator[onnx.NodeProto]:
    """Each ``op_type`` node, looked up again by its first output as a pass goes: editing the graph (protobuf
    containers) invalidates the nodes a pass held."""
    for out in [n.output[0] for n in view.graph.node if n.op_type == op_type]:
        yield view.producer[out]


ConvWeights = tuple[np.ndarray, np.ndarray | None]
"""A Conv's 4-D weight and its bias (``None`` when it has none)."""


def _conv_weights(view: EditableGraph, conv: onnx.NodeProto) -> ConvWeights | None:
    """The weight and bias of a 2-D ``Conv`` when both are initializers (what a pass may slice), else ``None``."""
    if conv.input[1] not in view.initializers:
        return None
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    if has_bias and conv.input[2] not in view.initializers:
        return None
    weight = view.constant(conv.input[1])
    if weight is None or weight.ndim != 4:
        return None
    return weight, view.constant(conv.input[2]) if has_bias else None


# -- channel split of a convolution -> one convolution per piece --------------------------------------
SPLIT_PIECE_ALIGN = 16
"""Each piece of a split convolution must have a multiple of this many channels: ONNX Runtime's NCHWc block
(8 on AVX2, 16 on AVX-512), so every piece fills whole blocks and the readers' channel ``Concat`` stays blocked."""


def _split_sizes(view: EditableGraph, split: onnx.NodeProto, channels: int) -> list[int] | None:
    """The channel count of each output of a ``Split`` over ``channels``: from its ``split`` input or attribute,
    else ``channels`` divided evenly by the number of outputs (``None`` when uneven or unknown)."""
    if len(split.input) > 1 and split.input[1]:
        value = view.constant(split.input[1])
        if value is None:
            return None  # sizes computed at run time: unknown here
        sizes = [int(v) for v in value.reshape(-1)]
    else:
        listed = _attr(split, "split", None)
        sizes = [int(v) for v in listed] if listed else None  # type: ignore[union-attr]
    if sizes is None:
        parts = len(split.output)
        sizes = [channels // parts] * parts if channels % parts == 0 else None
    if sizes is None or len(sizes) != len(split.output) or sum(sizes) != channels or min(sizes) <= 0:
        return None
    return sizes


def _pointwise_chain(view: EditableGraph, conv_out: str, end: str) -> list[onnx.NodeProto] | None:
    """The nodes from ``conv_out`` to ``end`` when they are nothing, one activation, or SiLU as
    ``Mul(c, Sigmoid(c))``, each value read only inside the chain: what can be computed once per piece."""
    if end == conv_out:
        return []
    last = view.producer.get(end)
    if last is None or last.domain not in ("", "ai.onnx"):
        return None
    if last.op_type in ACTIVATIONS and list(last.input) == [conv_out]:
        return [last] if view.only_consumer(conv_out) is last else None
    if last.op_type != "Mul" or len(last.input) != 2 or conv_out not in last.input:
        return None
    sigmoid = view.producer.get(last.input[1] if last.input[0] == conv_out else last.input[0])
    if sigmoid is None or sigmoid.op_type != "Sigmoid" or list(sigmoid.input) != [conv_out]:
        return None
    readers = view.consumers.get(conv_out, [])
    if len(readers) != 2 or conv_out in view.outputs or view.only_consumer(sigmoid.output[0]) is not last:
        return None
    return [sigmoid, last]


def _conv_under(view: EditableGraph, source: str) -> onnx.NodeProto | None:
    """The ``Conv`` that ``source`` is, or that one activation or a SiLU ``Mul`` applies to."""
    node = view.producer.get(source)
    if node is not None and node.op_type in ACTIVATIONS:
        node = view.producer.get(node.input[0])
    elif node is not None and node.op_type == "Mul" and len(node.input) == 2:
        node = next(
            (view.producer[i] for i in node.input if getattr(view.producer.get(i), "op_type", "") == "Conv"),
            None,
        )
    return node if node is not None and node.op_type == "Conv" and node.domain in ("", "ai.onnx") else None


def _split_conv(
    view: EditableGraph, split: onnx.NodeProto
) -> tuple[onnx.NodeProto, ConvWeights, list, list[int]] | None:
    """For a channel ``Split`` of ``act(Conv(x))``: the Conv, its weights, the activation nodes, the piece sizes."""
    if split.domain not in ("", "ai.onnx") or _attr(split, "axis", 0) not in (1, -3):
        return None
    source = split.input[0]
    shape = view.shape(source)
    if view.only_consumer(source) is not split or shape is None or len(shape) != 4:
        return None
    conv = _conv_under(view, source)
    if (
        conv is None
        or _attr(conv, "group", 1) != 1
        or view.types.get(conv.output[0]) != onnx.TensorProto.FLOAT
    ):
        return None
    weights = _conv_weights(view, conv)
    if weights is None:
        return None
    chain = _pointwise_chain(view, conv.output[0], source)
    sizes = _split_sizes(view, split, int(weights[0].shape[0]))
    if chain is None or sizes is None or any(size % SPLIT_PIECE_ALIGN for size in sizes):
        return None
    return conv, weights, chain, sizes


def channel_split_to_convs(view: EditableGraph) -> int:
    """``Split(act(Conv(x, W, B)), axis=1)`` -> one ``act(Conv(x, W[rows], B[rows]))`` per piece.

    Each output channel of a convolution depends only on its own rows of ``W`` and ``B``, and the activation
    (none, one element-wise activation, or SiLU) acts per element, so each piece is computed from the same
    values as before: exact. YOLOv8's C2f blocks split their first convolution's output in two; ONNX Runtime
    has no blocked ``Split``, so each split cost the full tensor reordered out of NCHWc and its pieces back in.
    With one convolution per piece every piece stays blocked (yolov8s: 24 + 32 reorders -> 1 + 4)."""
    changed = 0
    for split in _sites(view, "Split"):
        found = _split_conv(view, split)
        if found is None:
            continue
        conv, (weight, bias), chain, sizes = found  # the old conv and chain stay until nothing reads them
        nodes: list[onnx.NodeProto] = []
        bounds = np.cumsum([0, *sizes])
        for lo, hi, piece in zip(bounds[:-1], bounds[1:], split.output, strict=True):
            values = {"weight": np.ascontiguousarray(weight[lo:hi])}
            if bias is not None:
                values["bias"] = np.ascontiguousarray(bias[lo:hi])
            out = view.fresh_name(f"{piece}__conv") if chain else piece
            nodes.append(_node("Conv", [conv.input[0], *view.add_constants(out, values).values()], out, conv))
            if len(chain) == 2:  # SiLU: Mul(c, Sigmoid(c))
                gate = view.fresh_name(f"{piece}__sigmoid")
                nodes += [_node("Sigmoid", [out], gate), _node("Mul", [out, gate], piece)]
            elif chain:
                nodes.append(_node(chain[0].op_type, [out], piece, chain[0]))
        view.replace(split, nodes)
        changed += 1
    if changed:
        view.remove_unread()  # the whole convolutions and activations, and their weights
    return changed


def _node(op: str, inputs: list[str], output: str, like: onnx.NodeProto | None = None) -> onnx.NodeProto:
    """A node computing ``output``, named after it, with the attributes of ``like``."""
    node = onnx.helper.make_node(op, inputs, [output], name=f"{output}__node")
    if like is not None:
        node.attribute.extend(like.attribute)
    return node


# -- softmax over channels into a 1x1 convolution -> softmax over the last axis and a matrix product ------
SOFTMAX_SINGLE_AXIS = 13
"""The opset from which Softmax normalises over its one axis (before, it flattened every axis from it on)."""
TO_CHANNELS_LAST = [0, 2, 3, 1]


def _pointwise_weights(view: EditableGraph, conv: onnx.NodeProto) -> ConvWeights | None:
    """The weights of a plain 1x1 convolution (no stride, padding, dilation or groups), else ``None``."""
    weights = _conv_weights(view, conv)
    if weights is None or weights[0].shape[2:] != (1, 1) or _attr(conv, "group", 1) != 1:
        return None
    plain = {"strides": 1, "dilations": 1, "pads": 0}
    if any(any(v != unit for v in _attr(conv, key, [unit])) for key, unit in plain.items()):  # type: ignore[union-attr]
        return None
    return weights if _attr(conv, "auto_pad", b"NOTSET") in (b"NOTSET", b"VALID") else None


def _channel_softmax(view: EditableGraph, conv: onnx.NodeProto) -> tuple[onnx.NodeProto, ConvWeights] | None:
    """The Softmax over axis 1 of a 4-D tensor that only ``conv`` (a plain 1x1 convolution) reads, and the
    convolution's weights. The weights are read last: most convolutions read no softmax."""
    softmax = view.producer.get(conv.input[0])
    if softmax is None or softmax.op_type != "Softmax" or softmax.domain not in ("", "ai.onnx"):
        return None
    shape = view.shape(softmax.input[0])
    if shape is None or len(shape) != 4 or _attr(softmax, "axis", -1) not in (1, -3):
        return None
    if view.only_consumer(softmax.output[0]) is not conv or opset_of(view.model) < SOFTMAX_SINGLE_AXIS:
        return None
    if view.types.get(softmax.output[0]) != onnx.TensorProto.FLOAT or conv.domain not in ("", "ai.onnx"):
        return None
    weights = _pointwise_weights(view, conv)
    return None if weights is None else (softmax, weights)


def _back_to_channels(view: EditableGraph, last: str, conv: onnx.NodeProto) -> onnx.NodeProto:
    """(N, H, W, O) -> the convolution's (N, O, H, W): a Reshape where that moves only a size-1 axis (O = 1, as
    the DFL's, :func:`_reshape_target`), else a Transpose."""
    out, perm = conv.output[0], [0, 3, 1, 2]
    dims = view.shape(out)
    if dims is not None and len(dims) == 4:
        target = _reshape_target((dims[0], dims[2], dims[3], dims[1]), perm)
        if target is not None:
            shape = view.add_constants(out, {"shape": np.array(target, np.int64)})["shape"]
            return _node("Reshape", [last, shape], out)
    node = _node("Transpose", [last], out)
    node.attribute.append(onnx.helper.make_attribute("perm", perm))
    return node


def channel_softmax_to_last_axis(view: EditableGraph) -> int:
    """``Conv1x1(Softmax(x, axis=1), W, B)`` on 4-D ``x`` -> ``MatMul(Softmax(Transpose(x), axis=-1), W^T) + B``,
    back in (N, O, H, W).

    The same softmax of the same K values per (n, h, w), and the same K-term weighted sum; only the summation
    order may differ (FP32 rounding). ONNX Runtime runs a softmax over a non-last axis by transposing around a
    softmax over the last one, slowly: YOLOv8's DFL (``Transpose -> Softmax(axis=1) -> Conv(16 -> 1)`` on
    (1, 16, 4, 8400)) took 9.3 ms on 2 AVX-512 cores, against 0.9 ms in this form. A Transpose feeding the
    softmax (DFL's) is folded into the new one."""
    changed = 0
    for conv in _sites(view, "Conv"):
        found = _channel_softmax(view, conv)
        if found is None:
            continue
        out = conv.output[0]
        softmax, (weight, bias) = found
        source, perm = softmax.input[0], TO_CHANNELS_LAST
        before = view.producer.get(source)
        if before is not None and before.op_type == "Transpose" and view.only_consumer(source) is softmax:
            inner = [int(a) for a in _attr(before, "perm", [])]  # type: ignore[union-attr]
            if sorted(inner) == [0, 1, 2, 3]:
                source, perm = before.input[0], [inner[a] for a in TO_CHANNELS_LAST]
        values = {"weight": np.ascontiguousarray(weight[:, :, 0, 0].T)}
        if bias is not None:
            values["bias"] = bias
        names = view.add_constants(out, values)
        transpose = _node("Transpose", [source], view.fresh_name(f"{out}__channels_last"))
        transpose.attribute.append(onnx.helper.make_attribute("perm", perm))
        softmax_last = _node("Softmax", [transpose.output[0]], view.fresh_name(f"{out}__softmax"))
        softmax_last.attribute.append(onnx.helper.make_attribute("axis", -1))
        matmul = _node("MatMul", [softmax_last.output[0], names["weight"]], view.fresh_name(f"{out}__matmul"))
        nodes = [transpose, softmax_last, matmul]
        if "bias" in names:
            nodes.append(_node("Add", [matmul.output[0], names["bias"]], view.fresh_name(f"{out}__bias")))
        last = nodes[-1].output[0]
        nodes.append(_back_to_channels(view, last, conv))
        view.replace(conv, nodes)
        changed += 1
    if changed:
        view.remove_unread()  # the old softmax and the transpose folded into the new one
    return changed


PASSES: tuple[GraphPass, ...] = (
    GraphPass("expand->broadcast", drop_broadcast_expand),
    GraphPass("reduce->global_pool", reduce_to_global_pool),
    GraphPass("pooled_gemm->conv1x1", pooled_gemm_to_conv),
    GraphPass("pooled_instance_norm->bias", pooled_instance_norm_to_bias),
    GraphPass("unit_transpose->reshape", unit_transpose_to_reshape),
    GraphPass("gate_chain->gate_product", gate_chain_to_gate_product),
    GraphPass("channel_mean->matmul", channel_mean_to_matmul),
    GraphPass("channel_split->convs", channel_split_to_convs),
    GraphPass("channel_softmax->last_axis", channel_softmax_to_last_axis),
)


def apply_graph_passes(model: onnx.ModelProto, passes: tuple[GraphPass, ...] = PASSES) -> dict[str, int]:
    """Run ``passes`` on ``model`` in place, in order; return the sites changed per pass (0s left out).

    Stale ``value_info`` is dropped where a pass changed the graph (runtimes infer shapes again on load).
    """
    applied: dict[str, int] = {}
    if not passes:
        return applied  # no shape inference for nothing
    view = EditableGraph(model)
    for graph_pass in passes:
        count = graph_pass.apply(view)
        if count:
            applied[graph_pass.name] = count
            view.reindex()
    if applied:
        del model.graph.value_info[:]
    return applied
