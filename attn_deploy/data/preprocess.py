"""Image preprocessing exactly as the models expect, and loading a directory of images.

* ``letterbox`` (YOLO): scale to fit the target keeping the aspect ratio, pad the rest with grey 114, centred
  (Ultralytics' ``LetterBox(auto=False)``), then ``/255``.
* ``resize_crop`` (ResNet): resize the short side to ``size / 0.875`` (256 for 224), centre-crop, ``/255``,
  normalise with the ImageNet mean and std (torchvision's ``Resize(256) + CenterCrop(224)``).

All functions take and return ``uint8`` HWC RGB arrays until :func:`to_tensor`, which makes the float32 NCHW
batch the ONNX model takes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from attn_deploy.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LETTERBOX_FILL = 114
CROP_RATIO = 0.875

PreprocessKind = Literal["letterbox", "resize_crop"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw images become the model's input: kind, size (H, W), per-channel mean/std (0..1 units)."""

    kind: PreprocessKind
    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def for_kind(cls, kind: str, size: Sequence[int]) -> PreprocessSpec:
        """The standard spec of ``kind`` (ImageNet mean/std for ``resize_crop``)."""
        h, w = int(size[0]), int(size[1])
        if kind == "letterbox":
            return cls("letterbox", (h, w))
        if kind == "resize_crop":
            return cls("resize_crop", (h, w), IMAGENET_MEAN, IMAGENET_STD)
        raise InputError(f"unknown preprocessing {kind!r}; use letterbox or resize_crop")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """From a manifest's ``preprocess`` entry (``kind``, ``size``, optional ``mean``/``std``); a malformed one
        (hand-edited) is a one-line :class:`InputError`."""
        try:
            base = cls.for_kind(str(data["kind"]), data["size"])
            mean = tuple(float(v) for v in data.get("mean") or base.mean)
            std = tuple(float(v) for v in data.get("std") or base.std)
            if len(mean) != 3 or len(std) != 3 or 0.0 in std:
                raise ValueError("mean and std need three values each, std non-zero")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise InputError(
                f"preprocess entry {data!r} is malformed; re-export the artifact with attn-deploy"
            ) from None
        return cls(base.kind, base.size, mean, std)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        return {"kind": self.kind, "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Preprocess ``uint8`` HWC RGB images into a float32 ``(N, 3, H, W)`` batch."""
        geometry = letterbox if self.kind == "letterbox" else resize_center_crop
        return to_tensor(np.stack([geometry(img, self.size) for img in images]), self.mean, self.std)


def letterbox(image: np.ndarray, size: tuple[int, int], fill: int = LETTERBOX_FILL) -> np.ndarray:
    """Fit ``image`` into ``size`` (H, W) keeping its aspect ratio; pad evenly with ``fill``."""
    h, w = image.shape[:2]
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _resize(image, (nh, nw))
    out = np.full((th, tw, 3), fill, dtype=np.uint8)
    top, left = (th - nh) // 2, (tw - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def resize_center_crop(
    image: np.ndarray, size: tuple[int, int], crop_ratio: float = CROP_RATIO
) -> np.ndarray:
    """Resize the short side to ``size / crop_ratio`` and take the centred ``size`` (H, W) crop."""
    h, w = image.shape[:2]
    th, tw = size
    short = round(min(th, tw) / crop_ratio)
    scale = short / min(h, w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    resized = _resize(image, (nh, nw))
    top, left = (nh - th) // 2, (nw - tw) // 2
    return resized[top : top + th, left : left + tw]


def to_tensor(
    images: np.ndarray, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """``uint8`` (N, H, W, 3) -> float32 (N, 3, H, W) in 0..1, then ``(x - mean) / std`` per channel."""
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def list_images(directory: str | os.PathLike[str]) -> list[Path]:
    """The jpg/png files in ``directory`` (sorted); a missing or empty directory is an :class:`InputError`."""
    folder = Path(directory)
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"image directory {folder} {problem}; pass a folder of .jpg/.png images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"image directory {folder} holds no .jpg/.png images; add some or omit the option")
    return files


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One image as ``uint8`` HWC RGB; an unreadable, truncated or oversized file (more than PIL's
    ``Image.MAX_IMAGE_PIXELS``, a decompression bomb) is an :class:`InputError` naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InputError(
            f"image {path} has more than {Image.MAX_IMAGE_PIXELS} pixels (a decompression bomb?); "
            "downscale or remove it"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"cannot read image {path} ({type(exc).__name__}); remove or replace the file"
        ) from None


def check_image_dir(directory: str | os.PathLike[str], limit: int | None = None) -> None:
    """Decode the images :func:`load_image_dir` would load, one at a time, so a bad file fails before any work."""
    for path in list_images(directory)[:limit]:
        load_image(path)


def load_image_dir(directory: str | os.PathLike[str], limit: int | None = None) -> list[np.ndarray]:
    """The first ``limit`` images (sorted by name) of ``directory`` as ``uint8`` HWC RGB arrays."""
    files = list_images(directory)
    return [load_image(p) for p in files[:limit]]
