"""Artifact directories on disk: ``engines/<model>/<target>/`` with ``model.onnx``, ``manifest.json``, ``report.md``.

Torch-free, so servers and tools that only read artifacts start fast. A directory is written whole or not at
all: everything goes to a temporary sibling first, which then replaces the old directory (and only it: never a
parent, a sibling or a folder of other files). Loading checks ``model.onnx`` against the manifest's sha256.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from attn_deploy import fsutil
from attn_deploy.errors import ConfigError, InputError

ONNX_NAME = "model.onnx"
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.md"
REEXPORT = "re-export it with `attn-deploy export`"


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


def check_destination(final: str | os.PathLike[str]) -> Path:
    """``final`` as a path an artifact may be written to, else a one-line ``ConfigError``.

    Refused: '.', '..', a filesystem root, the working directory or one of its parents, an existing file, an
    existing non-empty folder that is not an artifact (no manifest.json), a path under a file or under a folder
    this user cannot write. Cheap: callers check before any work, :func:`staged_directory` again.
    """
    final = Path(final)
    resolved, cwd = final.resolve(), Path.cwd().resolve()
    if final.name in ("", ".", "..") or resolved == cwd or resolved in cwd.parents:
        raise ConfigError(
            f"refusing to write an artifact to '{final}': it is the working directory, a parent of it or a root; "
            "an artifact needs a folder of its own, e.g. engines/<model>/<target>"
        )
    if final.is_dir() and any(final.iterdir()) and not (final / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"refusing to replace '{final}': it holds files but no {MANIFEST_NAME}, so it is not an artifact; "
            "move them or choose another --out"
        )
    if final.exists() and not final.is_dir():
        raise ConfigError(f"cannot write an artifact to '{final}': it is a file; choose another --out")
    fsutil.check_writable_dir(final.parent)
    return final


@contextmanager
def staged_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` (checked by :func:`check_destination`) only if the
    block succeeds. Staging of dead processes next to ``final`` is removed; a signal never cuts the swap."""
    final = check_destination(final)
    with fsutil.staging(final.parent, final.name, "new") as staging:
        yield staging
        with fsutil.critical_section():
            _swap_in(staging, check_destination(final))


def _swap_in(staging: Path, final: Path) -> None:
    """Rename ``staging`` onto ``final``; an existing ``final`` is moved aside first and restored on failure."""
    if not os.path.lexists(final):
        os.replace(staging, final)
        return
    with fsutil.staging(final.parent, final.name, "old") as aside:
        os.replace(final, aside / final.name)
        try:
            os.replace(staging, final)
        except OSError:
            os.replace(aside / final.name, final)
            raise


def load_artifact(directory: str | os.PathLike[str]) -> Artifact:
    """Read an artifact directory; ``InputError`` (one line) if it is missing or malformed, if a name in its
    manifest is not a plain file name, or if ``model.onnx`` is not the file the manifest's sha256 describes."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    if directory.suffix.lower() == ".onnx" and directory.is_file():
        raise InputError(
            f"'{directory}' is a bare ONNX file, not an artifact directory: this command needs the manifest "
            "(which model, preprocessing) that `attn-deploy export` or attn_deploy.export_artifact write; "
            "`serve` and `triton-repo` take a bare .onnx"
        )
    if not directory.exists():
        what = "file" if directory.suffix.lower() == ".onnx" else "directory"
        raise InputError(
            f"'{directory}': no such {what}; pass a directory written by `attn-deploy export`, "
            "e.g. engines/yolov8s-eca/ort-fp32"
        )
    if not manifest_path.is_file():
        raise InputError(
            f"'{directory}' is not an artifact directory (no {MANIFEST_NAME}); "
            "pass a directory written by `attn-deploy export`, e.g. engines/yolov8s-eca/ort-fp32"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{manifest_path} is not valid JSON ({exc}); re-run `attn-deploy export`") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{manifest_path} is not a JSON object; re-run `attn-deploy export`")
    missing = [k for k in ("model", "inputs", "outputs", "sha256") if k not in manifest]
    if missing:
        raise InputError(f"{manifest_path} lacks {', '.join(missing)}; re-run `attn-deploy export`")
    for key in ("model", "onnx"):  # both become file names (Triton model folders, the ONNX path)
        fsutil.check_name(manifest.get(key, ONNX_NAME), f"{manifest_path}: {key}", InputError, fix=REEXPORT)
    for key in ("inputs", "outputs"):
        tensors = manifest[key]
        if not (isinstance(tensors, list) and tensors and all(_is_tensor(t) for t in tensors)):
            raise InputError(
                f"{manifest_path}: {key} is not a list of tensors with a name and a shape; {REEXPORT}"
            )
    artifact = Artifact(directory, manifest)
    if not artifact.onnx_path.is_file():
        raise InputError(f"{artifact.onnx_path} is missing; re-run `attn-deploy export`")
    actual = _sha256(artifact.onnx_path)
    if actual != manifest["sha256"]:
        raise InputError(
            f"{artifact.onnx_path} does not match its manifest (sha256 {actual[:12]}..., manifest "
            f"{str(manifest['sha256'])[:12]}...); {REEXPORT}"
        )
    try:
        graph = onnx.load(str(artifact.onnx_path), load_external_data=False).graph
    except Exception as exc:  # DecodeError, OSError, ...: bytes that hash right but do not parse
        raise InputError(
            f"cannot load the model {artifact.onnx_path}: it does not parse as ONNX ({type(exc).__name__}); "
            f"{REEXPORT}"
        ) from None
    problem = _manifest_disagreement(manifest, graph)
    if problem:
        raise InputError(
            f"{manifest_path} does not describe {artifact.onnx_path.name}: {problem}; {REEXPORT}"
        )
    return artifact


_TASK_OUTPUT_RANK = {"classify": 2, "detect": 3}  # logits (N, classes); boxes and scores (N, 4 + classes, A)


def _manifest_disagreement(manifest: dict[str, Any], graph: onnx.GraphProto) -> str | None:
    """What a hand-edited manifest says that the graph does not (its sha256 only covers ``model.onnx``):
    tensor names, dtypes and static dims, the preprocess size of a static input, the task's output rank."""
    weights = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]  # older IRs list the weights as inputs too
    for key, values in (("inputs", inputs), ("outputs", graph.output)):
        claimed = manifest[key]
        if [t["name"] for t in claimed] != [v.name for v in values]:
            return f"{key} {[t['name'] for t in claimed]} are {[v.name for v in values]} in the graph"
        for entry, value in zip(claimed, values, strict=True):
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if len(entry["shape"]) != len(dims) or any(
                (want if isinstance(want, int) else None) != got
                for want, got in zip(entry["shape"], dims, strict=True)
            ):
                return f"{entry['name']} has shape {entry['shape']}, the graph's is {_shown(dims)}"
            try:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            except (KeyError, ValueError):  # a type numpy has no name for: nothing to compare
                dtype = entry.get("dtype")
            if "dtype" in entry and entry["dtype"] != dtype:
                return f"{entry['name']} is {entry['dtype']!r}, the graph's is {dtype!r}"
    size = (manifest.get("preprocess") or {}).get("size")
    first = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if isinstance(size, list) and len(first) == 4 and None not in first[2:] and list(size) != first[2:]:
        return f"preprocess size {size} differs from the input's static H x W {first[2:]}"
    rank = _TASK_OUTPUT_RANK.get(str(manifest.get("task")))
    if rank is not None and len(manifest["outputs"][0]["shape"]) != rank:
        return f"task {manifest['task']!r} has {rank}-D outputs, the graph's first is {manifest['outputs'][0]['shape']}"
    return None


def _shown(dims: list[int | None]) -> list[int | str]:
    return [d if d is not None else "dynamic" for d in dims]


def _is_tensor(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("shape"), list)
    )


_hashes: dict[tuple[str, int, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of ``path``, hashed once per process while the file (inode, size, mtime) stays the same."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = fsutil.sha256_file(path)
    return _hashes[key]
