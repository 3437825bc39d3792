"""Attention distillation (issue 12): sites and maps, strict student init, the loss going down, checkpoints that
resume, the exported student verified, and one-line errors from the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attn_deploy.cli import main
from attn_deploy.distill import distill, init_student, pair_sites
from attn_deploy.distill.losses import CLASSIFIER_WEIGHTS, DETECTOR_WEIGHTS
from attn_deploy.distill.sites import FEATURES, capture_maps
from attn_deploy.errors import ConfigError, WeightsError
from attn_deploy.models import create_model

SIZE = 32  # stride-32 maps are 1x1: every attention family still runs, and a ResNet-18 step is cheap


def zoo(name: str, **kwargs: object) -> torch.nn.Module:
    return create_model(name, num_classes=4, calibrate=False, **kwargs)


def scenes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(zoo("resnet18-se").state_dict(), path)
    return path


def test_maps_per_family_pair_by_site() -> None:
    se, eca, ema = zoo("resnet18-se"), zoo("resnet18-eca"), zoo("resnet18-ema")
    pairs = pair_sites(se, eca)
    assert len(pairs) == 8 and pairs[0].teacher == pairs[0].student == "layer1.0.attn"
    assert {p.kinds for p in pairs} == {("channel",)}  # SE and ECA: a channel gate each
    assert {p.kinds for p in pair_sites(ema, eca)} == {(FEATURES,)}  # EMA has no channel gate: features
    assert {p.kinds for p in pair_sites(zoo("resnet18-cbam"), zoo("resnet18-hybrid"))} == {
        ("channel", "spatial")
    }
    x = torch.randn(2, 3, 64, 64)
    cbam = zoo("resnet18-cbam")
    with capture_maps(cbam, {"layer1.0.attn": ("channel", "spatial"), "layer4.1.attn": (FEATURES,)}) as maps:
        cbam(x)
    assert maps["layer1.0.attn/channel"].shape == (2, 64, 1, 1)
    assert maps["layer1.0.attn/spatial"].shape == (2, 1, 16, 16)
    assert maps[f"layer4.1.attn/{FEATURES}"].shape == (2, 512, 2, 2)
    with capture_maps(se, {"layer2.0.attn": ("channel",)}) as maps:
        se(x)
    assert maps["layer2.0.attn/channel"].shape == (2, 128, 1, 1)  # SE's (B, C) gate as (B, C, 1, 1)


def test_sites_that_do_not_line_up_are_one_line() -> None:
    neck, every = zoo("yolov8n-eca"), zoo("yolov8n-eca", placement="all")
    with pytest.raises(
        ConfigError, match=r"teacher has 3, student 9; only in the teacher: \(none\); .*attn\.2"
    ):
        pair_sites(neck, every)
    with pytest.raises(ConfigError, match="the teacher has no attention module"):
        pair_sites(zoo("resnet18-none"), zoo("resnet18-eca"))


def test_student_gets_every_non_attention_tensor_from_the_teacher() -> None:
    teacher, student = zoo("resnet18-ema"), zoo("resnet18-eca")
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    new = init_student(teacher, student)
    assert new and all(".attn." in k for k in new)
    t_state = teacher.state_dict()
    for key, value in student.state_dict().items():
        if key in new:
            assert torch.equal(value, fresh[key])  # attention keeps its own init
        else:
            assert torch.equal(value, t_state[key])
    with pytest.raises(WeightsError, match=r"shape mismatch: fc\.weight \(4, 512\) vs \(10, 512\)"):
        init_student(create_model("resnet18-ema", num_classes=10, calibrate=False), student)


def test_loss_decreases() -> None:
    teacher, student = zoo("resnet18-ema"), zoo("resnet18-eca")
    images = scenes(8)  # fewer than 20 images: every step sees all 8, in another order
    result = distill(teacher, student, images, steps=8, batch=8, imgsz=SIZE, lr=1e-2)
    totals = [h["total"] for h in result.history]
    assert set(result.history[0]) == {"step", "total", "attention", "kl"}
    assert np.mean(totals[-2:]) < 0.8 * np.mean(totals[:2]), totals
    assert result.settings["loss_weights"] == CLASSIFIER_WEIGHTS.to_dict()  # the measured classifier defaults
    assert result.settings["freeze_batchnorm"] is True
    assert not student.training


@pytest.mark.parametrize("freeze", [True, False])
def test_batchnorm_statistics_frozen_or_trained(freeze: bool) -> None:
    teacher, student = zoo("resnet18-ema"), zoo("resnet18-eca")
    init_student(teacher, student)
    bn = student.bn1
    before = bn.running_mean.clone()
    result = distill(teacher, student, scenes(4), steps=2, batch=2, imgsz=SIZE, freeze_batchnorm=freeze)
    assert result.settings["freeze_batchnorm"] is freeze
    assert torch.equal(bn.running_mean, before) is freeze  # frozen: the teacher's statistics, untouched
    assert not student.training and not bn.training
    with pytest.raises(ConfigError, match="backbone_lr_factor must be a number in"):
        distill(teacher, student, scenes(4), steps=1, imgsz=SIZE, backbone_lr_factor=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="freeze_batchnorm must be True, False or None"):
        distill(teacher, student, scenes(4), steps=1, imgsz=SIZE, freeze_batchnorm="yes")  # type: ignore[arg-type]


def test_detector_head_terms() -> None:
    teacher, student = zoo("yolov8n-ema"), zoo("yolov8n-eca")
    result = distill(teacher, student, scenes(4), steps=2, batch=2, imgsz=64)
    assert {"attention", "box", "cls"} <= set(result.history[0])
    assert result.settings["loss_weights"] == DETECTOR_WEIGHTS.to_dict()  # the detector record's settings
    assert result.settings["freeze_batchnorm"] is False
    assert all(np.isfinite(h["total"]) for h in result.history)
    with pytest.raises(ConfigError, match=r"labels for detectors come from a data\.yaml"):
        distill(teacher, student, scenes(4), labels=np.zeros(4, dtype=np.int64), steps=1, imgsz=64)


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, out = scenes(8), tmp_path / "run"

    def run(**kwargs: object):
        return distill(zoo("resnet18-se"), zoo("resnet18-eca"), images, steps=4, batch=2, imgsz=SIZE, out=out,
                       checkpoint_every=2, **kwargs)  # fmt: skip

    def interrupt(step: int, total: int, terms: dict[str, float]) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(on_step=interrupt)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt"
    ]  # step 2's; no staging left, no student yet
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 2

    real_save = torch.save

    def crash_mid_write(obj: object, f: object) -> None:
        Path(f).write_bytes(b"half a checkpoint")  # type: ignore[arg-type]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        run(resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2  # the old one, whole
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]

    result = run(resume=True)
    assert result.resumed_from == 2 and [h["step"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[:2] == saved["history"]
    assert (out / "student.pt").is_file()
    with pytest.raises(ConfigError, match="other settings"):
        distill(
            zoo("resnet18-se"),
            zoo("resnet18-eca"),
            images,
            steps=6,
            batch=4,
            imgsz=SIZE,
            out=out,
            resume=True,
        )
    with pytest.raises(ConfigError, match="freeze_batchnorm"):
        run(resume=True, freeze_batchnorm=not result.settings["freeze_batchnorm"])
    with pytest.raises(ConfigError, match="already holds a distillation checkpoint"):
        run()  # a new run never overwrites an old one's checkpoint
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        distill(
            zoo("resnet18-se"), zoo("resnet18-eca"), images, imgsz=SIZE, out=tmp_path / "new", resume=True
        )


def test_cli_distils_reports_and_exports_a_verified_student(
    teacher_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(scenes(6)):
        Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "run"
    args = ["distill", "--teacher", "resnet18-se", "--weights", str(teacher_weights), "--student", "resnet18-eca",
            "--images", str(folder), "--steps", "2", "--batch", "2", "--imgsz", str(SIZE), "--eval-images", "4",
            "--latency-runs", "2", "--out", str(out), "--temperature", "2"]  # fmt: skip
    assert main(args) == 0
    training = json.loads((out / "report.json").read_text())["training"]
    # a flag replaces its own default only; the rest are the classifier defaults
    assert training["loss_weights"] == {**CLASSIFIER_WEIGHTS.to_dict(), "temperature": 2.0}
    assert training["freeze_batchnorm"] is True and training["backbone_lr_factor"] == 0.1
    assert {"student.pt", "checkpoint.pt", "report.md", "report.json", "loss.png"} <= {
        p.name for p in out.iterdir()
    }
    assert (out / "export" / "resnet18-eca" / "ort-fp32" / "model.onnx").is_file()
    report = (out / "report.md").read_text()
    assert "| resnet18-se | resnet18-eca |" in report and "verified" in report
    assert "attn-deploy export --model resnet18-eca --weights" in capsys.readouterr().out
    student = create_model(
        "resnet18-eca", weights=out / "student.pt"
    )  # what `attn-deploy export --weights` loads
    assert student.spec.num_classes == 4


def _corrupt_dir(root: Path) -> Path:
    (root / "bad").mkdir()
    (root / "bad" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root / "bad"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"--teacher": "resnet50-emma"}, "unknown model 'resnet50-emma'"),
        ({"--student": "yolov8n-eca"}, "different architectures"),
        ({"--images": "MISSING"}, "does not exist"),
        ({"--images": "EMPTY"}, "holds no .jpg/.png images"),
        ({"--images": "CORRUPT"}, "cannot read image"),
        ({"--images": "synthetic:sceens"}, "unknown synthetic set"),
        ({"--weights": "MISSING"}, "not found"),
        ({"--steps": "0"}, "steps must be an integer from 1"),
        ({"--backbone-lr-factor": "0"}, "backbone_lr_factor must be a number in (0, 1]"),
        ({"--backbone-lr-factor": "nan"}, "backbone_lr_factor must be a number in (0, 1]"),
        # the report's options: checked before training, not after it as a traceback
        ({"--eval-images": "0"}, "--eval-images must be between 1 and"),
        ({"--eval-images": "100000000"}, "--eval-images must be between 1 and"),
        ({"--latency-runs": "0"}, "--latency-runs must be 1..10000"),
    ],
)
def test_cli_errors_are_one_line(
    change: dict[str, str],
    needle: str,
    teacher_weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    places = {
        "MISSING": lambda: tmp_path / "missing",
        "EMPTY": lambda: tmp_path,
        "CORRUPT": lambda: _corrupt_dir(tmp_path),
    }
    options = {"--teacher": "resnet18-se", "--weights": str(teacher_weights), "--student": "resnet18-eca",
               "--images": "synthetic:scenes", "--imgsz": str(SIZE), "--out": str(tmp_path / "run")}  # fmt: skip
    options.update({k: str(places[v]()) if v in places else v for k, v in change.items()})
    assert main(["distill", *[x for kv in options.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
