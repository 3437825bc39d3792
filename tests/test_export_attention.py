"""Every attention module: rewrite equivalence in PyTorch, then the exported graph vs PyTorch in ONNX Runtime
at shapes other than the export shape, with dynamic batch and H/W; only ops TensorRT parses."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from attn_deploy import create_attention, export_onnx, list_attention
from attn_deploy.export.lint import TENSORRT_OPS, lint_tensorrt
from attn_deploy.rewrite.mode import rewrite_call
from tests.conftest import assert_ort_matches_torch

CHANNELS = 64
# Unseen by the export (32x32): odd, non-square, other batches. Sparse needs H*W >= its top-k (32).
UNSEEN = [(2, 3, 24, 40), (3, 3, 17, 23), (1, 3, 48, 8)]


FAST = ("se", "eca", "cbam", "simam")


def with_stem(name: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1), create_attention(name, CHANNELS)).eval()


@pytest.mark.parametrize(
    "name",
    # make test-fast keeps four (~2-3 s each on 2 cores); the others (sparse ~8 s) run in make test
    [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in list_attention() if n != "none"],
)
def test_attention_exports_equal_at_every_shape(name: str, tmp_path) -> None:
    model = with_stem(name)
    for shape in UNSEEN[:2]:
        x = torch.randn(shape)
        out, _ = rewrite_call(model, x)
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)

    res = export_onnx(
        model, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True
    )
    assert res.parity.passed and len(res.shapes) == 3
    assert res.inputs[0]["shape"] == ["batch", 3, "height", "width"]
    assert_ort_matches_torch(model, res.path, UNSEEN)

    graph = onnx.load(res.path)
    assert {n.op_type for n in graph.graph.node} <= TENSORRT_OPS
    assert lint_tensorrt(graph) == []
    # The ops that freeze sizes under dynamic H/W are gone. (GlobalAveragePool/GlobalMaxPool, written by the
    # graph passes of export/ort_passes.py, pool whatever H x W arrives: checked at UNSEEN shapes above.)
    assert not {"AveragePool", "GroupNormalization"} & set(res.ops_after)
