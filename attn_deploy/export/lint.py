"""CPU-only checks that an ONNX graph is something TensorRT's ONNX parser takes, before anyone reaches a GPU.

The op set and restrictions follow onnx-tensorrt's current ``docs/operators.md`` (read 2026-12-01: "TensorRT
10.15 supports operators in the inclusive range of opset 9 to opset 24"; every row marked ``Y``): TopK needs
``sorted=1`` and a constant ``K`` *less than* 3840; Q/DQ zero points must be 0. DESIGN.md's verified fact is
kept too: GroupNormalization-21 is rejected by TensorRT 10.7. The bodies of If / Loop / Scan are linted like
the main graph (their nodes reach the same parser).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import numpy_helper

MIN_TRT_OPSET = 9
MAX_TRT_OPSET = 24
TOPK_K_LIMIT = 3840  # K must be below this: 3840 itself is refused ("K input must be less than 3840")

# ONNX ops (default domain) that TensorRT's ONNX parser supports: the rows marked Y in onnx-tensorrt's
# docs/operators.md (TensorRT 10.15). Ops marked N there (Sequence*, Optional*, *Integer, QLinear*, Unique,
# Col2Im, DFT, ...) fall outside this set and are reported.
TENSORRT_OPS = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "Attention",
        "AveragePool",
        "BatchNormalization",
        "BlackmanWindow",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HammingWindow",
        "HannWindow",
        "Hardmax",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LpNormalization",
        "LpPool",
        "LRN",
        "LSTM",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RMSNormalization",
        "RNN",
        "RoiAlign",
        "RotaryEmbedding",
        "Round",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "STFT",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "TensorScatter",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)


@dataclass(frozen=True)
class LintIssue:
    """One problem TensorRT would hit: the node (or graph), and a message with the fix."""

    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.op_type} '{self.node}': {self.message}"


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    values = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    return values


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset version of a model."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def lint_tensorrt(model: onnx.ModelProto) -> list[LintIssue]:
    """Everything in ``model`` that TensorRT's ONNX parser would reject (empty list: clean), subgraphs included."""
    issues: list[LintIssue] = []
    opset = opset_of(model)
    if not MIN_TRT_OPSET <= opset <= MAX_TRT_OPSET:
        issues.append(
            LintIssue(
                "<graph>",
                "opset",
                f"opset {opset} is outside TensorRT's {MIN_TRT_OPSET}..{MAX_TRT_OPSET}; export with --opset 18",
            )
        )
    _lint_graph(model.graph, opset, {}, issues)
    return issues


def _lint_graph(
    graph: onnx.GraphProto, opset: int, outer: dict[str, onnx.TensorProto], issues: list[LintIssue]
) -> None:
    constants = {**outer, **_constants(graph)}  # a body sees the constants of the graphs around it
    for node in graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        issues.extend(
            LintIssue(name, node.op_type, message) for message in _node_problems(node, opset, constants)
        )
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                _lint_graph(sub, opset, constants, issues)


def _node_problems(node: onnx.NodeProto, opset: int, constants: dict[str, onnx.TensorProto]) -> list[str]:
    if node.domain not in ("", "ai.onnx"):
        return [f"custom domain '{node.domain}' needs a TensorRT plugin"]
    if node.op_type not in TENSORRT_OPS:
        return ["not supported by TensorRT's ONNX parser (onnx-tensorrt docs/operators.md)"]
    if node.op_type == "GroupNormalization" and opset >= 21:
        return ["GroupNormalization-21 is rejected by TensorRT 10.7; export at opset <= 20"]
    if node.op_type == "TopK":
        return _topk_problems(node, constants)
    if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zero_point = constants.get(node.input[2])
        if zero_point is None or numpy_helper.to_array(zero_point).any():
            return [
                "the zero point must be a constant 0 (symmetric INT8) for TensorRT; use a trt-int8 config"
            ]
    return []


def _topk_problems(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> list[str]:
    problems = []
    if any(a.name == "sorted" and a.i == 0 for a in node.attribute):
        problems.append("sorted=0 is not supported by TensorRT; use sorted=1")
    k = constants.get(node.input[1]) if len(node.input) > 1 else None
    if k is None:
        problems.append("K is computed at run time; TensorRT needs a constant K")
    elif int(numpy_helper.to_array(k).reshape(-1)[0]) >= TOPK_K_LIMIT:
        problems.append(f"K must be less than {TOPK_K_LIMIT} for TensorRT")
    return problems
