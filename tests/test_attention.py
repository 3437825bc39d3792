"""Attention library: shapes, parameter counts against the papers' formulas, errors, documented semantics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attn_deploy.attention import (
    DynamicAttentionSelector,
    DynamicSparseAttention,
    create_attention,
    eca_kernel_size,
    list_attention,
)
from attn_deploy.errors import ConfigError, InputError, ModelNotFoundError

NAMES = ["cbam", "coordatt", "dynamic", "eca", "ema", "hybrid", "none", "se", "simam", "sparse"]
CHANNELS = 64


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_every_name_sorted() -> None:
    assert list_attention() == NAMES


def test_none_is_identity() -> None:
    assert isinstance(create_attention("none", CHANNELS), nn.Identity)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape", [(1, CHANNELS, 8, 8), (2, CHANNELS, 8, 8), (2, CHANNELS, 7, 9), (1, CHANNELS, 16, 5)]
)
def test_output_shape_equals_input_shape(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    module = create_attention(name, CHANNELS)
    x = torch.randn(shape)
    y = module(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_eval_no_grad_is_deterministic_at_odd_shape(name: str) -> None:
    torch.manual_seed(0)
    module = create_attention(name, CHANNELS).eval()
    x = torch.randn(3, CHANNELS, 17, 23)
    with torch.no_grad():
        y1, y2 = module(x), module(x)
    assert y1.shape == x.shape
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", ["se", "cbam", "coordatt", "dynamic", "hybrid", "sparse", "eca", "ema"])
def test_attention_changes_the_input(name: str) -> None:
    torch.manual_seed(0)
    module = create_attention(name, CHANNELS).eval()
    x = torch.randn(2, CHANNELS, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(module(x), x)


@pytest.mark.parametrize("channels", [64, 256])
@pytest.mark.parametrize("reduction", [4, 16])
def test_se_params(channels: int, reduction: int) -> None:
    hidden = channels // reduction
    expected = 2 * channels * hidden + hidden + channels
    assert n_params(create_attention("se", channels, reduction=reduction)) == expected


@pytest.mark.parametrize(("channels", "reduction", "kernel_size"), [(64, 16, 7), (256, 16, 7), (128, 8, 3)])
def test_cbam_params(channels: int, reduction: int, kernel_size: int) -> None:
    expected = 2 * channels * (channels // reduction) + 2 * kernel_size**2
    module = create_attention("cbam", channels, reduction=reduction, kernel_size=kernel_size)
    assert n_params(module) == expected


@pytest.mark.parametrize(
    ("channels", "expected_k"),
    [(16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)],
)
def test_eca_kernel_size_and_params(channels: int, expected_k: int) -> None:
    assert eca_kernel_size(channels) == expected_k
    module = create_attention("eca", channels)
    assert module.kernel_size == expected_k
    assert n_params(module) == expected_k


def test_eca_kernel_size_override_and_gamma_beta() -> None:
    assert n_params(create_attention("eca", 64, kernel_size=9)) == 9
    # |log2(64)/1 + 1/1| = 7, already odd
    assert create_attention("eca", 64, gamma=1, beta=1).kernel_size == 7


@pytest.mark.parametrize("kernel_size", [0, 4])
def test_eca_rejects_even_kernel(kernel_size: int) -> None:
    with pytest.raises(ConfigError, match="odd"):
        create_attention("eca", 64, kernel_size=kernel_size)


@pytest.mark.parametrize(("channels", "reduction"), [(64, 32), (256, 32), (512, 32), (128, 8)])
def test_coordatt_params(channels: int, reduction: int) -> None:
    mip = max(8, channels // reduction)
    # conv1 (C*mip + mip) + BN affine (2*mip) + conv_h, conv_w (2 * (mip*C + C))
    expected = 3 * channels * mip + 3 * mip + 2 * channels
    assert n_params(create_attention("coordatt", channels, reduction=reduction)) == expected


@pytest.mark.parametrize(("channels", "factor"), [(64, 32), (256, 32), (512, 32), (64, 8)])
def test_ema_params(channels: int, factor: int) -> None:
    c = channels // factor
    # conv1x1 (c*c + c) + conv3x3 (9*c*c + c) + GroupNorm(c, c) affine (2*c)
    expected = 10 * c * c + 4 * c
    assert n_params(create_attention("ema", channels, factor=factor)) == expected


def test_simam_has_no_params() -> None:
    assert n_params(create_attention("simam", CHANNELS)) == 0


def test_simam_matches_formula() -> None:
    x = torch.randn(2, 3, 5, 6)
    n = 5 * 6 - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
    y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + 1e-4)) + 0.5
    torch.testing.assert_close(create_attention("simam", 3)(x), x * torch.sigmoid(y))


@pytest.mark.parametrize(("channels", "factor"), [(48, 32), (16, 32), (64, 0)])
def test_ema_channels_not_divisible_is_one_line_config_error(channels: int, factor: int) -> None:
    with pytest.raises(ConfigError) as info:
        create_attention("ema", channels, factor=factor)
    message = str(info.value)
    assert "\n" not in message
    assert f"channels={channels}" in message
    assert f"factor={factor}" in message
    assert "divides" in message


def test_ema_error_lists_valid_factors() -> None:
    with pytest.raises(ConfigError, match=r"1, 2, 3, 4, 6, 8, 12, 16, 24, 48$"):
        create_attention("ema", 48)


def test_unknown_name_names_close_matches() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        create_attention("cbma", CHANNELS)
    message = str(info.value)
    assert "\n" not in message
    assert "did you mean cbam" in message
    assert "coordatt" in message  # lists every name


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError, match="gamma, beta"):
        create_attention("eca", CHANNELS, reduction=4)


def test_sparse_faithful_softmax_gives_weight_outside_topk() -> None:
    torch.manual_seed(0)
    module = DynamicSparseAttention(16, topk=8).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        attn = module.attention_map(x)
    assert attn.shape == (2, 42, 42)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 42))
    kept = torch.zeros_like(attn, dtype=torch.bool).scatter(-1, attn.topk(8, dim=-1).indices, True)
    outside = attn[~kept].view(2, 42, 42 - 8)
    assert (outside > 0).all()
    # every non-top-k position carries exp(0) / Z: one value per row
    torch.testing.assert_close(outside, outside[..., :1].expand_as(outside))


def test_sparse_masked_softmax_is_exactly_zero_outside_topk() -> None:
    torch.manual_seed(0)
    module = DynamicSparseAttention(16, topk=8, masked=True).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        attn = module.attention_map(x)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 42))
    assert ((attn > 0).sum(-1) == 8).all()
    assert ((attn == 0).sum(-1) == 42 - 8).all()


def test_sparse_gamma_starts_nonzero_and_output_follows_formula() -> None:
    torch.manual_seed(0)
    module = DynamicSparseAttention(16, topk=8, scale=True).eval()
    assert module.gamma.item() == pytest.approx(0.1)
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        attn = module.attention_map(x)
        v = module.value(x).flatten(2)
        expected = 0.1 * (v @ attn.transpose(1, 2)).view_as(x) + x
        torch.testing.assert_close(module(x), expected)


def test_sparse_feature_map_smaller_than_topk_is_input_error() -> None:
    with pytest.raises(InputError, match="topk=32"):
        DynamicSparseAttention(16)(torch.randn(1, 16, 4, 5))


def test_sparse_params() -> None:
    channels, reduction = 64, 8
    qk = channels // reduction
    expected = 2 * (channels * qk + qk) + channels * channels + channels + 1
    assert n_params(create_attention("sparse", channels, reduction=reduction)) == expected


def test_conv1d_on_5d_tensor_is_the_bug_hybrid_fixes() -> None:
    pooled = torch.randn(2, CHANNELS, 1, 1)
    with pytest.raises(RuntimeError):
        nn.Conv1d(1, 1, 3, padding=1, bias=False)(pooled.unsqueeze(1))  # (B, 1, C, 1, 1)


def test_hybrid_runs_on_4d_input() -> None:
    module = create_attention("hybrid", CHANNELS, spatial_kernel_size=7)
    x = torch.randn(2, CHANNELS, 9, 11)
    assert module(x).shape == x.shape
    assert n_params(module) == eca_kernel_size(CHANNELS) + 2 * 7 * 7


def test_dynamic_gate_is_a_softmax_over_three_branches() -> None:
    torch.manual_seed(0)
    module = DynamicAttentionSelector(CHANNELS).eval()
    x = torch.randn(3, CHANNELS, 9, 7)
    with torch.no_grad():
        g = module.gate_weights(x)
        y = module(x)
        expected = (
            g[:, 0, None, None, None] * module.se(x)
            + g[:, 1, None, None, None] * module.eca(x)
            + g[:, 2, None, None, None] * x
        )
    assert g.shape == (3, 3)
    assert (g > 0).all()
    torch.testing.assert_close(g.sum(1), torch.ones(3))
    torch.testing.assert_close(y, expected)
