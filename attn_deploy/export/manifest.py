"""``manifest.json``: what an artifact is, how it was made, and how well it matches PyTorch."""

from __future__ import annotations

import datetime as dt
from typing import Any

from attn_deploy.export.pipeline import ExportResult
from attn_deploy.fsutil import sha256_file
from attn_deploy.machine import describe_cpu, library_versions

SCHEMA_VERSION = 1


def parity_dict(result: ExportResult) -> dict[str, Any]:
    """The manifest's ``parity`` block."""
    p = result.parity
    return {
        "max_abs": p.max_abs,
        "max_rel": p.max_rel,
        "cosine": p.cosine,
        "passed": p.passed,
        "shapes": [list(s) for s in result.shapes],
        "atol": p.atol,
        "rtol": p.rtol,
        "min_cosine": p.min_cosine,
        "judged_by": p.judged_by,
        "reference": "PyTorch FP32 eager, same inputs",
    }


def build_manifest(
    result: ExportResult,
    *,
    model_name: str,
    target: str = "ort-fp32",
    precision: str = "fp32",
    task: str | None = None,
    preprocess: dict[str, Any] | None = None,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
    export_shape: tuple[int, ...] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest for an artifact whose ONNX file is ``result.path`` (hashed as written)."""
    manifest: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "model": model_name,
        "task": task,
        "target": target,
        "precision": precision,
        "onnx": result.path.name,
        "sha256": sha256_file(result.path),
        "opset": result.opset,
        "exporter": result.exporter,
        "inputs": result.inputs,
        "outputs": result.outputs,
        "dynamic": {"batch": dynamic_batch, "hw": dynamic_hw},
        "export_shape": list(export_shape) if export_shape else None,
        "rewrites": result.rewrites,
        "rewrite_sites": [{"rule": s.rule, "module": s.module} for s in result.rewrite_sites],
        "ops": {"before": result.ops_before, "after": result.ops_after},
        "tensorrt_lint": [str(issue) for issue in result.lint],
        "parity": parity_dict(result),
        "versions": library_versions(),
        "machine": describe_cpu(),  # INT8/FP16 numerics depend on the CPU's kernels (attn_deploy.machine)
        "preprocess": preprocess,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(result.seconds, 2),
        "stage_seconds": result.stage_seconds,
    }
    manifest.update(extra or {})
    return manifest
