"""Validation inputs: synthetic evaluation images or the user's own, preprocessed as the model expects.

Synthetic raw images are 4:3, so the letterbox pads and the centre-crop crops, as with real photos.
"""

from __future__ import annotations

import os

import numpy as np

from attn_deploy.data.preprocess import PreprocessSpec, list_images, load_image
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.errors import InputError


def evaluation_images(preprocess: PreprocessSpec, count: int, seed: int) -> np.ndarray:
    """``count`` synthetic 4:3 images preprocessed for the model: float32 ``(count, 3, H, W)``."""
    h, w = preprocess.size
    return preprocess(synthetic_images(count, (h, w * 4 // 3), seed=seed))


def user_images(
    directory: str | os.PathLike[str], preprocess: PreprocessSpec, limit: int | None, batch: int
) -> np.ndarray:
    """The jpg/png images of ``directory`` (the first ``limit``), preprocessed, in whole batches of ``batch``."""
    files = list_images(directory)
    count = min(len(files), limit or len(files)) // batch * batch
    if count == 0:
        raise InputError(
            f"image directory {directory} holds {len(files)} images, fewer than the export batch {batch}; "
            "add images or export with --dynamic"
        )
    return preprocess([load_image(p) for p in files[:count]])
