"""Export a model into an artifact directory (see :mod:`attn_deploy.artifacts` for the layout)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from attn_deploy import fsutil
from attn_deploy.artifacts import MANIFEST_NAME, ONNX_NAME, REPORT_NAME, Artifact, staged_directory
from attn_deploy.backends.trt_commands import engine_markdown
from attn_deploy.export.lint import opset_of
from attn_deploy.export.manifest import build_manifest, parity_dict
from attn_deploy.export.pipeline import ExportResult, StageCallback, export_onnx
from attn_deploy.export.request import ExportRequest
from attn_deploy.markdown import markdown_table
from attn_deploy.validate.scoring import Check


def render_report(manifest: dict[str, Any]) -> str:
    """``report.md`` for an export: parity per shape, op counts before/after simplify, rewrites, lint."""
    parity = manifest["parity"]
    ops_before, ops_after = manifest["ops"]["before"], manifest["ops"]["after"]
    sites: dict[str, list[str]] = {}
    for site in manifest.get("rewrite_sites", []):
        sites.setdefault(site["rule"], []).append(site["module"] or "<root>")
    lines = [
        f"# {manifest['model']} / {manifest['target']}\n",
        f"- precision: {manifest['precision']}, opset {manifest['opset']}, dynamic: "
        f"batch={manifest['dynamic']['batch']}, hw={manifest['dynamic']['hw']}",
        f"- export shape: {manifest['export_shape']}; exported in {manifest['export_seconds']} s",
        f"- sha256 of {manifest['onnx']}: `{manifest['sha256']}`",
        f"{source_line(manifest.get('source'))}\n",
        "## Parity against PyTorch FP32\n",
        markdown_table(
            ["verified shapes", "max abs", "max rel", "min cosine", "tolerance", "passed"],
            [
                [
                    ", ".join("x".join(map(str, s)) for s in parity["shapes"]),
                    parity["max_abs"],
                    parity["max_rel"],
                    parity["cosine"],
                    "; ".join(
                        f"{c.metric} {c.tolerance}" for c in (Check(**d) for d in parity["checks"]) if c.gated
                    )
                    if "checks" in parity  # a precision target's checks (attn_deploy.precision.apply)
                    else f"atol {parity['atol']:g} + rtol {parity['rtol']:g}·max|ref|",
                    parity["passed"],
                ]
            ],
        ),
        *precision_sections(manifest),
        "## Inputs and outputs\n",
        markdown_table(
            ["kind", "name", "dtype", "shape"],
            [["input", v["name"], v["dtype"], v["shape"]] for v in manifest["inputs"]]
            + [["output", v["name"], v["dtype"], v["shape"]] for v in manifest["outputs"]],
        ),
        "## Rewrites\n",
        markdown_table(["rule", "sites", "modules"], [[r, len(m), ", ".join(m)] for r, m in sites.items()])
        if sites
        else "No rewrite was needed.\n",
        "## Ops before / after simplify\n",
        markdown_table(
            ["op", "before", "after"],
            [
                [op, ops_before.get(op, 0), ops_after.get(op, 0)]
                for op in sorted(set(ops_before) | set(ops_after))
            ],
        ),
        "## TensorRT lint\n",
        "\n".join(f"- {issue}" for issue in manifest["tensorrt_lint"]) + "\n"
        if manifest["tensorrt_lint"]
        else "Every op is one TensorRT's ONNX parser takes.\n",
        *([engine_markdown(manifest["engine"])] if manifest.get("engine") else []),
        "## Versions\n",
        markdown_table(["library", "version"], sorted(manifest["versions"].items())),
    ]
    return "\n".join(lines)


def precision_sections(manifest: dict[str, Any]) -> list[str]:
    """A precision target's checks against PyTorch (each value with its gate, as the console shows them) and,
    for INT8, how it was calibrated and what stayed float: what the console printed, kept in the report."""
    checks = [Check(**c) for c in manifest["parity"].get("checks", [])]
    sections = []
    if checks:
        sections += [
            f"## {manifest['precision'].upper()} graph checks\n",
            markdown_table(
                ["metric", "value", "tolerance", "result"],
                [[c.metric, c.show(c.value), c.tolerance, c.result] for c in checks],
            ),
        ]
    int8 = (manifest.get("precision_info") or {}).get("int8")
    if int8:
        calibration = int8.get("calibration") or {}
        kept = ", ".join(
            f"{len(int8.get(f'{k}_nodes') or [])} {k}" for k in ("excluded", "fallback", "sensitive")
        )
        forms = ", ".join(f"{k} {v}" for k, v in (int8.get("graph_forms") or {}).items()) or "-"
        sections += [
            "## INT8 calibration\n",
            markdown_table(
                ["setting", "value"],
                [
                    ["method", int8.get("method")],
                    ["images", f"{calibration.get('num_images')} from {calibration.get('source')}"],
                    ["activations / weights", f"{int8.get('activations')} / {int8.get('weights')}"],
                    ["Q/DQ nodes", int8.get("qdq_nodes")],
                    ["nodes kept float", kept],
                    ["graph forms", forms],
                ],
            ),
        ]
    return sections


def source_line(source: dict[str, Any] | None) -> str:
    """The report's line on where the model came from (:mod:`attn_deploy.models.source`)."""
    if not source:
        return "- source: not recorded"
    kind = source.get("kind")
    where = source.get("module") or source.get("path") or source.get("model")
    parts = [f"- source: {kind} `{where}`"]
    if source.get("sha256"):
        parts.append(f"sha256 `{source['sha256'][:16]}…`")
    if source.get("arch") and source.get("nc"):
        parts.append(f"{source['arch']}, {source['nc']} classes")
    if source.get("trust"):
        parts.append(str(source["trust"]))
    if source.get("attention_at_init"):
        parts.append(f"**{source['attention_at_init']['tensors']} attention tensors at their random init**")
    return "; ".join(parts)


def graph_opset(path: Path) -> int:
    """The opset of the default ONNX domain that the model file at ``path`` imports."""
    return opset_of(onnx.load(str(path), load_external_data=False))


def write_artifact_files(staging: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` and ``report.md`` into a staging directory."""
    fsutil.write_json(staging / MANIFEST_NAME, manifest)
    fsutil.write_text(staging / REPORT_NAME, render_report(manifest))


def export_artifact(
    model: nn.Module,
    sample: torch.Tensor | Sequence[torch.Tensor],
    out_dir: str | os.PathLike[str],
    request: ExportRequest,
    *,
    on_stage: StageCallback | None = None,
    precision_stage: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[Artifact, ExportResult]:
    """Export ``model`` as ``request`` says (verified, see :func:`export_onnx`) into the artifact directory
    ``out_dir``.

    ``precision_stage`` (:func:`attn_deploy.precision.apply.precision_stage`) rewrites the staged FP32 ONNX
    in place and returns manifest entries; the FP32 export's parity is then kept as ``fp32_parity``.
    """
    samples = (sample,) if isinstance(sample, torch.Tensor) else tuple(sample)
    with staged_directory(out_dir) as staging:
        result = export_onnx(model, samples, staging / ONNX_NAME, on_stage=on_stage, **request.onnx_options())
        extra: dict[str, Any] = {"export_shape": list(samples[0].shape)}
        extra.update(precision_stage(result.path) if precision_stage else {})
        if "parity" in extra:  # the precision graph's own check replaces the FP32 export's
            extra["fp32_parity"] = parity_dict(result)
        manifest = build_manifest(result, request, extra)
        write_artifact_files(staging, manifest)
    final = Path(out_dir)
    result.path = final / ONNX_NAME
    return Artifact(final, manifest), result
