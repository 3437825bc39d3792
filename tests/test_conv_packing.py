"""Narrow convolutions packed over their batch (attn_deploy.precision.conv_packing): exact, and only where it can be.

Tolerances: packing adds products with weights that are exactly zero and moves no element, so FP32 outputs
differ from the unpacked graph's only by the order in which ONNX Runtime's convolution kernel sums the same
products (up to 72 here). Measured: at most 1.1e-5 where outputs reach 37 (3e-7 of the largest magnitude, a few
ulp). Every x86 kernel (AVX2, AVX-512, AMX) accumulates in FP32, so 1e-5 of the largest output magnitude leaves
a 30x margin on any of them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from attn_deploy.attention.ema import EMA
from attn_deploy.config import Int8Config, load_config
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.errors import ConfigError
from attn_deploy.export.ort_passes import apply_graph_passes
from attn_deploy.export.pipeline import export_onnx
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.int8 import int8_form_passes, quantize_int8


def _conv_graph(
    batch: int | str, c_in: int, c_out: int, hw: tuple[int | str, int | str] = (9, 11), **attrs: object
) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    kernel = attrs.pop("kernel", 3)
    bias = attrs.pop("bias", True)
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    weight = rng.standard_normal((c_out, c_in // group, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b"))
    conv = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"], name="conv", **attrs)
    relu = helper.make_node("Relu", ["y"], ["out"])  # the unpacked output has a reader
    graph = helper.make_graph(
        [conv, relu],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c_in, *hw])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _packed(model: onnx.ModelProto, min_channels: int = 16) -> int:
    """Convolutions packed by the INT8 forms of a config with ``pack_narrow_convs: min_channels``."""
    passes = int8_form_passes(Int8Config(pack_narrow_convs=min_channels))
    return apply_graph_passes(model, passes).get("narrow_conv->block_diagonal", 0)


def _assert_same_sums(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the summation order of FP32 sums: 1e-5 of the largest magnitude (module docstring)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("batch", "c_in", "c_out", "attrs", "packed_weight"),
    [
        (32, 8, 8, {"pads": [1, 1, 1, 1]}, (16, 16, 3, 3)),  # EMA's 3x3 on resnet50's first stage: 2 images
        (6, 4, 4, {"strides": [2, 2]}, (12, 12, 3, 3)),  # 4 images wanted, 6 = 2 x 3: packs 3
        (
            8,
            3,
            5,
            {"kernel": 1, "bias": False},
            (20, 12, 1, 1),
        ),  # ceil(16 / 3) = 6 wanted, 8 = 4 x 2: packs 4
        (4, 8, 8, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (16, 16, 3, 3)),
    ],
)
def test_a_narrow_convolution_runs_packed_with_the_same_values(
    batch, c_in, c_out, attrs, packed_weight
) -> None:
    model = _conv_graph(batch, c_in, c_out, **attrs)
    x = np.random.default_rng(1).standard_normal((batch, c_in, 9, 11)).astype(np.float32)
    before = _run(model, x)
    assert _packed(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Conv", "Reshape", "Relu"]
    conv = model.graph.node[1]
    assert conv.name == "conv"  # name-based INT8 settings still find it
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert weights[conv.input[1]].shape == packed_weight
    assert "w" not in weights  # the unpacked weight went with its reader
    _assert_same_sums(_run(model, x), before)


def test_packing_keeps_dynamic_height_and_width() -> None:
    model = _conv_graph(4, 8, 8, hw=("H", "W"), pads=[1, 1, 1, 1])
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert _packed(model) == 1
    for h, w in ((5, 7), (16, 3)):
        x = np.random.default_rng(h).standard_normal((4, 8, h, w)).astype(np.float32)
        _assert_same_sums(_run(model, x), _run(reference, x))


def _grouped_conv_graph(groups: int) -> onnx.ModelProto:
    """EMA's dynamic export: t (N, 8 * groups, H, W) -> Reshape(t, [N * groups, 8, H, W]) -> 8-channel conv."""
    model = _conv_graph("N", 8, 8, hw=("H", "W"), pads=[1, 1, 1, 1])
    graph = model.graph
    consts = {"g": np.array(groups, np.int64), "zero": np.array([0], np.int64), "rest": np.array([8, 0, 0])}
    graph.initializer.extend(numpy_helper.from_array(v.astype(np.int64), k) for k, v in consts.items())
    make = helper.make_node
    nodes = [
        make("Shape", ["t"], ["shape"], start=0, end=1),
        make("Squeeze", ["shape", "zero"], ["n"]),
        make("Mul", ["n", "g"], ["ng"]),
        make("Unsqueeze", ["ng", "zero"], ["ng1"]),
        make("Concat", ["ng1", "rest"], ["target"], axis=0),
        make("Reshape", ["t", "target"], ["x"]),
    ]
    for position, node in enumerate(nodes):
        graph.node.insert(position, node)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B", 8 * groups, "H", "W"]))
    return model


def test_a_dynamic_batch_packs_when_it_is_a_multiple_of_the_groups() -> None:
    model = _grouped_conv_graph(groups=4)  # batch 4B: packs 2 images (16 channels) at any B
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    assert _packed(model) == 1
    for b, h, w in ((1, 6, 7), (3, 5, 9)):
        t = np.random.default_rng(b).standard_normal((b, 32, h, w)).astype(np.float32)
        session = {
            name: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            for name, m in (("packed", model), ("reference", reference))
        }
        out = {name: s.run(None, {"t": t})[0] for name, s in session.items()}
        _assert_same_sums(out["packed"], out["reference"])
    # 3 groups: the batch 3B may be odd, so two images cannot be packed
    assert _packed(_grouped_conv_graph(groups=3)) == 0


@pytest.mark.parametrize(
    ("batch", "c_in", "c_out", "attrs", "min_channels"),
    [
        ("N", 8, 8, {}, 16),  # a dynamic batch: divisibility unknown
        (1, 8, 8, {}, 16),  # one image: nothing to pack with
        (3, 8, 8, {}, 16),  # two images wanted, 3 is odd: never padded
        (32, 16, 16, {}, 16),  # wide enough
        (32, 8, 32, {}, 16),  # the output is wide
        (32, 8, 8, {"group": 2}, 16),  # grouped
        (32, 8, 8, {}, 0),  # off
    ],
)
def test_packing_leaves_what_it_cannot_prove_alone(batch, c_in, c_out, attrs, min_channels) -> None:
    model = _conv_graph(batch, c_in, c_out, **attrs)
    assert _packed(model, min_channels) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu"]


def test_a_weight_computed_at_run_time_is_not_packed() -> None:
    model = _conv_graph(32, 8, 8)
    weight = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info(weight.name, TensorProto.FLOAT, list(weight.dims)))
    model.graph.initializer.remove(weight)
    assert _packed(model) == 0


SIZE = (40, 48)
SPEC = PreprocessSpec.for_kind("resize_crop", SIZE)


class EmaNet(nn.Module):
    """A stem and EMA with 8 groups of 8 channels: its 3x3 and 1x1 convolutions see a batch of 8 per image."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1), nn.ReLU())
        self.ema = EMA(64, factor=8)
        self.head = nn.Conv2d(64, 8, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ema(self.stem(x)))


def test_ema_packed_in_int8_matches_pytorch_and_the_unpacked_graph(tmp_path) -> None:
    torch.manual_seed(0)
    model = EmaNet().eval()
    path = tmp_path / "ema.onnx"
    x = torch.from_numpy(SPEC(synthetic_images(1, SIZE, seed=5)))
    result = export_onnx(model, x, path, dynamic_batch=True, dynamic_hw=True, input_names=["images"])
    assert result.exporter == "dynamo"  # the graph whose batch the pass proves even
    proto = onnx.load(str(result.path))
    calib = calibration_set("images", SPEC, num_images=8, seed=0)
    ort_int8 = Int8Config(activations="uint8", symmetric=False, outer_gates_fp=True)
    plain, plain_report = quantize_int8(proto, calib, ort_int8, cache_dir=tmp_path)
    packed, report = quantize_int8(proto, calib, replace(ort_int8, pack_narrow_convs=16), cache_dir=tmp_path)
    # EMA's 3x3 reads Reshape(x, [N * 8, 8, H, W]): at a dynamic batch, 2 images always pack. Its 1x1 reads a
    # Concat of pools, whose batch the pass does not trace, and stays (it is packed in static exports).
    assert (plain_report.graph_forms, report.graph_forms) == ({}, {"narrow_conv->block_diagonal": 1})
    dims = {i.name: list(i.dims) for i in packed.graph.initializer}
    int8_weight = {
        o: n.input[0] for n in packed.graph.node if n.op_type == "DequantizeLinear" for o in n.output
    }
    convs = [n for n in packed.graph.node if n.op_type == "Conv"]
    assert [dims[int8_weight[n.input[1]]] for n in convs].count([16, 16, 3, 3]) == 1
    unseen = (36, 44)
    images = PreprocessSpec.for_kind("resize_crop", unseen)(synthetic_images(3, unseen, seed=1000))
    outputs = {}
    for name, graph in (("plain", plain), ("packed", packed)):
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs[name] = session.run(None, {"images": images})[0]  # a batch of 3 at a size never exported
    reference = model(torch.from_numpy(images)).detach().numpy()
    # The packed graph computes the same integer products. Its calibration ran the FP32 graph with another
    # summation order, which can move a scale in its last bits and a value by one INT8 step (on resnet50-ema;
    # here the two graphs gave identical outputs, cosine vs PyTorch 0.99951 both, AVX-512 EPYC). 7-bit weights
    # make the integer kernels exact on every x86 CPU (test_int8.py), so 0.98 vs PyTorch (40x the measured
    # 1 - cosine) and 0.99 between the two hold everywhere.
    for name in ("plain", "packed"):
        assert compare_outputs([reference], [outputs[name]]).cosine > 0.98, name
    assert compare_outputs([outputs["plain"]], [outputs["packed"]]).cosine > 0.99


@pytest.mark.parametrize("value", [-1, 257, True, "16", 2.5])
def test_pack_narrow_convs_refuses_what_is_not_a_channel_count(value) -> None:
    with pytest.raises(ConfigError, match=r"pack_narrow_convs: .* is not allowed; use an integer 0\.\.256"):
        Int8Config(pack_narrow_convs=value)


def test_ort_int8_packs_narrow_convolutions_and_tensorrt_does_not() -> None:
    # measured on ONNX Runtime only (benchmarks/results/int8_narrow_convs.md)
    for name in ("ort-int8", "ort-int8-dynamic"):
        assert load_config(name).int8.pack_narrow_convs == 16
    for name in ("trt-int8", "trt-int8-dynamic", "trt-int8-fp16", "trt-int8-fp16-dynamic"):
        assert load_config(name).int8.pack_narrow_convs == 0
