"""Detector distillation with labels: the data.yaml source, the YOLO task loss without a second forward pass,
the CLI's ``--data`` and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy.cli import main
from attn_deploy.data.detection_scenes import write_detection_dataset
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.data.yolo_dataset import load_data_yaml, load_split
from attn_deploy.distill import distill, yolo_source
from attn_deploy.errors import ConfigError
from attn_deploy.models import create_model
from attn_deploy.train.detect_loss import DetectionLoss

SIZE = 64


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_detection_dataset(tmp_path_factory.mktemp("data") / "scenes", 10, SIZE, seed=3)


def yolo(name: str, nc: int) -> torch.nn.Module:
    return create_model(name, num_classes=nc, calibrate=False)


def test_yolo_source_is_deterministic_and_its_boxes_are_the_labels(data_yaml: Path) -> None:
    source = yolo_source(data_yaml, (SIZE, SIZE))
    dataset = load_data_yaml(data_yaml)
    images, boxes = load_split(dataset, "train", (SIZE, SIZE))
    assert source.labeled and source.detection and source.classes == dataset.num_classes
    a, ya = source.batch(4, 3)
    b, yb = source.batch(4, 3)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert ya is not None and ya.shape[1] == 6 and ya.dtype == np.float32
    for i, image in enumerate(a):  # each drawn image is a train image, its rows that image's boxes
        k = next(j for j in range(len(images)) if np.array_equal(images[j], image))
        np.testing.assert_allclose(ya[ya[:, 0] == i, 1:], boxes[k], rtol=1e-6)
    # the loop's letterbox at the training size leaves the already letterboxed images (and so the boxes) as they are
    spec = PreprocessSpec.for_kind("letterbox", (SIZE, SIZE))
    np.testing.assert_array_equal(spec(a), a.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    val, yv = source.holdout(100)
    assert len(val) == len(dataset.images("val")) and yv is not None and len(yv)


def test_loss_of_the_last_forward_equals_the_call() -> None:
    model = yolo("yolov8n-eca", 3).train()
    loss = DetectionLoss(model, 3)
    images = torch.rand(2, 3, SIZE, SIZE)
    targets = torch.tensor(
        [[0, 1, 4, 6, 30, 40], [1, 2, 10, 10, 50, 60], [1, 0, 20, 5, 40, 25]], dtype=torch.float32
    )
    torch.manual_seed(0)
    total, parts = loss(model, images, targets)
    model(images)
    again, parts_again = loss.of_last_forward(targets, 2)
    assert torch.equal(total, again) and torch.equal(parts, parts_again)


def test_task_term_with_boxes(data_yaml: Path) -> None:
    nc = load_data_yaml(data_yaml).num_classes
    teacher, student = yolo("yolov8n-ema", nc), yolo("yolov8n-eca", nc)
    result = distill(teacher, student, yolo_source(data_yaml, (SIZE, SIZE)), steps=2, batch=2, imgsz=SIZE)
    assert {"attention", "box", "cls", "task"} <= set(result.history[0])
    assert all(np.isfinite(h["task"]) and h["task"] > 0 for h in result.history)
    other = yolo("yolov8n-ema", nc + 1)
    with pytest.raises(ConfigError, match=f"teacher has {nc + 1} classes"):
        distill(other, yolo("yolov8n-eca", nc + 1), str(data_yaml), steps=1, imgsz=SIZE)


def test_cli_with_data_reports_map(data_yaml: Path, tmp_path: Path) -> None:
    nc = load_data_yaml(data_yaml).num_classes
    weights = tmp_path / "teacher.pt"
    torch.save(yolo("yolov8n-ema", nc).state_dict(), weights)
    out = tmp_path / "run"
    args = ["distill", "--teacher", "yolov8n-ema", "--weights", str(weights), "--student", "yolov8n-eca",
            "--data", str(data_yaml), "--steps", "2", "--batch", "2", "--imgsz", str(SIZE), "--eval-images", "2",
            "--latency-runs", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    scores = report["scores"]
    assert {"teacher_map", "student_map", "map50_95_drop", "box_agreement"} <= set(scores)
    assert 0 <= scores["student_map"]["map50_95"] <= 1
    assert "task" in report["training"]["final"]
    assert "mAP on the val split" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("teacher", "data", "needle"),
    [
        ("resnet18-se", "DATA", "is for detector teachers"),
        ("yolov8n-ema", "MISSING", "data.yaml"),
        ("yolov8n-ema", "OTHER", "the data names"),
        ("yolov8n-ema", "NONE", "pass the images"),
    ],
)
def test_cli_data_errors_are_one_line(
    teacher: str, data: str, needle: str, data_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nc = load_data_yaml(data_yaml).num_classes
    model = create_model(teacher, num_classes=nc + (data == "OTHER"), calibrate=False)
    weights = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), weights)
    path = tmp_path / "missing.yaml" if data == "MISSING" else data_yaml
    student = teacher.split("-")[0] + "-eca"
    args = ["distill", "--teacher", teacher, "--weights", str(weights), "--student", student,
            *(["--data", str(path)] if data != "NONE" else []), "--imgsz", str(SIZE),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err, err
