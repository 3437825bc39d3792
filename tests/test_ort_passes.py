"""Deploy-time ONNX graph passes (attn_deploy.export.ort_passes): they fire where exact and nowhere else.

Equality is checked against PyTorch through the real export pipeline (ONNX Runtime CPU) and, for the hand-built
graphs, by running the graph before and after a pass on the same input. At unseen shapes: every attention
module is exported with dynamic batch and H/W, passes on, and compared with PyTorch at three shapes the export
never saw in tests/test_export_attention.py (not repeated here: each export costs seconds).

Tolerances: the passes only change the summation order of a mean (GlobalAveragePool vs ReduceMean), run a
matrix product as a 1x1 convolution, replace the pooled mean of an instance norm by the bias it equals in
exact arithmetic and re-associate a product of gates, so outputs differ by FP32 rounding only: 1e-5 relative
on O(1) values holds on any x86 CPU kernel (AVX2, AVX-512, AMX all accumulate in FP32). A transpose turned
reshape moves no value: bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from attn_deploy.attention import create_attention
from attn_deploy.config import load_config
from attn_deploy.export.lint import lint_tensorrt
from attn_deploy.export.ort_passes import apply_graph_passes, channel_matmul_to_mean
from attn_deploy.export.pipeline import export_onnx
from attn_deploy.workflow.zoo import export_zoo_model
from tests.conftest import assert_ort_matches_torch


def _block(attention: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), create_attention(attention, 32), nn.Conv2d(32, 16, 1)
    ).eval()


@pytest.fixture(scope="module")
def se_static(tmp_path_factory):
    model = _block("se")
    path = tmp_path_factory.mktemp("passes") / "se.onnx"
    return model, export_onnx(model, torch.rand(1, 3, 64, 64), path)


def test_se_static_export_loses_expand_reshape_and_gemm(se_static) -> None:
    model, result = se_static
    assert result.graph_passes == {
        "expand->broadcast": 1,
        "reduce->global_pool": 1,
        "pooled_gemm->conv1x1": 2,
    }
    for gone in ("Expand", "Reshape", "Gemm", "ReduceMean"):
        assert gone not in result.ops_after, result.ops_after
    assert result.ops_after["GlobalAveragePool"] == 1
    graph = onnx.load(result.path).graph
    read = {name for node in graph.node for name in node.input}
    assert [i.name for i in graph.initializer if i.name not in read] == []  # no constant left behind
    # the written file is what was verified; check it once more on fresh values
    assert_ort_matches_torch(model, result.path, [(1, 3, 64, 64)])
    assert lint_tensorrt(onnx.load(result.path)) == []


# -- hand-built graphs: the passes decline what is not provably the same ------------------------------
def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _graph(nodes, inputs, output, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_expand_to_a_larger_shape_than_the_other_operand_stays() -> None:
    # x (1,4,1,1) * Expand(y, [1,4,8,8]): the Expand decides the output shape; dropping it would change it
    shape = numpy_helper.from_array(np.array([1, 4, 8, 8], np.int64), "s")
    nodes = [helper.make_node("Expand", ["y", "s"], ["e"]), helper.make_node("Mul", ["x", "e"], ["out"])]
    model = _graph(nodes, [_f32("x", [1, 4, 1, 1]), _f32("y", [1, 4, 1, 1])], _f32("out", None), [shape])
    assert apply_graph_passes(model) == {}
    assert [n.op_type for n in model.graph.node] == ["Expand", "Mul"]


def test_expand_to_the_other_operands_shape_goes_and_values_stay() -> None:
    shape = numpy_helper.from_array(np.array([2, 4, 8, 8], np.int64), "s")
    nodes = [helper.make_node("Expand", ["y", "s"], ["e"]), helper.make_node("Mul", ["e", "x"], ["out"])]
    model = _graph(nodes, [_f32("x", [2, 4, 8, 8]), _f32("y", [2, 4, 1, 1])], _f32("out", None), [shape])
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 4, 8, 8), np.float32),
        "y": rng.standard_normal((2, 4, 1, 1), np.float32),
    }
    before = _run(model, feeds)[0]
    assert apply_graph_passes(model) == {"expand->broadcast": 1}
    assert [n.op_type for n in model.graph.node] == ["Mul"]
    np.testing.assert_array_equal(_run(model, feeds)[0], before)  # the same products, bit for bit


@pytest.mark.parametrize(
    ("axes", "keepdims", "fires"),
    [([2, 3], 1, True), ([-1, -2], 1, True), ([1], 1, False), ([2, 3], 0, False)],
)
def test_reduce_mean_becomes_global_pool_only_over_hw_with_keepdims(axes, keepdims, fires) -> None:
    axes_init = numpy_helper.from_array(np.array(axes, np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["out"], keepdims=keepdims)]
    model = _graph(nodes, [_f32("x", [2, 8, 5, 7])], _f32("out", None), [axes_init])
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 8, 5, 7), np.float32)}
    before = _run(model, feeds)[0]
    assert ("reduce->global_pool" in apply_graph_passes(model)) is fires  # axes [1]: channel_mean->matmul
    if fires:  # the axes initializer went with the input it fed (ONNX Runtime warns of an unread initializer)
        assert [i.name for i in model.graph.initializer] == []
    after = _run(model, feeds)[0]
    assert after.shape == before.shape
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)  # summation order only


def test_integer_reduce_mean_is_left_alone() -> None:
    # GlobalAveragePool takes floats only; ReduceMean also reduces integers
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["out"], keepdims=1)]
    x = helper.make_tensor_value_info("x", TensorProto.INT32, [1, 2, 3, 3])
    model = _graph(nodes, [x], helper.make_tensor_value_info("out", TensorProto.INT32, None), [axes])
    assert apply_graph_passes(model) == {}


def test_gemm_with_untransposed_weight_is_left_alone() -> None:
    # transB=0 is a different weight layout; the pass only takes the layout nn.Linear exports
    inits = [
        numpy_helper.from_array(np.array([2, 8], np.int64), "flat"),
        numpy_helper.from_array(np.ones((8, 8), np.float32), "w"),
        numpy_helper.from_array(np.array([2, 8, 1, 1], np.int64), "back"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["v"]),
        helper.make_node("Gemm", ["v", "w"], ["g"], transB=0),
        helper.make_node("Reshape", ["g", "back"], ["out"]),
    ]
    model = _graph(nodes, [_f32("x", [2, 8, 1, 1])], _f32("out", None), inits)
    assert apply_graph_passes(model) == {}


# -- the mean of an instance norm is its bias ---------------------------------------------------------
def _pooled_norm_graph(bias_as_input: bool = False) -> onnx.ModelProto:
    """x -> InstanceNormalization -> (GlobalAveragePool -> Softmax, and * 2): the pooled branch of EMA."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "scale")]
    if not bias_as_input:
        inits.append(numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias"))
    inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    nodes = [
        helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["n"], epsilon=1e-5),
        helper.make_node("GlobalAveragePool", ["n"], ["p"]),
        helper.make_node("Softmax", ["p"], ["s"], axis=1),
        helper.make_node("Mul", ["n", "two"], ["m"]),
        helper.make_node("Mul", ["m", "s"], ["out"]),
    ]
    inputs = [_f32("x", ["N", 6, "H", "W"])] + ([_f32("bias", [6])] if bias_as_input else [])
    return _graph(nodes, inputs, _f32("out", None), inits)


def test_pooled_instance_norm_becomes_its_bias_at_every_batch_and_size() -> None:
    model = _pooled_norm_graph()
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert apply_graph_passes(model) == {"pooled_instance_norm->bias": 1}
    ops = [n.op_type for n in model.graph.node]
    assert "GlobalAveragePool" not in ops and "InstanceNormalization" in ops  # the norm still feeds the Mul
    rng = np.random.default_rng(4)
    for shape in [(1, 6, 5, 7), (3, 6, 2, 1), (2, 6, 17, 4)]:  # dynamic batch and size
        feeds = {"x": (rng.standard_normal(shape) * 3 + 1).astype(np.float32)}
        # the pooled mean was the bias plus FP32 rounding of a mean of O(1) values (~1e-7): 1e-5 holds on any
        # x86 kernel
        np.testing.assert_allclose(_run(model, feeds)[0], _run(reference, feeds)[0], rtol=1e-5, atol=1e-5)
    assert lint_tensorrt(model) == []


def test_pooled_instance_norm_of_a_1x1_map_is_the_exact_bias() -> None:
    # A 1x1 map normalises to 0, so the pool is the bias exactly. ONNX Runtime's InstanceNormalization folds
    # to x * a + (B - mean * a) with a = scale / sqrt(eps): large terms that cancel, here to within ~1e-3 of B.
    model = _pooled_norm_graph()
    del model.graph.node[3:]
    model.graph.output[0].name = "s"
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "bias")).astype(
        np.float64
    )
    assert apply_graph_passes(model) == {"pooled_instance_norm->bias": 1}
    assert [n.op_type for n in model.graph.node][-1] == "Softmax"
    assert "InstanceNormalization" not in [n.op_type for n in model.graph.node]  # nothing else read it
    expected = np.exp(bias) / np.exp(bias).sum()
    x = (np.random.default_rng(5).standard_normal((3, 6, 1, 1)) * 50 + 7).astype(np.float32)
    np.testing.assert_allclose(_run(model, {"x": x})[0].reshape(3, 6), np.tile(expected, (3, 1)), atol=1e-6)


@pytest.mark.parametrize(("flat", "fires"), [((2, 6, 35), True), ((1, 12, 35), False)])
def test_pooled_instance_norm_behind_a_reshape_keeping_batch_and_channels(flat, fires) -> None:
    # GroupNorm as the TorchScript exporter writes it: Reshape -> InstanceNormalization -> Reshape back. The
    # pool sees the norm through the second Reshape when it keeps (N, C); (1, N*C, HW) does not, so it stays.
    rng = np.random.default_rng(8)
    channels = flat[1]
    inits = [
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array(flat, np.int64), "flat"),
        numpy_helper.from_array(np.array([2, 6, 5, 7], np.int64), "back"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["f"]),
        helper.make_node("InstanceNormalization", ["f", "scale", "bias"], ["n"], epsilon=1e-5),
        helper.make_node("Reshape", ["n", "back"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["out"]),
    ]
    model = _graph(nodes, [_f32("x", [2, 6, 5, 7])], _f32("out", None), inits)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert apply_graph_passes(model) == ({"pooled_instance_norm->bias": 1} if fires else {})
    feeds = {"x": (rng.standard_normal((2, 6, 5, 7)) * 3 + 1).astype(np.float32)}
    # the pooled mean was the bias plus FP32 rounding of a mean of O(1) values (~1e-7): 1e-5 holds everywhere
    np.testing.assert_allclose(_run(model, feeds)[0], _run(reference, feeds)[0], rtol=1e-5, atol=1e-5)


def test_pooled_instance_norm_with_a_runtime_bias_stays() -> None:
    model = _pooled_norm_graph(bias_as_input=True)
    assert apply_graph_passes(model) == {}


@pytest.mark.parametrize(
    ("attention", "dynamic", "expected"),
    [
        ("ema", True, {"pooled_instance_norm->bias": 1, "gate_chain->gate_product": 1}),
        # the static export has a Reshape keeping (N, C) between GroupNorm's InstanceNormalization and the pool
        ("ema", False, {"pooled_instance_norm->bias": 1, "gate_chain->gate_product": 1}),
        ("coordatt", True, {"gate_chain->gate_product": 1}),
        ("cbam", True, {"channel_mean->matmul": 1}),
    ],
)
def test_attention_exports_get_their_passes_and_match_pytorch(attention, dynamic, expected, tmp_path) -> None:
    model = _block(attention)
    path = tmp_path / f"{attention}.onnx"
    result = export_onnx(model, torch.rand(1, 3, 32, 32), path, dynamic_batch=dynamic, dynamic_hw=dynamic)
    assert {k: result.graph_passes.get(k) for k in expected} == expected, result.graph_passes
    assert_ort_matches_torch(
        model, result.path, [(2, 3, 24, 40), (1, 3, 9, 13)] if dynamic else [(1, 3, 32, 32)]
    )
    assert lint_tensorrt(onnx.load(result.path)) == []


# -- two gates multiply first, then x once --------------------------------------------------------------
def _gate_chain_graph(b_shape: list, inner_readers: int = 1) -> onnx.ModelProto:
    """out = (x * sigmoid(a)) * sigmoid(b), the gate b computed after the first Mul (as exports order it)."""
    nodes = [
        helper.make_node("Sigmoid", ["a"], ["sa"]),
        helper.make_node("Mul", ["x", "sa"], ["t"]),
        helper.make_node("Sigmoid", ["b"], ["sb"]),
        helper.make_node("Mul", ["sb", "t"], ["out" if inner_readers == 1 else "u"]),
    ]
    if inner_readers == 2:
        nodes.append(helper.make_node("Add", ["u", "t"], ["out"]))
    inputs = [_f32("x", ["N", 4, "H", "W"]), _f32("a", ["N", 4, "H", 1]), _f32("b", b_shape)]
    return _graph(nodes, inputs, _f32("out", None))


def test_gate_chain_multiplies_the_gates_first_at_every_batch_and_size() -> None:
    model = _gate_chain_graph(["N", 4, 1, "W"])  # CoordAtt / EMA: (N, C, H, 1) and (N, C, 1, W)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert apply_graph_passes(model) == {"gate_chain->gate_product": 1}
    known = {"x", "a", "b"}
    for node in model.graph.node:  # still in topological order: every input computed before it is read
        assert set(node.input) <= known, node.name
        known |= set(node.output)
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert list(muls[0].input) == ["sa", "sb"] and list(muls[1].input) == ["x", muls[0].output[0]]
    rng = np.random.default_rng(7)
    for n, h, w in [(1, 5, 7), (3, 2, 1), (2, 17, 4)]:
        feeds = {
            "x": rng.standard_normal((n, 4, h, w)).astype(np.float32),
            "a": rng.standard_normal((n, 4, h, 1)).astype(np.float32),
            "b": rng.standard_normal((n, 4, 1, w)).astype(np.float32),
        }
        # a product of three re-associated: each side rounds twice, <= ~2 ulp (2.4e-7) relative on any CPU
        np.testing.assert_allclose(_run(model, feeds)[0], _run(reference, feeds)[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("b_shape", "inner_readers"),
    [
        (["N", 4, "H", "W"], 1),  # the second operand is x's full size: not a gate
        (["N", 4, 1, "W"], 2),  # x * a is read again: it must stay
        ([4, 1, "W"], 1),  # a gate of lower rank: not matched (exports keep ranks equal)
    ],
)
def test_gate_chain_stays_where_not_two_gates_of_one_read(b_shape, inner_readers) -> None:
    assert apply_graph_passes(_gate_chain_graph(b_shape, inner_readers)) == {}


# -- the mean over channels as a matrix product, and back for graphs that are not ORT FP32 --------------
def _channel_mean_graph(axes: list[int], keepdims: int = 1, channels: int | str = 6, opset: int = 18):
    """out = ReduceMean(x) over ``axes`` (CBAM's spatial branch reduces axis 1), then * 2."""
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        reduce = helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=keepdims)
    else:
        reduce = helper.make_node("ReduceMean", ["x"], ["m"], keepdims=keepdims, axes=axes)
    nodes = [reduce, helper.make_node("Mul", ["m", "two"], ["out"])]
    graph = helper.make_graph(nodes, "g", [_f32("x", ["N", channels, "H", "W"])], [_f32("out", None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [18, 17])  # axes an input from opset 18, an attribute before
def test_channel_mean_becomes_a_matmul_and_back_at_every_batch_and_size(opset) -> None:
    model = _channel_mean_graph([1], opset=opset)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert apply_graph_passes(model) == {"channel_mean->matmul": 1}
    assert "ReduceMean" not in [n.op_type for n in model.graph.node] and lint_tensorrt(model) == []
    undone = onnx.ModelProto()
    undone.CopyFrom(model)
    assert channel_matmul_to_mean(undone) == 1
    assert [n.op_type for n in undone.graph.node] == [n.op_type for n in reference.graph.node]
    rng = np.random.default_rng(9)
    for shape in [(1, 6, 5, 7), (3, 6, 2, 1), (2, 6, 17, 4)]:  # dynamic batch and size
        feeds = {"x": (rng.standard_normal(shape) * 3 + 1).astype(np.float32)}
        expected = _run(reference, feeds)[0]
        # a mean of 6 O(1) values summed in another order: FP32 rounding ~1e-7, 1e-5 holds on any x86 kernel
        np.testing.assert_allclose(_run(model, feeds)[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(_run(undone, feeds)[0], expected)  # the very same graph again


@pytest.mark.parametrize(
    ("axes", "keepdims", "channels"),
    [([2], 1, 6), ([1], 0, 6), ([1], 1, "C"), ([1, 2], 1, 6)],  # other axes, no keepdims, unknown C
)
def test_channel_mean_stays_where_not_a_keepdims_mean_over_known_channels(axes, keepdims, channels) -> None:
    assert apply_graph_passes(_channel_mean_graph(axes, keepdims, channels)) == {}


def test_a_matmul_that_is_not_a_channel_mean_is_not_undone() -> None:
    model = _channel_mean_graph([1])
    apply_graph_passes(model)
    row = next(i for i in model.graph.initializer if i.name.endswith("__row"))
    row.CopyFrom(numpy_helper.from_array(np.full((1, 6), 0.5, np.float32), row.name))  # a sum, not a mean
    assert channel_matmul_to_mean(model) == 0


def test_fp16_export_of_cbam_runs_the_channel_mean_as_reduce_mean_again(tmp_path) -> None:
    # The matrix product pays on ONNX Runtime FP32 only: the precision stage undoes it and says so.
    artifact, _ = export_zoo_model(
        "resnet18-cbam", imgsz=64, out_root=tmp_path, config=load_config("ort-fp16")
    )
    manifest = json.loads((artifact.dir / "manifest.json").read_text())
    assert manifest["graph_passes"]["channel_mean->matmul"] == 8  # one per BasicBlock
    assert manifest["precision_info"]["graph_passes_undone"] == {"channel_mean->matmul": 8}
    assert (
        manifest["precision_info"]["ops"]["ReduceMean"] == 8
        and "MatMul" not in manifest["precision_info"]["ops"]
    )
    assert manifest["parity"]["passed"]


# -- a transpose that only moves unit axes is a reshape -----------------------------------------------
@pytest.mark.parametrize(
    ("shape", "perm", "fires"),
    [
        (["N", 6, 1], [0, 2, 1], True),  # ECA: (B, C, 1) -> (B, 1, C)
        (["N", 4, "W", 1], [0, 1, 3, 2], True),  # EMA: (N, c, W, 1) -> (N, c, 1, W)
        (["N", 4, 5], [0, 2, 1], False),  # a real transpose
        ([2, 1, 3], [2, 1, 0], False),  # 2 and 3 swap: not memory order
        (["N", 1, "H", "W"], [0, 2, 3, 1], False),  # H and W could both move: two unknown dims, no constant
    ],
)
def test_unit_transpose_becomes_reshape_only_when_memory_order_stays(shape, perm, fires) -> None:
    model = _graph(
        [helper.make_node("Transpose", ["x"], ["out"], perm=perm)], [_f32("x", shape)], _f32("out", None)
    )
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert bool(apply_graph_passes(model)) is fires
    assert [n.op_type for n in model.graph.node] == ["Reshape" if fires else "Transpose"]
    rng = np.random.default_rng(6)
    for batch in (1, 3):
        dims = [batch if d == "N" else 7 if isinstance(d, str) else d for d in shape]
        feeds = {"x": rng.standard_normal(dims).astype(np.float32)}
        np.testing.assert_array_equal(_run(model, feeds)[0], _run(reference, feeds)[0])  # a copy, bit for bit


def test_eca_export_has_no_transpose_left(tmp_path) -> None:
    model = _block("eca")
    path = tmp_path / "eca.onnx"
    result = export_onnx(model, torch.rand(1, 3, 32, 32), path, dynamic_batch=True, dynamic_hw=True)
    assert result.graph_passes.get("unit_transpose->reshape") == 2, result.graph_passes
    assert "Transpose" not in result.ops_after, result.ops_after
    assert_ort_matches_torch(model, result.path, [(2, 3, 24, 40), (1, 3, 9, 13)])
    assert lint_tensorrt(onnx.load(result.path)) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "--rounds must be 1..1000"),
        (["--name", "../x"], "cannot be a file or folder name"),
        (["--models", "nope"], "unknown model 'nope'"),
    ],
)
def test_graph_passes_benchmark_refuses_bad_options_in_one_line(args, message, tmp_path, capsys) -> None:
    from benchmarks.graph_passes import main as graph_passes_main

    assert graph_passes_main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


# -- a channel split of a convolution becomes one convolution per piece ---------------------------------
def _split_conv_graph(
    activation: str = "silu",
    sizes: list[int] | None = None,
    group: int = 1,
    conv_read_again: bool = False,
    opset: int = 18,
) -> onnx.ModelProto:
    """pieces = Split(act(Conv(x)), axis=1), as YOLOv8's C2f writes its first convolution; 48 channels."""
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((48, 8 // group, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "b"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], group=group)]
    if activation == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["a"])]
    elif activation:
        nodes.append(helper.make_node(activation, ["c"], ["a"]))
    source = "a" if activation else "c"
    pieces = [f"p{k}" for k in range(len(sizes) if sizes else 3)]
    if sizes is None:
        split_attrs = {"num_outputs": 3} if opset >= 18 else {}
        nodes.append(helper.make_node("Split", [source], pieces, axis=1, **split_attrs))
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        nodes.append(helper.make_node("Split", [source, "sizes"], pieces, axis=1))
    nodes.append(helper.make_node("Concat", [pieces[-1], *pieces[:-1]], ["out"], axis=1))  # reads every piece
    outputs = [_f32("out", None)] + ([_f32("c", None)] if conv_read_again else [])
    graph = helper.make_graph(nodes, "g", [_f32("x", ["N", 8, "H", "W"])], outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    ("activation", "sizes", "opset"),
    [("silu", None, 18), ("Relu", [32, 16], 18), ("Sigmoid", None, 17), ("", [16, 32], 18)],
)
def test_split_convolution_becomes_a_convolution_per_piece_at_every_batch_and_size(
    activation, sizes, opset
) -> None:
    model = _split_conv_graph(activation, sizes, opset=opset)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert apply_graph_passes(model) == {"channel_split->convs": 1}
    ops = [n.op_type for n in model.graph.node]
    assert "Split" not in ops and ops.count("Conv") == len(sizes or [16] * 3)
    assert {i.name for i in model.graph.initializer} & {"w", "b"} == set()  # the whole weight is gone
    rng = np.random.default_rng(11)
    for n, h, w in [(1, 9, 13), (3, 16, 5)]:
        feeds = {"x": rng.standard_normal((n, 8, h, w)).astype(np.float32)}
        # each output channel is its own rows of the weight and the same 72-term sum as before: bit-identical
        # here. A kernel that picked another summation order for the narrower convolution (another ISA) would
        # differ by rounding, ~sqrt(72) * 6e-8 * |sum| ~ 4e-6 on these O(8) values: 1e-5 holds on any x86 CPU
        np.testing.assert_allclose(_run(model, feeds)[0], _run(reference, feeds)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"sizes": [40, 8]}, "a piece of 8 channels does not fill an AVX-512 block"),
        ({"group": 2}, "a grouped convolution's rows are not its output channels alone"),
        ({"conv_read_again": True}, "the whole convolution is read elsewhere"),
        ({"activation": "Softmax"}, "not an element-wise activation"),
    ],
)
def test_split_convolution_stays_where_pieces_cannot_be_computed_alone(options, why) -> None:
    assert apply_graph_passes(_split_conv_graph(**options)) == {}, why


def test_split_convolution_with_sizes_known_only_at_run_time_stays() -> None:
    model = _split_conv_graph(sizes=[16, 16, 16])
    sizes = next(i for i in model.graph.initializer if i.name == "sizes")
    model.graph.initializer.remove(sizes)  # now a graph input: (32, 8, 8) is as possible as three 16s
    model.graph.input.append(helper.make_tensor_value_info("sizes", TensorProto.INT64, [3]))
    assert apply_graph_passes(model) == {}


def test_yolo_export_computes_its_c2f_halves_by_separate_convolutions(tmp_path) -> None:
    artifact, result = export_zoo_model(
        "yolov8n-none", imgsz=64, out_root=tmp_path, config=load_config("ort-fp32-dynamic")
    )
    assert artifact.manifest["graph_passes"]["channel_split->convs"] == 8  # one per C2f block
    assert artifact.manifest["graph_passes"]["channel_softmax->last_axis"] == 1  # the DFL
    assert result.ops_after["Split"] == 2  # the head's box/class and corner splits read no convolution
    assert artifact.manifest["parity"]["passed"]  # at the export shape and unseen dynamic shapes
    assert lint_tensorrt(onnx.load(artifact.onnx_path)) == []


# -- a softmax over channels into a 1x1 convolution runs over the last axis -----------------------------
def _channel_softmax_graph(
    dfl: bool = True,
    out_channels: int = 1,
    bias: bool = False,
    axis: int = 1,
    kernel: int = 1,
    opset: int = 18,
) -> onnx.ModelProto:
    """YOLOv8's DFL (``dfl``): (N, 4, 16, A) -> Transpose -> Softmax(axis=1) -> Conv(16 -> 1, weights 0..15);
    else the softmax reads a (N, 16, 4, A) input directly."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((out_channels, 16, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3])] if dfl else []
    nodes.append(helper.make_node("Softmax", ["t" if dfl else "x"], ["p"], axis=axis))
    conv_inputs = ["p", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes.append(helper.make_node("Conv", conv_inputs, ["out"], pads=[kernel // 2] * 4))
    x = _f32("x", ["N", 4, 16, "A"] if dfl else ["N", 16, 4, "A"])
    graph = helper.make_graph(nodes, "g", [x], [_f32("out", None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    ("options", "ops"),
    [
        ({}, ["Transpose", "Softmax", "MatMul", "Reshape"]),  # the DFL: the two transposes fold into one
        (
            {"dfl": False, "out_channels": 3, "bias": True},
            ["Transpose", "Softmax", "MatMul", "Add", "Transpose"],
        ),
    ],
)
def test_channel_softmax_into_a_pointwise_conv_runs_over_the_last_axis(options, ops) -> None:
    model = _channel_softmax_graph(**options)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert apply_graph_passes(model) == {"channel_softmax->last_axis": 1}
    assert [n.op_type for n in model.graph.node] == ops
    assert [helper.get_attribute_value(a) for a in model.graph.node[1].attribute] == [
        -1
    ]  # the softmax's axis
    rng = np.random.default_rng(13)
    shape = (4, 16) if options.get("dfl", True) else (16, 4)
    for n, anchors in [(1, 8400), (2, 7)]:
        feeds = {"x": (4 * rng.standard_normal((n, *shape, anchors))).astype(np.float32)}
        # the same softmax (ORT transposes to the last axis itself) and the same 16-term sums, possibly summed
        # in another order (GEMM vs convolution kernel): at most 15 ulp of sums below 4, 4e-6 (bit-identical
        # on yolov8s here); 1e-5 holds for any order on any x86 CPU
        np.testing.assert_allclose(_run(model, feeds)[0], _run(reference, feeds)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"axis": -1}, "a softmax over the last axis already"),
        ({"kernel": 3}, "a 3x3 convolution mixes positions"),
        ({"opset": 12}, "before opset 13 Softmax(axis=1) normalises over every axis from 1 on"),
    ],
)
def test_channel_softmax_stays_where_not_a_channel_softmax_into_a_pointwise_conv(options, why) -> None:
    assert apply_graph_passes(_channel_softmax_graph(**options)) == {}, why
