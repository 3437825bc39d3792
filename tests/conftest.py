"""Shared test helpers: run an exported ONNX in ONNX Runtime and compare with PyTorch."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import pytest
import torch

# Two cores in CI: keep PyTorch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def ort_outputs(onnx_path: str | os.PathLike[str], inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Run ``onnx_path`` in ONNX Runtime (CPU) on ``inputs`` in graph-input order."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})


def torch_outputs(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Run ``model`` in eval/inference mode; outputs flattened in ONNX order."""
    from attn_deploy.backends.torch_runner import flatten_outputs

    with torch.inference_mode():
        return [t.numpy() for t in flatten_outputs(model.eval()(*inputs))]


def assert_ort_matches_torch(
    model: torch.nn.Module, onnx_path: str | os.PathLike[str], shapes: Sequence[tuple[int, ...]], atol: float = 1e-4
) -> None:
    """Exported graph == PyTorch (max abs error <= atol, relative to the output scale) at each shape."""
    for i, shape in enumerate(shapes):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(100 + i)) * 2 - 1
        for ref, got in zip(torch_outputs(model, [x]), ort_outputs(onnx_path, [x]), strict=True):
            assert ref.shape == got.shape, f"shape {shape}: {got.shape} != {ref.shape}"
            scale = max(1.0, float(np.abs(ref).max()))
            err = float(np.abs(ref - got).max())
            assert err <= atol * scale, f"shape {shape}: max abs err {err:.3g} > {atol * scale:.3g}"


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator for reproducible test inputs."""
    return torch.Generator().manual_seed(0)
