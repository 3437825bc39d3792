"""CPU-only checks that an ONNX graph is something TensorRT's ONNX parser takes, before anyone reaches a GPU.

The op set follows onnx-tensorrt's ``docs/operators.md`` for TensorRT 10 ("supports operators in the
inclusive range of opset 9 to opset 20"), and DESIGN.md's verified facts: GroupNormalization-21 is rejected by
TensorRT 10.7, TopK needs a constant K <= 3840.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import numpy_helper

MAX_TRT_OPSET = 20
MAX_TOPK_K = 3840

# ONNX ops (default domain) that TensorRT 10's ONNX parser supports (onnx-tensorrt docs/operators.md).
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
        "AveragePool",
        "BatchNormalization",
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
        "HammingWindow",
        "HannWindow",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
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
        "PRelu",
        "Pow",
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
        "RoiAlign",
        "Round",
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
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
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
    """Everything in ``model`` that TensorRT's ONNX parser would reject (empty list: clean)."""
    issues: list[LintIssue] = []
    opset = opset_of(model)
    if opset > MAX_TRT_OPSET:
        issues.append(
            LintIssue("<graph>", "opset", f"opset {opset} > {MAX_TRT_OPSET}; export with --opset 18")
        )
    constants = _constants(model.graph)
    for node in model.graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.domain not in ("", "ai.onnx"):
            issues.append(
                LintIssue(name, node.op_type, f"custom domain '{node.domain}' needs a TensorRT plugin")
            )
        elif node.op_type not in TENSORRT_OPS:
            issues.append(LintIssue(name, node.op_type, "not supported by TensorRT's ONNX parser"))
        if node.op_type == "GroupNormalization" and opset >= 21:
            issues.append(
                LintIssue(
                    name,
                    node.op_type,
                    "GroupNormalization-21 is rejected by TensorRT 10.7; export at opset <= 20",
                )
            )
        if node.op_type == "TopK":
            k = constants.get(node.input[1]) if len(node.input) > 1 else None
            if k is None:
                issues.append(
                    LintIssue(name, node.op_type, "K is computed at run time; TensorRT needs a constant K")
                )
            elif int(numpy_helper.to_array(k).reshape(-1)[0]) > MAX_TOPK_K:
                issues.append(LintIssue(name, node.op_type, f"K > {MAX_TOPK_K} is not supported by TensorRT"))
    return issues
