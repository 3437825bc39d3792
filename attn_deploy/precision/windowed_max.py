"""``GlobalMaxPool`` over a static H x W as ``MaxPool`` with an H x W window, for ONNX Runtime's INT8 graphs.

In a Q/DQ graph ONNX Runtime runs ``MaxPool`` on uint8 (``NhwcMaxPool``; the quantizer gives its output the
input's scale), but ``GlobalMaxPool`` only in float, behind a ``DequantizeLinear`` of the whole feature map
(0.13-0.17 ms at (1, 256, 56, 56) on an AMD EPYC with AVX-512 and VNNI). CBAM's channel attention max-pools
every block's output this way. Measured on that CPU, ``ort-int8`` (``benchmarks/results/int8_windowed_max.md``,
20 interleaved runs): resnet50-cbam 14.6 -> 13.2 ms, resnet18-cbam 5.09 -> 4.71 ms, yolov8n-cbam 26.0 -> 25.2 ms
at the same cosine vs PyTorch (0.99690 -> 0.99687 and equal); 40-round A/Bs: resnet50-cbam median per-round
ratio 1.12 (IQR 1.10-1.14), yolov8s-cbam 1.005 (IQR 0.99-1.04: its three pools are a small share).

Exact: a max over a window that covers the whole map, without padding, is the global max; and the max of
quantized values is the quantized max (quantization is monotonic). The pooled values now carry the input's
scale instead of a range calibrated on the pooled tensor alone, hence the small change in cosine. A dynamic H
or W has no window size, and such pools stay.
"""

from __future__ import annotations

import onnx
from onnx import helper

from attn_deploy.export.ort_passes import FLOAT_TYPES, EditableGraph


def window_global_max_pools(model: onnx.ModelProto) -> int:
    """Turn each 4-D float ``GlobalMaxPool`` with a static H and W into ``MaxPool(kernel_shape=[H, W])``, in
    place; return how many."""
    view = EditableGraph(model)
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
    if changed:
        del model.graph.value_info[:]
    return changed
