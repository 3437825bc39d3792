"""Every attention in both zoo families exports with dynamic batch and H/W and matches PyTorch at unseen shapes.

Small inputs keep this fast; the full-size run of all zoo models is `python -m benchmarks.zoo_export`
(results under benchmarks/results/).
"""

from __future__ import annotations

import pytest
import torch

from attn_deploy import list_attention
from attn_deploy.export.lint import lint_tensorrt
from attn_deploy.export.zoo import export_zoo_model
from tests.conftest import assert_ort_matches_torch

# Every attention once, across both families (each export traces the whole model: ~10-30 s on 2 cores).
CASES = [("yolov8n", a) for a in ("none", "eca", "ema", "coordatt", "cbam", "sparse")] + [
    ("resnet18", a) for a in ("none", "se", "simam", "hybrid", "dynamic")
]
SIZES = {
    "yolov8n": (256, [(2, 3, 320, 224), (1, 3, 288, 416)]),
    "resnet18": (64, [(2, 3, 96, 64), (3, 3, 48, 80)]),
}


def test_cases_cover_every_attention() -> None:
    assert {a for _, a in CASES} == set(list_attention())


@pytest.mark.parametrize(("arch", "attention"), CASES)
def test_zoo_model_exports_dynamic_and_matches(arch: str, attention: str, tmp_path) -> None:
    import onnx

    from attn_deploy.data.synthetic import synthetic_images
    from attn_deploy.models import create_model, model_spec

    spec = model_spec(f"{arch}-{attention}")

    def images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """Real-looking images, preprocessed as the model expects (its input domain)."""
        return spec.normalize(synthetic_images(shape[0], shape[2:], seed=seed))

    imgsz, unseen = SIZES[arch]
    artifact, result = export_zoo_model(f"{arch}-{attention}", imgsz=imgsz, dynamic=True, out_root=tmp_path)
    assert result.parity.passed and len(result.shapes) == 3
    assert artifact.manifest["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert lint_tensorrt(onnx.load(artifact.onnx_path)) == []
    assert_ort_matches_torch(
        create_model(f"{arch}-{attention}"), artifact.onnx_path, unseen, make_input=images
    )
