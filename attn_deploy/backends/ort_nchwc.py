"""Channel gates in ONNX Runtime's blocked (NCHWc) layout: a session-time rewrite of the graph ORT optimised.

On x86 CPUs with AVX2 or AVX-512, ORT's CPU provider runs convolutions in the NCHWc layout (channels in blocks of
8 or 16, innermost). It blocks no broadcast ``Mul`` (``onnxruntime/core/optimizer/nchwc_transformer.cc`` keeps
``TransformBinary`` to ``Add``/``Sum``: its ``Mul`` "does not vectorize well for broadcasting a NCHWc sized channel
block"), so every squeeze/excite-style gate ``y * g`` with ``g`` of shape (N, C, 1, 1) costs a ``ReorderOutput``
of ``y``, the multiply, the residual ``Add`` and ``Relu`` that no convolution absorbs any more, and a
``ReorderInput`` of the result: 4-5 passes over the full tensor where resnet50-none spends none.

ORT's own NCHWc convolution (``com.microsoft.nchwc:Conv``, ``contrib_ops/cpu/nchwc_ops.cc``) reads its filter
as a plain input (``W->Data<float>()``; ORT reorders constant filters once, in the optimiser) and adds an
optional ``Sum`` input before its activation. A 1x1 depthwise convolution whose (C, 1, 1, 1) filter *is* the
gate computes ``act(y * g + r)`` in one blocked pass: a depthwise 1x1 filter in ORT's blocked filter order
(OIHWBo) is the C values in channel order, whatever the block size, which is exactly the gate's memory. A batch
of N static images runs as one image of N*C channels (the blocked memory of (N, C, H, W) is that of
(1, N*C, H, W)), each channel with its own image's gate.

The rewrite is exact (the same product and sum, each rounded once; resnet50-se's outputs are bit-identical on
AVX-512) and applies to ORT's optimised graph only, which is specific to the CPU that made it: it runs when a
session is created, on that CPU, never on a shipped file (:func:`attn_deploy.backends.ort.make_session`).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

NCHWC = "com.microsoft.nchwc"
CHANNEL_ALIGN = 16
"""Channels handled: multiples of 16 fill whole blocks on AVX2 (8) and AVX-512 (16), so no blocked tensor here
carries padding channels and no block size needs to be known."""

Dim = int | str | None
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class GateSite:
    """``act(Mul(y, gate) [+ residual])`` in ORT's graph, with the blocked sources of its operands."""

    nodes: tuple[onnx.NodeProto, ...]  # Mul [, Add] [, Relu], in graph order
    y_blocked: str
    gate: str  # the gate tensor whose memory is the (N*C, 1, 1, 1) filter
    residual_blocked: str | None
    relu: bool
    batch: int
    channels: int


def shapes_of(model: onnx.ModelProto) -> dict[str, Shape]:
    """Every tensor's shape that ONNX shape inference finds in ``model`` (ints, dim_param names, or None).

    Inference runs on a copy that declares the large initializers by type and shape only: inferring on the model
    itself copies its weights (0.6 s for resnet50, 0.003 s this way). Small ones (shape constants) stay whole.
    """
    graph = model.graph
    small = [t for t in graph.initializer if int(np.prod(t.dims)) <= 64]
    large = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in graph.initializer
        if int(np.prod(t.dims)) > 64
    ]
    light = helper.make_model(
        helper.make_graph(
            list(graph.node),
            graph.name,
            [*graph.input, *large],
            list(graph.output),
            small,
            value_info=list(graph.value_info),
        ),
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
    )
    inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    shapes: dict[str, Shape] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
            )
    return shapes


def has_channel_gates(model: onnx.ModelProto, shapes: Mapping[str, Shape]) -> bool:
    """Whether ``model`` multiplies a tensor by a channel gate of the shapes :func:`fuse_blocked_gates` takes
    (a cheap test on the exported graph, before ORT optimises it)."""
    return any(
        _gated_operand(node.input, shapes) is not None
        for node in model.graph.node
        if node.domain in ("", "ai.onnx") and node.op_type == "Mul" and len(node.input) == 2
    )


def _gated_operand(
    inputs: Sequence[str], shapes: Mapping[str, Shape], blocked: Container[str] | None = None
) -> tuple[str, str] | None:
    """(y, gate) of a ``Mul``'s two inputs: y of shape (N, C, H, W) with N and C static, C a multiple of
    :data:`CHANNEL_ALIGN`, and in ``blocked`` if given, and the gate of static shape (N, C, 1, 1); else None."""
    for y, gate in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
        y_shape = shapes.get(y)
        if y_shape is None or len(y_shape) != 4 or (blocked is not None and y not in blocked):
            continue
        batch, channels = y_shape[0], y_shape[1]
        if (
            isinstance(batch, int)
            and isinstance(channels, int)
            and batch > 0
            and channels % CHANNEL_ALIGN == 0
            and shapes.get(gate) == (batch, channels, 1, 1)
        ):
            return y, gate
    return None


def fuse_blocked_gates(optimized: onnx.ModelProto, shapes: Mapping[str, Shape]) -> int:
    """Rewrite, in place, each channel gate of ORT's optimised graph that :func:`_gate_site` accepts as one
    gate-weighted depthwise NCHWc convolution; the number of gates rewritten.

    ``shapes``: tensor shapes of the model ORT optimised (:func:`shapes_of`); ORT keeps the names of the tensors
    a gate reads and writes. A site whose shapes are unknown or not fully static where it matters is left as is.
    """
    graph = optimized.graph
    blocked = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.domain == NCHWC
        and node.op_type == "ReorderOutput"
        and not _attr(node, "channels_last", 0)
        and _attr(node, "channels", 0) % CHANNEL_ALIGN == 0
    }
    rewritten = 0
    for name in [n.output[0] for n in graph.node if n.domain in ("", "ai.onnx") and n.op_type == "Mul"]:
        mul = _producer(graph, name)
        site = _gate_site(graph, mul, blocked, shapes) if mul is not None else None
        if site is not None:
            blocked[site.nodes[-1].output[0]] = _rewrite(graph, site)
            rewritten += 1
    if rewritten:
        _drop_unread_reorders(graph)
    return rewritten


def _gate_site(
    graph: onnx.GraphProto, mul: onnx.NodeProto, blocked: Mapping[str, str], shapes: Mapping[str, Shape]
) -> GateSite | None:
    """The gate site rooted at ``mul``, or None.

    Accepted: ``Mul(y, g)`` with ``y`` the ``ReorderOutput`` of a blocked tensor (or an earlier site's output) of
    shape (N, C, H, W), N and C static, C a multiple of :data:`CHANNEL_ALIGN`, and ``g`` of static shape
    (N, C, 1, 1); then, if the product's only reader is an ``Add`` of a blocked tensor of y's exact shape, that
    residual sum; then, if the result's only reader is a ``Relu``, that activation.
    """
    if len(mul.input) != 2:
        return None
    operands = _gated_operand(mul.input, shapes, blocked)
    if operands is None:
        return None
    y, gate = operands
    y_shape = shapes[y]
    batch, channels = int(y_shape[0] or 0), int(y_shape[1] or 0)
    nodes = [mul]
    residual = None
    add = _only_reader(graph, mul.output[0])
    if add is not None and add.op_type == "Add" and add.domain in ("", "ai.onnx"):
        other = add.input[1] if add.input[0] == mul.output[0] else add.input[0]
        if other != mul.output[0] and other in blocked and shapes.get(other) == y_shape:
            nodes.append(add)
            residual = blocked[other]
    relu = _only_reader(graph, nodes[-1].output[0])
    take_relu = relu is not None and relu.op_type == "Relu" and relu.domain in ("", "ai.onnx")
    if take_relu:
        assert relu is not None
        nodes.append(relu)
    # a (N, C, 1, 1) gate has the same memory blocked (C a multiple of the block) as not: read the blocked one
    return GateSite(tuple(nodes), blocked[y], blocked.get(gate, gate), residual, take_relu, batch, channels)


def _rewrite(graph: onnx.GraphProto, site: GateSite) -> str:
    """Replace ``site`` by the gate-weighted depthwise convolution; the name of its blocked output."""
    tail = site.nodes[-1].output[0]
    out = _fresh(graph, f"{tail}_nchwc")
    width = site.batch * site.channels
    new: list[onnx.NodeProto] = []

    def reshaped(tensor: str, dims: Sequence[int], suffix: str) -> str:
        shape = _fresh(graph, f"{tail}_{suffix}_shape")
        graph.initializer.append(numpy_helper.from_array(np.array(dims, dtype=np.int64), shape))
        result = _fresh(graph, f"{tail}_{suffix}")
        new.append(helper.make_node("Reshape", [tensor, shape], [result]))
        return result

    weights = reshaped(site.gate, [width, 1, 1, 1], "gate_filter")
    x, residual = site.y_blocked, site.residual_blocked
    if site.batch > 1:  # N images as one of N*C channels: the same blocked memory
        x = reshaped(x, [1, width, 0, 0], "x_one_image")
        residual = reshaped(residual, [1, width, 0, 0], "sum_one_image") if residual else None
    conv_out = out if site.batch == 1 else _fresh(graph, f"{tail}_nchwc_one_image")
    conv = helper.make_node(
        "Conv",
        [x, weights, "", residual] if residual else [x, weights],
        [conv_out],
        domain=NCHWC,
        group=width,
        kernel_shape=[1, 1],
        strides=[1, 1],
        pads=[0, 0, 0, 0],
        dilations=[1, 1],
        auto_pad="NOTSET",
    )
    if site.relu:
        conv.attribute.append(helper.make_attribute("activation", "Relu"))
    new.append(conv)
    if site.batch > 1:
        graph.initializer.append(
            numpy_helper.from_array(np.array([site.batch, site.channels, 0, 0], np.int64), f"{out}_shape")
        )
        new.append(helper.make_node("Reshape", [conv_out, f"{out}_shape"], [out]))
    plain_readers = False
    for reader in _readers(graph, tail):
        if (
            reader.domain == NCHWC
            and reader.op_type == "ReorderInput"
            and not _attr(reader, "channels_last", 0)
        ):
            for after in _readers(graph, reader.output[0]):  # read the blocked result itself
                after.input[:] = [out if i == reader.output[0] else i for i in after.input]
        else:
            plain_readers = True
    if plain_readers or tail in {o.name for o in graph.output}:  # they keep reading the NCHW tensor
        new.append(
            helper.make_node(
                "ReorderOutput", [out], [tail], domain=NCHWC, channels=site.channels, channels_last=0
            )
        )
    position = list(graph.node).index(site.nodes[-1])  # every operand of the site exists by its last node
    for node in site.nodes:
        graph.node.remove(node)
    position -= len(site.nodes) - 1
    for offset, node in enumerate(new):
        graph.node.insert(position + offset, node)
    return out


def _drop_unread_reorders(graph: onnx.GraphProto) -> None:
    """Remove reorders whose output nothing reads any more (the copies the rewrite made unnecessary)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for node in graph.node for i in node.input} | outputs
        dead = [
            n
            for n in graph.node
            if n.domain == NCHWC
            and n.op_type in ("ReorderInput", "ReorderOutput")
            and n.output[0] not in read
        ]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _producer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if tensor in n.output), None)


def _readers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if tensor in n.input]


def _only_reader(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    """The one node reading ``tensor`` when nothing else (another node, a graph output) does."""
    readers = _readers(graph, tensor)
    if len(readers) != 1 or tensor in {o.name for o in graph.output}:
        return None
    return readers[0]


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    """An integer attribute of ``node``, or ``default``."""
    for attribute in node.attribute:
        if attribute.name == name:
            return int(helper.get_attribute_value(attribute))
    return default


def _fresh(graph: onnx.GraphProto, base: str) -> str:
    """``base``, or ``base_<k>``: a name no node output or initializer of ``graph`` has."""
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name
