"""The model zoo: ResNet-18/50 and YOLOv8 n/s/m, each with any registered attention module.

Names are ``"<arch>-<attention>"`` (``"yolov8s-eca"``, ``"resnet50-se"``); ``"yolov8-<att>"`` means
``"yolov8s-<att>"`` and a bare architecture (``"resnet50"``) means ``"<arch>-none"``::

    from attn_deploy.models import create_model, model_spec
    model = create_model("yolov8-eca")          # eval mode, deterministic weights, BN calibrated
    model.spec                                   # ModelSpec(name="yolov8s-eca", task="detect", ...)

Default weights are seeded (identical in every process) and their BatchNorm statistics are
calibrated on synthetic natural-looking images (see ``calibrate.py``); ``weights=PATH`` loads a
state_dict instead (see ``weights.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from functools import cache
from typing import Any

import torch
from torch import nn

from attn_deploy.attention import list_attention
from attn_deploy.data.synthetic import synthetic_mosaics
from attn_deploy.errors import ConfigError, ModelNotFoundError
from attn_deploy.models import resnet, yolov8  # noqa: F401  (importing registers the architectures)
from attn_deploy.models.calibrate import calibrate_batchnorm
from attn_deploy.models.registry import ARCH_ALIASES, ARCHS, ModelSpec, register_model
from attn_deploy.models.weights import checkpoint_num_classes, load_state, read_state_dict

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec", "register_model", "resolve_name"]

SEED = 0
"""Seed of every default initialisation."""
CALIBRATION_IMAGES = 4
"""Synthetic 2x2 mosaics (16 scenes, at the default input size) that calibrate BatchNorm statistics."""


def list_models() -> list[str]:
    """Every model name ``"<arch>-<attention>"``, sorted (aliases not included)."""
    return sorted(f"{arch}-{att}" for arch in ARCHS for att in list_attention())


def resolve_name(name: str) -> str:
    """Canonical model name for ``name`` (case-insensitive; aliases resolved) or ``ModelNotFoundError``."""
    if not isinstance(name, str):
        raise ModelNotFoundError(f"a model name is a string such as 'resnet18-se', got {type(name).__name__}")
    arch, _, attention = name.strip().lower().partition("-")
    canonical = f"{ARCH_ALIASES.get(arch, arch)}-{attention or 'none'}"
    models = list_models()
    if canonical not in models:
        close = difflib.get_close_matches(canonical, models, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"architectures: {', '.join(sorted(ARCHS))}"
        raise ModelNotFoundError(f"unknown model {name!r}; {hint} (`attn-deploy list` shows every model)")
    return canonical


@cache
def model_spec(name: str) -> ModelSpec:
    """The default ``ModelSpec`` of model ``name`` (input size, classes, I/O names, preprocessing)."""
    canonical = resolve_name(name)
    arch, attention = canonical.split("-", 1)
    family = ARCHS[arch].family
    return ModelSpec(
        name=canonical,
        arch=arch,
        attention=attention,
        task=family.task,
        input_size=family.input_size,
        num_classes=family.num_classes,
        input_name="images",
        output_names=family.output_names,
        preprocess=family.preprocess,
        mean=family.mean,
        std=family.std,
        placement=family.placements[0],
        size_divisor=family.size_divisor,
    )


def create_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    placement: str | None = None,
    calibrate: bool = True,
    **attn_kwargs: Any,
) -> nn.Module:
    """Build zoo model ``name`` in eval mode, with its ``ModelSpec`` attached as ``model.spec``.

    Args:
        name: ``"<arch>-<attention>"`` or an alias (see ``list_models()``).
        weights: a state_dict file to load; when given, BatchNorm calibration is skipped.
        num_classes: override the family's class count (80 for YOLO, 1000 for ResNet); with ``weights`` and
            no ``num_classes``, the checkpoint's own class count.
        placement: where attention goes (YOLO: ``"neck"`` default, ``"backbone"``, ``"all"``;
            ResNet: ``"block"``).
        calibrate: calibrate BatchNorm statistics of the default weights on synthetic images.
        **attn_kwargs: options of the attention module (``reduction``, ``kernel_size``, ...).
    """
    spec = model_spec(name)
    family = ARCHS[spec.arch].family
    placement = placement or spec.placement
    if placement not in family.placements:
        raise ConfigError(
            f"unknown placement {placement!r} for {spec.name}; choose one of: {', '.join(family.placements)}"
        )
    state = read_state_dict(weights) if weights is not None else None
    if num_classes is None:
        num_classes = (
            spec.num_classes if state is None else checkpoint_num_classes(state, family.classes_key, weights)
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    spec = dataclasses.replace(spec, num_classes=num_classes, placement=placement)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = ARCHS[spec.arch].build(
            spec.attention, num_classes=num_classes, placement=placement, **attn_kwargs
        )
    model.eval()
    if state is not None:  # keys left at their init (attention absent from the file): kept for the manifest
        model.kept_init = load_state(model, state, weights)  # type: ignore[assignment]
    elif calibrate:
        images = synthetic_mosaics(CALIBRATION_IMAGES, spec.input_size, seed=SEED)
        calibrate_batchnorm(model, spec.normalize(images))
    model.spec = spec  # type: ignore[assignment]  # a plain attribute; stubs type Module attrs as Tensor | Module
    return model
