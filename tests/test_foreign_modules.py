"""Modules written the way blogs and official repos write them (not ours), through ``export_onnx`` with
dynamic batch and H/W. The rewrites work on what the code computes, not on class names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy import export_onnx
from attn_deploy.errors import ExportError, StaticShapeError, UnsupportedOpError
from tests.conftest import assert_ort_matches_torch
from tests.ultralytics_layout import EMA as OfficialEMA
from tests.ultralytics_layout import CoordAtt  # the official code, shared with the checkpoint tests

UNSEEN = [(2, 32, 24, 40), (3, 32, 17, 23)]


def BlogEMA(channels: int) -> nn.Module:
    """EMA as copied from the paper's repository into countless YOLOv8 tutorials (their factor 8)."""
    return OfficialEMA(channels, factor=8)


def OfficialCoordAtt(inp: int, oup: int) -> nn.Module:
    """Hou et al.'s official CoordAtt (houqb/CoordAttention); ``oup == inp`` in every attention block."""
    assert oup == inp
    return CoordAtt(inp)


class OfficialStyleCBAM(nn.Module):
    """CBAM as in Jongchan/attention-module: pooling by the runtime size with F.avg_pool2d / F.max_pool2d."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x):
        size = (x.size(2), x.size(3))
        avg = self.mlp(F.avg_pool2d(x, size, stride=size))
        mx = self.mlp(F.max_pool2d(x, size, stride=size))
        x = x * torch.sigmoid(avg + mx).unsqueeze(2).unsqueeze(3).expand_as(x)
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class BlogSE(nn.Module):
    """The SE block of most tutorials: Linear layers on a view(b, c) of the pooled map."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        return x * self.fc(y).view(b, c, 1, 1).expand_as(x)


FOREIGN = {
    "blog-ema": lambda: BlogEMA(32),
    "official-coordatt": lambda: OfficialCoordAtt(32, 32),
    "official-cbam": lambda: OfficialStyleCBAM(32),
    "blog-se": lambda: BlogSE(32),
}


def randomised(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics so normalisation is really exercised."""
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return module.eval()


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_module_exports_correctly(name: str, tmp_path) -> None:
    model = randomised(FOREIGN[name]())
    res = export_onnx(
        model, torch.randn(1, 32, 32, 32), tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True
    )
    assert res.parity.passed and res.rewrites
    assert_ort_matches_torch(model, res.path, UNSEEN)


@pytest.mark.slow
def test_naive_export_of_blog_ema_is_refused_not_written(tmp_path) -> None:
    """Without the rewrites the exporter freezes adaptive pooling at the export size: the verifier must catch it."""
    model = randomised(BlogEMA(32))
    out = tmp_path / "naive.onnx"
    with pytest.raises(ExportError) as err:
        export_onnx(
            model, torch.randn(1, 32, 32, 32), out, dynamic_batch=True, dynamic_hw=True, rewrite=False
        )
    assert "nothing was written" in str(err.value) or "failed" in str(err.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


class SizedAdaptivePool(nn.Module):
    def forward(self, x):
        return F.adaptive_avg_pool2d(x, (3, 3)).flatten(1)


class SizeDependentTopK(nn.Module):
    def forward(self, x):
        flat = x.flatten(2)
        return flat.topk(flat.shape[-1] // 4, dim=-1).values


class FrozenHeight(nn.Module):
    """A positional table built for the example's height: H cannot be dynamic."""

    def __init__(self):
        super().__init__()
        self.register_buffer("rows", torch.arange(16.0).view(1, 1, 16, 1))

    def forward(self, x):
        return x * self.rows


@pytest.mark.parametrize(
    ("module", "error", "needle"),
    [
        (SizedAdaptivePool(), UnsupportedOpError, "module '<root>': adaptive_avg_pool to output size (3, 3)"),
        (SizeDependentTopK(), UnsupportedOpError, "TensorRT needs a constant K"),
        (FrozenHeight(), ExportError, "H/W cannot be dynamic for this model: PyTorch runs it at 16x16 only"),
    ],
)
def test_refusals_are_clear_and_write_nothing(module, error, needle, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(error) as err:
        export_onnx(module, torch.randn(1, 4, 16, 16), out, dynamic_batch=True, dynamic_hw=True)
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert not out.exists()


def test_static_export_of_sized_pool_is_fine(tmp_path) -> None:
    res = export_onnx(SizedAdaptivePool(), torch.randn(1, 4, 12, 12), tmp_path / "m.onnx")
    assert res.parity.passed


class PatchEmbed7(nn.Module):
    """A patch embedding with patch size 7 written with reshape/permute: takes only H/W multiples of 7."""

    def __init__(self, channels=4, dim=8):
        super().__init__()
        self.proj = nn.Linear(channels * 49, dim)

    def forward(self, x):
        b, c, h, w = x.shape
        patches = (
            x.reshape(b, c, h // 7, 7, w // 7, 7).permute(0, 2, 4, 1, 3, 5).reshape(b, h // 7, w // 7, -1)
        )
        return self.proj(patches).permute(0, 3, 1, 2)


def test_patch_size_7_is_verified_at_multiples_of_7(tmp_path) -> None:
    model = PatchEmbed7().eval()
    res = export_onnx(
        model, torch.randn(1, 4, 28, 28), tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True
    )
    assert res.parity.passed and len(res.shapes) == 3
    assert all(h % 7 == 0 and w % 7 == 0 and h != w for _, _, h, w in res.shapes[1:])
    assert {b for b, *_ in res.shapes[1:]} == {2, 3}
    assert_ort_matches_torch(model, res.path, [(2, 4, 35, 14)])


class AddCoords(nn.Module):
    """CoordConv's AddCoords: torch.export cannot trace ``torch.linspace`` with a dynamic size, the TorchScript
    exporter writes a correct dynamic graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        b, _, h, w = x.shape
        yy = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
        xx = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
        return self.conv(torch.cat([x, yy, xx], 1))


def test_dynamo_failure_falls_back_to_torchscript(tmp_path) -> None:
    torch.manual_seed(0)
    model = AddCoords().eval()
    res = export_onnx(
        model, torch.randn(1, 4, 32, 32), tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True
    )
    assert res.exporter == "torchscript" and res.parity.passed and len(res.shapes) == 3
    assert "inferred a static shape" in res.exporter_fallback  # why dynamo was refused, kept for the user
    assert res.inputs[0]["shape"] == ["batch", 4, "height", "width"]
    assert_ort_matches_torch(model, res.path, [(2, 4, 24, 40), (3, 4, 17, 23)])


class FlattenLinear(nn.Module):
    """A Linear over the flattened H*W map: runs at one H/W only (any batch)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16 * 16, 8)

    def forward(self, x):
        return self.fc(x.flatten(2))


def test_single_hw_module_is_refused_with_dynamic_batch_offer(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(StaticShapeError) as err:
        export_onnx(FlattenLinear(), torch.randn(1, 4, 16, 16), out, dynamic_batch=True, dynamic_hw=True)
    assert "H/W cannot be dynamic for this model" in str(err.value)
    assert "dynamic_hw=False, dynamic_batch=True" in str(err.value)
    assert (
        "--dynamic-batch instead of --dynamic" in err.value.cli_hint
        and "dynamic_hw" not in err.value.cli_hint
    )
    assert err.value.dynamic_batch_ok and not out.exists()
    res = export_onnx(FlattenLinear(), torch.randn(1, 4, 16, 16), out, dynamic_batch=True)
    assert res.parity.passed and [s[0] for s in res.shapes] == [1, 2, 3]
