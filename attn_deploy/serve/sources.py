"""What `serve` and `triton-repo` take: an artifact directory, or a plain ``.onnx`` file whose manifest is read
from the graph (name: the file's stem, or the one given; inputs and outputs: the graph's), so a model exported
with ``export_onnx`` or by any other tool is served without re-exporting."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from attn_deploy.artifacts import Artifact, load_artifact
from attn_deploy.errors import ConfigError, InputError
from attn_deploy.fsutil import check_name, sha256_file
from attn_deploy.serve.signature import TensorSpec, read_signature

ONNX_SOURCE = "onnx file"
"""The manifest's ``source`` of a plain ``.onnx`` (no PyTorch reference, no TensorRT plan, no preprocess)."""
NAME_FIX = "rename it with --name, e.g. --name my-model"


def load_source(path: str | os.PathLike[str], name: str | None = None) -> Artifact:
    """The artifact directory or plain ``.onnx`` file at ``path``, served (or written) as model ``name``
    (default: the manifest's model, or the file's stem)."""
    path = Path(path)
    artifact = (
        onnx_artifact(path) if path.suffix.lower() == ".onnx" and path.is_file() else load_artifact(path)
    )
    if name is not None:
        check_name(name, "--name", ConfigError)
        artifact = Artifact(artifact.dir, {**artifact.manifest, "model": name})
    return artifact


def onnx_artifact(path: Path) -> Artifact:
    """A plain ``.onnx`` file as an :class:`Artifact`: its manifest made from the graph's signature."""
    signature = read_signature(path)  # InputError for a file that is not ONNX
    if not signature.inputs or not signature.outputs:
        raise InputError(f"{path} has no graph inputs or outputs; give an ONNX model")

    def tensors(specs: Sequence[TensorSpec]) -> list[dict]:  # dynamic dims as Triton writes them: -1
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

    manifest = {
        "model": check_name(
            model_name(path.stem), f"the model name of {path.name}", InputError, fix=NAME_FIX
        ),
        "onnx": path.name,
        "source": ONNX_SOURCE,
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
        "sha256": sha256_file(path),
    }
    return Artifact(path.parent, manifest)


def model_name(stem: str) -> str:
    """A file stem as a model name: runs of characters other than letters, digits, '.', '_' and '-' become '-'
    (``my model`` -> ``my-model``), so the name is as easy in a URL as in a Triton repository."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-")


def load_sources(paths: Sequence[str | os.PathLike[str]], names: Sequence[str] | None) -> list[Artifact]:
    """:func:`load_source` of each path with its ``--name`` (one per path, or none); names must differ."""
    if not paths:
        raise ConfigError("no artifact directories given; pass e.g. engines/<model>/ort-fp32 or a model.onnx")
    if names and len(names) != len(paths):
        raise ConfigError(f"give one --name per path, in order: {len(paths)} paths, {len(names)} names")
    artifacts = [load_source(p, n) for p, n in zip(paths, names or [None] * len(paths), strict=True)]
    seen: dict[str, str] = {}
    for path, artifact in zip(paths, artifacts, strict=True):
        if artifact.name in seen:
            raise ConfigError(
                f"'{seen[artifact.name]}' and '{path}' are both model '{artifact.name}'; name each with "
                f"--name (one per model, in order), e.g. --name {artifact.name}-a --name {artifact.name}-b"
            )
        seen[artifact.name] = str(path)
    return artifacts
