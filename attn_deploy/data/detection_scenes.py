"""A synthetic detection dataset: several shapes per image on natural-looking backgrounds, with YOLO labels.

Each image is a :mod:`attn_deploy.data.synthetic` scene (sky gradient, 1/f ground texture, global gain /
contrast / gamma, sensor noise) holding 3-10 objects whose *shape* is the class (``ellipse``, ``rectangle``,
``triangle``, ``star``, ``cross``), each in a random saturated colour with its own shading and texture:

* sizes from tiny to large: the half-size is log-uniform in 4 %..35 % of the short side, so at 128 px about
  half the objects are COCO-small (under 32^2 px) and half medium; at 256 px, 20 % are small, 60 % medium,
  20 % large;
* occlusion: objects are painted in order and may cover earlier ones, but a new object that would leave an
  earlier one less than :data:`MIN_VISIBLE` of its pixels is placed again (or dropped), so every label stays
  detectable;
* the label is the object's whole (amodal) box, from its own mask, in YOLO form ``class cx cy w h``
  normalised to 0..1.

Image ``i`` depends only on ``(seed, i)``. :func:`write_detection_dataset` writes the Ultralytics layout
(``images/{train,val}/*.jpg``, ``labels/{train,val}/*.txt``, ``data.yaml``).
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from attn_deploy.data.synthetic import LABEL_SHAPES, background, draw_object, finish, pink_noise
from attn_deploy.errors import InputError
from attn_deploy.fsutil import staging

CLASS_NAMES = LABEL_SHAPES
"""Class ``k`` is an object of shape ``CLASS_NAMES[k]``."""
OBJECTS = (3, 11)
"""Objects per image: ``rng.integers(*OBJECTS)``."""
RADIUS = (0.04, 0.35)
"""Half-size range of an object as a fraction of the short side, sampled log-uniformly."""
MIN_VISIBLE = 0.5
"""Smallest fraction of an earlier object's pixels a later object may leave visible."""
MAX_IMAGES = 100_000
MAX_SIDE = 2048
VAL_SEED_OFFSET = 1_000_003
"""The val split draws seed ``seed + VAL_SEED_OFFSET``, so it never repeats a training image."""


def detection_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``uint8`` (H, W, 3) image and its labels ``(N, 5)`` float32: class, cx, cy, w, h (normalised)."""
    h, w = size
    img = background(rng, h, w)
    texture = pink_noise(rng, h, w, alpha=rng.uniform(1.0, 1.6))
    owner = np.full((h, w), -1, dtype=np.int32)  # which object each pixel shows
    areas: list[int] = []
    labels: list[tuple[int, int, int, int, int]] = []
    for _ in range(int(rng.integers(*OBJECTS))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        radius = float(np.exp(rng.uniform(np.log(RADIUS[0]), np.log(RADIUS[1]))))
        hue, sat, val = rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
        color = colorsys.hsv_to_rgb(hue, sat, val)
        for _attempt in range(3):
            before = img.copy()
            mask = draw_object(rng, img, texture, (radius, radius), CLASS_NAMES[cls], color)
            if mask is not None and _keeps_visible(owner, areas, mask):
                break
            img[:] = before
            mask = None
        if mask is None:
            continue
        owner[mask] = len(areas)
        areas.append(int(mask.sum()))
        ys, xs = np.nonzero(mask)
        labels.append((cls, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return finish(rng, img), _yolo_labels(labels, h, w)


def detection_scenes(
    n: int, size: tuple[int, int] = (256, 256), seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` scenes ``uint8 (n, H, W, 3)`` and their label arrays; image ``i`` depends only on ``(seed, i)``."""
    h, w = size
    if not 0 <= n <= MAX_IMAGES or not (32 <= h <= MAX_SIDE and 32 <= w <= MAX_SIDE):
        raise InputError(
            f"detection scenes need 0..{MAX_IMAGES} images of 32..{MAX_SIDE} px a side, got {n} of {h}x{w}"
        )
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    labels = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        images[i], lab = detection_scene(np.random.default_rng(child), (h, w))
        labels.append(lab)
    return images, labels


def write_detection_dataset(
    out: str | os.PathLike[str], images: int, size: int = 256, seed: int = 0, val_fraction: float = 0.2
) -> Path:
    """Write ``images`` scenes (``val_fraction`` of them, at least one, to ``val``) to the new folder ``out``
    in Ultralytics' layout; return the path of its ``data.yaml``. Written to a staging folder and renamed, so
    an interrupted run leaves nothing; an existing non-empty ``out`` is an :class:`InputError`."""
    target = Path(out)
    if not 2 <= images <= MAX_IMAGES:
        raise InputError(f"--images must be in 2..{MAX_IMAGES} (train and val need one each), got {images}")
    if not 32 <= size <= MAX_SIDE:
        raise InputError(f"--imgsz must be in 32..{MAX_SIDE}, got {size}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target} already exists and is not an empty folder; choose a new --out")
    n_val = min(images - 1, max(1, round(images * val_fraction)))
    splits = {"train": (images - n_val, seed), "val": (n_val, seed + VAL_SEED_OFFSET)}
    with staging(target.resolve().parent, target.name, "new") as tmp:
        for split, (count, split_seed) in splits.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i, child in enumerate(np.random.SeedSequence(split_seed).spawn(count)):
                image, labels = detection_scene(np.random.default_rng(child), (size, size))
                Image.fromarray(image).save(tmp / "images" / split / f"{i:06d}.jpg", quality=95)
                rows = "".join(f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in labels)
                (tmp / "labels" / split / f"{i:06d}.txt").write_text(rows)
        spec = {
            "path": ".",
            "train": "images/train",
            "val": "images/val",
            "names": dict(enumerate(CLASS_NAMES)),
        }
        header = f"# attn-deploy make-data --task detect --images {images} --imgsz {size} --seed {seed}\n"
        (tmp / "data.yaml").write_text(header + yaml.safe_dump(spec, sort_keys=False))
        if target.is_dir():
            target.rmdir()  # empty: checked above
        os.replace(tmp, target)
    return target / "data.yaml"


def _keeps_visible(owner: np.ndarray, areas: list[int], mask: np.ndarray) -> bool:
    """Whether covering ``mask`` leaves every earlier object at least ``MIN_VISIBLE`` of its pixels."""
    covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(areas))
    visible = np.bincount(owner[owner >= 0], minlength=len(areas)) - covered
    return bool(np.all(visible >= MIN_VISIBLE * np.asarray(areas, dtype=np.float64)))


def _yolo_labels(boxes: list[tuple[int, int, int, int, int]], h: int, w: int) -> np.ndarray:
    """Pixel boxes ``(cls, x1, y1, x2, y2)`` -> ``(N, 5)`` float32 ``cls, cx, cy, w, h`` normalised."""
    out = np.zeros((len(boxes), 5), dtype=np.float32)
    for i, (cls, x1, y1, x2, y2) in enumerate(boxes):
        out[i] = (cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
    return out
