"""Artifact directories: ``engines/<model>/<target>/`` with ``model.onnx``, ``manifest.json``, ``report.md``.

A directory is written whole or not at all: everything goes to a temporary sibling first, which then
replaces the old directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attn_deploy import fsutil
from attn_deploy.errors import InputError
from attn_deploy.export.manifest import build_manifest
from attn_deploy.export.pipeline import ExportResult, StageCallback, export_onnx
from attn_deploy.report import markdown_table

ONNX_NAME = "model.onnx"
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"


@dataclass(frozen=True)
class Artifact:
    """An artifact directory and its manifest."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        """The ONNX file of this artifact."""
        return self.dir / self.manifest.get("onnx", ONNX_NAME)

    @property
    def name(self) -> str:
        """The model name the artifact was exported from."""
        return str(self.manifest["model"])


@contextmanager
def staged_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        os.chmod(staging, fsutil.DIR_MODE)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_artifact(directory: str | os.PathLike[str]) -> Artifact:
    """Read an artifact directory; ``InputError`` (one line) if it is missing or malformed."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(
            f"'{directory}' is not an artifact directory (no {MANIFEST_NAME}); "
            "pass a directory written by `attn-deploy export`, e.g. engines/yolov8s-eca/ort-fp32"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest_path} is not valid JSON ({exc}); re-run `attn-deploy export`") from None
    missing = [k for k in ("model", "inputs", "outputs") if k not in manifest]
    if missing:
        raise InputError(f"{manifest_path} lacks {', '.join(missing)}; re-run `attn-deploy export`")
    artifact = Artifact(directory, manifest)
    if not artifact.onnx_path.is_file():
        raise InputError(f"{artifact.onnx_path} is missing; re-run `attn-deploy export`")
    return artifact


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
        f"- sha256 of {manifest['onnx']}: `{manifest['sha256']}`\n",
        "## Parity against PyTorch FP32\n",
        markdown_table(
            ["verified shapes", "max abs", "max rel", "min cosine", "tolerance", "passed"],
            [
                [
                    ", ".join("x".join(map(str, s)) for s in parity["shapes"]),
                    parity["max_abs"],
                    parity["max_rel"],
                    parity["cosine"],
                    f"atol {parity['atol']:g} + rtol {parity['rtol']:g}·max|ref|",
                    parity["passed"],
                ]
            ],
        ),
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
        "## Versions\n",
        markdown_table(["library", "version"], sorted(manifest["versions"].items())),
    ]
    return "\n".join(lines)


def write_artifact_files(staging: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` and ``report.md`` into a staging directory."""
    fsutil.write_json(staging / MANIFEST_NAME, manifest)
    fsutil.write_text(staging / REPORT_NAME, render_report(manifest))


def export_artifact(
    model: nn.Module,
    sample: torch.Tensor | Sequence[torch.Tensor],
    out_dir: str | os.PathLike[str],
    *,
    model_name: str,
    target: str = "ort-fp32",
    task: str | None = None,
    preprocess: dict[str, Any] | None = None,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
    opset: int = 18,
    simplify: bool = True,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    on_stage: StageCallback | None = None,
) -> tuple[Artifact, ExportResult]:
    """Export ``model`` (verified, see :func:`export_onnx`) into the artifact directory ``out_dir``."""
    samples = (sample,) if isinstance(sample, torch.Tensor) else tuple(sample)
    with staged_directory(out_dir) as staging:
        result = export_onnx(
            model,
            samples,
            staging / ONNX_NAME,
            dynamic_batch=dynamic_batch,
            dynamic_hw=dynamic_hw,
            opset=opset,
            simplify=simplify,
            input_names=input_names,
            output_names=output_names,
            on_stage=on_stage,
        )
        manifest = build_manifest(
            result,
            model_name=model_name,
            target=target,
            task=task,
            preprocess=preprocess,
            dynamic_batch=dynamic_batch,
            dynamic_hw=dynamic_hw,
            export_shape=tuple(samples[0].shape),
        )
        write_artifact_files(staging, manifest)
    final = Path(out_dir)
    result.path = final / ONNX_NAME
    return Artifact(final, manifest), result
