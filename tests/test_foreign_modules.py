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

UNSEEN = [(2, 32, 24, 40), (3, 32, 17, 23)]


class BlogEMA(nn.Module):
    """EMA as copied from the paper's repository into countless YOLOv8 tutorials."""

    def __init__(self, channels, factor=8):
        super().__init__()
        self.groups = factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // self.groups, channels // self.groups)
        self.conv1x1 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=1)
        self.conv3x3 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=3, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


class h_sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x):
        return self.relu(x + 3) / 6


class h_swish(nn.Module):
    def __init__(self):
        super().__init__()
        self.sigmoid = h_sigmoid()

    def forward(self, x):
        return x * self.sigmoid(x)


class OfficialCoordAtt(nn.Module):
    """Hou et al.'s official CoordAtt (houqb/CoordAttention)."""

    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        identity = x
        _n, _c, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        return identity * self.conv_h(x_h).sigmoid() * self.conv_w(x_w).sigmoid()


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
