"""Narrow convolutions packed into block-diagonal ones, for ONNX Runtime's INT8 convolution kernels.

EMA runs its 3x3 convolution on the feature map folded into groups: ``x.reshape(N * G, C / G, H, W)``, so on
ResNet-50's first stage a convolution of 8 input and 8 output channels over a batch of 32 maps. ONNX
Runtime's ``QLinearConv`` runs such a narrow convolution far below its speed on wide ones. Measured with ORT's
profiler (``ort-int8`` resnet50-ema, 224x224, 2 threads, AMD EPYC with AVX-512 and VNNI, 2026-12-02): 1.0 ms
for the (32, 8, 56, 56) convolution (58 M multiply-adds), against 0.14 ms for the backbone's (1, 64, 56, 56)
3x3 convolution (116 M).

:func:`pack_narrow_convs` runs ``k`` consecutive images of the batch as one image of ``k`` times the channels,
through a block-diagonal weight that holds ``k`` copies of the original on its diagonal and zeros elsewhere::

    Reshape(x, [N/k, k*C_in, 0, 0]) -> Conv(block-diagonal W, bias tiled k times) -> Reshape(y, [N, C_out, 0, 0])

Exact by construction: output channel ``j`` of block ``i`` sums the same products as before plus products
with weights that are exactly zero, and a ``Reshape`` that splits the batch axis keeps every element in place
(``0`` copies H and W, so dynamic H/W are kept). In INT8 it is the same integer arithmetic: per-output-channel
weight scales come from the same non-zero values and the zeros quantize to 0. Calibration runs the FP32 graph,
where the packed convolution sums in another order, so a few activation scales may differ in their last bits
(resnet50-ema ``ort-int8``, 50 images: cosine vs PyTorch 0.99388 unpacked, 0.99384 packed). The cost is ``k``
times the multiply-adds, on a kernel that runs several times faster wide: 0.35 ms for the packed
(16, 16, 56, 56) convolution above. Whole models, ``ort-int8`` on the same CPU
(``benchmarks/results/int8_narrow_convs.md``): resnet50-ema 8%, resnet18-ema 48% (4- and 2-channel groups),
yolov8n-ema 12% and yolov8s-ema 5% faster. Packing to 32 channels gained no more.

The pass needs a batch size divisible by ``k`` (it never pads), constant weights, ``group == 1`` and a 4-D
input; anything else is left as it is. The batch is either static, or provably a multiple of a constant: the
input comes from a ``Reshape`` whose target shape starts with ``Mul(n, c)`` for a constant integer ``c``, as the
dynamic export of EMA's ``x.reshape(b * groups, ...)`` writes it. ``k`` then divides ``c``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from attn_deploy.export.ort_passes import FLOAT_TYPES, EditableGraph


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(helper.get_attribute_value(attr))
    return default


def _packing(view: EditableGraph, node: onnx.NodeProto, min_channels: int) -> int | None:
    """How many images to pack for ``node`` (>= 2), or ``None`` when it is not a packable narrow convolution."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or _attribute(node, "group", 1) != 1:
        return None
    weight = view.constant(node.input[1]) if len(node.input) > 1 else None
    shape = view.shape(node.input[0])
    if weight is None or weight.ndim != 4 or shape is None or len(shape) != 4:
        return None
    if len(node.input) > 2 and node.input[2] and view.constant(node.input[2]) is None:
        return None  # a runtime bias
    multiple = _batch_multiple(view, node.input[0])
    if multiple is None or view.types.get(node.input[0]) not in FLOAT_TYPES:
        return None
    narrowest, widest = sorted(weight.shape[:2])
    if widest >= min_channels:
        return None
    wanted = math.ceil(min_channels / narrowest)
    k = max(d for d in range(1, wanted + 1) if multiple % d == 0)  # never more images than the batch holds
    return k if k >= 2 else None


SHAPE_ONLY = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Identity"})


def _batch_multiple(view: EditableGraph, x: str) -> int | None:
    """A number the batch size of ``x`` is always a multiple of: the batch itself when static, else the constant
    ``c`` of ``Reshape(t, Concat(Mul(n, c), ...))`` that made ``x``; ``None`` when neither is known."""
    batch = (view.shape(x) or (None,))[0]
    if isinstance(batch, int):
        return batch if batch > 0 else None
    reshape = view.producer.get(x)
    target = (
        view.producer.get(reshape.input[1]) if reshape is not None and reshape.op_type == "Reshape" else None
    )
    if target is None or target.op_type != "Concat" or view.shape(target.input[0]) != (1,):
        return None
    node = view.producer.get(target.input[0])  # the leading target dim: one value, a product with a constant?
    while node is not None and node.op_type in SHAPE_ONLY:
        node = view.producer.get(node.input[0])
    if node is None or node.op_type != "Mul":
        return None
    for name in node.input:
        value = view.constant(name)
        factor = (
            int(value.reshape(-1)[0])
            if value is not None and value.size == 1 and value.dtype.kind in "iu"
            else 0
        )
        if factor > 0:
            return factor
    return None


def _block_diagonal(weight: np.ndarray, k: int) -> np.ndarray:
    c_out, c_in = weight.shape[:2]
    packed = np.zeros((k * c_out, k * c_in, *weight.shape[2:]), weight.dtype)
    for i in range(k):
        packed[i * c_out : (i + 1) * c_out, i * c_in : (i + 1) * c_in] = weight
    return packed


def pack_narrow_convs(view: EditableGraph, min_channels: int) -> int:
    """Pack each convolution narrower than ``min_channels`` (input and output) over its batch; a graph pass
    (:func:`~attn_deploy.export.ort_passes.apply_graph_passes`).

    Returns how many convolutions were packed (0 when ``min_channels`` is 0 or nothing qualifies). The
    convolution keeps its node name, so name-based INT8 settings (excluded, fallback and sensitive nodes)
    still find it.
    """
    if min_channels <= 0:
        return 0
    changed = 0
    for node in list(view.graph.node):
        k = _packing(view, node, min_channels)
        if k is None:
            continue
        weight = view.constant(node.input[1])
        assert weight is not None  # checked by _packing
        c_out, c_in = weight.shape[:2]
        x, y = node.input[0], node.output[0]
        values = {  # -1: the batch, static or not, divided by k and multiplied back
            "weight": _block_diagonal(weight, k),
            "packed_shape": np.array([-1, k * c_in, 0, 0], np.int64),
            "shape": np.array([-1, c_out, 0, 0], np.int64),
        }
        bias = view.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None:
            values["bias"] = np.tile(bias, k)
        names = view.add_constants(y, values)
        packed_x, packed_y = view.fresh_name(f"{y}__packed_in"), view.fresh_name(f"{y}__packed_out")
        conv = onnx.NodeProto()
        conv.CopyFrom(node)  # same name, attributes (strides, pads, dilations) and domain
        del conv.input[:], conv.output[:]
        conv.input.extend([packed_x, names["weight"], *([names["bias"]] if bias is not None else [])])
        conv.output.append(packed_y)
        view.replace(
            node,
            [
                helper.make_node("Reshape", [x, names["packed_shape"]], [packed_x], name=packed_x),
                conv,
                helper.make_node("Reshape", [packed_y, names["shape"]], [y], name=f"{y}__unpacked"),
            ],
        )
        changed += 1
    if changed:
        view.remove_unread()  # the unpacked weights and biases
    return changed
