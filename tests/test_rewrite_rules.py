"""Each rewrite rule, in eager PyTorch: rewritten == original, and declines what it must not touch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy.rewrite.mode import rewrite_call

SHAPES = [(2, 8, 9, 13), (1, 8, 16, 16), (3, 8, 5, 31)]


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


CASES = {
    "adaptive_avg_pool->reduce_mean": [
        lambda x: F.adaptive_avg_pool2d(x, 1),
        lambda x: F.adaptive_avg_pool2d(x, (None, 1)),
        lambda x: F.adaptive_avg_pool2d(x, (1, None)),
        lambda x: F.adaptive_avg_pool2d(x, (x.shape[2], 1)),
        lambda x: nn.AdaptiveAvgPool2d((1, 1))(x),
    ],
    "adaptive_max_pool->reduce_max": [
        lambda x: F.adaptive_max_pool2d(x, 1),
        lambda x: nn.AdaptiveMaxPool2d((None, 1))(x),
    ],
    "global_avg_pool->reduce_mean": [
        lambda x: F.avg_pool2d(x, (x.size(2), x.size(3))),
        lambda x: F.avg_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3))),
        lambda x: F.avg_pool2d(x, (1, x.size(3))),
    ],
    "global_max_pool->reduce_max": [
        lambda x: F.max_pool2d(x, (x.size(2), x.size(3))),
        lambda x: F.max_pool2d(x, (x.size(2), 1)),
    ],
}


@pytest.mark.parametrize("rule", sorted(CASES))
@pytest.mark.parametrize("shape", SHAPES)
def test_rule_equals_original(rule: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for fn in CASES[rule]:
        model = Lambda(fn)
        out, mode = rewrite_call(model, x)
        torch.testing.assert_close(out, fn(x), rtol=1e-6, atol=1e-6)
        assert [s.rule for s in mode.sites] == [rule]


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_group_norm_rewrite_equals_original(groups: int) -> None:
    gn = nn.GroupNorm(groups, 8)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    for shape in SHAPES:
        x = torch.randn(shape) * 5 + 3
        out, mode = rewrite_call(gn, x)
        torch.testing.assert_close(out, gn(x), rtol=1e-5, atol=1e-5)
        assert [s.rule for s in mode.sites] == ["group_norm->instance_norm"]
        assert mode.sites[0].module == ""


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.adaptive_avg_pool2d(x, (3, 3)),  # not a reduction
        lambda x: F.avg_pool2d(x, 3),  # an ordinary pooling window
        lambda x: F.avg_pool2d(x, (x.size(2), x.size(3)), padding=1),  # padding changes the divisor
        lambda x: F.max_pool2d(x, 2, stride=2),
    ],
)
def test_rules_decline_other_pooling(fn) -> None:
    x = torch.randn(2, 8, 12, 12)
    out, mode = rewrite_call(Lambda(fn), x)
    torch.testing.assert_close(out, fn(x))
    assert mode.sites == []


def test_sites_name_the_module() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.AdaptiveAvgPool2d(1)))
    _, mode = rewrite_call(model, torch.randn(1, 3, 8, 8))
    assert mode.sites[0].module == "1.0"
    assert mode.summary() == {"adaptive_avg_pool->reduce_mean": 1}


def test_mode_leaves_no_global_hooks() -> None:
    before = len(nn.modules.module._global_forward_pre_hooks)
    rewrite_call(nn.AdaptiveAvgPool2d(1), torch.randn(1, 2, 4, 4))
    assert len(nn.modules.module._global_forward_pre_hooks) == before


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter announces its deprecation
def test_mode_works_under_the_torchscript_tracer() -> None:
    """The TorchScript exporter (``dynamo=False``, the pipeline's fallback) traces sizes as tensors holding the
    example's value: pooling to 1 is still rewritten (dynamic ReduceMean), while a kernel that equals the input
    size only at trace time (a constant 16 here) is left alone, since equality there proves nothing."""
    import io

    import numpy as np
    import onnxruntime as ort

    from attn_deploy.rewrite import DeployRewriteMode

    model = Lambda(lambda x: F.adaptive_avg_pool2d(x, (None, 1)) + F.avg_pool2d(x, 16).mean())
    mode, buffer = DeployRewriteMode(model), io.BytesIO()
    with mode:
        torch.onnx.export(
            model,
            (torch.randn(2, 8, 16, 16),),
            buffer,
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}},
        )
    assert [s.rule for s in mode.sites] == ["adaptive_avg_pool->reduce_mean"]
    session = ort.InferenceSession(buffer.getvalue())
    x = torch.randn(3, 8, 32, 24)
    (got,) = session.run(None, {"x": x.numpy()})
    # 1e-5: means of 24-768 O(1) values in FP32; ORT's ISA-specific reductions differ from PyTorch by ~1e-7.
    assert np.abs(got - model(x).numpy()).max() < 1e-5
