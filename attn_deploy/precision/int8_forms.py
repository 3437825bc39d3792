"""Forms of two ops that ONNX Runtime runs on uint8 in a Q/DQ graph, where their usual form needs a
``DequantizeLinear`` of the whole feature map in front of a float kernel. Both are exact by construction.

``GlobalMaxPool`` over a static H x W as ``MaxPool`` with an H x W window (:func:`window_global_max_pools`).
ONNX Runtime runs ``MaxPool`` on uint8 (``NhwcMaxPool``; the quantizer gives its output the input's scale) but
``GlobalMaxPool`` only in float, behind a dequantize of the map (0.13-0.17 ms at (1, 256, 56, 56) on an AMD
EPYC with AVX-512 and VNNI). CBAM's channel attention max-pools every block's output this way. A max over a
window that covers the whole map, without padding, is the global max, and the max of quantized values is the
quantized max (quantization is monotonic); the pooled values now carry the input's scale instead of a range
calibrated on the pooled tensor alone. A dynamic H or W has no window size, and such pools stay.

The mean over channels as a 1x1 convolution with weights 1/C (:func:`channel_means_to_conv`). CBAM's spatial
attention takes ``mean(x, dim=1)``; as ``ReduceMean`` it runs in float behind a dequantize of the map, as a
convolution with constant weights it is quantized like every other one and runs as ``QLinearConv`` on the
uint8 map. The weights quantize exactly (one output channel, every weight the same: 64 steps of 1/(64 C)).
Exact in real arithmetic (1/C rounds once in FP32 unless C is a power of two). On ONNX Runtime FP32 the export
runs the same mean as a ``MatMul`` (``export/ort_passes.py``, ``channel_mean->matmul``), which the precision
stage turns back into ``ReduceMean`` first.

Measured on the AVX-512 VNNI EPYC, ``ort-int8`` p50 (``benchmarks/results/int8_cbam_forms.md``, 20 interleaved
runs, 50 evaluation images), neither / windowed max pools / both: resnet50-cbam 13.8 / 12.5 / 11.8 ms (17%
faster in all), resnet18-cbam 5.73 / 5.46 / 5.25 ms, yolov8s-cbam 36.3 / 35.8 / 35.6 ms, yolov8n-cbam 19.7 / 19.6 /
19.5 ms, at the same cosine vs PyTorch (resnet50-cbam 0.99686 / 0.99690 / 0.99687, the others equal). A 40-round
A/B of resnet50-cbam: windowed max pools alone 1.12 (IQR 1.10-1.14), the mean as conv on top 1.085 (IQR
1.05-1.11); of yolov8s-cbam, windowed max pools 1.005 (IQR 0.99-1.04: its three sites are a small share).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from attn_deploy.export.ort_passes import FLOAT_TYPES, EditableGraph, channel_mean_width


def window_global_max_pools(view: EditableGraph) -> int:
    """Turn each 4-D float ``GlobalMaxPool`` with a static H and W into ``MaxPool(kernel_shape=[H, W])``; a graph
    pass (:func:`~attn_deploy.export.ort_passes.apply_graph_passes`) returning how many."""
    changed = 0
    for node in view.graph.node:
        if node.op_type != "GlobalMaxPool" or node.domain not in ("", "ai.onnx"):
            continue
        shape = view.shape(node.input[0])
        if shape is None or len(shape) != 4 or view.types.get(node.input[0]) not in FLOAT_TYPES:
            continue
        height, width = shape[2], shape[3]
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            continue
        node.op_type = "MaxPool"
        node.attribute.append(helper.make_attribute("kernel_shape", [height, width]))
        changed += 1
    return changed


def channel_means_to_conv(view: EditableGraph) -> int:
    """Turn each ``ReduceMean(x, axes=[1], keepdims=1)`` of a 4-D float ``x`` with a known channel count C into a
    1x1 ``Conv`` with weights 1/C; a graph pass (:func:`~attn_deploy.export.ort_passes.apply_graph_passes`)
    returning how many."""
    changed = 0
    for node in view.graph.node:
        channels = channel_mean_width(view, node)
        if channels is None:
            continue
        weight = np.full((1, channels, 1, 1), 1.0 / channels, np.float32)
        name = view.add_constants(node.output[0], {"weight": weight})["weight"]
        node.op_type = "Conv"
        del node.input[1:], node.attribute[:]
        node.input.append(name)
        changed += 1
    if changed:
        view.remove_unread()  # the axes constants
    return changed
