"""Every attention in both zoo families exports with dynamic batch and H/W and matches PyTorch at unseen shapes.

Small inputs keep this fast; the full-size run of all zoo models is `python -m benchmarks.zoo_export`
(results under benchmarks/results/). A dynamic YOLO trace costs ~25 s on 2 cores, so YOLO is traced twice:
the zoo's yolov8n-eca through the CLI (shared with the CLI and server tests), and one yolov8n that carries every
attention at once, one per placement site, which puts each module inside YOLO's real feature maps.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from attn_deploy import export_onnx, list_attention
from attn_deploy.attention import create_attention
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.export.lint import lint_tensorrt
from attn_deploy.models import ModelSpec, create_model, model_spec
from attn_deploy.workflow.zoo import export_zoo_model
from tests.conftest import CliExport, assert_ort_matches_torch

RESNET_CASES = ["none", "se", "simam", "hybrid", "dynamic"]  # each export traces resnet18: ~5-15 s on 2 cores
RESNET = (64, [(2, 3, 96, 64), (3, 3, 48, 80)])
YOLO_UNSEEN = [(2, 3, 320, 224), (1, 3, 288, 416)]
# yolov8n placement "all": layer -> (attention, channels). Sparse sits at stride 16, where every verified shape
# keeps H·W >= its top-k of 32; SimAM at stride 4, never near the 1x1 map that makes its variance 0.
YOLO_SITES = {
    2: ("simam", 32),
    4: ("eca", 64),
    6: ("ema", 128),
    8: ("coordatt", 256),
    9: ("cbam", 256),
    12: ("sparse", 128),
    15: ("se", 64),
    18: ("hybrid", 128),
    21: ("dynamic", 256),
}


def _images(spec: ModelSpec):
    def make(shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """Real-looking images, preprocessed as the model expects (its input domain)."""
        return spec.normalize(synthetic_images(shape[0], shape[2:], seed=seed))

    return make


def test_cases_cover_every_attention() -> None:
    covered = set(RESNET_CASES) | {name for name, _ in YOLO_SITES.values()} | {"eca"}
    assert covered == set(list_attention())


@pytest.mark.slow
@pytest.mark.parametrize("attention", RESNET_CASES)
def test_resnet_exports_dynamic_and_matches(attention: str, tmp_path) -> None:
    name = f"resnet18-{attention}"
    imgsz, unseen = RESNET
    artifact, result = export_zoo_model(name, imgsz=imgsz, dynamic=True, out_root=tmp_path)
    assert result.parity.passed and len(result.shapes) == 3
    assert artifact.manifest["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert lint_tensorrt(onnx.load(artifact.onnx_path)) == []
    assert_ort_matches_torch(
        create_model(name), artifact.onnx_path, unseen, make_input=_images(model_spec(name))
    )


@pytest.mark.slow
def test_zoo_yolo_exported_dynamic_by_the_cli_matches(yolo_dynamic_export: CliExport) -> None:
    onnx_path = yolo_dynamic_export.dir / "model.onnx"
    assert lint_tensorrt(onnx.load(onnx_path)) == []
    spec = model_spec("yolov8n-eca")
    assert_ort_matches_torch(create_model("yolov8n-eca"), onnx_path, YOLO_UNSEEN, make_input=_images(spec))


@pytest.mark.slow
def test_yolo_with_every_attention_exports_dynamic_and_matches(tmp_path) -> None:
    model = create_model("yolov8n-none", placement="all")
    torch.manual_seed(0)
    for layer, (attention, channels) in YOLO_SITES.items():
        model.attn[str(layer)] = create_attention(attention, channels)
    make = _images(model_spec("yolov8n-none"))
    result = export_onnx(
        model, make((1, 3, 256, 256), 0), tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True
    )
    assert result.parity.passed and len(result.shapes) == 3
    assert lint_tensorrt(onnx.load(result.path)) == []
    assert_ort_matches_torch(model, result.path, YOLO_UNSEEN, make_input=make)
