"""The precision stage of an export: the verified FP32 ONNX in, the target's ONNX out, checked vs PyTorch.

``fp32`` leaves the graph as it is; ``fp16`` applies :func:`~attn_deploy.precision.fp16.convert_fp16` with
the config's policy; ``int8`` calibrates (``--calib-dir`` images or the synthetic set) and inserts Q/DQ nodes
with :func:`~attn_deploy.precision.int8.quantize_int8`. The new graph is then compared with the PyTorch FP32
model on the validation images under the config's tolerances; a miss is an :class:`ExportError` and nothing
is written. For ``runtime: tensorrt`` the engine is compiled too where TensorRT and a GPU exist; elsewhere
the manifest says why not, with the optimization profiles it would use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from attn_deploy import fsutil
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.backends.torch_runner import TorchRunner
from attn_deploy.config import ExportConfig
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.errors import ExportError
from attn_deploy.export.ort_passes import channel_matmul_to_mean
from attn_deploy.export.stats import op_histogram
from attn_deploy.precision.calibration import calibration_set
from attn_deploy.precision.engine import compile_engine
from attn_deploy.precision.fp16 import convert_fp16
from attn_deploy.precision.graph import load_onnx
from attn_deploy.precision.int8 import quantize_int8
from attn_deploy.precision.policy import quantized_nodes
from attn_deploy.validate.compare import compare_runners
from attn_deploy.validate.inputs import evaluation_images
from attn_deploy.validate.scoring import per_output_rows, score

StageCallback = Callable[[str], None]


@dataclass(frozen=True)
class ModelIO:
    """What the stage needs to know about the model it checks against."""

    model: nn.Module
    input_name: str
    output_names: Sequence[str]
    task: str | None
    preprocess: PreprocessSpec
    export_shape: Sequence[int]


def convert_onnx(
    onnx_path: Path, config: ExportConfig, io: ModelIO, calib_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Rewrite ``onnx_path`` in place to ``config.precision``; return the manifest's ``precision_info``."""
    if config.precision == "fp32":
        return {}
    model = load_onnx(str(onnx_path))
    # a graph pass that pays on ONNX Runtime FP32 only is undone (export/ort_passes.py)
    undone = {"channel_mean->matmul": count} if (count := channel_matmul_to_mean(model)) else {}
    if config.precision == "fp16":
        converted, report = convert_fp16(model, config.fp16)
        info: dict[str, Any] = {"fp16": report.to_dict()}
    else:
        calib = calibration_set(
            io.input_name,
            io.preprocess,
            num_images=config.int8.num_images,
            calib_dir=calib_dir,
            seed=config.int8.seed,
        )
        converted, int8_report = quantize_int8(
            model, calib, config.int8, quantize_bias=config.runtime != "tensorrt"
        )
        info = {"int8": int8_report.to_dict()}
        if config.int8.float_regions == "fp16":  # the float regions of the Q/DQ graph in FP16
            converted, fp16_report = convert_fp16(converted, config.fp16, keep_also=quantized_nodes)
            info["fp16"] = fp16_report.to_dict()
    fsutil.write_with(onnx_path, lambda tmp: onnx.save(converted, str(tmp)))
    return {**info, "ops": op_histogram(converted), **({"graph_passes_undone": undone} if undone else {})}


def check_against_pytorch(onnx_path: Path, config: ExportConfig, io: ModelIO) -> dict[str, Any]:
    """Compare the graph with PyTorch FP32 on the validation images; the manifest's ``parity`` block."""
    batch = int(io.export_shape[0])
    count = -(-config.validation.num_images // batch) * batch
    inputs = evaluation_images(io.preprocess, count, config.validation.seed)
    reference = TorchRunner(io.model, [io.input_name], list(io.output_names))
    result = compare_runners(reference, OrtRunner(onnx_path), io.input_name, inputs, batch)
    parity, checks, details = score(result.reference(), result.candidate(), io.task, config.tolerances)
    failed = [c for c in checks if not c.passed]
    if failed:
        c = failed[0]
        raise ExportError(
            f"{config.name}: {c.metric} {c.value:.6g} misses the tolerance {c.op} {c.limit:g} "
            f"against PyTorch FP32; {_hint(config)}"
        )
    return {
        "max_abs": parity.max_abs,
        "max_rel": parity.max_rel,
        "cosine": parity.cosine,
        "passed": True,
        "shapes": [[batch, *inputs.shape[1:]]],  # what the graph ran at; `reference` counts the images
        "atol": config.tolerances.max_abs,
        "rtol": config.tolerances.max_rel,
        "min_cosine": config.tolerances.cosine,
        "checks": [{"metric": c.metric, "value": c.value, "limit": c.limit, "op": c.op} for c in checks],
        "per_output": per_output_rows(parity),
        "details": details,
        "reference": f"PyTorch FP32 eager, {count} synthetic images (seed {config.validation.seed}), ORT CPU",
    }


def _hint(config: ExportConfig) -> str:
    """What to try next: for INT8, only the settings this config does not already use."""
    if config.precision != "int8":
        return "keep more ops in FP32 (fp16.keep_fp32_ops) or relax the config's tolerances"
    q = config.int8
    tries = [] if q.calibration == "entropy" else ["--calib-method entropy"]
    tries.append(f"more calibration images (int8.num_images, now {q.num_images})")
    if q.sensitive_float == 0:
        tries.append("int8.sensitive_float: 4")
    if not q.keep_gates_fp:
        tries.append("int8.keep_gates_fp: true")
    # Measured: untrained zoo weights give resnet50-none a cosine of 0.984-0.990 whatever the setting; trained
    # resnet50s score >= 0.9993 (benchmarks/results/int8_trained.md).
    return (
        f"try {', '.join(tries)}; untrained weights (a zoo model without --weights) quantize far worse than "
        "trained ones"
    )


def precision_stage(
    config: ExportConfig,
    io: ModelIO,
    calib_dir: str | os.PathLike[str] | None = None,
    on_stage: StageCallback | None = None,
) -> Callable[[Path], dict[str, Any]]:
    """The stage for :func:`attn_deploy.export.artifact.export_artifact`: rewrites the staged ONNX in place
    and returns the manifest entries (precision, target, config, precision_info, parity, engine)."""

    def stage(onnx_path: Path) -> dict[str, Any]:
        if on_stage:
            on_stage(f"precision {config.precision}")
        info = convert_onnx(onnx_path, config, io, calib_dir)
        entries: dict[str, Any] = {
            "precision": config.precision,
            "target": config.name,
            "config": config.to_dict(),
        }
        if config.precision != "fp32":
            if on_stage:
                on_stage(f"check {config.precision} vs PyTorch")
            entries["precision_info"] = info
            entries["parity"] = check_against_pytorch(onnx_path, config, io)
        if config.runtime == "tensorrt":
            if on_stage:
                on_stage("TensorRT engine")
            entries["engine"] = compile_engine(onnx_path, config, {io.input_name: list(io.export_shape)})
        return entries

    return stage
