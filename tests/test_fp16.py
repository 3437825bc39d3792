"""FP16 conversion: the mixed-precision policy against a plain conversion, on graphs that overflow FP16.

What is measured, and why not on ONNX Runtime's CPU provider alone: the CPU provider has FP16 kernels for few
ops; its InsertCastTransformer wraps the others in Cast-to-float32 / Cast-to-float16 and then drops the
back-to-back casts between them. A plain FP16 graph therefore runs mostly in float32 there and looks fine
(asserted below: that is the pitfall). A strongly typed TensorRT engine has to honour every tensor's declared
type, so we evaluate the same graph with ``onnx.reference.ReferenceEvaluator``, which computes every op in
numpy in the declared element type: a ``float16`` tensor stays ``float16`` between and inside ops, and
(x - mean)^2 overflows 65504 for |x - mean| > 256 exactly as it would on an FP16 engine.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from attn_deploy.config import Fp16Config
from attn_deploy.errors import UnsupportedOpError
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.fp16 import convert_fp16, plain_fp16_config


class GroupNormGate(nn.Module):
    """EMA-style: GroupNorm(C, C) (exported as InstanceNormalization) feeding a sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.GroupNorm(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.sigmoid(self.norm(y)) * y


class SimAMLike(nn.Module):
    """SimAM's energy: a decomposed variance, (x - mean)^2 kept as a full-size tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - x.mean((2, 3), keepdim=True)) ** 2
        v = d.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3] - 1)
        return x * torch.sigmoid(d / (4 * (v + 1e-4)) + 0.5)


class LayerNormSoftmax(nn.Module):
    """A hand-written channel LayerNorm (mean, (x-m)*(x-m), mean, sqrt) and a spatial softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(1, keepdim=True)
        v = ((x - m) * (x - m)).mean(1, keepdim=True)
        return (x - m) / torch.sqrt(v + 1e-5) * torch.softmax(x.flatten(2), -1).view_as(x)


def _export(module: nn.Module, x: torch.Tensor, path) -> onnx.ModelProto:
    torch.onnx.export(module.eval(), (x,), str(path), dynamo=True, opset_version=18, verbose=False)
    return onnx.load(str(path))


def _reference_fp16(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {model.graph.input[0].name: x})[0]


@pytest.fixture(scope="module")
def hot_input() -> torch.Tensor:
    """Activations of a few hundred: fine in FP16 storage, but their squares are not."""
    torch.manual_seed(0)
    return torch.randn(1, 8, 16, 16) * 600 + 300


@pytest.mark.parametrize("module_cls", [GroupNormGate, SimAMLike, LayerNormSoftmax])
def test_policy_prevents_the_overflow_of_a_plain_conversion(module_cls, hot_input, tmp_path):
    torch.manual_seed(1)
    module = module_cls().eval()
    model = _export(module, hot_input, tmp_path / "m.onnx")
    expected = module(hot_input).detach().numpy()
    x = hot_input.numpy()

    plain, _ = convert_fp16(model, plain_fp16_config())
    mixed, report = convert_fp16(model)

    plain_out = _reference_fp16(plain, x)
    plain_parity = compare_outputs([expected], [plain_out])
    assert plain_parity.per_output[0].nonfinite > 0 or plain_parity.cosine < 0.99, plain_parity

    mixed_parity = compare_outputs([expected], [_reference_fp16(mixed, x)])
    assert mixed_parity.per_output[0].nonfinite == 0
    assert mixed_parity.cosine >= 0.9999, mixed_parity
    assert report.fp32_nodes and report.fp16_nodes > 0

    # The pitfall: ONNX Runtime's CPU provider runs the plain graph in float32 behind its own casts.
    assert compare_outputs([expected], [_ort(plain, x)]).cosine > 0.9999


def test_converted_graph_types_and_order(hot_input, tmp_path):
    model = _export(GroupNormGate(), hot_input, tmp_path / "m.onnx")
    mixed, report = convert_fp16(model)
    float16, float32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in mixed.graph.input] == [float32]
    assert [o.type.tensor_type.elem_type for o in mixed.graph.output] == [float32]
    inferred = onnx.shape_inference.infer_shapes(mixed)
    types = {
        v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    (norm,) = [n for n in mixed.graph.node if n.op_type == "InstanceNormalization"]
    (conv,) = [n for n in mixed.graph.node if n.op_type == "Conv"]
    assert all(types[name] == float32 for name in norm.input)  # statistics in FP32
    assert all(types[name] == float16 for name in conv.input)  # the conv runs in FP16 with FP16 weights
    assert norm.name in report.fp32_nodes
    produced = {i.name for i in mixed.graph.input} | {t.name for t in mixed.graph.initializer}
    for node in mixed.graph.node:  # topologically sorted, as TensorRT's parser requires
        assert all(not name or name in produced for name in node.input), node.name
        produced.update(node.output)


def test_fp16_io_and_shared_initializers(tmp_path):
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((1, 4, 1, 1), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x * self.scale, 1) + x * self.scale

    x = torch.randn(1, 4, 8, 8)
    model = _export(Shared(), x, tmp_path / "shared.onnx")
    half_io, _ = convert_fp16(model, Fp16Config(keep_io_fp32=False))
    assert half_io.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    out = _ort(half_io, x.numpy().astype(np.float16))
    assert out.dtype == np.float16
    assert compare_outputs([Shared()(x).detach().numpy()], [out.astype(np.float32)]).cosine > 0.9999


def test_plain_conversion_keeps_nothing_and_policy_is_configurable(hot_input, tmp_path):
    model = _export(GroupNormGate(), hot_input, tmp_path / "m.onnx")
    _, plain = convert_fp16(model, plain_fp16_config())
    assert plain.fp32_nodes == {}
    _, custom = convert_fp16(model, Fp16Config(keep_fp32_ops=("Sigmoid",)))
    assert set(custom.fp32_nodes.values()) == {"Sigmoid kept FP32 (fp16.keep_fp32_ops)"}


def test_control_flow_is_refused():
    then_graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y_then"])],
        "then",
        [],
        [onnx.helper.make_tensor_value_info("y_then", onnx.TensorProto.FLOAT, [1])],
    )
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=then_graph)],
        "g",
        [
            onnx.helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, []),
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedOpError, match="control flow"):
        convert_fp16(model)


@pytest.mark.slow
def test_zoo_model_keeps_cosine(tmp_path):
    """EMA (GroupNorm -> InstanceNormalization) in a real backbone, through the export pipeline."""
    from attn_deploy import create_model, export_onnx
    from attn_deploy.data.synthetic import synthetic_images

    model = create_model("resnet18-ema")
    x = model.spec.normalize(synthetic_images(1, (96, 96), seed=3))
    result = export_onnx(model, x, tmp_path / "r18.onnx")
    mixed, report = convert_fp16(onnx.load(str(result.path)))
    assert any("InstanceNormalization" in reason for reason in report.fp32_nodes.values())
    parity = compare_outputs([model(x).detach().numpy()], [_ort(mixed, x.numpy())])
    assert parity.cosine >= 0.9999, parity


def test_range_stays_float32_as_onnx_defines_it() -> None:
    """A dynamic YOLO export builds its anchor grid with a float Range over the feature size; ONNX defines no
    float16 Range, so converting it made every FP16 dynamic YOLO export (and trt-fp16-dynamic) fail."""
    from onnx import TensorProto, helper

    size = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["limit_1d"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["limit_1d"], ["limit"]),
        helper.make_node("Range", ["zero", "limit", "one"], ["grid"]),
        helper.make_node("Mul", ["grid", "x"], ["y"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0.0), ("one", 1.0))
    ]
    graph = helper.make_graph(
        nodes, "g", [size], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    converted, report = convert_fp16(model)
    (range_node,) = [n for n in converted.graph.node if n.op_type == "Range"]
    assert range_node.name in report.fp32_nodes
    x = np.arange(5, dtype=np.float32)
    (y,) = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    np.testing.assert_array_equal(y, x * x)  # small integers: exact in FP16
