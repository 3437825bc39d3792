"""Write a Triton model repository from artifacts, so users move to Triton without re-exporting.

Layout (Triton docs/user_guide/model_repository.md)::

    <repo>/<model>/config.pbtxt
    <repo>/<model>/1/model.onnx    platform "onnxruntime_onnx"
    <repo>/<model>/1/model.plan    platform "tensorrt_plan", when the artifact holds a TensorRT engine
    <repo>/<model>/labels.txt      class names, one per line, when the manifest records them (``label_filename``
                                   of the first output in config.pbtxt)

A TensorRT plan only runs on the GPU and TensorRT version it was built with, and its optimization
profile must cover ``max_batch_size``: Triton refuses to load a ``tensorrt_plan`` model whose ``max_batch_size``
exceeds the profile's maximum batch (docs/user_guide/model_configuration.md, "Maximum Batch Size": for TensorRT
the value must not exceed what the engine's profile allows). The requested batch is therefore checked against
the profile recorded in the manifest: the default is clamped to it, an explicit ``--max-batch`` above it is
refused. A TensorRT target whose engine was not built is refused too, never quietly written as
``onnxruntime_onnx``. The ONNX model with the TensorRT accelerator is the portable choice.

With ``kserve``, a KServe ``InferenceService`` (Triton runtime) for the repository is written next to it: the
``kserve-tritonserver`` ClusterServingRuntime serves the ``triton`` model format from ``storageUri``
(kserve/kserve config/runtimes/kserve-tritonserver.yaml; KServe docs, "Deploy with Triton").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_deploy.artifacts import Artifact
from attn_deploy.errors import ConfigError
from attn_deploy.fsutil import write_text, write_with
from attn_deploy.serve.labels import LABELS_FILE, class_names, labels_text
from attn_deploy.serve.model_config import ONNX_PLATFORM, TENSORRT_PLATFORM, build_model_config, to_pbtxt
from attn_deploy.serve.model_pool import MODEL_VERSION
from attn_deploy.serve.signature import ModelSignature, read_signature
from attn_deploy.serve.sources import ONNX_SOURCE, load_sources

PLAN_FILE = "model.plan"
DEFAULT_MAX_BATCH = 8
_MODEL_FILES = {ONNX_PLATFORM: "model.onnx", TENSORRT_PLATFORM: PLAN_FILE}


@dataclass(frozen=True)
class TritonModel:
    """What was written for one artifact."""

    name: str
    directory: Path
    model_file: Path
    config: dict[str, Any]
    notes: tuple[str, ...] = ()  # what was decided for the user (a clamped max_batch_size)

    @property
    def platform(self) -> str:
        """``onnxruntime_onnx`` or ``tensorrt_plan``."""
        return str(self.config["platform"])


def model_source(artifact: Artifact) -> tuple[str, Path]:
    """``(platform, file)`` Triton serves for ``artifact``: its TensorRT engine when one was built, else its ONNX.

    A TensorRT target (``runtime: tensorrt`` in its manifest's config, or an ``engine`` block) without a built
    ``model.plan`` is a one-line ``ConfigError``: writing it as ``onnxruntime_onnx`` would quietly serve
    something other than what was asked for."""
    manifest = artifact.manifest
    if manifest.get("source") == ONNX_SOURCE:  # a plain .onnx: never a plan lying beside it
        return ONNX_PLATFORM, artifact.onnx_path
    engine = manifest.get("engine") if isinstance(manifest.get("engine"), dict) else None
    plan = artifact.dir / PLAN_FILE
    tensorrt_target = engine is not None or (manifest.get("config") or {}).get("runtime") == "tensorrt"
    if plan.is_file() and (engine is None or engine.get("built")):
        return TENSORRT_PLATFORM, plan
    if tensorrt_target:
        raise ConfigError(
            f"{artifact.dir} is a TensorRT target without an engine (no built model.plan): run `attn-deploy "
            f"build-engine {artifact.dir}` on the GPU machine first, or give an ort-* artifact (model.onnx)"
        )
    return ONNX_PLATFORM, artifact.onnx_path


def profile_batch_range(engine: Any) -> tuple[int, int] | None:
    """``(min, max)`` batch every input's optimization profile takes, from a manifest's ``engine`` block
    (``profiles: {name: [min, opt, max]}``); ``None`` when none is recorded."""
    profiles = engine.get("profiles") if isinstance(engine, dict) else None
    if not isinstance(profiles, dict) or not profiles:
        return None
    try:
        return max(int(p[0][0]) for p in profiles.values()), min(int(p[2][0]) for p in profiles.values())
    except (TypeError, ValueError, IndexError, KeyError):
        raise ConfigError(
            "the manifest's engine profiles are malformed; rebuild with `attn-deploy build-engine`"
        ) from None


def plan_max_batch(requested: int | None, batch_range: tuple[int, int] | None) -> tuple[int, str | None]:
    """``max_batch_size`` for a ``tensorrt_plan`` model whose profile takes batches ``batch_range``, and a note
    when the default was clamped. ``requested`` None is the default (:data:`DEFAULT_MAX_BATCH`, clamped to the
    profile); an explicit value above the profile, or a profile that cannot take batch 1 while batching, is a
    one-line ``ConfigError`` (Triton would refuse the model, or send batches the engine cannot take)."""
    wanted = DEFAULT_MAX_BATCH if requested is None else requested
    if batch_range is None or wanted == 0:
        return wanted, None
    low, high = batch_range
    if low > 1:
        raise ConfigError(
            f"the engine's profile starts at batch {low}, but Triton batches from 1; rebuild it with "
            "`attn-deploy build-engine --min-shape 1x...` or use --max-batch 0"
        )
    if wanted <= high:
        return wanted, None
    if requested is not None:
        raise ConfigError(
            f"--max-batch {requested} exceeds the engine profile's max batch {high} (Triton would refuse the "
            f"model); use --max-batch {high} or rebuild the engine with a larger --max-shape"
        )
    return (
        high,
        f"max_batch_size {high}: the engine profile's max batch (default {DEFAULT_MAX_BATCH} clamped)",
    )


def write_triton_model(
    artifact: Artifact,
    repo: str | os.PathLike[str],
    *,
    max_batch: int | None = None,
    max_delay_ms: float = 2.0,
    trt_precision: str | None = None,
) -> TritonModel:
    """Write ``<repo>/<model>/{config.pbtxt, 1/model.onnx|model.plan}`` for one artifact, atomically per file.

    ``max_batch`` becomes ``max_batch_size`` when the model's batch dimension is dynamic (0 disables
    batching; ``None``: :data:`DEFAULT_MAX_BATCH`, clamped to a TensorRT engine's profile);
    ``trt_precision`` (fp32/fp16/int8) adds the TensorRT accelerator to ONNX models only.
    """
    if max_batch is not None and max_batch < 0:
        raise ConfigError(f"--max-batch must be >= 0, got {max_batch}")
    if max_delay_ms < 0:
        raise ConfigError(f"--max-delay-ms must be >= 0, got {max_delay_ms}")
    name = artifact.name
    signature, platform, source, batch, notes = _serving_choice(artifact, max_batch)
    config = build_model_config(
        name,
        signature,
        platform=platform,
        max_batch_size=batch if signature.dynamic_batch else 0,
        max_queue_delay_us=round(max_delay_ms * 1000),
        trt_precision=trt_precision if platform == ONNX_PLATFORM else None,
    )
    # Triton serves the highest numeric version folder by default: pinned, a version folder left in the
    # repository by someone else (say 3/) can never be served in place of the model written here
    # (model_config.proto: ModelVersionPolicy.Specific).
    config["version_policy"] = {"specific": {"versions": [int(MODEL_VERSION)]}}
    names = class_names(artifact.manifest)
    if names:  # Triton reads it from the model directory (model_config.proto: ModelOutput.label_filename)
        config["output"][0]["label_filename"] = LABELS_FILE
    model_dir = Path(repo) / name
    others = _other_versions(model_dir)
    if others:
        notes += (
            f"version folders {', '.join(others)} in {model_dir} were left as they were; "
            f"config.pbtxt serves version {MODEL_VERSION} only",
        )
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
    return TritonModel(name, model_dir, model_file, config, notes)


def _other_versions(model_dir: Path) -> list[str]:
    """Numeric version folders in ``model_dir`` other than the one written here, sorted by number."""
    if not model_dir.is_dir():
        return []
    found = [
        p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name != MODEL_VERSION
    ]
    return sorted(found, key=int)


def _serving_choice(
    artifact: Artifact, max_batch: int | None
) -> tuple[ModelSignature, str, Path, int, tuple[str, ...]]:
    """Signature, platform, model file, ``max_batch_size`` and notes for one artifact; every refusal is here."""
    signature = read_signature(artifact.onnx_path)
    platform, source = model_source(artifact)
    if platform != TENSORRT_PLATFORM or not signature.dynamic_batch:
        return signature, platform, source, DEFAULT_MAX_BATCH if max_batch is None else max_batch, ()
    batch, note = plan_max_batch(max_batch, profile_batch_range(artifact.manifest.get("engine")))
    return signature, platform, source, batch, (note,) if note else ()


def write_triton_repository(
    artifact_dirs: Sequence[str | os.PathLike[str]],
    repo: str | os.PathLike[str],
    *,
    max_batch: int | None = None,
    max_delay_ms: float = 2.0,
    trt_precision: str | None = None,
    names: Sequence[str] | None = None,
) -> list[TritonModel]:
    """Write one Triton model per artifact directory or plain ``.onnx`` file into ``repo``, named ``names``
    (one per path) when given; model names must be distinct."""
    artifacts = load_sources(artifact_dirs, names)
    for artifact in artifacts:  # every refusal before the first file is written
        _serving_choice(artifact, max_batch)
    return [
        write_triton_model(
            a, repo, max_batch=max_batch, max_delay_ms=max_delay_ms, trt_precision=trt_precision
        )
        for a in artifacts
    ]
