"""Deterministic, natural-looking synthetic images (no dataset downloads needed).

Used to calibrate BatchNorm statistics of the zoo's default weights and as the built-in INT8
calibration set. Natural photographs have a roughly 1/f amplitude spectrum, smooth illumination
gradients, and objects with sharp edges; each image here combines those:

* a "sky": a vertical two-colour gradient with faint low-frequency clouds, above a random horizon;
* "ground": a tinted 1/f^alpha noise texture (alpha in [1.5, 2.2]);
* 3-9 filled objects (ellipses, rectangles, polygons) with their own colour, texture and shading;
* a global gain / contrast / gamma change and weak sensor noise.

Image ``i`` depends only on ``(seed, i)``, so ``synthetic_images(8)[:4]`` equals ``synthetic_images(4)``.

:func:`labeled_scenes` adds a classification task to the same scenes (one large object whose shape and colour
family are the label), so that a network can be trained here, without a dataset, until its decisions have
the margins of a trained model (see ``benchmarks/int8_trained.py``).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

# labeled_scenes: the class object's shape (class % 5) and colour family (class // 5: warm, cool hues).
LABEL_SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross")
LABEL_HUES = ((-0.05, 0.12), (0.45, 0.7))  # hue ranges (0..1) of the warm and the cool family


def synthetic_images(n: int, size: tuple[int, int] = (640, 640), seed: int = 0) -> np.ndarray:
    """Return ``n`` RGB images, ``uint8`` of shape ``(n, H, W, 3)``; same output for the same arguments."""
    h, w = size
    if n < 0 or h < 8 or w < 8:
        raise ValueError(f"synthetic_images needs n >= 0 and a size of at least 8x8, got n={n}, size={size}")
    seeds = np.random.SeedSequence(seed).spawn(n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, child in enumerate(seeds):
        out[i] = _image(np.random.default_rng(child), h, w)
    return out


def synthetic_mosaics(n: int, size: tuple[int, int] = (640, 640), seed: int = 0, grid: int = 2) -> np.ndarray:
    """Like ``synthetic_images`` but each image is a ``grid`` x ``grid`` mosaic of smaller scenes.

    More scenes per pixel (as in YOLO's mosaic augmentation): BatchNorm statistics estimated on 4
    mosaics of 4 scenes generalise to unseen images about as well as those from 8 to 16 whole images,
    at the cost of 4.
    """
    h, w = size
    th, tw = -(-h // grid), -(-w // grid)
    tiles = synthetic_images(n * grid * grid, (th, tw), seed=seed).reshape(n, grid, grid, th, tw, 3)
    return np.ascontiguousarray(
        tiles.transpose(0, 1, 3, 2, 4, 5).reshape(n, grid * th, grid * tw, 3)[:, :h, :w]
    )


def labeled_scenes(
    n: int, size: tuple[int, int] = (96, 96), seed: int = 0, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes with a class label each: ``uint8 (n, H, W, 3)`` images and ``int64 (n,)`` labels.

    Class ``k`` is one large object (a third to two thirds of the image) with shape ``LABEL_SHAPES[k % 5]``
    and a hue from family ``k // 5`` (warm or cool), drawn over the usual sky, ground and 2-5 small
    distractor objects, at a random position, size, rotation and shading. Labels cycle through the classes.
    """
    if not 1 <= classes <= len(LABEL_SHAPES) * len(LABEL_HUES):
        raise ValueError(
            f"labeled_scenes supports 1..{len(LABEL_SHAPES) * len(LABEL_HUES)} classes, got {classes}"
        )
    h, w = size
    labels = np.arange(n, dtype=np.int64) % classes
    seeds = np.random.SeedSequence([seed, classes]).spawn(n)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, (child, label) in enumerate(zip(seeds, labels, strict=True)):
        out[i] = _image(np.random.default_rng(child), h, w, objects=(2, 6), label=int(label))
    return out, labels


def _image(
    rng: np.random.Generator, h: int, w: int, objects: tuple[int, int] = (3, 10), label: int | None = None
) -> np.ndarray:
    """One float image in [0, 1] built from sky, ground and objects (plus the class object of ``label``),
    quantised to uint8."""
    img = background(rng, h, w)
    texture = pink_noise(rng, h, w, alpha=rng.uniform(1.0, 1.6))
    small = (0.03, 0.1) if label is not None else (0.03, 0.25)
    for _ in range(int(rng.integers(*objects))):
        draw_object(rng, img, texture, radius=small)
    if label is not None:
        lo, hi = LABEL_HUES[label // len(LABEL_SHAPES)]
        rgb = colorsys.hsv_to_rgb(rng.uniform(lo, hi) % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
        draw_object(
            rng, img, texture, radius=(0.16, 0.33), shape=LABEL_SHAPES[label % len(LABEL_SHAPES)], color=rgb
        )
    return finish(rng, img)


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A global gain / contrast / gamma change and weak sensor noise on a float image in [0, 1], as uint8."""
    gain, contrast, gamma = rng.uniform(0.6, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.4)
    img = (img - 0.5) * contrast + 0.5
    img = np.clip(img * gain, 0.0, 1.0) ** gamma
    img += np.float32(rng.uniform(0.003, 0.02)) * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sky gradient with faint clouds above a tinted 1/f ground texture, as float32 (H, W, 3)."""
    horizon = max(1, int(h * rng.uniform(0.25, 0.65)))
    top, bottom = rng.uniform(0.3, 1.0, 3).astype(np.float32), rng.uniform(0.5, 1.0, 3).astype(np.float32)
    top[2] = max(top[2], top[0])  # skies lean blue
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None, None]
    clouds = pink_noise(rng, horizon, w, alpha=2.4)[..., None]
    sky = top * (1 - t) + bottom * t + np.float32(0.08) * np.clip(clouds, 0, None)

    ground_color = rng.uniform(0.15, 0.7, 3).astype(np.float32)
    tint = rng.uniform(0.1, 0.25, 3).astype(np.float32)
    detail = pink_noise(rng, h - horizon, w, alpha=rng.uniform(1.5, 2.2))[..., None]
    return np.concatenate([sky, ground_color + tint * detail], axis=0)


def draw_object(
    rng: np.random.Generator,
    img: np.ndarray,
    texture: np.ndarray,
    radius: tuple[float, float] = (0.03, 0.25),
    shape: str | None = None,
    color: tuple[float, float, float] | None = None,
) -> np.ndarray | None:
    """Paint one textured, shaded shape with hard edges onto ``img`` in place; return its mask (``None`` when
    it covers no pixel).

    ``radius``: half-size range as a fraction of the image side. Without ``shape`` an ellipse, rectangle or
    random polygon; without ``color`` a random muted colour.
    """
    h, w, _ = img.shape
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    if shape is None:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(*radius) * w, rng.uniform(*radius) * h
    else:  # a class object stays whole inside the image and roughly isotropic
        r = rng.uniform(*radius) * min(h, w)
        rx, ry = r * rng.uniform(0.8, 1.2), r * rng.uniform(0.8, 1.2)
        cx, cy = rng.uniform(rx, w - rx), rng.uniform(ry, h - ry)
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    kind = shape or ("ellipse", "rectangle", "polygon")[int(rng.integers(3))]
    if kind == "ellipse":
        draw.ellipse(box, fill=255)
    elif kind == "rectangle":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon(_outline(rng, kind, cx, cy, rx, ry), fill=255)
    mask = np.asarray(mask_img) > 0
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-6
    shade = ((xs - cx) * direction[0] + (ys - cy) * direction[1]) / max(rx, ry, 1.0)
    if color is None:
        rgb = rng.uniform(0.0, 1.0, 3)
        rgb = rgb.mean() + rng.uniform(0.3, 1.0) * (rgb - rgb.mean())  # natural colours are muted
    else:
        rgb = np.asarray(color)
    strength = rng.uniform(0.05, 0.3)
    value = rgb * (1.0 + 0.25 * shade[:, None]) + strength * texture[ys, xs][:, None]
    img[ys, xs] = value.astype(np.float32)
    return mask


def _outline(
    rng: np.random.Generator, kind: str, cx: float, cy: float, rx: float, ry: float
) -> list[tuple[float, float]]:
    """Polygon points of a random ``polygon`` or a ``triangle``, ``star`` or ``cross`` at a random rotation."""
    if kind == "polygon":  # already at a random rotation
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
        radii = rng.uniform(0.5, 1.0, angles.size)
        return [
            (cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii, strict=True)
        ]
    if kind == "triangle":
        angles, radii = np.arange(3) * 2 * np.pi / 3, np.ones(3)
    elif kind == "star":
        angles, radii = np.arange(10) * np.pi / 5, np.tile([1.0, 0.42], 5)
    elif kind == "cross":  # a plus sign: 12 corners, arms a third of the size wide
        corner = np.array([(1, 1 / 3), (1 / 3, 1 / 3), (1 / 3, 1)])
        quarter = [
            corner @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
            for t in np.arange(4) * np.pi / 2
        ]
        xy = np.concatenate(quarter)
        angles, radii = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    else:
        raise ValueError(f"unknown shape {kind!r}")
    angles = angles + rng.uniform(0, 2 * np.pi)
    return [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]


def pink_noise(rng: np.random.Generator, h: int, w: int, alpha: float) -> np.ndarray:
    """Zero-mean, unit-std noise with amplitude spectrum ~ 1/f^alpha, float32 (H, W)."""
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = 1.0
    amplitude = freq ** np.float32(-alpha)
    shape = (h, fx.size)
    spectrum = amplitude * (
        rng.standard_normal(shape, np.float32) + 1j * rng.standard_normal(shape, np.float32)
    )
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(h, w))
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)
