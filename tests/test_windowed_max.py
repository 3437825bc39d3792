"""GlobalMaxPool as MaxPool over the whole map (attn_deploy.precision.windowed_max): exact, static maps only.

A max moves no value and rounds nothing, so the rewritten FP32 graph is compared bit for bit.
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
from attn_deploy.export.pipeline import export_onnx
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.int8 import quantize_int8
from attn_deploy.precision.windowed_max import window_global_max_pools


def _pool_graph(dims: list) -> onnx.ModelProto:
    nodes = [helper.make_node("GlobalMaxPool", ["x"], ["out"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_a_global_max_over_a_static_map_becomes_a_whole_map_window() -> None:
    model = _pool_graph(["N", 4, 5, 7])  # a dynamic batch is fine: the window is H x W
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 7)).astype(np.float32)
    before = _run(model, x)
    assert window_global_max_pools(model) == 1
    (node,) = model.graph.node
    assert node.op_type == "MaxPool" and list(node.attribute[0].ints) == [5, 7]
    np.testing.assert_array_equal(_run(model, x), before)


@pytest.mark.parametrize("dims", [[1, 4, "H", "W"], [1, 4, 5, "W"], [4, 5, 7]])
def test_a_map_without_a_static_size_keeps_its_global_pool(dims) -> None:
    model = _pool_graph(dims)
    assert window_global_max_pools(model) == 0
    assert model.graph.node[0].op_type == "GlobalMaxPool"


SIZE = (32, 40)
SPEC = PreprocessSpec.for_kind("resize_crop", SIZE)


def test_cbam_max_pool_runs_on_uint8_in_int8_and_matches_pytorch(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), CBAM(32), nn.Conv2d(32, 8, 3, 2, 1)).eval()
    x = torch.from_numpy(SPEC(synthetic_images(1, SIZE, seed=5)))
    proto = onnx.load(str(export_onnx(model, x, tmp_path / "cbam.onnx", input_names=["images"]).path))
    assert [n.op_type for n in proto.graph.node].count("GlobalMaxPool") == 1
    calib = calibration_set("images", SPEC, num_images=8, seed=0)
    config = Int8Config(activations="uint8", symmetric=False, windowed_max_pool=True)
    quantized, report = quantize_int8(proto, calib, config, cache_dir=tmp_path)
    assert report.windowed_max_pools == 1
    # ONNX Runtime runs DequantizeLinear -> MaxPool -> QuantizeLinear as one uint8 MaxPool when both sides share
    # the scale and zero point, which the quantizer gives a MaxPool
    producer = {o: n for n in quantized.graph.node for o in n.output}
    reader = {i: n for n in quantized.graph.node for i in n.input}
    values = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
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


def test_ort_int8_windows_max_pools_and_tensorrt_does_not() -> None:
    for name in ("ort-int8", "ort-int8-dynamic"):
        assert load_config(name).int8.windowed_max_pool
    for name in ("trt-int8", "trt-int8-dynamic", "trt-int8-fp16", "trt-int8-fp16-dynamic"):
        assert not load_config(name).int8.windowed_max_pool
