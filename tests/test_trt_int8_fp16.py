"""Issue 15, item 7: trt-int8 with FP16 float regions (trt-int8-fp16): the Q/DQ layers stay as quantized, the
float regions (attention gates kept float) become FP16, and the graph stays close to PyTorch on ONNX Runtime
CPU, as every precision graph is validated."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from attn_deploy.config import load_config
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.fp16 import convert_fp16
from attn_deploy.precision.graph import GraphView
from attn_deploy.precision.int8 import quantize_int8
from attn_deploy.precision.policy import quantized_nodes
from tests.test_int8 import SIZE, SPEC, TinyNet, _run


@pytest.fixture(scope="module")
def int8_graph(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyNet().eval()
    path = tmp_path_factory.mktemp("int8fp16") / "tiny.onnx"
    x = torch.from_numpy(SPEC(synthetic_images(1, SIZE, seed=5)))
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["images"], verbose=False)
    config = load_config("trt-int8-fp16")
    calib = calibration_set("images", SPEC, num_images=8, seed=0)
    quantized, _ = quantize_int8(
        onnx.load(str(path)), calib, config.int8, quantize_bias=False, cache_dir=tmp_path_factory.mktemp("c")
    )
    return model, quantized, config


def test_only_the_float_regions_become_fp16(int8_graph):
    model, quantized, config = int8_graph
    assert config.int8.float_regions == "fp16" and config.int8.keep_gates_fp
    converted, report = convert_fp16(quantized, config.fp16, keep_also=quantized_nodes)
    kept = quantized_nodes(GraphView(quantized))
    assert any("weights through DequantizeLinear" in r for r in kept.values())
    view = GraphView(converted)
    by_name = {n.name: n for n in view.graph.node}
    for name in kept:  # Q/DQ and the INT8 layers: untouched, still float32 around the integer data
        node = by_name[name]
        assert all(view.elem_type(t) != TensorProto.FLOAT16 for t in node.output if t), node.name
    gate = [n for n in view.graph.node if n.op_type == "Sigmoid" and n.name not in kept]
    assert gate and all(view.elem_type(n.output[0]) == TensorProto.FLOAT16 for n in gate)  # gates in FP16
    assert report.fp16_nodes > 0 and report.casts > 0
    assert sum(n.op_type == "QuantizeLinear" for n in converted.graph.node) == sum(
        n.op_type == "QuantizeLinear" for n in quantized.graph.node
    )

    x = SPEC(synthetic_images(6, SIZE, seed=1000))
    reference = [model(torch.from_numpy(x)).detach().numpy()]
    int8 = compare_outputs(reference, [_run(quantized, x)])
    mixed = compare_outputs(reference, [_run(converted, x)])
    # The FP16 gate rounds to ~5e-4 relative (10-bit mantissa) before the QuantizeLinear that follows it, whose
    # steps are far coarser: measured the same cosine as the INT8 graph (0.99972, AVX2 EPYC, fused or not).
    # On any x86 CPU (AVX2, AVX-512, VNNI, AMX) the Q/DQ layers compute exactly (7-bit weights, see
    # tests/test_int8.py) and the FP16 ops run behind casts, so only the casts' rounding differs: 5e-3 of
    # cosine and the INT8 test's 0.98 floor hold with a wide margin.
    assert mixed.cosine > 0.98 and abs(mixed.cosine - int8.cosine) < 5e-3, (mixed, int8)
    assert np.isfinite(_run(converted, x)).all()
