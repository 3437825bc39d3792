"""Every attention in both zoo families exports with dynamic batch and H/W and matches PyTorch at unseen shapes.

Small inputs keep this fast; the full-size run of all zoo models is `python -m benchmarks.zoo_export`
(results under benchmarks/results/).
"""

from __future__ import annotations

import pytest

from attn_deploy import list_attention
from attn_deploy.export.lint import lint_tensorrt
from attn_deploy.export.zoo import export_zoo_model
from tests.conftest import assert_ort_matches_torch

SIZES = {"yolov8n": (128, [(2, 3, 96, 160), (1, 3, 160, 64)]), "resnet18": (64, [(2, 3, 96, 64), (3, 3, 48, 80)])}


@pytest.mark.parametrize("attention", list_attention())
@pytest.mark.parametrize("arch", sorted(SIZES))
def test_zoo_model_exports_dynamic_and_matches(arch: str, attention: str, tmp_path) -> None:
    import onnx

    from attn_deploy.models import create_model

    imgsz, unseen = SIZES[arch]
    artifact, result = export_zoo_model(f"{arch}-{attention}", imgsz=imgsz, dynamic=True, out_root=tmp_path)
    assert result.parity.passed
    assert artifact.manifest["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert lint_tensorrt(onnx.load(artifact.onnx_path)) == []
    assert_ort_matches_torch(create_model(f"{arch}-{attention}"), artifact.onnx_path, unseen)
