"""Issue 15, item 8: the TensorRT lint against onnx-tensorrt's current docs/operators.md (TensorRT 10.15)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from attn_deploy.export.lint import MAX_TRT_OPSET, TENSORRT_OPS, TOPK_K_LIMIT, lint_tensorrt

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])


def _model(nodes, inits=(), opset=18, outputs=("v",)) -> onnx.ModelProto:
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", [X], outs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _topk(k: int, **attrs) -> onnx.ModelProto:
    return _model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", **attrs)],
        [numpy_helper.from_array(np.array([k], np.int64), "k")],
    )


def test_topk_k_must_be_below_3840_and_sorted():
    assert lint_tensorrt(_topk(TOPK_K_LIMIT - 1)) == []
    (issue,) = lint_tensorrt(_topk(TOPK_K_LIMIT))  # 3840 itself fails ("must be less than 3840")
    assert "K must be less than 3840" in str(issue)
    (issue,) = lint_tensorrt(_topk(10, sorted=0))
    assert "sorted=0" in issue.message


def test_opset_range_and_ops_the_parser_lacks_today():
    assert MAX_TRT_OPSET == 24
    assert lint_tensorrt(_model([helper.make_node("Relu", ["x"], ["v"])], opset=21)) == []
    (issue,) = lint_tensorrt(_model([helper.make_node("Relu", ["x"], ["v"])], opset=25))
    assert issue.op_type == "opset" and "9..24" in issue.message
    assert {"Attention", "RMSNormalization", "LSTM", "Scan"} <= TENSORRT_OPS  # Y in 10.15
    assert not {"Unique", "SequenceAt", "ConvInteger", "QLinearConv", "DFT"} & TENSORRT_OPS  # N in 10.15
    (issue,) = lint_tensorrt(_model([helper.make_node("Unique", ["x"], ["v"], name="u")]))
    assert issue.node == "u" and "not supported" in issue.message


def test_qdq_zero_points_must_be_zero():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")

    def qdq(zero: int) -> onnx.ModelProto:
        zp = numpy_helper.from_array(np.array(zero, np.int8), "z")
        return _model(
            [
                helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["v"]),
            ],
            [scale, zp],
        )

    assert lint_tensorrt(qdq(0)) == []
    assert [i.op_type for i in lint_tensorrt(qdq(3))] == ["QuantizeLinear", "DequantizeLinear"]


def test_if_and_loop_bodies_are_linted_with_the_outer_constants():
    k = numpy_helper.from_array(np.array([4000], np.int64), "k")
    out = helper.make_tensor_value_info("v", TensorProto.FLOAT, None)
    then_branch = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="inner")], "t", [], [out]
    )
    else_branch = helper.make_graph([helper.make_node("Unique", ["x"], ["v"], name="uniq")], "e", [], [out])
    cond = numpy_helper.from_array(np.array(True), "c")
    node = helper.make_node("If", ["c"], ["v"], then_branch=then_branch, else_branch=else_branch)
    issues = lint_tensorrt(_model([node], [k, cond]))
    assert {(i.node, i.op_type) for i in issues} == {("inner", "TopK"), ("uniq", "Unique")}
    assert any("K must be less than 3840" in i.message for i in issues)  # K found in the outer graph
