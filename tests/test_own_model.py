"""Bring your own model (issue 10): Ultralytics checkpoints read without running their code, trusted checkpoints,
module factories; provenance, validate's rebuild, Triton labels and server metadata; issue 16's untrained-attention
warning.

Checkpoints are written in Ultralytics' exact layout by ``tests/ultralytics_layout.py`` (an independent YOLOv8 in
Ultralytics' code style and module paths, pickled in FP16); its forward pass is the reference.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy.artifacts import load_artifact
from attn_deploy.cli import main
from attn_deploy.errors import ConfigError, WeightsError
from attn_deploy.models.checkpoint import Record, read_checkpoint
from attn_deploy.models.source import default_name, load_checkpoint, load_factory, load_zoo, rebuild_model
from attn_deploy.models.ultralytics import read_ultralytics
from attn_deploy.models.ultralytics_yaml import build_ultralytics
from attn_deploy.models.weights import read_state_dict
from attn_deploy.serve.labels import LABELS_FILE
from attn_deploy.serve.model_pool import ModelPool, ServeOptions
from attn_deploy.serve.triton_repo import write_triton_model
from tests.conftest import ort_outputs
from tests.ultralytics_layout import (
    build_model,
    fake_ultralytics,
    reference_outputs,
    save_checkpoint,
    yolov8_yaml,
)

# Ours vs the independent forward, both FP32 on the same FP16-stored weights: the same ops in the same order give
# 0.0 on one machine; 1e-4 relative to the outputs' magnitude (box coordinates up to ~640) leaves room for a
# different summation order in another CPU's conv kernels (AVX2/AVX-512/AMX), far below any real mapping error.
REL_TOL = 1e-4


def _close(got: torch.Tensor | np.ndarray, ref: torch.Tensor) -> None:
    got = torch.as_tensor(got)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= REL_TOL * max(1.0, float(ref.abs().max()))


class RunsCode:
    """A pickle payload: unpickling it calls os.system, which would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


MIXED = [  # SE/CBAM/ECA/EMA at every place across four checkpoints; CoordAtt and SimAM in a fifth
    {"before_sppf": "SEAttention", "after_sppf": "CBAMBlock", "neck": "ECAAttention"},
    {"before_sppf": "CBAMBlock", "after_sppf": "ECAAttention", "neck": "EMA"},
    {"before_sppf": "ECAAttention", "after_sppf": "EMA", "neck": "SEAttention"},
    {"before_sppf": "EMA", "after_sppf": "SEAttention", "neck": "CBAMBlock"},
    {"before_sppf": "CoordAtt", "after_sppf": "SimAM", "neck": "CoordAtt"},
]


@pytest.fixture(scope="module")
def stock_n(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A stock yolov8n (nc 3) and its best.pt."""
    reference = build_model("n", 3)
    return reference, save_checkpoint(reference, tmp_path_factory.mktemp("stock") / "best.pt")


@pytest.mark.parametrize(
    ("nc", "attention"), [(80, None), *[(3 if i else 80, a) for i, a in enumerate(MIXED)]]
)
def test_checkpoint_rebuilds_and_matches_independent_forward(
    tmp_path: Path, nc: int, attention: dict[str, str] | None
) -> None:
    reference = build_model("n", nc, attention, seed=nc)
    path = save_checkpoint(reference, tmp_path / "best.pt")
    checkpoint = read_ultralytics(path)
    model, arch = build_ultralytics(checkpoint)
    assert arch == ("yolov8n" if attention is None else "yolov8n-yaml")
    assert (
        checkpoint.num_classes == nc
        and checkpoint.names[-1] == f"class{nc - 1}"
        and checkpoint.form == "final"
    )
    x = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(1))  # not the 640 it "trained" at
    with torch.inference_mode():
        _close(model(x), reference_outputs(reference, x))


@pytest.mark.slow  # exports / a yolov8m: over ~4 s on 2 cores
@pytest.mark.parametrize(
    ("scale", "nc", "attention"),
    [("s", 80, None), ("m", 3, {"before_sppf": "SEAttention", "neck": "EMA"})],  # m: max_channels 768 scaling
)
def test_larger_scales_and_mid_training_form(
    tmp_path: Path, scale: str, nc: int, attention: dict[str, str] | None
) -> None:
    reference = build_model(scale, nc, attention)
    path = save_checkpoint(reference, tmp_path / "last.pt", final=False)  # "model" None, "ema" + optimizer
    loaded = load_checkpoint(path)
    assert loaded.source["form"] == "training" and loaded.spec.num_classes == nc
    assert loaded.source["arch"] == f"yolov8{scale}" + ("-yaml" if attention else "")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _close(loaded.model(x), reference_outputs(reference, x))


def test_reduce_payload_runs_nothing(stock_n: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = save_checkpoint(stock_n[0], tmp_path / "evil.pt", payload=RunsCode(marker))
    obj = read_checkpoint(path)
    record = obj["train_args"]["callback"]
    assert isinstance(record, Record) and record.args == (
        f"touch {marker}",
    )  # os.system kept as an inert record
    read_state_dict(path)  # what --model NAME --weights evil.pt reads
    load_checkpoint(path)  # what --weights evil.pt / --checkpoint evil.pt read
    plain = tmp_path / "plain-evil.pt"
    torch.save({"state": RunsCode(marker)}, plain)
    assert (
        main(["export", "--checkpoint", str(plain), "--out", str(tmp_path)]) == 2
    )  # not Ultralytics: refused
    assert main(["export", "--model", "yolov8n", "--weights", str(plain), "--out", str(tmp_path)]) == 2
    assert not marker.exists()


def test_only_trust_checkpoint_unpickles_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = build_model("n", 3, {"neck": "SEAttention"})
    path = tmp_path / "model.pt"
    with fake_ultralytics():
        torch.save(reference.half(), path)  # a bare pickled DetectionModel: not a training checkpoint
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path)]) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    with fake_ultralytics():  # its classes importable, as with the ultralytics package installed
        loaded = load_checkpoint(path, trust=True, imgsz=(64, 64))
    assert (
        loaded.spec.task == "detect" and loaded.source["nc"] == 3 and loaded.source["output"] == "y of (y, x)"
    )
    assert loaded.source["names"] == ["class0", "class1", "class2"]
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        _close(loaded.model(x), reference_outputs(reference, x))
    manifest = {"model": "model", "source": loaded.source, "preprocess": {"size": [64, 64]}}
    with pytest.raises(ConfigError, match="--trust-checkpoint"):
        rebuild_model(manifest)  # a manifest alone never runs code


def test_unknown_module_missing_tensor_and_shape_mismatch_are_one_line(tmp_path: Path) -> None:
    model = build_model("n", 3, {"neck": "SEAttention"})
    model.yaml["head"][1][2] = "BiFPN_Concat"
    with pytest.raises(WeightsError, match="unknown module types in the model yaml: BiFPN_Concat"):
        build_ultralytics(read_ultralytics(save_checkpoint(model, tmp_path / "a.pt")))
    model.yaml = yolov8_yaml("n", 3, {"neck": "SEAttention"})
    del model.model[16].fc[2]._parameters["weight"]  # the SE layer's second Linear lost its weight
    with pytest.raises(WeightsError, match=r"ours unfilled: fc\.2\.weight"):
        build_ultralytics(read_ultralytics(save_checkpoint(model, tmp_path / "b.pt")))
    ultralytics_cbam = save_checkpoint(build_model("n", 3, {"neck": "CBAM"}), tmp_path / "u.pt")
    with pytest.raises(
        WeightsError, match=r"do not fit attn-deploy's cbam .*theirs unused: channel_attention\.fc"
    ):
        build_ultralytics(read_ultralytics(ultralytics_cbam))  # Ultralytics' own CBAM computes something else
    model = build_model("n", 3)
    model.yaml = yolov8_yaml("s", 3)  # the tensors of an n under the yaml of an s
    with pytest.raises(WeightsError, match=r"shape mismatch: model\.0\.conv\.weight"):
        build_ultralytics(read_ultralytics(save_checkpoint(model, tmp_path / "c.pt")))
    assert main(["export", "--weights", str(tmp_path / "c.pt"), "--out", str(tmp_path)]) == 2


def test_zoo_model_takes_an_ultralytics_checkpoint_as_weights(stock_n: tuple[torch.nn.Module, Path]) -> None:
    reference, path = stock_n
    loaded = load_zoo("yolov8n-none", path)
    assert loaded.spec.num_classes == 3 and loaded.source["sha256"]
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        _close(loaded.model(x), reference_outputs(reference, x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """``attn-deploy export --weights best.pt --dynamic --imgsz 64`` of a yolov8n (nc 3) with EMA in the neck."""
    tmp = tmp_path_factory.mktemp("own")
    reference = build_model("n", 3, {"neck": "EMA"}, seed=5)
    path = save_checkpoint(reference, tmp / "best.pt")
    assert (
        main(["export", "--weights", str(path), "--imgsz", "64", "--dynamic", "--out", str(tmp / "engines")])
        == 0
    )
    return tmp / "engines" / "best" / "ort-fp32", reference


@pytest.mark.slow  # exports / a yolov8m: over ~4 s on 2 cores
def test_exported_checkpoint_matches_independent_forward_at_unseen_shapes(
    exported: tuple[Path, torch.nn.Module],
) -> None:
    artifact, reference = exported
    for shape in ((2, 3, 96, 64), (1, 3, 128, 160)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        _close(ort_outputs(artifact / "model.onnx", [x])[0], reference_outputs(reference, x))


@pytest.mark.slow  # exports / a yolov8m: over ~4 s on 2 cores
def test_provenance_validate_and_labels(exported: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    artifact, _ = exported
    manifest = json.loads((artifact / "manifest.json").read_text())
    source = manifest["source"]
    assert source["kind"] == "ultralytics" and source["arch"] == "yolov8n-yaml" and source["nc"] == 3
    assert source["names"] == ["class0", "class1", "class2"] and len(source["sha256"]) == 64
    assert "no code" in source["trust"] and manifest["task"] == "detect"
    assert "- source: ultralytics" in (artifact / "report.md").read_text()
    assert (
        main(["validate", str(artifact), "--images", "2"]) == 0
    )  # rebuilt from the checkpoint, boxes scored
    triton = write_triton_model(load_artifact(artifact), tmp_path / "repo")
    assert (triton.directory / LABELS_FILE).read_text() == "class0\nclass1\nclass2\n"
    assert f'label_filename: "{LABELS_FILE}"' in (triton.directory / "config.pbtxt").read_text()
    pool = ModelPool([artifact], ServeOptions(threads=1))
    try:
        metadata = pool.get("best").metadata()
    finally:
        pool.close()
    assert json.loads(metadata["parameters"]["class_names"]) == ["class0", "class1", "class2"]


@pytest.mark.slow  # exports / a yolov8m: over ~4 s on 2 cores
def test_factory_module_exports_and_validate_needs_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mynet.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def build():
                torch.manual_seed(0)
                net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                    nn.Linear(8, 4))
                net.names = ["cat", "dog", "fox", "owl"]
                return net

            class TinyDetector(nn.Module):  # Ultralytics-style eval output: (y, x), y = (B, 4 + nc, anchors)
                def __init__(self):
                    super().__init__()
                    self.p3 = nn.Conv2d(3, 8, 3, 8, 1)
                    self.p4 = nn.Conv2d(8, 8, 3, 2, 1)
                    self.p5 = nn.Conv2d(8, 8, 3, 2, 1)
                    self.head = nn.Conv2d(8, 6, 1)

                def forward(self, x):
                    p3 = self.p3(x).relu()
                    p4 = self.p4(p3).relu()
                    feats = [self.head(p) for p in (p3, p4, self.p5(p4).relu())]
                    y = torch.cat([f.flatten(2) for f in feats], 2)
                    return torch.cat([y[:, :2].sigmoid() * 64, y[:, 2:4].sigmoid() * 16, y[:, 4:].sigmoid()], 1), feats

            def build_detector():
                torch.manual_seed(0)
                return TinyDetector()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["export", "--module", "mynet:build", "--imgsz", "32", "--out", "engines"]) == 0
    artifact = tmp_path / "engines" / "build" / "ort-fp32"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["source"]["module"] == "mynet:build" and manifest["task"] == "classify"
    assert manifest["source"]["names"] == ["cat", "dog", "fox", "owl"]
    assert main(["validate", str(artifact), "--images", "2"]) == 2  # importing the module again needs consent
    assert main(["validate", str(artifact), "--images", "2", "--trust-checkpoint"]) == 0
    assert (
        main(["export", "--module", "mynet:build_detector", "--imgsz", "64", "--dynamic", "--out", "engines"])
        == 0
    )
    artifact = tmp_path / "engines" / "build_detector" / "ort-fp32"
    source = json.loads((artifact / "manifest.json").read_text())["source"]
    assert source["task"] == "detect" and source["nc"] == 2 and source["output"] == "y of (y, x)"
    assert main(["validate", str(artifact), "--images", "2", "--trust-checkpoint"]) == 0
    assert "box_agreement" in (artifact / "validation.json").read_text()  # boxes scored
    fp16 = [
        "export",
        "--module",
        "mynet:build_detector",
        "--imgsz",
        "64",
        "--precision",
        "fp16",
        "--out",
        "engines",
    ]
    assert main(fp16) == 0  # the precision configs take one's own models too
    assert json.loads((artifact.parent / "ort-fp16" / "manifest.json").read_text())["precision"] == "fp16"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(
        elsewhere
    )  # validate from another folder: the module is found where the export found it
    sys.path[:] = [p for p in sys.path if p not in (str(tmp_path), os.path.realpath(tmp_path))]
    monkeypatch.delitem(sys.modules, "mynet")
    assert main(["validate", str(artifact), "--images", "2", "--trust-checkpoint"]) == 0
    with pytest.raises(ConfigError, match=r"package\.module:factory"):
        load_factory("mynet.build")


def test_changed_checkpoint_is_refused_by_rebuild(
    stock_n: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    path = tmp_path / "best.pt"
    path.write_bytes(stock_n[1].read_bytes())
    loaded = load_checkpoint(path)
    path.write_bytes(path.read_bytes() + b"\0")  # retrained, edited, replaced: other bytes
    with pytest.raises(WeightsError, match="changed since the export"):
        rebuild_model({"model": "best", "source": loaded.source})
    zoo = {
        "model": "yolov8n-none",
        "weights": str(path),
        "source": {"kind": "zoo", "sha256": loaded.source["sha256"]},
    }
    with pytest.raises(WeightsError, match="changed since the export"):
        rebuild_model(zoo)  # --model NAME --weights: the same check


def test_plain_resnet_weights_in_resnet_se_warn_and_are_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from attn_deploy.models import create_model

    path = tmp_path / "resnet18.pt"
    torch.save(create_model("resnet18-none", num_classes=10, calibrate=False).state_dict(), path)
    with caplog.at_level(logging.WARNING):
        loaded = load_zoo("resnet18-se", path)
    assert "random init" in caplog.text
    untrained = loaded.source["attention_at_init"]
    assert untrained["tensors"] > 0 and "attn" in untrained["first"][0]


def test_hostile_sources_are_one_line_errors(
    stock_n: tuple[torch.nn.Module, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--out", str(tmp_path)]) == 2
    assert main(["export", "--model", "yolov8n", "--module", "a:b"]) == 2
    assert main(["export", "--weights", "x.pt", "--trust-checkpoint"]) == 2
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(stock_n[1].read_bytes()[:100_000])
    assert main(["export", "--weights", str(truncated)]) == 2
    assert main(["export", "--weights", str(stock_n[1]), "--name", "../up", "--out", str(tmp_path)]) == 2
    assert main(["export", "--module", "os:getcwd", "--out", str(tmp_path)]) == 2  # not a module: refused
    err = capsys.readouterr().err
    assert "name one model source" in err and "not found" in err and "not a torch zip checkpoint" in err
    assert (
        "cannot be a file or folder name" in err and "not a torch.nn.Module" in err and "Traceback" not in err
    )
    model = build_model("n", 3)
    model.yaml["backbone"][2][1] = 10**9  # a hostile yaml: a billion bottlenecks
    with pytest.raises(WeightsError, match=r"repeats must be an integer in 1\.\.64"):
        build_ultralytics(read_ultralytics(save_checkpoint(model, tmp_path / "huge.pt")))


def test_default_artifact_names() -> None:
    assert default_name(Path("runs/detect/train3/weights/best.pt")) == "train3-best"
    assert default_name(Path("/models/last.pt")) == "last"
