"""Artifact directories on disk: ``engines/<model>/<target>/`` with ``model.onnx``, ``manifest.json``, ``report.md``.

Torch-free, so servers and tools that only read artifacts start fast. A directory is written whole or not at
all: everything goes to a temporary sibling first, which then replaces the old directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_deploy import fsutil
from attn_deploy.errors import InputError

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
