"""``manifest.json``: what an artifact is, how it was made, and how well it matches PyTorch."""

from __future__ import annotations

import datetime as dt
from typing import Any

from attn_deploy.export.pipeline import ExportResult
from attn_deploy.export.request import ExportRequest
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
    result: ExportResult, request: ExportRequest, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest for an artifact whose ONNX file is ``result.path`` (hashed as written), made as ``request``
    says; ``extra`` entries (``export_shape``, a precision stage's ``precision``, ``target``,
    ``config``, ...) are added last and win."""
    manifest: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "model": request.model_name,
        "task": request.task,
        "target": request.target,
        "precision": "fp32",
        "onnx": result.path.name,
        "sha256": sha256_file(result.path),
        "opset": result.opset,
        "exporter": result.exporter,
        "exporter_fallback": result.exporter_fallback or None,
        "inputs": result.inputs,
        "outputs": result.outputs,
        "dynamic": {"batch": request.dynamic_batch, "hw": request.dynamic_hw},
        "export_shape": None,
        "rewrites": result.rewrites,
        "rewrite_sites": [{"rule": s.rule, "module": s.module} for s in result.rewrite_sites],
        "graph_passes": result.graph_passes,
        "ops": {"before": result.ops_before, "after": result.ops_after},
        "tensorrt_lint": [str(issue) for issue in result.lint],
        "parity": parity_dict(result),
        "versions": library_versions(),
        "machine": describe_cpu(),  # INT8/FP16 numerics depend on the CPU's kernels (attn_deploy.machine)
        "preprocess": request.preprocess,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(result.seconds, 2),
        "stage_seconds": result.stage_seconds,
        "weights": request.weights,
        "source": request.source,  # provenance: kind, checkpoint sha256, arch, nc, class names, trust mode
    }
    manifest.update(extra or {})
    return manifest
