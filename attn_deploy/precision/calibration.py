"""INT8 calibration data and the calibration cache.

The calibration set is a float32 batch preprocessed exactly as the model expects (letterbox for YOLO,
resize + centre-crop for ResNet), from ``--calib-dir`` (jpg/png) or the built-in synthetic images.
Its ``data_hash`` is the sha256 of the preprocessed array, so the same pixels give the same hash however
they were found, and any changed pixel, size or normalisation changes it.

Calibration (running the model over the set and reducing each tensor's values to a range) is the slow part of
INT8; its result is cached as ONNX Runtime's calibration JSON, under a key that covers everything the ranges
depend on: the model bytes, the data hash, the method and its settings, and the onnxruntime version. A
changed input therefore gets a different file and never reads a stale one. The placement of Q/DQ nodes
(which nodes are quantized) does not change the ranges and is not in the key, so trying both gate placements
calibrates once. An entry that does not load (truncated, garbage, another method) is discarded with a warning
naming it and recomputed (:func:`usable_cache_entry`); entries are written whole or not at all
(:func:`store_cache_entry`), so an interrupted run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import load_tensors_data

from attn_deploy import fsutil
from attn_deploy.config import Int8Config, default_cache_dir
from attn_deploy.data.preprocess import PreprocessSpec, load_image_dir
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.errors import exception_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration images for one model input, with a content hash and a description."""

    input_name: str
    images: np.ndarray  # float32 (N, 3, H, W)
    source: str  # "synthetic(seed=0)" or the directory
    batch: int = 1  # images per inference: the model's static batch size (N is a multiple of it)

    @property
    def data_hash(self) -> str:
        """sha256 of the preprocessed batch (shape, dtype and bytes)."""
        digest = hashlib.sha256(f"{self.images.shape}{self.images.dtype}".encode())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        return digest.hexdigest()

    def for_batch(self, batch: int) -> CalibrationSet:
        """This set for a model exported at a static batch size: ``batch`` images per inference, the first images
        repeated to fill the last batch (``--batch 3`` with 32 images calibrates on 33). ONNX Runtime holds the
        activations of a whole calibration step in memory, at least one batch: for a large batch, calibrate a
        dynamic-batch export instead."""
        if batch <= 1 or (batch == self.batch and len(self.images) % batch == 0):
            return self
        count = -(-len(self.images) // batch) * batch
        return replace(self, images=self.images[np.arange(count) % len(self.images)], batch=batch)

    def batches(self) -> list[np.ndarray]:
        """The images in inference batches of ``batch``."""
        return [self.images[i : i + self.batch] for i in range(0, len(self.images), self.batch)]

    def reader(self) -> ArrayDataReader:
        """A fresh ONNX Runtime data reader over the images, ``batch`` images per inference."""
        return ArrayDataReader(self.input_name, self.batches())

    def describe(self) -> dict[str, Any]:
        """Manifest entry: where the images came from, how many, their hash."""
        return {"source": self.source, "num_images": len(self.images), "data_sha256": self.data_hash}


def calibration_set(
    input_name: str,
    preprocess: PreprocessSpec,
    *,
    num_images: int,
    calib_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Load up to ``num_images`` images from ``calib_dir`` (or make synthetic ones) and preprocess them."""
    if calib_dir is not None:
        raw = load_image_dir(calib_dir, limit=num_images)
        source = str(calib_dir)
    else:
        raw = list(synthetic_images(num_images, size=preprocess.size, seed=seed))
        source = f"synthetic(seed={seed})"
    return CalibrationSet(input_name, preprocess(raw), source)


class ArrayDataReader(CalibrationDataReader):
    """ONNX Runtime calibration reader yielding ``{input_name: batches[i]}`` in order."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = batches
        self._range = (0, len(batches))
        self._iter: Iterator[dict[str, np.ndarray]] = self._feeds()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(*self._range):
            yield {self.input_name: self.batches[i]}

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict the reader to batches ``[start_index, end_index)`` (ONNX Runtime's strided calibration)."""
        self._range = (start_index, min(end_index, len(self.batches)))
        self._iter = self._feeds()

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or ``None`` when the set is exhausted (ONNX Runtime's protocol)."""
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start over from the first batch of the range."""
        self._iter = self._feeds()

    def __len__(self) -> int:
        return len(self.batches)


def calibration_key(model_bytes: bytes, data_hash: str, config: Int8Config) -> str:
    """sha256 over everything calibration ranges depend on (model, data, method + settings, onnxruntime)."""
    payload = {
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "data_sha256": data_hash,
        "method": config.calibration,
        "percentile": config.percentile if config.calibration == "percentile" else None,
        "symmetric": config.symmetric,
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def calibration_cache_path(key: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the calibration ranges for ``key`` live (``<cache_dir>/<key>.json``)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("calibration")
    return folder / f"{key}.json"


def usable_cache_entry(path: Path, method: CalibrationMethod) -> bool:
    """Whether ``path`` holds ranges ONNX Runtime can load for ``method``.

    An entry that exists but does not load (truncated or garbage JSON, not ONNX Runtime's format, no ranges,
    another method) is removed with a warning naming it, so the caller recomputes it instead of failing on it
    on every later export.
    """
    if not path.is_file():
        return False
    try:
        ranges = load_tensors_data(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = exception_summary(exc)
    else:
        if ranges.calibration_method == method and ranges.data:
            return True
        problem = f"it holds no {method.name} ranges"
    log.warning("discarding the unreadable calibration cache entry %s (%s); recomputing it", path, problem)
    path.unlink(missing_ok=True)
    return False


def store_cache_entry(written: Path, path: Path) -> None:
    """Publish the ranges ONNX Runtime ``written`` (in a private folder) as cache entry ``path``, atomically."""
    fsutil.write_bytes(path, written.read_bytes())
