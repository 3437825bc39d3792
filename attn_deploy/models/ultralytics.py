"""Ultralytics checkpoints (``best.pt``, ``last.pt``) read without running pickled code.

Ultralytics' trainer saves ``torch.save({"model": ..., "ema": ..., "epoch": ..., "train_args": ..., ...})``
with the pickled ``DetectionModel`` in FP16 under ``"model"`` (after training, ``"ema"`` None) or under
``"ema"`` (mid-training, ``"model"`` None, optimizer state beside it). :func:`read_ultralytics` reads it with
:func:`attn_deploy.models.checkpoint.read_checkpoint` (nothing from the file runs) and takes from the inert
records: the state_dict, ``nc``, the class ``names``, the model ``yaml`` (scale and layer list) and the strides.
:func:`attn_deploy.models.ultralytics_yaml.build_ultralytics` then builds the network: the zoo's
``yolov8{n,s,m}-none`` when the yaml is the stock ``yolov8.yaml`` at a stock scale, else from the yaml, and
loads the weights strictly (every tensor used, every parameter filled).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attn_deploy.errors import WeightsError
from attn_deploy.models.checkpoint import Record, is_module_record, module_state_dict, read_checkpoint
from attn_deploy.models.yolov8 import SCALES, STRIDES

STOCK_LAYERS: list[list[Any]] = [
    [-1, 1, "Conv", [64, 3, 2]],
    [-1, 1, "Conv", [128, 3, 2]],
    [-1, 3, "C2f", [128, True]],
    [-1, 1, "Conv", [256, 3, 2]],
    [-1, 6, "C2f", [256, True]],
    [-1, 1, "Conv", [512, 3, 2]],
    [-1, 6, "C2f", [512, True]],
    [-1, 1, "Conv", [1024, 3, 2]],
    [-1, 3, "C2f", [1024, True]],
    [-1, 1, "SPPF", [1024, 5]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 6], 1, "Concat", [1]],
    [-1, 3, "C2f", [512]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]],
    [-1, 3, "C2f", [256]],
    [-1, 1, "Conv", [256, 3, 2]],
    [[-1, 12], 1, "Concat", [1]],
    [-1, 3, "C2f", [512]],
    [-1, 1, "Conv", [512, 3, 2]],
    [[-1, 9], 1, "Concat", [1]],
    [-1, 3, "C2f", [1024]],
    [[15, 18, 21], 1, "Detect", ["nc"]],
]
"""The layers of ``ultralytics/cfg/models/v8/yolov8.yaml`` (backbone + head), as ``yaml.safe_load`` reads them."""


@dataclass(frozen=True)
class UltralyticsCheckpoint:
    """What a ``best.pt``/``last.pt`` holds about its network (tensors as stored: FP16)."""

    path: Path
    state: dict[str, torch.Tensor]
    yaml: dict[str, Any]
    num_classes: int
    names: list[str]
    strides: tuple[int, ...]
    form: str
    """``"final"`` (``"model"`` set, as ``best.pt``) or ``"training"`` (``"ema"``, as ``last.pt`` mid-run)."""
    train_imgsz: int | None = None
    layers: list[Record] = field(default_factory=list, repr=False)
    """The records of ``model.model`` (one per yaml layer): their attributes (``eps``, ``e_lambda``, ...)."""

    @property
    def scale(self) -> str | None:
        """The yaml's scale letter (``"s"``), ``None`` when it has none."""
        scale = self.yaml.get("scale")
        return scale if isinstance(scale, str) else None

    def stock_arch(self) -> str | None:
        """``"yolov8n"``/``"yolov8s"``/``"yolov8m"`` when the yaml is the stock ``yolov8.yaml`` at that stock scale
        (so the zoo's network is this one), else ``None``."""
        scale = self.scale
        if scale not in SCALES or _layers(self.yaml) != STOCK_LAYERS:
            return None
        scales = self.yaml.get("scales") or {}
        values = scales.get(scale) if isinstance(scales, dict) else None
        stock = list(SCALES[scale])
        return f"yolov8{scale}" if isinstance(values, list) and [float(v) for v in values] == stock else None


def _layers(yaml: Mapping[str, Any]) -> list[Any]:
    backbone, head = yaml.get("backbone"), yaml.get("head")
    return [*backbone, *head] if isinstance(backbone, list) and isinstance(head, list) else []


def is_ultralytics(obj: Any) -> bool:
    """True for what ``read_checkpoint`` gives for an Ultralytics training checkpoint."""
    return isinstance(obj, dict) and any(
        is_module_record(obj.get(k)) and type(obj[k]).class_path().startswith("ultralytics.")
        for k in ("model", "ema")
    )


def read_ultralytics(path: str | os.PathLike[str], obj: Any = None) -> UltralyticsCheckpoint:
    """The network in the Ultralytics checkpoint at ``path`` (``obj``: what ``read_checkpoint`` already gave).

    Raises ``WeightsError`` (one line) when the file is not an Ultralytics detection checkpoint.
    """
    path = Path(path)
    obj = read_checkpoint(path) if obj is None else obj
    if not is_ultralytics(obj):
        held = type(obj).__name__ if not isinstance(obj, Record) else type(obj).class_path()
        raise WeightsError(
            f"'{path}' is not an Ultralytics checkpoint (it holds a {held}, no ultralytics model under 'model' or "
            "'ema'); pass --model NAME --weights for a state_dict, or --checkpoint --trust-checkpoint"
        )
    form = "final" if is_module_record(obj.get("model")) else "training"
    record: Record = obj["model"] if form == "final" else obj["ema"]
    kind = type(record).class_path()
    if not kind.endswith(".DetectionModel"):
        raise WeightsError(
            f"'{path}' holds a {kind}; only detection models (DetectionModel) are rebuilt from Ultralytics "
            "checkpoints; use --checkpoint --trust-checkpoint for other tasks"
        )
    attrs = record.attributes
    yaml = attrs.get("yaml")
    if not isinstance(yaml, dict) or not _layers(yaml):
        raise WeightsError(
            f"'{path}': the model has no layer yaml (backbone/head); re-save it with Ultralytics"
        )
    state = module_state_dict(record)
    layers_record = attrs.get("_modules", {}).get("model")
    layers = (
        list(layers_record.attributes.get("_modules", {}).values())
        if isinstance(layers_record, Record)
        else []
    )
    num_classes = _num_classes(attrs, yaml, layers, path)
    names = _names(attrs.get("names"), num_classes, path)
    strides = _strides(attrs.get("stride"))
    train_args = obj.get("train_args")
    imgsz = train_args.get("imgsz") if isinstance(train_args, dict) else None
    return UltralyticsCheckpoint(
        path=path,
        state=state,
        yaml=yaml,
        num_classes=num_classes,
        names=names,
        strides=strides,
        form=form,
        train_imgsz=imgsz if type(imgsz) is int and imgsz > 0 else None,
        layers=[r for r in layers if isinstance(r, Record)],
    )


def _num_classes(attrs: Mapping[str, Any], yaml: Mapping[str, Any], layers: list[Any], path: Path) -> int:
    detect = layers[-1].attributes.get("nc") if layers and isinstance(layers[-1], Record) else None
    for value in (detect, attrs.get("nc"), yaml.get("nc")):
        if type(value) is int and value > 0:
            return value
    raise WeightsError(f"'{path}': no class count (nc) in the model; re-save it with Ultralytics")


def _names(names: Any, num_classes: int, path: Path) -> list[str]:
    if isinstance(names, dict):
        names = [names.get(i) for i in range(num_classes)]
    if names is None:
        return [str(i) for i in range(num_classes)]
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise WeightsError(
            f"'{path}': the model's class names are not {num_classes} strings (got {str(names)[:80]}); "
            "fix model.names and re-save"
        )
    return names


def _strides(stride: Any) -> tuple[int, ...]:
    if isinstance(stride, torch.Tensor) and stride.dim() == 1:
        return tuple(int(s) for s in stride.float().tolist())
    return STRIDES
