"""Per-layer INT8 sensitivity: which weighted layers cost the most accuracy in INT8, ranked on calibration images.

The search (``int8.sensitive_float: N``) quantizes the whole graph once, then, for every weighted layer
(Conv/Gemm/MatMul) in turn, runs the same Q/DQ graph with only that layer computing in float (its inputs
rewired past their DequantizeLinear to the float tensors, its weights and bias the FP32 initializers: no
re-quantization, so every candidate sees the same ranges) and measures the output error against FP32 on the
calibration images. The ``N`` layers whose float version lowers the error most stay float in the final graph,
which is quantized again with them excluded (a clean Q/DQ graph that ONNX Runtime fuses as usual).

The error is :func:`channel_error`, a relative squared error *per output channel*: a single cosine over a whole
output lets large channels hide small ones (YOLO puts box pixels 0..640 beside class scores 0..1 in one tensor;
a graph that rounded every score to 0 kept cosine 0.9998, benchmarks/results/map.md), so every channel counts
alike here. This is the per-layer sensitivity analysis NVIDIA's and ONNX Runtime's quantization guides suggest
for post-training quantization that misses its target (ONNX Runtime: ``onnxruntime.quantization.qdq_loss_debug``
compares float and Q/DQ activations the same way); only calibration images are used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from attn_deploy.backends.base import Runner
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.precision.calibration import CalibrationSet
from attn_deploy.precision.policy import WEIGHTED_OPS

CHECK_IMAGES = 8
"""Calibration images each candidate graph runs (the fallbacks' check set)."""


def run_images(runner: Runner, input_name: str, images: np.ndarray, batch: int = 1) -> list[np.ndarray]:
    """Outputs of ``runner`` over ``images``, ``batch`` at a time (a multiple of it), concatenated per output."""
    batches = [runner.infer({input_name: images[i : i + batch]}) for i in range(0, len(images), batch)]
    return [np.concatenate([b[name] for b in batches]) for name in batches[0]]


def channel_error(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Mean over every output channel (axis 1; the last axis of a 1-D output) of ``|out - ref|^2 / |ref|^2``."""
    errors = []
    for ref, out in zip(reference, outputs, strict=True):
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        if ref64.ndim < 2:
            ref64, out64 = ref64[None], out64[None]
        axes = tuple(i for i in range(ref64.ndim) if i != 1)
        power = np.square(ref64).sum(axis=axes)
        diff = np.square(out64 - ref64).sum(axis=axes)
        errors.append(diff / np.maximum(power, np.finfo(np.float64).tiny))
    return float(np.mean(np.concatenate(errors)))


def with_float_layer(quantized: onnx.ModelProto, model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of the Q/DQ graph ``quantized`` whose node ``name`` computes in float: its inputs are the FP32
    graph's (activations before their Q/DQ pair; weights and bias the float initializers, added under a
    ``<name>.float`` name since a DequantizeLinear may now produce the original one)."""
    float_node = next(n for n in model.graph.node if n.name == name)
    weights = {i.name: i for i in model.graph.initializer if i.name in float_node.input}
    copy = onnx.ModelProto()
    copy.CopyFrom(quantized)
    node = next(n for n in copy.graph.node if n.name == name)
    del node.input[:]
    node.input.extend(f"{i}.float" if i in weights else i for i in float_node.input)
    have = {i.name for i in copy.graph.initializer}
    for tensor_name, tensor in weights.items():
        if f"{tensor_name}.float" not in have:
            added = copy.graph.initializer.add()
            added.CopyFrom(tensor)
            added.name = f"{tensor_name}.float"
    return copy


class OutputError:
    """``error(graph)``: :func:`channel_error` of ``graph`` against the FP32 ``model`` on the first
    :data:`CHECK_IMAGES` calibration images."""

    def __init__(self, model: onnx.ModelProto, calib: CalibrationSet):
        self.input_name = calib.input_name
        self.batch = calib.batch
        self.images = calib.images[: min(len(calib.images), -(-CHECK_IMAGES // calib.batch) * calib.batch)]
        self.reference = self.outputs(model)

    def outputs(self, graph: onnx.ModelProto) -> list[np.ndarray]:
        """``graph``'s outputs on the check images (ONNX Runtime CPU)."""
        return run_images(OrtRunner(graph.SerializeToString()), self.input_name, self.images, self.batch)

    def __call__(self, graph: onnx.ModelProto) -> float:
        return channel_error(self.reference, self.outputs(graph))


def rank_layers(
    model: onnx.ModelProto, quantized: onnx.ModelProto, candidates: list[str], error: OutputError
) -> list[tuple[str, float]]:
    """Most sensitive first: each candidate layer with the error of the Q/DQ graph when it alone is float."""
    ranked = [(name, error(with_float_layer(quantized, model, name))) for name in candidates]
    return sorted(ranked, key=lambda item: item[1])


def sensitivity_fallback(
    model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    calib: CalibrationSet,
    count: int,
    exclude: list[str],
    quantize: Callable[[list[str]], onnx.ModelProto],
) -> tuple[onnx.ModelProto, list[str], dict[str, float]]:
    """Keep the ``count`` most sensitive weighted layers (:func:`rank_layers`) in float: the re-quantized graph,
    those layers, and the channel error on the check images before and after."""
    error = OutputError(model, calib)
    layers = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.name not in exclude]
    keep = [name for name, _ in rank_layers(model, quantized, layers, error)[:count]]
    final = quantize(exclude + keep)
    return final, keep, {"channel_error_before": error(quantized), "channel_error_after": error(final)}
