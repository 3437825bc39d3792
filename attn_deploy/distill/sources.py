"""Where the distillation images come from: a folder of images, the synthetic sets, or an array.

Every source is deterministic: the batch of step ``i`` depends only on the source and ``i``, so a resumed run
sees the batches the interrupted one would have seen. Each also holds out images for the evaluation, which
training never draws.

* ``synthetic:scenes``: :func:`~attn_deploy.data.synthetic.labeled_scenes` (a new seed every step); the labels
  are *not* used for training (unlabeled scenes), only to score accuracy on held-out scenes (seed
  ``HOLDOUT_SEED``, the scenes ``benchmarks/int8_trained.py`` tests on).
* ``synthetic:images``: :func:`~attn_deploy.data.synthetic.synthetic_images`, unlabeled.
* a folder of ``.jpg``/``.png``: unlabeled; or, in ImageFolder layout (one sub-folder per class, no images at
  the top), labeled: the labels add the task loss. Every 10th image is held out for the evaluation when there
  are at least ``MIN_HOLDOUT_FILES`` of them; fewer are all used for both (the report says so).
* an Ultralytics ``data.yaml`` (detectors): the train split's images, letterboxed to the training size, with
  their boxes (the YOLO task loss); the val split is the holdout. Labels are ``(N, 6)`` float32 rows
  ``image_index, class, x1, y1, x2, y2`` in the pixels of those letterboxed images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from attn_deploy.data.preprocess import IMAGE_SUFFIXES, check_image_dir, list_images, load_image
from attn_deploy.data.synthetic import labeled_scenes, synthetic_images
from attn_deploy.data.yolo_dataset import load_data_yaml, load_split
from attn_deploy.errors import ConfigError, InputError

SYNTHETIC = ("synthetic:scenes", "synthetic:images")
TRAIN_SEED = 5000
"""Step ``i`` of a synthetic source draws seed ``TRAIN_SEED + i`` (the INT8 benchmark's training uses 1000+)."""
HOLDOUT_SEED = 2
MIN_HOLDOUT_FILES = 20
HOLDOUT_EVERY = 10
SCENE_CLASSES = 10
"""Classes of ``labeled_scenes`` (shape x colour family): a teacher with another class count gets no accuracy."""


@dataclass
class ImageSource:
    """Images for distillation: ``batch(step, n)`` for training, ``holdout(n)`` for the evaluation.

    Images are ``uint8 (N, H, W, 3)`` RGB at any size (the models' preprocessing resizes them); labels are
    ``int64 (N,)`` or ``None``.
    """

    description: str
    labeled: bool
    """True when the training batches carry labels (the task loss applies)."""
    size: tuple[int, int]
    kind: str
    files: list[Path] = field(default_factory=list)
    file_labels: np.ndarray | None = None
    array: np.ndarray | None = None
    classes: int | None = None
    """Classes the labels index (ImageFolder: its sub-folders; scenes: ``SCENE_CLASSES``)."""
    holdout_shared: bool = False
    """True when the evaluation images are the training images (a folder too small to split)."""
    boxes: list[np.ndarray] | None = None
    """``yolo``: per training image its ``(n, 5)`` boxes ``class, x1, y1, x2, y2``."""
    holdout_array: np.ndarray | None = None
    holdout_boxes: list[np.ndarray] | None = None
    """``yolo``: the val split's images and boxes."""

    def _train_indices(self) -> np.ndarray:
        count = len(self.files) if self.array is None else len(self.array)
        idx = np.arange(count)
        return idx if self.holdout_shared else idx[idx % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]

    def _holdout_indices(self) -> np.ndarray:
        count = len(self.files) if self.array is None else len(self.array)
        idx = np.arange(count)
        return idx if self.holdout_shared else idx[idx % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]

    def batch(self, step: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The ``n`` training images (and labels, when ``labeled``) of step ``step``."""
        if self.kind == "scenes":
            images, _ = labeled_scenes(n, self.size, seed=TRAIN_SEED + step, classes=SCENE_CLASSES)
            return images, None  # unlabeled scenes: the labels stay unused in training
        if self.kind == "images":
            return synthetic_images(n, self.size, seed=TRAIN_SEED + step), None
        pool = self._train_indices()
        pick = np.random.default_rng([TRAIN_SEED, step]).choice(pool, n, replace=len(pool) < n)
        return self._take(pick, with_labels=self.labeled)

    @property
    def detection(self) -> bool:
        """True for a labeled detection set (a ``data.yaml``): labels are box rows, not class indices."""
        return self.kind == "yolo"

    def holdout(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Up to ``n`` evaluation images that training never draws (see ``holdout_shared``), labels if known."""
        if self.kind == "yolo":
            assert self.holdout_array is not None and self.holdout_boxes is not None
            return self.holdout_array[:n], box_rows(self.holdout_boxes[:n])
        if self.kind == "scenes":
            images, labels = labeled_scenes(n, self.size, seed=HOLDOUT_SEED, classes=SCENE_CLASSES)
            return images, labels
        if self.kind == "images":
            return synthetic_images(n, self.size, seed=HOLDOUT_SEED), None
        return self._take(self._holdout_indices()[:n], with_labels=self.file_labels is not None)

    def _take(self, pick: np.ndarray, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "yolo":
            assert self.array is not None and self.boxes is not None
            return self.array[pick], box_rows([self.boxes[i] for i in pick])
        if self.array is not None:
            images = self.array[pick]
        else:
            images = _stack([load_image(self.files[i]) for i in pick], self.size)
        labels = self.file_labels[pick] if with_labels and self.file_labels is not None else None
        return images, labels


def box_rows(boxes: list[np.ndarray]) -> np.ndarray:
    """Per-image ``(n, 5)`` boxes -> ``(N, 6)`` float32 rows ``image_index, class, x1, y1, x2, y2``."""
    rows = [np.column_stack([np.full(len(b), i), b]) for i, b in enumerate(boxes) if len(b)]
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 6), np.float32)


def yolo_source(data_yaml: str | os.PathLike[str], size: tuple[int, int]) -> ImageSource:
    """The :class:`ImageSource` of an Ultralytics ``data.yaml``: its train split (letterboxed to ``size``, loaded
    once) for training, its val split for the evaluation. A missing or malformed yaml is a one-line error."""
    dataset = load_data_yaml(data_yaml)
    images, boxes = load_split(dataset, "train", size)
    val_images, val_boxes = load_split(dataset, "val", size)
    return ImageSource(
        f"{dataset.yaml_path} ({len(images)} train, {len(val_images)} val images, {dataset.num_classes} classes)",
        True, size, "yolo", array=images, classes=dataset.num_classes, boxes=boxes,
        holdout_array=val_images, holdout_boxes=val_boxes,
    )  # fmt: skip


def _stack(images: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Images of any sizes as one ``(N, H, W, 3)`` array: each resized (stretched) to ``size``."""
    h, w = size
    return np.stack(
        [
            img
            if img.shape[:2] == (h, w)
            else np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
            for img in images
        ]
    )


def open_source(
    images: str | os.PathLike[str] | np.ndarray,
    size: tuple[int, int],
    *,
    labels: np.ndarray | None = None,
) -> ImageSource:
    """The :class:`ImageSource` for ``images``: ``"synthetic:scenes"``, ``"synthetic:images"``, a folder, a
    ``data.yaml`` (:func:`yolo_source`) or a ``uint8 (N, H, W, 3)`` array (with optional ``labels``). Folder
    images are all decoded once here, so a missing folder, an empty one or a corrupt image is a one-line
    ``InputError`` before any training.
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
            raise InputError(
                f"images must be a non-empty uint8 (N, H, W, 3) RGB array, got {images.dtype} {images.shape}"
            )
        if labels is not None and np.asarray(labels).shape != (len(images),):
            raise InputError(
                f"labels must be one integer per image ({len(images)}), got shape {np.shape(labels)}"
            )
        shared = len(images) < MIN_HOLDOUT_FILES
        lab = None if labels is None else np.asarray(labels, dtype=np.int64)
        classes = None if lab is None else int(lab.max()) + 1
        return ImageSource(
            f"array of {len(images)} images", lab is not None, size, "array",
            array=images, file_labels=lab, classes=classes, holdout_shared=shared,
        )  # fmt: skip
    text = os.fspath(images)
    if text.endswith((".yaml", ".yml")):
        return yolo_source(text, size)
    if text.startswith("synthetic:"):
        if text not in SYNTHETIC:
            raise ConfigError(
                f"unknown synthetic set {text!r}; use {' or '.join(SYNTHETIC)} or a folder of images"
            )
        kind = text.split(":", 1)[1]
        return ImageSource(text, False, size, kind, classes=SCENE_CLASSES if kind == "scenes" else None)
    return _folder_source(Path(text), size)


def _folder_source(folder: Path, size: tuple[int, int]) -> ImageSource:
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    top = (
        [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if folder.is_dir()
        else []
    )
    if classes and not top:  # ImageFolder: one sub-folder per class
        files: list[Path] = []
        labels: list[int] = []
        for index, sub in enumerate(classes):
            found = [p for p in sorted(sub.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            files += found
            labels += [index] * len(found)
        if not files:
            raise InputError(
                f"image directory {folder} holds no .jpg/.png images; add some or omit the option"
            )
        for path in files:
            load_image(path)
        description = f"{folder} (ImageFolder, {len(files)} images, {len(classes)} classes)"
        return ImageSource(
            description,
            True,
            size,
            "folder",
            files=files,
            file_labels=np.asarray(labels, dtype=np.int64),
            classes=len(classes),
            holdout_shared=len(files) < MIN_HOLDOUT_FILES,
        )
    check_image_dir(folder)
    files = list_images(folder)
    return ImageSource(
        f"{folder} ({len(files)} images, unlabeled)",
        False,
        size,
        "folder",
        files=files,
        holdout_shared=len(files) < MIN_HOLDOUT_FILES,
    )
