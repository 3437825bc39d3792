"""Read a detection dataset in Ultralytics' convention: ``data.yaml`` and YOLO txt labels.

``data.yaml`` holds ``path`` (the root, relative to the yaml's folder; default that folder), ``train`` and
``val`` (image folders under the root) and ``names`` (a list, or a dict ``{index: name}``). The labels of
``<root>/images/<split>/x.jpg`` are in ``<root>/labels/<split>/x.txt`` (Ultralytics replaces the last
``/images/`` of the path by ``/labels/``), one object a line: ``class cx cy w h`` normalised to 0..1. A missing
label file means an image without objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from attn_deploy.data.preprocess import letterbox, list_images, load_image
from attn_deploy.errors import InputError

SPLITS = ("train", "val")


@dataclass(frozen=True)
class DetectionDataset:
    """A parsed ``data.yaml``: class names and the image folder of each split."""

    yaml_path: Path
    names: tuple[str, ...]
    splits: dict[str, Path]

    @property
    def num_classes(self) -> int:
        """How many classes ``names`` lists."""
        return len(self.names)

    def images(self, split: str) -> list[Path]:
        """The jpg/png images of ``split`` (sorted by name)."""
        if split not in self.splits:
            raise InputError(f"{self.yaml_path} has no {split!r} split; add '{split}: images/{split}'")
        return list_images(self.splits[split])

    def labels(self, image: Path) -> np.ndarray:
        """The ``(N, 5)`` float32 labels (class, cx, cy, w, h) of ``image``; a malformed file is an InputError."""
        path = label_path(image)
        if not path.is_file():
            return np.zeros((0, 5), dtype=np.float32)
        try:
            rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
            labels = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
        except (ValueError, UnicodeDecodeError):
            raise InputError(
                f"{path}: each line must be 'class cx cy w h' (5 numbers); fix the file"
            ) from None
        classes = labels[:, 0]
        if not np.all(np.isfinite(labels)) or np.any(classes != np.round(classes)):
            raise InputError(f"{path}: labels must be finite, classes whole numbers; fix the file")
        if np.any((classes < 0) | (classes >= self.num_classes)):
            raise InputError(
                f"{path}: a class is outside 0..{self.num_classes - 1} (names in {self.yaml_path})"
            )
        return labels


def label_path(image: Path) -> Path:
    """Ultralytics' label file of ``image``: the last ``images`` folder of its path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def load_data_yaml(path: str | os.PathLike[str]) -> DetectionDataset:
    """Parse ``data.yaml`` (see the module docstring); every problem is a one-line :class:`InputError`."""
    yaml_path = Path(path)
    if not yaml_path.is_file():
        problem = "is not a file" if yaml_path.exists() else "does not exist"
        raise InputError(f"dataset file {yaml_path} {problem}; pass a data.yaml (attn-deploy make-data)")
    try:
        spec = yaml.safe_load(yaml_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{yaml_path} is not valid YAML ({type(exc).__name__}); fix the file") from None
    if not isinstance(spec, dict):
        raise InputError(f"{yaml_path} must be a mapping with path, train, val and names")
    names = spec.get("names")
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise InputError(f"{yaml_path}: 'names' must be a non-empty list or a dict {{0: name, 1: ...}}")
    root = yaml_path.parent / str(spec.get("path") or ".")
    splits = {}
    for split in SPLITS:
        value = spec.get(split)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"{yaml_path}: '{split}' must be one image folder (a string), got {value!r}")
        splits[split] = root / value
    return DetectionDataset(yaml_path, tuple(str(n) for n in names), splits)


def letterboxed_boxes(labels: np.ndarray, image_shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """YOLO labels ``(N, 5)`` of an ``image_shape`` (H, W) image -> ``(N, 5)`` float64 ``class, x1, y1, x2, y2``
    in the pixels of its :func:`~attn_deploy.data.preprocess.letterbox` to ``size`` (the same scale and
    padding)."""
    h, w = image_shape
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (th - nh) // 2, (tw - nw) // 2
    cx, cy = labels[:, 1] * nw + left, labels[:, 2] * nh + top
    bw, bh = labels[:, 3] * nw, labels[:, 4] * nh
    out = np.stack([labels[:, 0], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return out.astype(np.float64)


def load_split(
    dataset: DetectionDataset, split: str, size: tuple[int, int], limit: int | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first ``limit`` images of ``split`` letterboxed to ``size``: ``uint8 (N, H, W, 3)`` and per image its
    ``(n, 5)`` boxes ``class, x1, y1, x2, y2`` in those pixels."""
    images, boxes = [], []
    for path in dataset.images(split)[:limit]:
        image = load_image(path)
        images.append(letterbox(image, size))
        boxes.append(letterboxed_boxes(dataset.labels(path), image.shape[:2], size))
    return np.stack(images), boxes
