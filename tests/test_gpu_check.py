"""The GPU check script's skip path, on a machine without CUDA (every CI machine today)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.gpu_check import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the skip path; a CUDA GPU is visible")
def test_gpu_check_without_cuda_writes_why_it_skipped(tmp_path, capsys) -> None:
    out = tmp_path / "gpu.json"
    assert main(["--out", str(out), "--runs", "3"]) == 0
    doc = json.loads(out.read_text())
    assert "no CUDA GPU visible" in doc["skipped"]
    assert doc["models"] == ["yolov8s-none", "yolov8s-eca", "resnet50-none", "resnet50-se"]
    assert "skipped" in capsys.readouterr().out
