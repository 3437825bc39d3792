"""Write a Triton model repository from artifacts, so users move to Triton without re-exporting.

Layout (Triton docs/user_guide/model_repository.md)::

    <repo>/<model>/config.pbtxt
    <repo>/<model>/1/model.onnx    platform "onnxruntime_onnx"
    <repo>/<model>/1/model.plan    platform "tensorrt_plan", when the artifact holds a TensorRT engine
    <repo>/<model>/labels.txt      class names, one per line, when the manifest records them (``label_filename``
                                   of the first output in config.pbtxt)

A TensorRT plan only runs on the GPU and TensorRT version it was built with, and its optimization
profile must cover ``max_batch_size``; the ONNX model with the TensorRT accelerator is the portable choice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_deploy.artifacts import Artifact, load_artifact
from attn_deploy.errors import ConfigError
from attn_deploy.fsutil import write_text, write_with
from attn_deploy.serve.labels import LABELS_FILE, class_names, labels_text
from attn_deploy.serve.model_config import ONNX_PLATFORM, TENSORRT_PLATFORM, build_model_config, to_pbtxt
from attn_deploy.serve.model_pool import MODEL_VERSION
from attn_deploy.serve.signature import read_signature

PLAN_FILE = "model.plan"
_MODEL_FILES = {ONNX_PLATFORM: "model.onnx", TENSORRT_PLATFORM: PLAN_FILE}


@dataclass(frozen=True)
class TritonModel:
    """What was written for one artifact."""

    name: str
    directory: Path
    model_file: Path
    config: dict[str, Any]

    @property
    def platform(self) -> str:
        """``onnxruntime_onnx`` or ``tensorrt_plan``."""
        return str(self.config["platform"])


def write_triton_model(
    artifact: Artifact,
    repo: str | os.PathLike[str],
    *,
    max_batch: int = 8,
    max_delay_ms: float = 2.0,
    trt_precision: str | None = None,
) -> TritonModel:
    """Write ``<repo>/<model>/{config.pbtxt, 1/model.onnx|model.plan}`` for one artifact, atomically per file.

    ``max_batch`` becomes ``max_batch_size`` when the model's batch dimension is dynamic (0 disables
    batching); ``trt_precision`` (fp32/fp16/int8) adds the TensorRT accelerator to ONNX models only.
    """
    if max_batch < 0:
        raise ConfigError(f"--max-batch must be >= 0, got {max_batch}")
    if max_delay_ms < 0:
        raise ConfigError(f"--max-delay-ms must be >= 0, got {max_delay_ms}")
    name = artifact.name
    signature = read_signature(artifact.onnx_path)
    plan = artifact.dir / PLAN_FILE
    platform = TENSORRT_PLATFORM if plan.is_file() else ONNX_PLATFORM
    source = plan if platform == TENSORRT_PLATFORM else artifact.onnx_path
    config = build_model_config(
        name,
        signature,
        platform=platform,
        max_batch_size=max_batch if signature.dynamic_batch else 0,
        max_queue_delay_us=round(max_delay_ms * 1000),
        trt_precision=trt_precision if platform == ONNX_PLATFORM else None,
    )
    names = class_names(artifact.manifest)
    if names:  # Triton reads it from the model directory (model_config.proto: ModelOutput.label_filename)
        config["output"][0]["label_filename"] = LABELS_FILE
    model_dir = Path(repo) / name
    model_file = model_dir / MODEL_VERSION / _MODEL_FILES[platform]

    def copy_model(tmp: Path) -> None:
        shutil.copyfile(source, tmp)

    write_with(model_file, copy_model)
    for stale in set(_MODEL_FILES.values()) - {model_file.name}:
        (model_file.parent / stale).unlink(missing_ok=True)
    if names:
        write_text(model_dir / LABELS_FILE, labels_text(names))
    else:
        (model_dir / LABELS_FILE).unlink(missing_ok=True)
    write_text(model_dir / "config.pbtxt", to_pbtxt(config))
    return TritonModel(name, model_dir, model_file, config)


def write_triton_repository(
    artifact_dirs: Sequence[str | os.PathLike[str]],
    repo: str | os.PathLike[str],
    *,
    max_batch: int = 8,
    max_delay_ms: float = 2.0,
    trt_precision: str | None = None,
) -> list[TritonModel]:
    """Write one Triton model per artifact directory into ``repo``; model names must be distinct."""
    if not artifact_dirs:
        raise ConfigError("no artifact directories given; pass e.g. engines/<model>/ort-fp32")
    artifacts = [load_artifact(Path(d)) for d in artifact_dirs]
    names = [a.name for a in artifacts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"several artifacts are model {', '.join(duplicates)}; a Triton repository holds one per name, "
            "write them to separate --out repositories"
        )
    return [
        write_triton_model(
            a, repo, max_batch=max_batch, max_delay_ms=max_delay_ms, trt_precision=trt_precision
        )
        for a in artifacts
    ]
