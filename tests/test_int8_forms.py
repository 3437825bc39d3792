"""The INT8 graph forms of attn_deploy.precision.int8_forms: exact, and only where they can be.

A max moves no value and rounds nothing, so the windowed pool is compared bit for bit. The channel mean as a
1x1 convolution sums the same values in another order, times 1/C (exact for C = 8): 1e-6 of the largest
magnitude holds for any FP32 kernel (8 terms of O(1) values round to ~1e-7).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from attn_deploy.attention.cbam import CBAM
from attn_deploy.config import Int8Config, load_config
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.export.ort_passes import apply_graph_passes, channel_matmul_to_mean
from attn_deploy.export.pipeline import export_onnx
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.int8 import int8_form_passes, quantize_int8


def _forms(model: onnx.ModelProto) -> dict[str, int]:
    """The INT8 forms of a config with both pool forms on, applied to ``model``: sites per form."""
    return apply_graph_passes(
        model, int8_form_passes(Int8Config(windowed_max_pool=True, channel_mean_conv=True))
    )


def _one_node_graph(node: onnx.NodeProto, dims: list, inits=(), opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _pool_graph(dims: list) -> onnx.ModelProto:
    return _one_node_graph(helper.make_node("GlobalMaxPool", ["x"], ["out"]), dims)


def _mean_graph(dims: list, axes: list[int], keepdims: int = 1, opset: int = 18) -> onnx.ModelProto:
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["x", "axes"], ["out"], keepdims=keepdims)
        inits = [numpy_helper.from_array(np.array(axes, np.int64), "axes")]
        return _one_node_graph(node, dims, inits)
    node = helper.make_node("ReduceMean", ["x"], ["out"], keepdims=keepdims, axes=axes)
    return _one_node_graph(node, dims, opset=opset)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_a_global_max_over_a_static_map_becomes_a_whole_map_window() -> None:
    model = _pool_graph(["N", 4, 5, 7])  # a dynamic batch is fine: the window is H x W
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 7)).astype(np.float32)
    before = _run(model, x)
    assert _forms(model) == {"global_max_pool->window": 1}
    (node,) = model.graph.node
    assert node.op_type == "MaxPool" and list(node.attribute[0].ints) == [5, 7]
    np.testing.assert_array_equal(_run(model, x), before)


@pytest.mark.parametrize("dims", [[1, 4, "H", "W"], [1, 4, 5, "W"], [4, 5, 7]])
def test_a_map_without_a_static_size_keeps_its_global_pool(dims) -> None:
    model = _pool_graph(dims)
    assert _forms(model) == {}
    assert model.graph.node[0].op_type == "GlobalMaxPool"


@pytest.mark.parametrize("opset", [18, 17])  # axes as an input / as an attribute
def test_a_channel_mean_becomes_a_1x1_convolution_of_weights_1_over_c(opset) -> None:
    model = _mean_graph(["N", 8, "H", "W"], [1], opset=opset)
    x = np.random.default_rng(0).standard_normal((2, 8, 5, 7)).astype(np.float32)
    before = _run(model, x)
    assert _forms(model) == {"channel_mean->conv1x1": 1}
    (node,) = model.graph.node
    (weight,) = [numpy_helper.to_array(i) for i in model.graph.initializer]  # the axes constant is gone
    assert node.op_type == "Conv" and weight.shape == (1, 8, 1, 1) and np.all(weight == np.float32(1 / 8))
    after = _run(model, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6 * float(np.abs(before).max()))


@pytest.mark.parametrize(
    ("dims", "axes", "keepdims"),
    [(["N", 8, 5, 7], [2, 3], 1), (["N", 8, 5, 7], [1], 0), (["N", "C", 5, 7], [1], 1), ([8, 5, 7], [1], 1)],
)
def test_a_mean_that_is_not_over_known_channels_stays(dims, axes, keepdims) -> None:
    model = _mean_graph(dims, axes, keepdims)
    assert _forms(model) == {}
    assert model.graph.node[0].op_type == "ReduceMean"


SIZE = (32, 40)
SPEC = PreprocessSpec.for_kind("resize_crop", SIZE)


def test_cbam_pools_run_on_uint8_in_int8_and_match_pytorch(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), CBAM(32), nn.Conv2d(32, 8, 3, 2, 1)).eval()
    x = torch.from_numpy(SPEC(synthetic_images(1, SIZE, seed=5)))
    proto = onnx.load(str(export_onnx(model, x, tmp_path / "cbam.onnx", input_names=["images"]).path))
    assert channel_matmul_to_mean(proto) == 1  # as the precision stage of an export does first
    assert [n.op_type for n in proto.graph.node].count("GlobalMaxPool") == 1
    calib = calibration_set("images", SPEC, num_images=8, seed=0)
    config = Int8Config(activations="uint8", symmetric=False, windowed_max_pool=True, channel_mean_conv=True)
    quantized, report = quantize_int8(proto, calib, config, cache_dir=tmp_path)
    assert report.graph_forms == {"global_max_pool->window": 1, "channel_mean->conv1x1": 1}
    ops = [n.op_type for n in quantized.graph.node]
    assert "ReduceMean" not in ops and "GlobalMaxPool" not in ops
    # ONNX Runtime runs DequantizeLinear -> MaxPool -> QuantizeLinear as one uint8 MaxPool when both sides share
    # the scale and zero point, which the quantizer gives a MaxPool
    producer = {o: n for n in quantized.graph.node for o in n.output}
    reader = {i: n for n in quantized.graph.node for i in n.input}
    values = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    # the channel mean is a quantized convolution: its input and its 1/C weights come out of DequantizeLinear
    dequantized = {n.output[0]: n.input[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    int8_weight = {out: values[name] for out, name in dequantized.items() if name in values}
    convs = [n for n in quantized.graph.node if n.op_type == "Conv" and n.input[1] in int8_weight]
    (mean,) = [n for n in convs if int8_weight[n.input[1]].shape == (1, 32, 1, 1)]
    assert producer[mean.input[0]].op_type == "DequantizeLinear"
    assert np.all(int8_weight[mean.input[1]] == int8_weight[mean.input[1]].flat[0])  # one weight value, exact
    (pool,) = [n for n in quantized.graph.node if n.op_type == "MaxPool"]
    dq, q = producer[pool.input[0]], reader[pool.output[0]]
    assert (dq.op_type, q.op_type) == ("DequantizeLinear", "QuantizeLinear")
    assert [values[dq.input[1]], values[dq.input[2]]] == [values[q.input[1]], values[q.input[2]]]
    images = SPEC(synthetic_images(3, SIZE, seed=1000))
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = np.concatenate([session.run(None, {"images": images[i : i + 1]})[0] for i in range(3)])
    parity = compare_outputs([model(torch.from_numpy(images)).detach().numpy()], [outputs])
    # Measured 0.99984 (AVX-512 EPYC). 7-bit weights make the integer kernels exact on every x86 CPU
    # (test_int8.py), so 0.98, the margin of the other INT8 parity tests, holds with 100x the measured error.
    assert parity.cosine > 0.98, parity


def test_ort_int8_uses_both_forms_and_tensorrt_neither() -> None:
    # measured on ONNX Runtime only (benchmarks/results/int8_cbam_forms.md)
    for name in ("ort-int8", "ort-int8-dynamic"):
        int8 = load_config(name).int8
        assert int8.windowed_max_pool and int8.channel_mean_conv
    for name in ("trt-int8", "trt-int8-dynamic", "trt-int8-fp16", "trt-int8-fp16-dynamic"):
        int8 = load_config(name).int8
        assert not int8.windowed_max_pool and not int8.channel_mean_conv
