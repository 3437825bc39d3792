"""`attn-deploy validate` and the precision stage of `attn-deploy export`, on small zoo artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization.calibrate import load_tensors_data
from polygraphy.comparator import RunResults
from polygraphy.comparator.data_loader import StreamingDataLoader

from attn_deploy.backends.ort import OrtRunner
from attn_deploy.cli import main
from attn_deploy.config import load_config, replace_config
from attn_deploy.errors import ExportError
from attn_deploy.fsutil import sha256_file
from attn_deploy.machine import describe_cpu
from attn_deploy.precision.apply import _hint
from attn_deploy.validate.classification import top1_agreement
from attn_deploy.validate.detection import anchor_box_agreement, box_agreement, box_iou, decode, nms
from attn_deploy.validate.polygraphy_io import INPUTS_NAME, OUTPUTS_NAME
from attn_deploy.validate.report import REPORT_MARKER
from attn_deploy.validate.validation import validate_artifact
from attn_deploy.workflow.zoo import export_zoo_model


def _yolo_output(
    boxes: list[tuple[float, float, float, float]], classes: list[int], scores: list[float]
) -> np.ndarray:
    """A (4 + 3, anchors) YOLO output with one anchor per box plus one empty anchor."""
    out = np.zeros((7, len(boxes) + 1), dtype=np.float32)
    for i, ((cx, cy, w, h), c, s) in enumerate(zip(boxes, classes, scores, strict=True)):
        out[:4, i] = cx, cy, w, h
        out[4 + c, i] = s
    return out


def test_box_decoding_nms_and_agreement():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=np.float64)
    assert np.allclose(box_iou(a, a), [[1, 25 / 175], [25 / 175, 1]])
    assert nms(
        np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.8, 0.7])
    ).tolist() == [
        0,
        2,
    ]
    ref = _yolo_output([(10, 10, 8, 8), (11, 10, 8, 8), (40, 40, 10, 10)], [0, 0, 2], [0.9, 0.8, 0.6])
    detections = decode(ref, conf=0.25)
    assert len(detections) == 2 and detections.classes.tolist() == [
        0,
        2,
    ]  # the overlapping same-class box is gone

    same = box_agreement(ref[None], ref[None], conf=0.25)
    assert (same.matched, same.agreement) == (2, 1.0)
    moved = _yolo_output([(10, 10, 8, 8), (11, 10, 8, 8), (43, 40, 10, 10)], [0, 0, 2], [0.9, 0.8, 0.6])
    assert box_agreement(ref[None], moved[None], conf=0.25).agreement == 0.5  # IoU 0.54 < 0.9
    relabeled = _yolo_output([(10, 10, 8, 8), (11, 10, 8, 8), (40, 40, 10, 10)], [0, 0, 1], [0.9, 0.8, 0.6])
    assert box_agreement(ref[None], relabeled[None], conf=0.25).matched == 1
    extra = _yolo_output([(10, 10, 8, 8), (40, 40, 10, 10), (70, 70, 5, 5)], [0, 2, 1], [0.9, 0.6, 0.5])
    assert box_agreement(ref[None], extra[None], conf=0.25).agreement == pytest.approx(2 / 3)
    assert box_agreement(ref[None], ref[None]).conf == pytest.approx(0.0)  # auto: top-100 of 4 anchors
    assert anchor_box_agreement(ref[None], ref[None], top_k=3) == 1.0  # boxes only, at PyTorch's best anchors
    assert anchor_box_agreement(ref[None], moved[None], top_k=3) == pytest.approx(2 / 3)


def test_top1_agreement():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1_agreement(ref, ref[:, ::-1]) == 0.0
    assert top1_agreement(ref, ref + np.array([[0, 0], [0, 0], [0.5, 0]])) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    artifact, _ = export_zoo_model("resnet18-se", imgsz=64, out_root=root, config=load_config("ort-fp16"))
    return artifact.dir


def test_fp16_export_manifest(classifier: Path):
    manifest = json.loads((classifier / "manifest.json").read_text())
    assert (manifest["target"], manifest["precision"], classifier.name) == ("ort-fp16", "fp16", "ort-fp16")
    assert manifest["config"]["fp16"]["keep_io_fp32"] is True
    assert manifest["precision_info"]["fp16"]["fp16_nodes"] > 0
    parity = manifest["parity"]
    # Measured 0.9999995 (AVX2 EPYC): FP16 rounding (2^-11 relative per value) is the same on every CPU, and
    # kernels (F16C, AVX-512 FP16, or FP32 fallbacks) differ by FP32 rounding only, 200x below the 1e-4 allowed.
    assert parity["passed"] and parity["cosine"] >= 0.9999
    assert {c["metric"] for c in parity["checks"]} >= {"cosine", "top-1 agreement"}
    assert manifest["fp32_parity"]["passed"]
    assert parity["shapes"] == [[1, 3, 64, 64]]  # the shape the graph ran at, not its 8 images stacked
    report = (classifier / "report.md").read_text()
    assert "top-1 agreement >= 99.0%" in report and "| 1x3x64x64 |" in report  # the console's units


def test_validate_classifier_writes_reports_and_polygraphy_data(classifier: Path):
    report = validate_artifact(classifier, num_images=4)
    assert report.passed, report.checks
    assert [c.metric for c in report.checks if c.gated] == [
        "cosine",
        "new non-finite values",
        "top-1 agreement",
    ]
    unchecked = {c.metric: c.result for c in report.checks if not c.gated}  # ort-fp16 reports them only
    assert unchecked == {"max abs error": "not checked", "max rel error": "not checked"}
    validate_artifact(classifier, num_images=2)  # a second run replaces the section, never appends
    assert (classifier / "report.md").read_text().count(REPORT_MARKER) == 1
    data = json.loads((classifier / "validation.json").read_text())
    assert (
        data["passed"]
        and data["num_images"] == 2
        and data["polygraphy"].startswith("polygraphy run model.onnx")
    )
    assert data["machine"] == describe_cpu()  # the CPU whose kernels ran the graph: {"cpu", "arch", "isa"}

    feeds = list(StreamingDataLoader([str(classifier / INPUTS_NAME)]))
    results = RunResults.load(str(classifier / OUTPUTS_NAME))
    (runner_name, iterations), *_ = results.items()
    assert runner_name == "pytorch-fp32" and len(feeds) == len(iterations) == 1
    assert feeds[0]["images"].shape == (1, 3, 64, 64)
    assert np.asarray(iterations[0]["logits"]).shape == (1, 1000)


@pytest.mark.slow
def test_validate_detector_reports_box_agreement(tmp_path: Path):
    artifact, _ = export_zoo_model("yolov8n-eca", imgsz=64, out_root=tmp_path, config=load_config("ort-fp32"))
    report = validate_artifact(artifact.dir, num_images=2)
    assert report.passed, report.checks
    box = next(c for c in report.checks if c.metric == "box agreement")
    assert box.gated and report.details["boxes"]["reference_boxes"] > 0


def test_int8_tolerance_hint_suggests_only_settings_not_in_use() -> None:
    default = _hint(load_config("ort-int8"))
    assert "--calib-method entropy" in default and "int8.sensitive_float: 4" in default, default
    tried = replace_config(
        load_config("ort-int8"),
        {"int8.calibration": "entropy", "int8.sensitive_float": 4, "int8.keep_gates_fp": True},
    )
    hint = _hint(tried)
    assert "entropy" not in hint and "sensitive_float" not in hint and "keep_gates_fp" not in hint, hint
    assert "num_images, now 32" in hint and "untrained" in hint, hint


@pytest.mark.slow
def test_int8_export_a_tolerance_miss_a_corrupt_cache_and_a_broken_graph(tmp_path: Path, monkeypatch, caplog):
    # Why ort-int8's cosine >= 0.99 holds on every x86-64 CPU with margin: INT8 weights use 7 bits, so ONNX
    # Runtime's integer kernels sum exactly on AVX2, AVX-512, VNNI and AMX alike (test_int8.py::
    # test_integer_kernels_compute_the_same_on_every_cpu); with 8-bit weights, AVX2/AVX-512 CPUs without VNNI
    # saturated int16 sums and this export measured 0.9899 (refused) while exact arithmetic gave 0.9984. Now
    # 0.9974 (AMD EPYC, AVX2): 1 - cosine = 0.0026 against the gate's 0.01, and what still differs between CPUs
    # (FP32 rounding in PyTorch and in calibration) moves it by ~1e-5. The gate stays honest: the same graph with
    # its input range halved (as from calibration images normalised the wrong way) scores 0.86 and is refused.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the calibration cache goes there
    config = replace_config(
        load_config("ort-int8"), {"int8.num_images": 4, "validation.num_images": 4, "tolerances.top1": 0.5}
    )
    strict = replace_config(config, {"name": "ort-int8-strict", "tolerances.cosine": 0.9999999})
    with pytest.raises(
        ExportError, match=r"ort-int8-strict: cosine .* misses the tolerance >= 1 .*--calib-method"
    ):
        export_zoo_model("resnet18-eca", imgsz=64, out_root=tmp_path, config=strict)
    assert not (tmp_path / "resnet18-eca" / "ort-int8-strict").exists()

    # The refused export calibrated first; its cache entry, corrupted, is discarded, named and recomputed.
    (entry,) = (tmp_path / "cache" / "attn-deploy" / "calibration").glob("*.json")
    entry.write_bytes(b'{"calibration_method": "\x01')
    with caplog.at_level("WARNING", logger="attn_deploy.precision.calibration"):
        artifact, _ = export_zoo_model("resnet18-eca", imgsz=64, out_root=tmp_path, config=config)
    assert str(entry) in caplog.text and load_tensors_data(entry).data
    manifest = artifact.manifest
    info = manifest["precision_info"]["int8"]
    assert manifest["precision"] == "int8" and info["qdq_nodes"] > 0 and not info["cache_hit"]
    assert info["calibration"]["source"] == "synthetic(seed=0)"
    assert manifest["parity"]["cosine"] >= 0.99 and manifest["machine"] == describe_cpu()

    broken = onnx.load(str(artifact.onnx_path))
    quantize_input = next(n for n in broken.graph.node if n.input[0] == broken.graph.input[0].name)
    scale = next(t for t in broken.graph.initializer if t.name == quantize_input.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) / 2, scale.name))
    report = validate_artifact(artifact.dir, runner=OrtRunner(broken.SerializeToString()), write=False)
    # Measured 0.86; any CPU's kernels move it by < 1e-4 (see above), far from the 0.99 gate.
    assert not report.passed and report.checks[0].metric == "cosine" and report.checks[0].value < 0.95


def test_cli_validate_and_one_line_errors(classifier: Path, tmp_path: Path, capsys):
    assert main(["validate", str(classifier), "--images", "1"]) == 0
    assert "PASSED" in capsys.readouterr().out

    assert main(["validate", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["validate", str(tmp_path)]) == 2
    assert "is not an artifact directory" in capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(classifier, broken)
    (broken / "model.onnx").write_bytes(b"\x08\x01garbage")
    assert main(["validate", str(broken)]) == 2
    assert "does not match its manifest" in capsys.readouterr().err
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["sha256"] = sha256_file(broken / "model.onnx")  # a manifest that vouches for the garbage
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["validate", str(broken)]) == 2
    assert "cannot load the model" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["export", "--model", "resnet18-se", "--precision", "int8", "--calib-dir", str(empty)]
    assert main(args) == 2
    assert "holds no .jpg/.png images" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fine_tuned_classifier_on_the_user_s_own_images(tmp_path: Path, monkeypatch, capsys):
    # The user flow: a 10-class fine-tuned checkpoint, INT8 calibrated on their images, validated on others.
    # ort-int8's gate (cosine >= 0.99) passes at 0.9963 (export) and 0.9964 (validate) on an AVX2 EPYC, the same
    # on any x86-64 CPU since 7-bit INT8 weights make ONNX Runtime's integer kernels exact everywhere (8-bit
    # weights saturated on CPUs without VNNI: 0.9868, refused); 1 - cosine is under half the gate's 0.01.
    import torch
    from PIL import Image

    from attn_deploy import create_model
    from attn_deploy.data.synthetic import labeled_scenes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "fine_tuned.pt"
    torch.save(create_model("resnet18-se", num_classes=10).state_dict(), weights)
    folders = {"calib": tmp_path / "calib", "val": tmp_path / "val"}
    for seed, folder in enumerate(folders.values()):
        folder.mkdir()
        for i, image in enumerate(labeled_scenes(5, (60, 80), seed=seed)[0]):
            Image.fromarray(image).save(folder / f"{i}.png")
    export = ["export", "--model", "resnet18-se", "--weights", str(weights), "--imgsz", "64"]
    export += [
        "--precision",
        "int8",
        "--calib-dir",
        str(folders["calib"]),
        "--out",
        str(tmp_path / "engines"),
    ]
    assert main(export) == 0
    artifact = tmp_path / "engines" / "resnet18-se" / "ort-int8"
    assert json.loads((artifact / "manifest.json").read_text())["outputs"][0]["shape"][-1] == 10
    capsys.readouterr()

    assert main(["validate", str(artifact), "--image-dir", str(folders["val"]), "--images", "4"]) == 0
    data = json.loads((artifact / "validation.json").read_text())
    assert data["num_images"] == 4 and data["details"]["source"] == f"images from {folders['val']}"
    assert f"4 images from {folders['val']}" in (artifact / "report.md").read_text()

    assert main(["validate", str(artifact), "--image-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
