"""`bench --explain` and the roofline columns on tiny graphs (no zoo model)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attn_deploy.bench.explain import explain_counts, histogram, optimized_op_histogram
from attn_deploy.bench.roofline import achieved, gemm_peak, peak_for
from attn_deploy.errors import InputError


def _conv_relu_add(path) -> None:
    """x -> Conv(16->16, 3x3) -> Relu; + x; Relu: a residual block ORT fuses into one NCHWc Conv."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((16, 16, 3, 3)).astype(np.float32), "w"
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_histogram_prefixes_ort_domains() -> None:
    nodes = [
        helper.make_node("Conv", ["a", "b"], ["c"], domain="com.microsoft.nchwc"),
        helper.make_node("FusedGemm", ["c", "d"], ["e"], domain="com.microsoft"),
        helper.make_node("Relu", ["e"], ["f"]),
        helper.make_node("Relu", ["f"], ["g"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert histogram(model) == {"Relu": 2, "nchwc:Conv": 1, "ms:FusedGemm": 1}


def test_optimized_histogram_shows_what_ort_fused(tmp_path) -> None:
    path = tmp_path / "block.onnx"
    _conv_relu_add(path)
    ops = optimized_op_histogram(path)
    counts = explain_counts(ops)
    # whatever the CPU's NCHWc block size (8 on AVX2, 16 on AVX-512), 16 channels are blocked and the
    # residual Add + Relu fold into the second convolution
    assert counts["NCHWc Conv"] == 2 and counts["unfused Add"] == 0 and counts["unfused Relu"] == 0
    assert counts["nodes"] == sum(ops.values())


def test_optimized_histogram_of_a_missing_or_corrupt_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="ONNX Runtime cannot load"):
        optimized_op_histogram(bad)


@pytest.mark.parametrize("int8", [False, True])
def test_gemm_peak_probe_runs(int8: bool) -> None:
    assert gemm_peak(1, int8=int8, n=64, seconds=0.01) > 0


def test_roofline_arithmetic() -> None:
    assert achieved(8.0, 100.0) == pytest.approx(80.0)  # 8 GFLOP in 0.1 s
    assert achieved(None, 100.0) is None and achieved(8.0, 0.0) is None
    peaks = {"fp32": 100.0, "int8": 200.0}
    assert (peak_for("int8", peaks), peak_for("fp16", peaks), peak_for("fp32", peaks)) == (
        200.0,
        100.0,
        100.0,
    )
