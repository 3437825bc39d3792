"""Where a model comes from, and how to build it again: the zoo, an Ultralytics checkpoint, a trusted checkpoint,
or a factory in the user's own code.

* ``zoo``: :func:`load_zoo` (``--model NAME [--weights state_dict.pt]``).
* ``ultralytics``: :func:`load_ultralytics` (``--weights best.pt`` / ``--checkpoint best.pt``): read with the
  restricted unpickler (nothing from the file runs), rebuilt with our layers.
* ``trusted-checkpoint``: :func:`load_trusted_checkpoint` (``--checkpoint model.pt --trust-checkpoint``): a pickled
  ``nn.Module`` (or a dict holding one under ``model``/``ema``) loaded with ``weights_only=False``: the file's
  code runs, which is why only that flag allows it.
* ``module``: :func:`load_factory` (``--module package.module:factory``): the user's callable returning a module.

Each returns a :class:`LoadedModel`: the module in eval mode, its :class:`ModelSpec` and ``source``, the
manifest's provenance block (kind, path and sha256 of the file, arch, class count and names, trust mode or module
path), from which :func:`rebuild_model` builds the same model again for ``validate``. A model whose output is
Ultralytics' eval-mode ``(y, x)`` tuple is wrapped to return ``y``, ``(B, 4 + nc, anchors)``, like the zoo's.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from attn_deploy.errors import ConfigError, InputError, WeightsError, exception_summary
from attn_deploy.fsutil import check_name, sha256_file
from attn_deploy.models import create_model
from attn_deploy.models.attention_layouts import attention_kind
from attn_deploy.models.checkpoint import load_trusted, read_checkpoint
from attn_deploy.models.registry import ModelSpec
from attn_deploy.models.resnet import RESNET
from attn_deploy.models.ultralytics import is_ultralytics, read_ultralytics
from attn_deploy.models.ultralytics_yaml import build_ultralytics
from attn_deploy.models.yolov8 import STRIDES, YOLO

TRUST_WHY = (
    "unpickling a checkpoint with weights_only=False runs any code stored in the file (a pickle can call "
    "os.system); attn-deploy does it only for files you name with --trust-checkpoint"
)
Task = Literal["detect", "classify"]


@dataclass
class LoadedModel:
    """A model ready to export: the module (eval mode), its spec, and where it came from (manifest ``source``)."""

    model: nn.Module
    spec: ModelSpec
    source: dict[str, Any]


def load_zoo(name: str, weights: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Zoo model ``name`` (with ``weights``: a state_dict or an Ultralytics checkpoint's tensors)."""
    model = create_model(name, weights=weights)
    spec: ModelSpec = model.spec  # type: ignore[assignment]
    source: dict[str, Any] = {"kind": "zoo", "model": spec.name}
    if weights is not None:
        source.update(path=str(Path(weights).resolve()), sha256=sha256_file(weights))
        kept = list(getattr(model, "kept_init", []))
        if kept:  # e.g. a plain ResNet checkpoint in resnet18-se: the SE blocks are untrained
            source["attention_at_init"] = {"tensors": len(kept), "first": kept[:3]}
    return LoadedModel(model, spec, source)


def default_name(path: Path) -> str:
    """The artifact name of a checkpoint: its stem, or ``<run>-<stem>`` for Ultralytics' ``<run>/weights/best.pt``
    (so ``runs/detect/train3/weights/best.pt`` becomes ``train3-best`` and two runs do not overwrite each other)."""
    if path.parent.name == "weights" and path.parent.parent.name:
        return f"{path.parent.parent.name}-{path.stem}"
    return path.stem


def _spec(
    name: str, arch: str, attention: str, task: Task, num_classes: int, size: tuple[int, int]
) -> ModelSpec:
    family = YOLO if task == "detect" else RESNET
    return ModelSpec(
        name=check_name(name, "--name", fix="use letters, digits, '-', '_' or '.', e.g. --name my-yolo"),
        arch=arch,
        attention=attention,
        task=task,
        input_size=size,
        num_classes=num_classes,
        input_name="images",
        output_names=family.output_names,
        preprocess=family.preprocess,
        mean=family.mean,
        std=family.std,
        placement="own",
        size_divisor=family.size_divisor,
    )


def _file_source(kind: str, path: Path, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "path": str(path.resolve()), "sha256": sha256_file(path), **fields}


def load_ultralytics(path: str | os.PathLike[str], name: str | None = None, obj: Any = None) -> LoadedModel:
    """The detector in Ultralytics checkpoint ``path``, rebuilt with our layers (no code from the file runs)."""
    path = Path(path)
    checkpoint = read_ultralytics(path, obj)
    model, arch = build_ultralytics(checkpoint)
    kinds = sorted(set(_attention_kinds(checkpoint.yaml)))
    size = checkpoint.train_imgsz or YOLO.input_size[0]
    size = size if size % 32 == 0 else YOLO.input_size[0]
    spec = _spec(
        name or default_name(path),
        arch,
        "+".join(kinds) or "none",
        "detect",
        checkpoint.num_classes,
        (size, size),
    )
    source = _file_source(
        "ultralytics",
        path,
        arch=arch,
        nc=checkpoint.num_classes,
        names=checkpoint.names,
        trust="restricted unpickler: no code from the file ran",
        form=checkpoint.form,
        yaml_layers=len(checkpoint.yaml["backbone"]) + len(checkpoint.yaml["head"]),
    )
    return LoadedModel(model, spec, source)


def _attention_kinds(yaml: dict[str, Any]) -> list[str]:
    kinds = [attention_kind(str(e[2])) for e in [*yaml["backbone"], *yaml["head"]] if isinstance(e, list)]
    return [k for k in kinds if k]


class DetectionOutput(nn.Module):
    """Returns ``y`` of Ultralytics' eval-mode ``(y, x)`` output: ``(B, 4 + nc, anchors)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[0]


def _anchors(size: tuple[int, int]) -> int:
    return sum((size[0] // s) * (size[1] // s) for s in STRIDES)


def _probe(
    model: nn.Module, task: Task | None, size: tuple[int, int], what: str
) -> tuple[nn.Module, Task, int]:
    """Run ``model`` once at ``size``; from its output tell the task and class count, wrapping a ``(y, x)``
    detection tuple. Raises ``InputError`` for an output that is neither."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:  # the user's model: any failure on a plain image batch
        raise InputError(
            f"{what} fails on a 1x3x{size[0]}x{size[1]} image batch ({type(exc).__name__}: "
            f"{exception_summary(exc, limit=160)}); pass --imgsz the size it was trained at"
        ) from None
    wrapped = isinstance(out, list | tuple) and len(out) >= 1 and isinstance(out[0], torch.Tensor)
    first = out[0] if wrapped else out
    shape = tuple(first.shape) if isinstance(first, torch.Tensor) else None
    is_boxes = (
        shape is not None
        and len(shape) == 3
        and shape[1] > 4
        and (shape[2] == _anchors(size) or task == "detect")
    )
    if is_boxes and task in (None, "detect"):
        return (DetectionOutput(model).eval() if wrapped else model), "detect", shape[1] - 4  # type: ignore[index]
    if shape is not None and len(shape) == 2 and not wrapped and task in (None, "classify"):
        return model, "classify", shape[1]
    raise InputError(
        f"{what} returns {shape if shape else type(out).__name__} at {size[0]}x{size[1]}: neither classifier logits "
        "(B, classes) nor Ultralytics-style detections (B, 4 + nc, anchors) or (y, x)"
        + (f" as --task {task} needs" if task else "")
        + "; export it with the Python API (attn_deploy.export_onnx)"
    )


def _own_model(
    module: nn.Module, task: Task | None, imgsz: tuple[int, int] | None, what: str
) -> tuple[nn.Module, Task, int, tuple[int, int]]:
    module = module.float().eval()
    probe = imgsz or ((640, 640) if task == "detect" else (224, 224))
    model, found, num_classes = _probe(module, task, probe, what)
    size = imgsz or (YOLO.input_size if found == "detect" else RESNET.input_size)
    return model, found, num_classes, size


def _names(module: nn.Module, num_classes: int) -> list[str] | None:
    names = getattr(module, "names", None)
    if isinstance(names, dict):
        names = [names.get(i) for i in range(num_classes)]
    ok = (
        isinstance(names, list | tuple)
        and len(names) == num_classes
        and all(isinstance(n, str) for n in names)
    )
    return list(names) if ok else None  # type: ignore[arg-type]


def load_trusted_checkpoint(
    path: str | os.PathLike[str],
    *,
    task: Task | None = None,
    imgsz: tuple[int, int] | None = None,
    name: str | None = None,
) -> LoadedModel:
    """The pickled ``nn.Module`` in ``path`` (or the one under ``model``/``ema`` of a dict), loaded with
    ``weights_only=False``: RUNS THE FILE'S CODE (see :data:`TRUST_WHY`)."""
    path = Path(path)
    obj = load_trusted(path)
    module = _module_in(obj)
    if module is None:
        raise WeightsError(
            f"'{path}' holds a {type(obj).__name__}, not an nn.Module (nor a dict with one under 'model' or 'ema'); "
            "for a state_dict use --model NAME --weights PATH"
        )
    model, task, num_classes, size = _own_model(module, task, imgsz, f"the model in '{path}'")
    spec = _spec(name or default_name(path), type(module).__name__, "unknown", task, num_classes, size)
    source = _file_source(
        "trusted-checkpoint",
        path,
        arch=type(module).__name__,
        nc=num_classes,
        names=_names(module, num_classes),
        trust="--trust-checkpoint: unpickled with weights_only=False",
        task=task,
        output="y of (y, x)" if isinstance(model, DetectionOutput) else "as returned",
    )
    return LoadedModel(model, spec, source)


def _module_in(obj: Any) -> nn.Module | None:
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        return next((obj[k] for k in ("model", "ema") if isinstance(obj.get(k), nn.Module)), None)
    return None


def _import_factory(target: str) -> Any:
    """``package.module:factory`` -> the callable (the working directory is importable, as with uvicorn)."""
    module_name, _, attr = target.partition(":")
    if (
        not module_name
        or not attr
        or not all(p.isidentifier() for p in [*module_name.split("."), *attr.split(".")])
    ):
        raise ConfigError(
            f"--module {target!r} is not package.module:factory; e.g. --module mypkg.models:build"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"--module {target!r}: cannot import {module_name} ({exception_summary(exc, limit=120)}); "
            "run from the folder that holds it or add it to PYTHONPATH"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--module {target!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"--module {target!r}: {attr} is not callable; name a function returning an nn.Module"
        )
    return obj


def load_factory(
    target: str, *, task: Task | None = None, imgsz: tuple[int, int] | None = None, name: str | None = None
) -> LoadedModel:
    """The ``nn.Module`` that ``package.module:factory()`` returns (the user's code, imported and called)."""
    factory = _import_factory(target)
    try:
        module = factory()
    except Exception as exc:  # the user's factory: any failure is theirs to see, in one line
        raise ConfigError(
            f"--module {target!r}: calling it failed ({type(exc).__name__}: {exception_summary(exc, limit=160)})"
        ) from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"--module {target!r} returned a {type(module).__name__}, not a torch.nn.Module")
    model, task, num_classes, size = _own_model(module, task, imgsz, f"the model from {target}")
    spec = _spec(
        name or target.rpartition(":")[2].replace(".", "-"),
        type(module).__name__,
        "unknown",
        task,
        num_classes,
        size,
    )
    source = {
        "kind": "module",
        "module": target,
        "cwd": os.getcwd(),
        "arch": type(module).__name__,
        "nc": num_classes,
        "names": _names(module, num_classes),
        "task": task,
        "output": "y of (y, x)" if isinstance(model, DetectionOutput) else "as returned",
    }
    return LoadedModel(model, spec, source)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    task: Task | None = None,
    imgsz: tuple[int, int] | None = None,
    name: str | None = None,
) -> LoadedModel:
    """``--checkpoint PATH``: an Ultralytics checkpoint read safely; with ``trust``, any pickled module."""
    if trust:
        return load_trusted_checkpoint(path, task=task, imgsz=imgsz, name=name)
    obj = read_checkpoint(path)
    if not is_ultralytics(obj):
        raise WeightsError(
            f"'{path}' is not an Ultralytics checkpoint attn-deploy can rebuild without running its code; if you "
            f"trust the file, add --trust-checkpoint ({TRUST_WHY}); for a state_dict use --model NAME --weights"
        )
    if task not in (None, "detect"):
        raise ConfigError(f"'{path}' holds a detector; drop --task {task}")
    return load_ultralytics(path, name, obj)


def rebuild_model(manifest: dict[str, Any], *, trust: bool = False) -> nn.Module:
    """The PyTorch model an artifact was exported from, built the same way (its manifest's ``source``).

    A checkpoint must still have the sha256 recorded at export. Sources that run code (a trusted checkpoint, a
    module factory) need ``trust``: a manifest alone never makes attn-deploy run code.
    """
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else None
    if source is None or source.get("kind") == "zoo":
        weights = manifest.get("weights")
        if weights and source and source.get("sha256") and _changed(Path(str(weights)), source["sha256"]):
            raise WeightsError(f"weights '{weights}' changed since the export (sha256 differs); re-export")
        return create_model(str(manifest["model"]), weights=weights)
    kind = source.get("kind")
    if kind not in ("ultralytics", "trusted-checkpoint", "module"):
        raise InputError(f"the manifest's source kind {kind!r} is unknown; re-export with attn-deploy")
    if kind != "ultralytics" and not trust:
        what = (
            f"module {source.get('module')}"
            if kind == "module"
            else f"trusted checkpoint {source.get('path')}"
        )
        raise ConfigError(
            f"this artifact was exported from the {what}; rebuilding it runs that code: pass --trust-checkpoint "
            "if you trust it"
        )
    spec = manifest.get("preprocess") or {}
    size = spec.get("size") if isinstance(spec.get("size"), list) else None
    imgsz = (int(size[0]), int(size[1])) if size else None
    task = source.get("task") if source.get("task") in ("detect", "classify") else None
    if kind == "module":
        cwd = source.get("cwd")
        if isinstance(cwd, str) and os.path.isdir(cwd) and cwd not in sys.path:  # importable as at export
            sys.path.insert(0, cwd)
        return load_factory(str(source.get("module")), task=task, imgsz=imgsz).model
    path = Path(str(source.get("path")))
    if not path.is_file():
        raise WeightsError(
            f"checkpoint '{path}' the artifact was exported from is gone; restore it or re-export"
        )
    if _changed(path, source.get("sha256")):
        raise WeightsError(f"checkpoint '{path}' changed since the export (sha256 differs); re-export it")
    if kind == "ultralytics":
        return load_ultralytics(path).model
    return load_trusted_checkpoint(path, task=task, imgsz=imgsz).model


def _changed(path: Path, sha256: Any) -> bool:
    """True when the file at ``path`` no longer has the ``sha256`` recorded at export (a missing file counts as
    unchanged here: loading it then says it is not found)."""
    return path.is_file() and sha256_file(path) != sha256
