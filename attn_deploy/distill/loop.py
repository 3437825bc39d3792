"""The distillation loop: a frozen teacher, a student trained toward its attention maps and outputs.

Optimiser: AdamW, the new attention parameters at ``lr``, the rest (copied from the teacher) at
``lr * backbone_lr_factor``; linear warm-up over the first 5% of the steps, then cosine decay to 0. The teacher
runs in eval mode. The student trains in train mode; with ``freeze_batchnorm`` its BatchNorm layers keep the
teacher's running statistics (eval mode: the function it learns is the one it runs afterwards, and batches
of a few images do not make noisy statistics), otherwise their statistics follow the images.

Checkpoints (``<out>/checkpoint.pt``, written atomically every ``checkpoint_every`` steps and at the end) hold
the student's state_dict, the optimiser and schedule, the step and the loss history; ``resume=True`` continues
from there. The finished student is ``<out>/student.pt``, a plain state_dict (``attn-deploy export --weights``).
Both load with ``torch.load(weights_only=True)``: nothing in them runs code.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.distill.losses import (
    LossWeights,
    capture_head,
    default_weights,
    detection_kd,
    find_detect_head,
    logits_kl,
    map_loss,
    total_loss,
)
from attn_deploy.distill.sites import SitePair, attention_sites, capture_maps, pair_sites
from attn_deploy.distill.sources import ImageSource, open_source
from attn_deploy.distill.student import init_student
from attn_deploy.errors import ConfigError, WeightsError, exception_summary
from attn_deploy.fsutil import atomic_path, check_writable_dir
from attn_deploy.models.weights import load_weights_only
from attn_deploy.models.yolov8 import YOLOv8
from attn_deploy.train.detect_loss import DetectionLoss

BACKBONE_LR_FACTOR = 0.1
WARMUP = 0.05
CHECKPOINT = "checkpoint.pt"
STUDENT = "student.pt"
MAX_STEPS = 1_000_000
MAX_BATCH = 512

StepCallback = Callable[[int, int, dict[str, float]], None]
"""``on_step(step, total_steps, loss_terms)`` after every step (progress display)."""


@dataclass
class DistillResult:
    """What :func:`distill` returns: the trained student (eval mode) and how it got there."""

    student: nn.Module
    pairs: list[SitePair]
    history: list[dict[str, float]]
    """Per step: ``step``, ``total`` and every loss term (``attention``, ``kl`` or ``box``/``cls``, ``task``)."""
    steps: int
    resumed_from: int
    seconds: float
    """Wall-clock seconds of the steps run here."""
    cpu_seconds: float
    """CPU seconds this process spent in them (all threads): what a busy machine does not inflate."""
    source: ImageSource
    settings: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    student_path: Path | None = None


def _check_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _preprocess(
    model: nn.Module, preprocess: PreprocessSpec | None, imgsz: tuple[int, int]
) -> PreprocessSpec:
    if preprocess is not None:
        return preprocess
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ConfigError(
            "the teacher has no model.spec (not a zoo model); pass preprocess=PreprocessSpec(...) to distill"
        )
    return spec.preprocessing(imgsz)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    images: str | os.PathLike[str] | np.ndarray | ImageSource,
    *,
    steps: int = 300,
    batch: int = 32,
    imgsz: int | tuple[int, int] = 64,
    lr: float = 1e-3,
    weights: LossWeights | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: int = 50,
    preprocess: PreprocessSpec | None = None,
    labels: np.ndarray | None = None,
    init: bool = True,
    backbone_lr_factor: float = BACKBONE_LR_FACTOR,
    freeze_batchnorm: bool | None = None,
    on_step: StepCallback | None = None,
) -> DistillResult:
    """Train ``student`` toward the frozen ``teacher`` on ``images``; return the student (eval mode) and its log.

    Args:
        teacher: any model with attention modules (zoo or not); it is not changed.
        student: a model of the same architecture whose attention sites line up with the teacher's
            (:func:`~attn_deploy.distill.sites.pair_sites`); trained in place.
        images: ``"synthetic:scenes"``, ``"synthetic:images"``, a folder of jpg/png (ImageFolder layout: labeled),
            a ``uint8 (N, H, W, 3)`` array (``labels`` optional), a detection ``data.yaml`` (detectors: its boxes
            add the YOLO task loss, its class count must be the teacher's) or an :class:`ImageSource`.
        steps: total optimiser steps (with ``resume``: the total, not the number still to run).
        batch: images per step. imgsz: training input size (H, W or one side).
        lr: learning rate of the attention parameters (the rest: ``lr * backbone_lr_factor``).
        weights: loss weights and temperature (:class:`~attn_deploy.distill.losses.LossWeights`); default the
            measured ones of the task (:func:`~attn_deploy.distill.losses.default_weights`).
        out: folder for ``checkpoint.pt`` and ``student.pt``; ``None`` keeps everything in memory.
        resume: continue from ``<out>/checkpoint.pt`` (its settings must match these).
        preprocess: raw images -> model input; default the teacher's ``model.spec`` preprocessing at ``imgsz``.
        init: copy the teacher's non-attention weights into the student first
            (:func:`~attn_deploy.distill.student.init_student`).
        backbone_lr_factor: learning rate of the copied (non-attention) weights, as a fraction of ``lr``.
        freeze_batchnorm: keep the student's BatchNorm layers in eval mode (the teacher's running statistics,
            their scale and shift still trained), so that the student learns the function it runs after training.
            Default: frozen for classifiers (measured: +0.6 points of agreement), trained for detectors (the
            settings of the detector record).
        on_step: progress callback ``(step, steps, terms)``.
    """
    steps = _check_int(steps, "steps", 1, MAX_STEPS)
    batch = _check_int(batch, "batch", 1, MAX_BATCH)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1, MAX_STEPS)
    size = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    for side in size:
        _check_int(side, "imgsz", 8, 4096)
    for name, value in (("lr", lr), ("backbone_lr_factor", backbone_lr_factor)):
        if isinstance(value, bool) or not (
            isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1
        ):
            raise ConfigError(f"{name} must be a number in (0, 1], got {value!r}")
    folder = None if out is None else check_writable_dir(out, "out")
    if resume and folder is None:
        raise ConfigError("resume needs the out folder of the interrupted run")
    if not resume and folder is not None and (folder / CHECKPOINT).exists():
        raise ConfigError(
            f"'{folder}' already holds a distillation checkpoint; resume it with --resume or choose another --out"
        )
    spec = _preprocess(teacher, preprocess, size)
    source = images if isinstance(images, ImageSource) else open_source(images, size, labels=labels)
    pairs = pair_sites(teacher, student)
    head_t, head_s = find_detect_head(teacher), find_detect_head(student)
    weights = weights or default_weights(head_s is not None)
    if freeze_batchnorm is None:
        freeze_batchnorm = head_s is None
    elif not isinstance(freeze_batchnorm, bool):
        raise ConfigError(f"freeze_batchnorm must be True, False or None, got {freeze_batchnorm!r}")
    if (head_t is None) != (head_s is None):
        raise ConfigError("teacher and student must both be classifiers or both detectors")
    task_loss = _detection_task_loss(teacher, student, source) if head_s is not None else None
    if source.detection and head_s is None:
        raise ConfigError(
            "a data.yaml (boxes) is for detector teachers; distil a classifier from a folder of images"
        )
    settings = {
        "teacher": _model_name(teacher),
        "student": _model_name(student),
        "student_sites": [p.student for p in pairs],
        "maps": {p.student: list(p.kinds) for p in pairs},
        "source": source.description,
        "imgsz": list(size),
        "batch": batch,
        "steps": steps,
        "lr": lr,
        "backbone_lr_factor": backbone_lr_factor,
        "freeze_batchnorm": freeze_batchnorm,
        "loss_weights": weights.to_dict(),
    }

    teacher.eval().requires_grad_(False)
    attention_params = {id(p) for site in attention_sites(student).values() for p in site.parameters()}
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if id(p) in attention_params], "lr": lr},
            {
                "params": [p for p in trainable if id(p) not in attention_params],
                "lr": lr * backbone_lr_factor,
            },
        ],
        weight_decay=1e-4,
    )
    warmup = max(1, round(steps * WARMUP))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    history: list[dict[str, float]] = []
    start = 0
    if resume:
        assert folder is not None
        start, history = _load_checkpoint(folder / CHECKPOINT, student, optimizer, schedule, settings)
    elif init:
        init_student(teacher, student)

    t_sites = {p.teacher: p.kinds for p in pairs}
    s_sites = {p.student: p.kinds for p in pairs}
    rename = {f"{p.teacher}/{k}": f"{p.student}/{k}" for p in pairs for k in p.kinds}
    began, began_cpu = time.perf_counter(), time.process_time()
    _train_mode(student, freeze_batchnorm)
    with (
        capture_maps(teacher, t_sites) as t_maps,
        capture_maps(student, s_sites) as s_maps,
        _maybe_head(head_t) as t_head,
        _maybe_head(head_s) as s_head,
    ):
        for step in range(start, steps):
            raw, y = source.batch(step, batch)
            x = torch.from_numpy(spec(raw))
            with torch.no_grad():
                t_out = teacher(x)
            s_out = student(x)
            terms = {"attention": map_loss(s_maps, {rename[k]: v for k, v in t_maps.items()})}
            if head_s is not None:
                terms.update(detection_kd(s_head, t_head, weights.temperature))
                if task_loss is not None and y is not None:  # Ultralytics scales by the batch: per image here
                    terms["task"] = task_loss.of_last_forward(torch.from_numpy(y), len(x))[0] / len(x)
            else:
                terms["kl"] = logits_kl(s_out, t_out, weights.temperature)
                if y is not None:
                    terms["task"] = F.cross_entropy(s_out, torch.from_numpy(y))
            loss = total_loss(terms, weights)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"the distillation loss became {loss.item()} at step {step + 1}; use a smaller lr (now {lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            record = {"step": step + 1, "total": loss.item(), **{k: v.item() for k, v in terms.items()}}
            history.append(record)
            if on_step:
                on_step(step + 1, steps, record)
            if folder is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                _save_checkpoint(
                    folder / CHECKPOINT, student, optimizer, schedule, step + 1, history, settings
                )
    if task_loss is not None:
        task_loss.tap.remove()
    student.eval()
    result = DistillResult(
        student,
        pairs,
        history,
        steps,
        start,
        time.perf_counter() - began,
        time.process_time() - began_cpu,
        source,
        settings,
    )
    if folder is not None:
        result.checkpoint = folder / CHECKPOINT
        result.student_path = folder / STUDENT
        with atomic_path(result.student_path) as tmp:
            torch.save(student.state_dict(), tmp)
    return result


def _train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    """Train mode for ``model``; with ``freeze_batchnorm`` its BatchNorm layers stay in eval mode."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _detection_task_loss(teacher: nn.Module, student: nn.Module, source: ImageSource) -> DetectionLoss | None:
    """The YOLOv8 loss of the student against a labeled detection source's boxes (``None``: no labels)."""
    if not source.labeled:
        return None
    if not source.detection:
        raise ConfigError(
            "labels for detectors come from a data.yaml (boxes); pass --data, not a labeled folder"
        )
    nc = getattr(find_detect_head(teacher), "nc", None)
    if nc != source.classes:
        raise ConfigError(f"the teacher has {nc} classes, the data names {source.classes}; use matching data")
    if not isinstance(student, YOLOv8):
        raise ConfigError(f"the YOLO task loss trains a zoo YOLOv8 student, got {type(student).__name__}")
    return DetectionLoss(student, source.classes)


def _model_name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return str(spec.name) if spec is not None else type(model).__name__


class _NoHead:
    def __enter__(self) -> dict[str, list[torch.Tensor]]:
        return {}

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_head(head: nn.Module | None) -> Any:
    return capture_head(head) if head is not None else _NoHead()


def _save_checkpoint(
    path: Path,
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: list[dict[str, float]],
    settings: dict[str, Any],
) -> None:
    """Write the training state atomically (a crash mid-write leaves the previous checkpoint)."""
    state = {
        "state_dict": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"},
        "step": step,
        "history": history,
        "settings": settings,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


RESUME_KEYS = (
    "teacher",
    "student",
    "student_sites",
    "source",
    "imgsz",
    "batch",
    "steps",
    "lr",
    "backbone_lr_factor",
    "freeze_batchnorm",
    "loss_weights",
)
"""Settings a resumed run must share with the checkpoint (anything else would train a different student)."""


def _load_checkpoint(
    path: Path,
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    settings: dict[str, Any],
) -> tuple[int, list[dict[str, float]]]:
    if not path.is_file():
        raise ConfigError(f"no checkpoint to resume at '{path}'; run without --resume to start")
    try:
        state = load_weights_only(path)
        saved = state["settings"]
        student.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict({**state["schedule"], "lr_lambdas": [None] * len(optimizer.param_groups)})
        step, history = int(state["step"]), list(state["history"])
    except Exception as exc:  # any failure to decode the file: a truncated or foreign checkpoint
        raise WeightsError(
            f"cannot resume from '{path}' ({type(exc).__name__}: {exception_summary(exc, limit=160)}); "
            "remove it and run without --resume"
        ) from None
    saved.setdefault("freeze_batchnorm", False)  # checkpoints from before the option trained BatchNorm
    differ = [k for k in RESUME_KEYS if saved.get(k) != settings[k]]
    if differ:
        detail = ", ".join(f"{k} {saved.get(k)!r} -> {settings[k]!r}" for k in differ[:3])
        raise ConfigError(
            f"the checkpoint at '{path}' was made with other settings ({detail}); "
            "resume with the same options, or use another --out"
        )
    return step, history
