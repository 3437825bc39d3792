"""The synthetic detection dataset and the data.yaml reader (issue 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attn_deploy import fsutil
from attn_deploy.cli import main
from attn_deploy.data.detection_scenes import CLASS_NAMES, detection_scenes, write_detection_dataset
from attn_deploy.data.yolo_dataset import letterboxed_boxes, load_data_yaml, load_split
from attn_deploy.errors import InputError


def test_scenes_are_deterministic_prefix_stable_and_labelled() -> None:
    images, labels = detection_scenes(6, (96, 128), seed=3)
    again, labels_again = detection_scenes(3, (96, 128), seed=3)
    assert np.array_equal(images[:3], again)
    assert all(np.array_equal(a, b) for a, b in zip(labels[:3], labels_again, strict=True))
    other, _ = detection_scenes(1, (96, 128), seed=4)
    assert not np.array_equal(images[0], other[0])
    rows = np.concatenate(labels)
    assert len(rows) >= 6 * 3  # at least three objects an image, none lost to occlusion here
    assert set(np.unique(rows[:, 0]).astype(int)) <= set(range(len(CLASS_NAMES)))
    cx, cy, w, h = rows[:, 1:].T
    assert np.all((cx - w / 2 >= 0) & (cx + w / 2 <= 1) & (cy - h / 2 >= 0) & (cy + h / 2 <= 1))
    assert w.min() * 128 < 16 and w.max() * 128 > 32  # small and large objects


def test_make_data_writes_ultralytics_layout_same_seed_same_files(tmp_path: Path, capsys) -> None:
    assert (
        main(
            ["make-data", "--task", "detect", "--out", str(tmp_path / "a"), "--images", "5", "--imgsz", "64"]
        )
        == 0
    )
    write_detection_dataset(tmp_path / "b", 5, 64, seed=0)
    for split, count in (("train", 4), ("val", 1)):
        files = sorted((tmp_path / "a" / "images" / split).iterdir())
        assert len(files) == count
        for f in files:
            assert f.read_bytes() == (tmp_path / "b" / "images" / split / f.name).read_bytes()
    dataset = load_data_yaml(tmp_path / "a" / "data.yaml")
    assert dataset.names == CLASS_NAMES and set(dataset.splits) == {"train", "val"}
    # the finished folder gets the umask's mode, not the 0700 of the temporary folder it was staged in
    assert (tmp_path / "a").stat().st_mode & 0o777 == fsutil.DIR_MODE
    images, boxes = load_split(dataset, "train", (64, 64))
    assert images.shape == (4, 64, 64, 3) and all(b.shape[1] == 5 for b in boxes)
    # nothing half-written on a refusal: an existing folder stays as it was
    assert main(["make-data", "--out", str(tmp_path / "a"), "--images", "5"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["make-data", "--out", str(tmp_path / "c"), "--images", "1"]) == 2
    assert not (tmp_path / "c").exists()


def test_letterboxed_boxes_follow_the_letterbox() -> None:
    # a 100x200 (H x W) image into 64x64: scale 0.32, 32 rows of image, 16 rows of padding on top
    labels = np.array([[2, 0.5, 0.5, 1.0, 1.0]])
    assert np.allclose(letterboxed_boxes(labels, (100, 200), (64, 64)), [[2, 0, 16, 64, 48]])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("names: [a]\nval: [x]\n", "one image folder"),
        ("names: 3\n", "'names'"),
        ("- a\n", "mapping"),
        ("names: [a\n", "not valid YAML"),
    ],
)
def test_bad_data_yaml_is_one_line_error(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(InputError, match=problem):
        load_data_yaml(tmp_path / "data.yaml")


def test_bad_label_file_is_named(tmp_path: Path) -> None:
    yaml_path = write_detection_dataset(tmp_path / "d", 2, 64)
    label = tmp_path / "d" / "labels" / "val" / "000000.txt"
    dataset = load_data_yaml(yaml_path)
    for text, problem in (
        ("0 0.5 0.5 0.1\n", "5 numbers"),
        ("7 0.5 0.5 0.1 0.1\n", "outside"),
        ("nan 1 1 1 1\n", "finite"),
    ):
        label.write_text(text)
        with pytest.raises(InputError, match=problem):
            load_split(dataset, "val", (64, 64))
    with pytest.raises(InputError, match="does not exist"):
        load_data_yaml(tmp_path / "missing.yaml")
