"""INT8 as Q/DQ nodes in the ONNX graph, calibrated with ONNX Runtime.

What TensorRT's explicit quantization expects (TensorRT 11 has no implicit INT8 or calibrators): signed INT8,
symmetric activations and weights (zero point 0), per-output-channel weight scales
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html).
ONNX Runtime's CPU provider fuses DQ -> op -> Q into integer kernels. On x86 its fast path multiplies uint8
activations by int8 weights (U8S8), so the ``ort-int8`` target uses asymmetric uint8 activations
(``int8.activations: uint8``, ``int8.symmetric: false``): resnet50-se runs at 34 ms against 67 ms with
symmetric int8 activations (FP32: 56 ms) on a 2-core Xeon, and a zero point fitted to each range halves the
step size of post-ReLU tensors (benchmarks/results/int8_placement.md). TensorRT targets keep signed symmetric
INT8; the config refuses anything else for them.

Biases: ONNX Runtime's default quantizes a Conv bias to INT32 behind a DequantizeLinear, which ORT's CPU
kernels fuse, but TensorRT's ONNX parser rejects ("only activation types allowed as input to this layer",
onnx/onnx-tensorrt#850, microsoft/onnxruntime#17738). TensorRT targets therefore keep float biases
(``quantize_bias=False``).

Weights use 7 of their 8 bits (``reduce_range``: int8 values in [-64, 64], per-channel scales doubled), on every
target, so that the INT8 graph computes the same on every x86 CPU. ONNX Runtime's u8s8 / s8s8 kernels on CPUs
without VNNI (AVX2, AVX-512 before Cascade Lake / Zen 4) multiply with ``vpmaddubsw``, which adds two
uint8 x int8 products into a saturating int16: 2 x 255 x 127 = 64770 overflows 32767, 2 x 255 x 64 = 32640 cannot.
VNNI (``vpdpbusd``) and AMX accumulate in int32 and never saturate. Measured on an AMD EPYC with AVX2 only
(resnet18-eca at 64x64, ``ort-int8``, 4 calibration images): cosine against PyTorch 0.9899 with 8-bit weights
through ONNX Runtime's integer kernels, 0.9984 for the same Q/DQ graph in exact arithmetic (what VNNI and AMX
compute), so the export passed on one CPU and was refused on another; with 7-bit weights 0.9974 both ways. The
cost is a coarser weight step where nothing would have saturated (VNNI, AMX, TensorRT); ONNX Runtime's
quantization guide recommends ``reduce_range`` for CPUs without VNNI, and an artifact cannot know which CPU it
will run on. TensorRT targets are checked on ONNX Runtime CPU too, so they need the same.

Attention-aware placement (``int8.keep_gates_fp``): the gates of attention blocks (sigmoid/softmax and the
multiply they scale, :func:`attn_deploy.precision.policy.attention_gate_nodes`) can be left unquantized. A
sigmoid gate in INT8 has 128 levels in [0, 1] and scales a whole feature map. Measured (``benchmarks/``
``precision_eval.py``, ``int8_trained.py``): equally accurate on trained models, and quantized gates run faster
on ONNX Runtime CPU, so ``ort-int8`` quantizes them and ``trt-int8`` keeps them float until TensorRT timings.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from attn_deploy.config import Int8Config
from attn_deploy.errors import ExportError, exception_summary
from attn_deploy.export.ort_passes import GraphPass, apply_graph_passes
from attn_deploy.export.stats import value_signature
from attn_deploy.fsutil import scratch_dir
from attn_deploy.parity import compare_outputs
from attn_deploy.precision.calibration import (
    CalibrationSet,
    calibration_cache_path,
    calibration_key,
    store_cache_entry,
    usable_cache_entry,
)
from attn_deploy.precision.conv_packing import pack_narrow_convs
from attn_deploy.precision.graph import GraphView, ensure_node_names
from attn_deploy.precision.int8_forms import channel_means_to_conv, window_global_max_pools
from attn_deploy.precision.policy import attention_gate_nodes, outer_product_gates, output_tail
from attn_deploy.precision.sensitivity import WEIGHTED_OPS, OutputError, sensitivity_fallback

CALIBRATION_STRIDE = 4
ACTIVATION_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@dataclass
class Int8Report:
    """How the INT8 graph was made: calibration, cache use, excluded nodes, Q/DQ counts."""

    method: str
    calibration: dict[str, Any]  # source, num_images, data_sha256
    cache_key: str
    cache_hit: bool
    keep_gates_fp: bool
    outer_gates_fp: bool
    quantize_bias: bool
    activations: str  # "uint8 asymmetric" or "int8 symmetric"
    weights: str  # int8 symmetric, per channel or per tensor, 7-bit range (module docstring)
    excluded_nodes: list[str] = field(default_factory=list)
    fallback_nodes: list[str] = field(default_factory=list)  # leading layers kept in float (fallback_cosine)
    sensitive_nodes: list[str] = field(
        default_factory=list
    )  # most sensitive layers kept float (sensitive_float)
    channel_error: dict[str, float] = field(default_factory=dict)  # before/after the sensitivity search
    qdq_nodes: int = 0
    graph_forms: dict[str, int] = field(default_factory=dict)  # sites per INT8 graph form (int8_form_passes)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return asdict(self)


def excluded_nodes(model: onnx.ModelProto, config: Int8Config) -> list[str]:
    """Nodes left unquantized: attention gates (if ``keep_gates_fp``), products of two gates (if
    ``outer_gates_fp``, :func:`~attn_deploy.precision.policy.outer_product_gates`), ``exclude_op_types``, and
    the output tail (:func:`~attn_deploy.precision.policy.output_tail`: everything after the last weighted
    layer, and the weighted layers that feed only it).

    The tail is where a detector turns features into numbers a user reads, and INT8 there costs accuracy for
    almost no time (element-wise ops on the head's small output). Measured on trained yolov8n-none at 128 px
    (mAP50-95 64.46 in FP32, 300 val images of the synthetic set): quantizing everything, 0 (the output Concat
    puts boxes in pixels beside 0..1 scores under one scale: every score rounds to 0, while the output cosine
    stays 0.9998); with only that Concat float, 49.26 (box coordinates rounded to 1/256 of the image, DFL's
    fixed 0..15 expectation weights to 7 bits); the decoding ops float, 62.21; and the DFL conv too, 64.09."""
    view = GraphView(model)
    names = set(attention_gate_nodes(view, config.gate_op_types)) if config.keep_gates_fp else set()
    if config.outer_gates_fp:
        names.update(outer_product_gates(view, config.gate_op_types))
    names.update(n.name for n in view.graph.node if n.op_type in config.exclude_op_types)
    names.update(output_tail(view))
    return sorted(names)


def quantize_int8(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    config: Int8Config | None = None,
    *,
    quantize_bias: bool = True,
    cache_dir: str | Path | None = None,
) -> tuple[onnx.ModelProto, Int8Report]:
    """Return a Q/DQ INT8 copy of the FP32 ``model`` calibrated on ``calib``, and a report.

    Calibration ranges are read from / written to the cache (``cache_dir``, else ``config.cache_dir``, else
    the user cache) under :func:`~attn_deploy.precision.calibration.calibration_key`. With
    ``config.fallback_cosine`` set, see :func:`leading_fallback`.
    """
    config = config or Int8Config()
    start = time.perf_counter()
    work = onnx.ModelProto()
    work.CopyFrom(model)
    ensure_node_names(work)
    calib = calib.for_batch(_static_batch(work, calib.input_name))
    forms = apply_graph_passes(work, int8_form_passes(config))
    exclude = excluded_nodes(work, config)
    method = config.calibration
    try:
        key, cache_hit, quantize = _quantizer(work, calib, config, quantize_bias, cache_dir)
        quantized = quantize(exclude)
    except _NearConstantTensor:
        # ONNX Runtime's histogram collector cannot bin a tensor whose values are all but equal (e.g. EMA's
        # softmax over two near-equal logits, 0.25 +- 3e-8); min/max ranges need no histogram.
        config = replace(config, calibration="minmax")
        method = f"minmax ({method} cannot bin a near-constant tensor)"
        key, cache_hit, quantize = _quantizer(work, calib, config, quantize_bias, cache_dir)
        quantized = quantize(exclude)
    refused = pools_out_of_kernel_range(quantized)
    if refused:  # ONNX Runtime would fail at the first inference: those pools stay float, and so do their
        # consumers, which would otherwise quantize the pooled tensor and recreate the fused pattern
        exclude = sorted(set(exclude) | set(refused) | readers_of(work, refused))
        quantized = quantize(exclude)
    fallback: list[str] = []
    if config.fallback_cosine is not None:
        quantized, fallback = leading_fallback(
            work, quantized, calib, config.fallback_cosine, exclude, quantize
        )
    sensitive: list[str] = []
    errors: dict[str, float] = {}
    if config.sensitive_float:
        quantized, sensitive, errors = sensitivity_fallback(
            work, quantized, calib, config.sensitive_float, exclude + fallback, quantize
        )
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node)
    report = Int8Report(
        method=method,
        calibration=calib.describe(),
        cache_key=key,
        cache_hit=cache_hit,
        keep_gates_fp=config.keep_gates_fp,
        outer_gates_fp=config.outer_gates_fp,
        quantize_bias=quantize_bias,
        activations=f"{config.activations} {'symmetric' if config.symmetric else 'asymmetric'}",
        weights=f"int8 symmetric {'per channel' if config.per_channel else 'per tensor'}, range [-64, 64]",
        excluded_nodes=exclude,
        fallback_nodes=fallback,
        sensitive_nodes=sensitive,
        channel_error=errors,
        qdq_nodes=qdq,
        graph_forms=forms,
        seconds=round(time.perf_counter() - start, 3),
    )
    return quantized, report


POOL_SCALE_RANGE = (2.0**-32, 256.0)
"""``input_scale / (output_scale * H * W)`` that ONNX Runtime's QLinearGlobalAveragePool accepts (MLAS
``qlgavgpool.cpp``; outside it the first inference fails: "QLinearGlobalAveragePool parameter out of
computation range!")."""


def pools_out_of_kernel_range(quantized: onnx.ModelProto) -> list[str]:
    """GlobalAveragePool nodes of a Q/DQ graph (DequantizeLinear -> pool -> QuantizeLinear, which ONNX Runtime
    fuses into QLinearGlobalAveragePool) whose scales the fused kernel refuses (:data:`POOL_SCALE_RANGE`).

    A pooled tensor that is all but constant calibrates to a tiny output scale: EMA pools a GroupNorm output,
    whose channel means are its bias (0 +- 1e-8 with untrained weights), so resnet50-ema's ``ort-int8`` had
    output scales of 2e-9 against input scales of 0.06 and failed at its first inference. Unknown H x W
    (dynamic shapes) counts as 1, the strictest case for the upper bound."""
    view = GraphView(quantized)
    refused = []
    for node in view.graph.node:
        if node.op_type != "GlobalAveragePool":
            continue
        before = view.producer.get(node.input[0])
        after = _next_quantize(view, node.output[0])
        if before is None or before.op_type != "DequantizeLinear" or after is None:
            continue
        x_scale, y_scale = view.constant(before.input[1]), view.constant(after.input[1])
        if x_scale is None or y_scale is None:
            continue
        shape = view.shape(node.input[0]) or ()
        area = int(np.prod([d for d in shape[2:] if isinstance(d, int)] or [1]))
        ratio = float(x_scale.ravel()[0]) / max(float(y_scale.ravel()[0]) * area, np.finfo(np.float32).tiny)
        if not POOL_SCALE_RANGE[0] <= ratio < POOL_SCALE_RANGE[1]:
            refused.append(node.name)
    return refused


SHAPE_ONLY_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")
"""Ops ONNX Runtime moves a QuantizeLinear across (QDQ propagation) before it fuses a pool with it."""


def _next_quantize(view: GraphView, tensor: str) -> onnx.NodeProto | None:
    """The QuantizeLinear that ``tensor`` reaches as the only consumer, through shape-only ops; else ``None``."""
    while True:
        consumers = view.consumers.get(tensor, [])
        if len(consumers) != 1:
            return None
        if consumers[0].op_type == "QuantizeLinear":
            return consumers[0]
        if consumers[0].op_type not in SHAPE_ONLY_OPS:
            return None
        tensor = consumers[0].output[0]


def readers_of(model: onnx.ModelProto, names: list[str]) -> set[str]:
    """The nodes that read an output of the nodes ``names``, directly or through shape-only ops (which ONNX
    Runtime would let a QuantizeLinear cross), those shape-only ops included."""
    view = GraphView(model)
    frontier = [out for n in view.graph.node if n.name in names for out in n.output]
    found: set[str] = set()
    while frontier:
        for reader in view.consumers.get(frontier.pop(), []):
            if reader.name not in found:
                found.add(reader.name)
                if reader.op_type in SHAPE_ONLY_OPS:
                    frontier.extend(reader.output)
    return found


def int8_form_passes(config: Int8Config) -> tuple[GraphPass, ...]:
    """The exact graph forms ``config`` asks for, which ONNX Runtime's INT8 kernels run faster
    (:mod:`~attn_deploy.precision.conv_packing`, :mod:`~attn_deploy.precision.int8_forms`), as graph passes for
    :func:`~attn_deploy.export.ort_passes.apply_graph_passes` (one shape inference for all of them)."""
    wanted = [
        (
            config.pack_narrow_convs > 0,
            "narrow_conv->block_diagonal",
            partial(pack_narrow_convs, min_channels=config.pack_narrow_convs),
        ),
        (config.windowed_max_pool, "global_max_pool->window", window_global_max_pools),
        (config.channel_mean_conv, "channel_mean->conv1x1", channel_means_to_conv),
    ]
    return tuple(GraphPass(name, apply) for on, name, apply in wanted if on)


def _static_batch(model: onnx.ModelProto, input_name: str) -> int:
    """The batch size ``input_name`` was exported at; 1 when it is dynamic (or the input is not found)."""
    shapes = [value_signature(v)["shape"] for v in model.graph.input if v.name == input_name]
    batch = shapes[0][0] if shapes and shapes[0] else 1
    return batch if isinstance(batch, int) and batch > 1 else 1


def calibration_stride(count: int, most: int = CALIBRATION_STRIDE) -> int:
    """The largest divisor of ``count`` up to ``most``: batches per calibration step (steps must be equal)."""
    return max(d for d in range(1, min(count, most) + 1) if count % d == 0)


class _NearConstantTensor(Exception):
    """ONNX Runtime's histogram calibration failed on a tensor with (almost) a single value."""


def _quantizer(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    config: Int8Config,
    quantize_bias: bool,
    cache_dir: str | Path | None,
) -> tuple[str, bool, Callable[[list[str]], onnx.ModelProto]]:
    """Calibration key, whether its cache exists, and a function quantizing ``model`` with given exclusions."""
    key = calibration_key(model.SerializeToString(), calib.data_hash, config)
    cache_path = calibration_cache_path(key, cache_dir if cache_dir is not None else config.cache_dir)
    hit = usable_cache_entry(cache_path, CALIBRATION_METHODS[config.calibration])

    def quantize(nodes_to_exclude: list[str]) -> onnx.ModelProto:
        return _quantize_static(model, calib, config, nodes_to_exclude, quantize_bias, cache_path)

    return key, hit, quantize


def leading_fallback(
    model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    calib: CalibrationSet,
    target: float,
    exclude: list[str],
    quantize: Callable[[list[str]], onnx.ModelProto],
) -> tuple[onnx.ModelProto, list[str]]:
    """Keep the first 1, 2, 4, 8, ... weighted layers (Conv/Gemm/MatMul, graph order) in float until the INT8
    graph's outputs reach cosine >= ``target`` against the FP32 graph on calibration images.

    Why the leading layers: measured on the zoo's ResNet-50s, quantization noise enters every layer about
    equally and is carried by every later one, so the early, high-resolution layers cost the most accuracy
    per layer kept in float (benchmarks/results/int8_placement.md). Only calibration images are used.
    """
    check = OutputError(model, calib)
    layers = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.name not in exclude]
    count = 0
    while True:
        outputs = check.outputs(quantized)
        if compare_outputs(check.reference, outputs, atol=float("inf"), min_cosine=0.0).cosine >= target:
            return quantized, layers[:count]
        if count >= len(layers):
            raise ExportError(
                f"INT8 cannot reach cosine {target:g} against FP32 even with every weighted layer in float; "
                "lower int8.fallback_cosine or use fp16"
            )
        count = min(len(layers), max(1, 2 * count))
        quantized = quantize(exclude + layers[:count])


def _quantize_static(
    model: onnx.ModelProto,
    calib: CalibrationSet,
    config: Int8Config,
    exclude: list[str],
    quantize_bias: bool,
    cache_path: Path,
) -> onnx.ModelProto:
    """One ``quantize_static`` call: calibration ranges read from ``cache_path`` if it exists (checked by
    :func:`~attn_deploy.precision.calibration.usable_cache_entry`), else computed into a private file and then
    stored there atomically."""
    extra_options = {
        "ActivationSymmetric": config.symmetric,
        "WeightSymmetric": True,
        "QuantizeBias": quantize_bias,
        "CalibTensorRangeSymmetric": config.symmetric,
        "CalibPercentile": config.percentile,
        # ONNX Runtime keeps every activation of every image in memory until it bins them (11 GB for
        # resnet50-ema on 32 images); calibrating a few images at a time bounds that.
        "CalibStridedMinMax": calibration_stride(len(calib.batches())),
    }
    with scratch_dir("attn-deploy-int8-") as tmp, _quiet_ort_quantization():
        source, out = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.int8.onnx"
        onnx.save(model, str(source))  # a path, not the proto: ONNX Runtime moves a proto's weights to files
        cached = cache_path.is_file()
        ranges = cache_path if cached else Path(tmp) / "calibration.json"
        try:
            quantize_static(
                source,
                out,
                calib.reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=ACTIVATION_TYPES[config.activations],
                weight_type=QuantType.QInt8,
                reduce_range=True,  # 7-bit weights: no u8s8 pair can saturate int16 (module docstring)
                nodes_to_exclude=exclude,
                op_types_to_quantize=list(config.op_types) or None,
                calibrate_method=CALIBRATION_METHODS[config.calibration],
                extra_options=extra_options,
                calibration_cache_path=ranges,
            )
        except (ValueError, RuntimeError) as exc:
            if "finite-sized bins" in str(exc):
                raise _NearConstantTensor(str(exc)) from None
            raise ExportError(f"INT8 quantization failed: {exception_summary(exc)}") from None
        if not cached:
            store_cache_entry(ranges, cache_path)
        return onnx.load(str(out))


class _DropPreprocessHint(logging.Filter):
    """Drop ONNX Runtime's "consider pre-processing" hint (our graphs are simplified) and per-channel notes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Also dropped: per-channel on a 1-D norm scale falls back to per-tensor, which is what we want.
        return (
            "pre-processing before quantization" not in message
            and "is out-of-range for weight" not in message
        )


@contextmanager
def _quiet_ort_quantization() -> Iterator[None]:
    """Silence ONNX Runtime's pre-processing hint and the progress lines its histogram calibrators print."""
    hint = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(hint)
