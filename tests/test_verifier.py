"""The verifier never passes a graph that computes something else: models that could fool a PyTorch-vs-ONNX
comparison (random ops, per-call state, input written in place, train mode, NaN, integer outputs, a float64
copy that computes something else), through ``export_onnx`` with real torch and real ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy import export_onnx
from attn_deploy.errors import ExportError
from attn_deploy.parity import compare_outputs, within_fp32_noise
from tests.conftest import ort_outputs

SHAPE = (1, 4, 32, 32)


def _conv() -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(4, 4, 3, padding=1)


class InPlaceInput(nn.Module):
    """Writes into its input before using it (seen in the wild: ``x.mul_(2).add_(1)``)."""

    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        x.mul_(2).add_(1)
        return self.conv(x)


class RandomNoise(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        return self.conv(x) + torch.rand_like(x)


class DropoutForcedOn(nn.Module):
    """``F.dropout`` defaults to ``training=True``: active even in eval mode."""

    def forward(self, x):
        return F.dropout(x, 0.5)


class CallCounter(nn.Module):
    """Output depends on a Python-side counter that changes per call."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


class BufferAccumulator(nn.Module):
    """Updates a buffer in place and returns it (an output aliasing state)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(1))

    def forward(self, x):
        return self.total.add_(x.mean())


class StuckInTrain(nn.Module):
    """A ``train()`` override that keeps BatchNorm on batch statistics whatever the caller asks."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)

    def train(self, mode=True):
        return super().train(True)

    def forward(self, x):
        return self.bn(x)


class TrainModeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.drop = _conv(), nn.BatchNorm2d(4), nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)))


class Zeros(nn.Module):
    def forward(self, x):
        return torch.relu(-x.abs())


class Identity(nn.Module):
    def forward(self, x):
        return x


class LogOfInput(nn.Module):
    def forward(self, x):
        return torch.log(x)


class ArgMaxChannel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        y = self.conv(x)
        return y, y.argmax(1)


class FrozenSqrtDtypeBranch(nn.Module):
    """``math.sqrt`` of a size is frozen into the graph by both exporters (wrong at other sizes), and its float64
    copy takes another branch: the float64 rule must not take that copy's error as FP32 rounding."""

    def forward(self, x):
        if x.dtype == torch.float64:
            return x
        return x / math.sqrt(x.shape[2] * x.shape[3])


class PadOddHeight(nn.Module):
    """Pads odd heights before a stride-2 pool: the branch on ``h % 2`` is frozen at trace time by both exporters,
    so the graph is wrong at odd heights, which PyTorch accepts."""

    def forward(self, x):
        if x.shape[2] % 2:
            x = F.pad(x, (0, 0, 0, 1))
        return F.max_pool2d(x, 2)


def _export(model: nn.Module, tmp_path, **kwargs):
    return export_onnx(
        model, torch.randn(SHAPE), tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True, **kwargs
    )


def test_input_written_in_place_is_compared_honestly_and_sample_kept(tmp_path) -> None:
    """Every PyTorch run gets a fresh copy of its input: the graph (which computes conv(2x+1)) is compared with
    PyTorch on the same values, and the caller's sample is never changed."""
    model = InPlaceInput()
    sample = torch.randn(SHAPE)
    before = sample.clone()
    res = export_onnx(model, sample, tmp_path / "m.onnx", dynamic_batch=True, dynamic_hw=True)
    assert torch.equal(sample, before)
    # 1e-4: a 36-term FP32 conv of O(1) values; ISA-specific kernels (AVX2/AVX-512/AMX) differ by ~1e-6.
    assert res.parity.max_abs < 1e-4 and res.parity.judged_by == "tolerance"
    x = torch.randn(2, 4, 24, 40)
    with torch.no_grad():
        expected = model(x.clone()).numpy()
    (got,) = ort_outputs(res.path, [x])
    assert np.abs(got - expected).max() < 1e-4  # same bound and reason as above


@pytest.mark.parametrize(
    "model",
    [RandomNoise(), DropoutForcedOn(), CallCounter(), BufferAccumulator()],
    ids=lambda m: type(m).__name__,
)
def test_nondeterministic_models_are_refused(model: nn.Module, tmp_path) -> None:
    with pytest.raises(ExportError) as err:
        _export(model, tmp_path)
    message = str(err.value)
    assert message.startswith("the model is nondeterministic") and "\n" not in message
    assert "random ops" in message and "nothing was written" in message
    assert list(tmp_path.iterdir()) == []


def test_module_stuck_in_train_mode_is_refused(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"module '<root>' is in train mode after model\.eval\(\)"):
        _export(StuckInTrain(), tmp_path)


def test_train_mode_model_is_exported_in_eval_and_stays_eval(tmp_path) -> None:
    model = TrainModeNet().train()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    res = _export(model, tmp_path)
    assert not any(m.training for m in model.modules())
    x = torch.randn(3, 4, 24, 40)
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = ort_outputs(res.path, [x])
    assert np.abs(got - expected).max() < 1e-4  # FP32 conv + BN affine, O(1) values: ISA noise ~1e-6


@pytest.mark.slow
def test_all_zero_output_and_identity_pass_exactly(tmp_path) -> None:
    for model in (Zeros(), Identity()):
        res = _export(model, tmp_path)
        # Outputs equal bit for bit; the cosine is 1 up to float64 rounding of the norms (~1e-16).
        assert res.parity.passed and res.parity.max_abs == 0.0 and res.parity.cosine > 1 - 1e-12


def test_nan_in_reference_is_refused(tmp_path) -> None:
    with pytest.raises(ExportError, match=r"PyTorch's own output 'output0' has \d+ NaN/inf values"):
        _export(LogOfInput(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_integer_outputs_compare_exactly(tmp_path) -> None:
    res = _export(ArgMaxChannel(), tmp_path)
    assert res.parity.per_output[1].tolerance == 0.0 and res.parity.per_output[1].max_abs == 0.0
    # A large-valued integer output off by one fails, although rtol * max|ref| would allow 100.
    ref = np.arange(1_000_000, dtype=np.int64)
    assert not compare_outputs([ref], [ref + (ref == 5)], rtol=1e-4).passed
    assert not within_fp32_noise([ref], [ref.astype(np.float64)], [ref + (ref == 5)])


def test_frozen_size_with_float64_branch_is_refused(tmp_path) -> None:
    """Both exporters freeze sqrt(H*W); the float64 copy returns x unscaled (error ~1 >> FP32 rounding)."""
    with pytest.raises(ExportError, match="exported graph differs from PyTorch at input shape") as err:
        _export(FrozenSqrtDtypeBranch(), tmp_path)
    assert "the TorchScript exporter failed too" in str(err.value)
    assert list(tmp_path.iterdir()) == []


class Eigenvalues(nn.Module):
    """Complex eigenvalues: neither exporter has an ONNX form for them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x[0, 0]).real.sum() + x


def test_an_op_no_exporter_knows_is_one_error_without_torch_dumps(tmp_path, capfd) -> None:
    with pytest.raises(ExportError, match="the TorchScript exporter failed too") as err:
        export_onnx(Eigenvalues().eval(), torch.rand(1, 1, 4, 4), tmp_path / "m.onnx")
    assert "linalg_eig" in str(err.value)
    out, errors = capfd.readouterr()  # the file descriptors: torch's log writes from C++
    assert "Torch IR graph" not in out + errors, (out + errors)[:300]
    assert list(tmp_path.iterdir()) == []


def test_float64_rule_accepts_rounding_and_refuses_other_computations() -> None:
    rng = np.random.default_rng(0)
    exact = rng.uniform(0, 640, (1, 4, 8400))  # yolov8 box rows in pixels
    fp32 = exact + rng.uniform(-0.018, 0.018, exact.shape)  # measured FP32 rounding vs float64: 0.018 px
    graph = exact + rng.uniform(-0.016, 0.016, exact.shape)
    assert within_fp32_noise([fp32], [exact], [graph])
    # The reported in-place case: the float64 copy ran on another input, so PyTorch FP32 "differs" by ~5 and a
    # graph off by 4.62 (cosine 0.989) looked like noise.
    other = exact + rng.normal(0, 2.5, exact.shape)
    assert not within_fp32_noise([other], [exact], [exact + rng.normal(0, 2.3, exact.shape)])
    # Within 2x of FP32's error but pointing elsewhere: the cosine bound refuses it.
    logits = rng.normal(0, 1, (4, 1000))
    noisy = logits + rng.uniform(-1e-4, 1e-4, logits.shape)
    assert not within_fp32_noise([noisy], [logits], [logits[::-1].copy()])


def test_constant_sample_is_also_verified_on_varied_values(tmp_path) -> None:
    """A zeros sample cannot tell most ops apart (GELU, ReLU and identity agree at 0): the export shape is
    verified a second time on values spread around the sample's."""
    res = export_onnx(nn.Sequential(_conv(), nn.GELU()), torch.zeros(SHAPE), tmp_path / "m.onnx")
    assert res.parity.passed and res.shapes == [SHAPE, SHAPE]


def test_graph_wrong_off_the_export_grid_is_refused(tmp_path) -> None:
    """Verification shapes include one off the export's grid (odd sizes) wherever PyTorch takes it."""
    with pytest.raises(ExportError, match=r"differs from PyTorch at input shape \(3, 4, 65, 97\)"):
        _export(PadOddHeight(), tmp_path)
    assert list(tmp_path.iterdir()) == []
