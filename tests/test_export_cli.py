"""The CLI as a user runs it: list, export (files, manifest, parity), and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import onnx
import pytest

from attn_deploy.cli import main
from tests.conftest import CliExport


@pytest.mark.slow
def test_list_prints_params_and_gflops(capsys) -> None:
    assert main(["list", "--arch", "yolov8s"]) == 0
    out = capsys.readouterr().out
    assert "yolov8s-eca" in out and "yolov8s-none" in out
    assert "11.17" in out  # yolov8s-none params (M)
    assert "28.60" in out  # GFLOPs at 640


@pytest.mark.slow
def test_export_writes_a_verified_artifact(yolo_dynamic_export: CliExport) -> None:
    out = yolo_dynamic_export.out
    assert "PASSED" in out and "anchors" in out and "adaptive_avg_pool->reduce_mean" in out
    assert "Ops before / after simplify" not in out  # the op histogram is in report.md only

    art = yolo_dynamic_export.dir
    assert sorted(p.name for p in art.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["model"] == "yolov8n-eca" and manifest["task"] == "detect"
    assert manifest["exporter"] == "dynamo" and manifest["exporter_fallback"] is None
    assert manifest["sha256"] == hashlib.sha256((art / "model.onnx").read_bytes()).hexdigest()
    assert manifest["inputs"] == [
        {"name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}
    ]
    assert manifest["outputs"][0]["name"] == "output0" and manifest["outputs"][0]["shape"][:2] == [
        "batch",
        84,
    ]
    assert manifest["dynamic"] == {"batch": True, "hw": True}
    parity = manifest["parity"]
    assert parity["passed"] and len(parity["shapes"]) == 3 and parity["cosine"] > 0.99999
    assert {"max_abs", "max_rel", "cosine", "passed", "shapes"} <= set(parity)
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(manifest["versions"])
    assert manifest["rewrites"] == ["adaptive_avg_pool->reduce_mean"]
    assert manifest["weights"] is None  # built-in weights
    onnx.checker.check_model(str(art / "model.onnx"))
    assert not [p for p in art.parent.parent.rglob(".*")], "no temporary files are left behind"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["export", "--model", "yolov8s-ecaa"], "did you mean"),
        (["export", "--model", "yolov8n-eca", "--weights", "/nonexistent/w.pt"], "not found"),
        (["export", "--model", "yolov8n-eca", "--imgsz", "100"], "multiples of 32"),
        (["export", "--model", "resnet18-none", "--imgsz", "abc"], "--imgsz"),
    ],
)
def test_bad_input_is_one_red_line(argv, needle, tmp_path, capsys) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("error:")
    assert len(err.splitlines()) <= 2  # one message (rich may wrap a very long line once)
    assert not list(tmp_path.iterdir()), "nothing is written on a user error"


@pytest.mark.slow
def test_user_error_has_no_traceback_in_a_real_process(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "attn_deploy.cli", "export", "--model", "resnet5-se", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "resnet50-se" in proc.stderr


@pytest.mark.slow
def test_dynamic_batch_alone(tmp_path, capsys) -> None:
    out = ["--out", str(tmp_path)]
    assert main(["export", "--model", "resnet18-se", "--imgsz", "64", "--dynamic-batch", *out]) == 0
    manifest = json.loads((tmp_path / "resnet18-se" / "ort-fp32" / "manifest.json").read_text())
    assert manifest["dynamic"] == {"batch": True, "hw": False}
    assert manifest["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    assert [s[0] for s in manifest["parity"]["shapes"]] == [1, 2, 3]  # verified at three batch sizes
    with pytest.raises(SystemExit) as exc:  # argparse: the two flags exclude each other
        main(["export", "--model", "resnet18-se", "--dynamic", "--dynamic-batch"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_export_with_user_weights_records_them(tmp_path, capsys, caplog) -> None:
    """A plain (attention-free) checkpoint loads into an attention model; the manifest names the file."""
    import torch

    from attn_deploy.models import create_model

    weights = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18-none", calibrate=False).state_dict(), weights)
    out = tmp_path / "engines"
    assert (
        main(
            [
                "export",
                "--model",
                "resnet18-se",
                "--imgsz",
                "64",
                "--weights",
                str(weights),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = json.loads((out / "resnet18-se" / "ort-fp32" / "manifest.json").read_text())
    assert manifest["weights"] == str(weights.resolve()) and manifest["parity"]["passed"]
    # issue 16: the SE blocks keep their random init: a warning (stderr in the CLI), recorded in the manifest
    assert manifest["source"]["attention_at_init"]["tensors"] > 0
    assert any(r.levelname == "WARNING" and "random init" in r.getMessage() for r in caplog.records)
