"""The TensorRT step of a ``runtime: tensorrt`` target: what would be built (profiles, the equivalent trtexec
and polygraphy commands) and, where TensorRT and a GPU exist, the build itself.

The manifest's ``engine`` block says plainly which happened: ``built: true`` with the plan, GPU and TensorRT
version; or ``built: false`` with the reason and the commands that build the same engine elsewhere
(``attn-deploy build-engine <artifact>`` on the GPU machine, or NVIDIA's ``trtexec`` / ``polygraphy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from attn_deploy import fsutil
from attn_deploy.backends.tensorrt import build_engine, resolve_profiles
from attn_deploy.backends.trt_commands import (
    dynamic_profiles,
    polygraphy_command,
    shell_line,
    trtexec_command,
)
from attn_deploy.config import ExportConfig, ShapeProfile
from attn_deploy.errors import AttnDeployError
from attn_deploy.export.stats import graph_signature

PLAN_NAME = "model.plan"
TIMING_CACHE_NAME = "timing.cache"  # in the commands: next to the artifact (build-engine keys its own by GPU)


def _profiles(
    onnx_path: Path, config: ExportConfig, export_shapes: Mapping[str, Sequence[int]]
) -> tuple[list[dict[str, Any]], dict[str, ShapeProfile]]:
    inputs, _ = graph_signature(onnx.load(str(onnx_path), load_external_data=False))
    return inputs, resolve_profiles(config, inputs, export_shapes)


def engine_plan(
    onnx_path: Path, config: ExportConfig, export_shapes: Mapping[str, Sequence[int]]
) -> dict[str, Any]:
    """The ``engine`` block before any build: profiles per input and the trtexec / polygraphy commands (paths
    relative to the artifact folder, where they are meant to run)."""
    inputs, profiles = _profiles(onnx_path, config, export_shapes)
    dynamic = dynamic_profiles(inputs, profiles)
    args = (onnx_path.name, PLAN_NAME, dynamic, config.tensorrt, TIMING_CACHE_NAME)
    return {
        "built": False,
        "profiles": {n: [list(p.min), list(p.opt), list(p.max)] for n, p in profiles.items()},
        "commands": {
            "attn-deploy": "attn-deploy build-engine .",
            "trtexec": shell_line(trtexec_command(*args)),
            "polygraphy": shell_line(polygraphy_command(*args)),
        },
    }


def compile_engine(
    onnx_path: Path, config: ExportConfig, export_shapes: Mapping[str, Sequence[int]]
) -> dict[str, Any]:
    """Build ``model.plan`` next to the ONNX where TensorRT and a GPU exist; the ``engine`` block either way
    (``built`` false with the ``reason`` otherwise)."""
    plan = engine_plan(onnx_path, config, export_shapes)
    _, profiles = _profiles(onnx_path, config, export_shapes)
    try:
        build = build_engine(onnx_path, config, profiles)
    except AttnDeployError as exc:
        return {**plan, "built": False, "reason": str(exc)}
    fsutil.write_bytes(onnx_path.parent / PLAN_NAME, build.plan)
    return {
        **plan,
        "built": True,
        "plan": PLAN_NAME,
        "cache_key": build.key,
        "cache_hit": build.cache_hit,
        "tensorrt": build.tensorrt_version,
        "gpu": build.gpu,
        "build_seconds": round(build.seconds, 2),
        "timing_cache_reused": build.timing_cache_reused,
    }
