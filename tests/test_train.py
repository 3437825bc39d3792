"""The trainer room (issue 11): loss pieces, a 2-step YOLOv8n run, and `validate --data` on what it trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy import create_model
from attn_deploy.cli import main
from attn_deploy.config import load_config
from attn_deploy.data.detection_scenes import write_detection_dataset
from attn_deploy.errors import InputError
from attn_deploy.train.assigner import TaskAlignedAssigner
from attn_deploy.train.boxes import bbox2dist, ciou, dist2bbox
from attn_deploy.train.detector import train_detector
from attn_deploy.train.ema import ModelEMA
from attn_deploy.train.optim import build_optimizer, set_learning_rate
from attn_deploy.workflow.zoo import export_zoo_model


def test_ciou_and_dfl_encoding() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert ciou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    far = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    assert ciou(a, far).item() < 0  # no overlap: the centre-distance penalty makes it negative
    anchors = torch.tensor([[5.0, 5.0]])
    assert torch.equal(dist2bbox(bbox2dist(anchors, a, 15), anchors), a)


def test_assigner_gives_anchors_inside_the_box_its_class() -> None:
    anchors = (
        torch.tensor([[x + 0.5, y + 0.5] for y in range(4) for x in range(4)]) * 8
    )  # a 4x4 grid, stride 8
    gt_boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])  # covers the top-left 2x2 anchors
    pd_boxes = gt_boxes.expand(1, 16, 4).clone()
    scores = torch.full((1, 16, 3), 0.5)
    boxes, target_scores, fg = TaskAlignedAssigner(3, topk=10)(
        scores, pd_boxes, anchors, torch.tensor([[[2.0]]]), gt_boxes, torch.ones(1, 1, 1)
    )
    assert fg[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert torch.equal(boxes[0, 0], gt_boxes[0, 0])
    assert (
        target_scores[0, 0, 2] > 0 and target_scores[0, 0, :2].sum() == 0 and target_scores[0, 2].sum() == 0
    )


def test_schedule_warms_up_then_decays_and_ema_follows() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = build_optimizer(model, "sgd", lr=0.01)
    assert set_learning_rate(optimizer, 0, 100, 0.01, 10) == pytest.approx(0.01)
    assert optimizer.param_groups[2]["lr"] == 0.0  # weights start at 0 in the warm-up
    set_learning_rate(optimizer, 99, 100, 0.01, 10)
    assert optimizer.param_groups[2]["lr"] == pytest.approx(0.01 * (0.01 * 0.99 + 0.01))
    with pytest.raises(InputError, match="unknown optimizer"):
        build_optimizer(model, "lion")
    ema = ModelEMA(model, tau=1.0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    assert not torch.equal(ema.model[0].weight, model[0].weight)  # blended, not copied


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_detection_dataset(tmp_path_factory.mktemp("det") / "data", 10, 64, seed=0)


def test_two_steps_then_export_and_validate_with_data(tiny_data: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = create_model("yolov8n-none", num_classes=5, calibrate=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_detector(model, tiny_data, epochs=1, imgsz=64, batch=4, limit=8)
    assert len(result.losses) == 2 and all(
        all(map(torch.isfinite, map(torch.tensor, row))) for row in result.losses
    )
    assert not result.model.training
    changed = [
        k
        for k, v in result.model.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert changed  # the EMA moved
    weights = tmp_path / "trained.pt"
    torch.save(result.model.state_dict(), weights)
    with pytest.raises(InputError, match="classes"):
        train_detector(create_model("yolov8n-none", num_classes=3, calibrate=False), tiny_data, 1, 64)

    artifact, _ = export_zoo_model(
        "yolov8n-none",
        imgsz=64,
        weights=weights,
        out_root=tmp_path / "engines",
        config=load_config("ort-fp32"),
    )
    code = main(["validate", str(artifact.dir), "--data", str(tiny_data), "--max-map-drop", "1.0"])
    out = capsys.readouterr().out
    assert "Detection accuracy" in out
    report = json.loads((artifact.dir / "validation.json").read_text())
    detection = report["detection"]
    keys = {"map50", "map50_95", "precision", "recall", "ap_small", "ap_medium", "ap_large"}
    assert keys <= set(detection["reference"]) and keys <= set(detection["candidate"])
    assert detection["reference"]["images"] == 2  # the val split
    # ORT FP32 against PyTorch FP32: the same boxes up to float rounding, so the mAP drop is (close to) nil
    assert abs(detection["drop"]["map50_95"]) <= 0.01
    assert code == (0 if report["passed"] else 1) and any(
        c["metric"] == "map50_95_drop" for c in report["checks"]
    )
    # one-line errors: --data with --image-dir, a yaml that is not there
    assert main(["validate", str(artifact.dir), "--data", str(tiny_data), "--image-dir", str(tmp_path)]) == 2
    assert main(["validate", str(artifact.dir), "--data", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text(tiny_data.read_text().replace("path: .", f"path: {tiny_data.parent}") + "  5: extra\n")
    assert main(["validate", str(artifact.dir), "--data", str(other)]) == 2
    assert "detects 5 classes" in capsys.readouterr().err


def test_classifier_trainer_runs_two_steps() -> None:
    from attn_deploy.train.classifier import train_classifier

    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((8, 3, 32, 32), dtype=np.float32), rng.integers(0, 3, 8)
    result = train_classifier(
        create_model("resnet18-eca", num_classes=3, calibrate=False), images, labels, 1, 4
    )
    assert len(result.losses) == 2 and not result.model.training
    with pytest.raises(InputError, match="as many labels"):
        train_classifier(result.model, images, labels[:3], 1)
