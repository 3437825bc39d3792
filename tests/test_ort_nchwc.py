"""Channel gates in ONNX Runtime's blocked layout (attn_deploy.backends.ort_nchwc, via make_session).

Real exports, real ONNX Runtime sessions: the rewritten session is compared with the plain one and with PyTorch,
at batch 1 and 2 and at a spatial size other than the first one tested. The rewrite needs ORT's NCHWc layout,
which its CPU provider uses on x86 CPUs with AVX2 or AVX-512 (every CI machine); elsewhere the tests that
expect a rewrite skip, saying why.

Tolerance against the plain session: the rewrite computes the same product and sum per element (bit-identical
on AVX-512); a kernel that fuses the multiply and add rounds once instead of twice, a relative difference of
1e-7 per element that these shallow graphs carry to the output as at most a few 1e-7: 1e-5 relative holds on
any x86 CPU, and a layout mistake would differ by the outputs' own size.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from attn_deploy.attention import create_attention
from attn_deploy.backends.ort import make_session, session_options, with_blocked_gates
from attn_deploy.backends.ort_nchwc import fuse_blocked_gates, has_channel_gates, shapes_of
from attn_deploy.bench.explain import histogram, optimized_graph
from attn_deploy.export.pipeline import export_onnx
from tests.conftest import assert_ort_matches_torch


class GatedResidual(nn.Module):
    """conv -> attention -> + identity -> relu, twice, then a head: the SE-ResNet pattern at toy size."""

    def __init__(self, attention: str, channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))
        self.gates = nn.ModuleList(create_attention(attention, channels) for _ in range(2))
        self.head = nn.Conv2d(channels, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for conv, gate in zip(self.convs, self.gates, strict=True):
            h = torch.relu(gate(conv(h)) + h)
        return self.head(h)


def _export(tmp_path, attention: str, channels: int = 32, batch: int = 1, dynamic: bool = False):
    torch.manual_seed(0)
    model = GatedResidual(attention, channels).eval()
    path = tmp_path / f"{attention}-{channels}-{batch}.onnx"
    export_onnx(model, torch.rand(batch, 3, 40, 40), path, dynamic_batch=dynamic, input_names=["images"])
    return model, path


def _requires_nchwc(path) -> None:
    if not any(
        node.domain == "com.microsoft.nchwc" for node in optimized_graph(path, blocked_gates=False).graph.node
    ):
        pytest.skip("ONNX Runtime runs no NCHWc layout on this CPU (it needs x86 with AVX2 or AVX-512)")


def _outputs(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("attention", ["se", "eca"])
@pytest.mark.parametrize("batch", [1, 2])
def test_gates_run_blocked_and_compute_the_same(tmp_path, attention: str, batch: int) -> None:
    model, path = _export(tmp_path, attention, batch=batch)
    _requires_nchwc(path)
    plain = optimized_graph(path, blocked_gates=False)
    assert fuse_blocked_gates(plain, shapes_of(onnx.load(path))) == 2
    ops = histogram(plain)
    for gone in ("Mul", "Add", "Relu", "nchwc:ReorderInput"):
        assert gone not in ops, ops  # the gate, the residual sum and its ReLU are one blocked convolution
    x = np.random.default_rng(1).random((batch, 3, 40, 40), dtype=np.float32)
    want = _outputs(make_session(path, blocked_gates=False), x)
    got = _outputs(make_session(path), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    assert_ort_matches_torch(model, path, [(batch, 3, 40, 40)])


def test_a_gated_tensor_read_elsewhere_keeps_its_nchw_copy(tmp_path) -> None:
    """The block's output also leaves the graph: the rewrite puts the ReorderOutput back for that reader."""

    class TwoOutputs(GatedResidual):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.stem(x))
            h = torch.relu(self.gates[0](self.convs[0](h)) + h)
            return self.head(h), h

    torch.manual_seed(0)
    model = TwoOutputs("se", 32).eval()
    path = tmp_path / "two.onnx"
    export_onnx(model, torch.rand(1, 3, 40, 40), path, input_names=["images"], output_names=["y", "h"])
    _requires_nchwc(path)
    graph = optimized_graph(path)
    assert "Mul" not in histogram(graph)
    assert graph.graph.output[1].name in [
        o for n in graph.graph.node if n.op_type == "ReorderOutput" for o in n.output
    ]
    x = np.random.default_rng(2).random((1, 3, 40, 40), dtype=np.float32)
    plain, gated = make_session(path, blocked_gates=False), make_session(path)
    for want, got in zip(plain.run(None, {"images": x}), gated.run(None, {"images": x}), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize(
    ("channels", "dynamic", "why"),
    [
        (24, False, "24 channels fill no whole 16-block: a padded blocked tensor is left alone"),
        (32, True, "a dynamic batch: the convolution's group count (N*C) must be static"),
    ],
)
def test_gates_it_cannot_prove_are_left_alone(tmp_path, channels: int, dynamic: bool, why: str) -> None:
    model, path = _export(tmp_path, "se", channels=channels, dynamic=dynamic)
    _requires_nchwc(path)
    graph = optimized_graph(path, blocked_gates=False)
    assert fuse_blocked_gates(graph, shapes_of(onnx.load(path))) == 0, why
    assert_ort_matches_torch(model, path, [(2, 3, 40, 40)] if dynamic else [(1, 3, 40, 40)])


def test_spatial_and_coordinate_gates_are_not_channel_gates(tmp_path) -> None:
    """CoordAtt's (N, C, H, 1) and (N, C, 1, W) gates broadcast along space: not a per-channel filter."""
    _, path = _export(tmp_path, "coordatt")
    model = onnx.load(path)
    assert not has_channel_gates(model, shapes_of(model))
    assert fuse_blocked_gates(optimized_graph(path, blocked_gates=False), shapes_of(model)) == 0


def test_a_rewrite_that_computes_something_else_is_not_used(tmp_path) -> None:
    """The session checks the rewritten graph against ORT's own on one input and keeps ORT's on any difference:
    here shapes that lie (a batch of 2 for a batch-1 model) make the rewrite wrong, and it is dropped."""
    _, path = _export(tmp_path, "se")
    _requires_nchwc(path)
    shapes = shapes_of(onnx.load(path))
    lying = {k: (2, *v[1:]) if v and v[0] == 1 else v for k, v in shapes.items()}
    tmp = tmp_path / "optimized.onnx"
    options = session_options()  # the options make_session uses, saving ORT's optimised graph
    options.optimized_model_filepath = str(tmp)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert with_blocked_gates(session, tmp, lying, None, None) is session
    assert with_blocked_gates(session, tmp, shapes, None, None) is not session
