"""Synthetic images: deterministic, and the labeled scenes carry their class in what they draw."""

from __future__ import annotations

import numpy as np
import pytest

from attn_deploy.data.synthetic import LABEL_HUES, LABEL_SHAPES, labeled_scenes, synthetic_images


def test_images_depend_only_on_seed_and_index():
    assert np.array_equal(synthetic_images(4, (40, 56), seed=7), synthetic_images(8, (40, 56), seed=7)[:4])
    assert not np.array_equal(synthetic_images(2, (40, 56), seed=7), synthetic_images(2, (40, 56), seed=8))


def test_labeled_scenes_are_deterministic_and_balanced():
    images, labels = labeled_scenes(30, (48, 64), seed=3)
    again, _ = labeled_scenes(30, (48, 64), seed=3)
    assert images.shape == (30, 48, 64, 3) and images.dtype == np.uint8 and np.array_equal(images, again)
    assert np.array_equal(labels, np.arange(30) % (len(LABEL_SHAPES) * len(LABEL_HUES)))
    assert not np.array_equal(images, labeled_scenes(30, (48, 64), seed=4)[0])


def test_the_label_s_colour_family_is_visible():
    # Warm classes (0-4) draw a large red-to-yellow object, cool ones (5-9) a cyan-to-blue one: the mean
    # red-minus-blue over the image separates the two families far better than chance.
    images, labels = labeled_scenes(200, (64, 64), seed=0)
    red_minus_blue = images[..., 0].astype(float).mean((1, 2)) - images[..., 2].astype(float).mean((1, 2))
    warm = labels < len(LABEL_SHAPES)
    assert red_minus_blue[warm].mean() - red_minus_blue[~warm].mean() > 20


def test_labeled_scenes_reject_unknown_class_counts():
    with pytest.raises(ValueError, match=r"supports 1\.\.10 classes"):
        labeled_scenes(4, classes=11)
