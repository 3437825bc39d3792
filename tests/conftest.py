"""Shared test helpers: run an exported ONNX in ONNX Runtime and compare with PyTorch."""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

# Two cores in CI: keep PyTorch from oversubscribing them, shared among the pytest-xdist workers when there are any.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))


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


def uniform_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniform values in [-1, 1]."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_ort_matches_torch(
    model: torch.nn.Module,
    onnx_path: str | os.PathLike[str],
    shapes: Sequence[tuple[int, ...]],
    atol: float = 1e-4,
    make_input: Callable[[tuple[int, ...], int], torch.Tensor] = uniform_input,
) -> None:
    """Exported graph == PyTorch at each shape: max abs error <= atol (scaled by the output's magnitude when it
    exceeds 1), or, for outputs whose FP32 rounding is larger than that, as close to a float64 run as PyTorch
    FP32 itself is."""
    from attn_deploy.parity import within_fp32_noise

    for i, shape in enumerate(shapes):
        x = make_input(tuple(shape), 100 + i)
        refs, gots = torch_outputs(model, [x]), ort_outputs(onnx_path, [x])
        for ref, got in zip(refs, gots, strict=True):
            assert ref.shape == got.shape, f"shape {shape}: {got.shape} != {ref.shape}"
        errs = [float(np.abs(r - g).max()) for r, g in zip(refs, gots, strict=True)]
        limits = [atol * max(1.0, float(np.abs(r).max())) for r in refs]
        if all(e <= lim for e, lim in zip(errs, limits, strict=True)):
            continue
        exact = torch_outputs(copy.deepcopy(model).double(), [x.double()])
        assert within_fp32_noise(refs, exact, gots), f"shape {shape}: max abs errs {errs} > {limits}"


@dataclass(frozen=True)
class CliExport:
    """An artifact written by ``attn-deploy export`` and what the command printed."""

    dir: Path
    out: str


@pytest.fixture(scope="session")
def yolo_dynamic_export(tmp_path_factory: pytest.TempPathFactory) -> CliExport:
    """``attn-deploy export --model yolov8n-eca --imgsz 128 --dynamic``, once per session: a dynamic YOLO trace
    costs ~25 s on 2 cores, and the CLI test, the zoo test and the server's stride test all read this one."""
    from attn_deploy.cli import main

    root = tmp_path_factory.mktemp("yolo-dynamic")
    args = ["export", "--model", "yolov8n-eca", "--imgsz", "128", "--dynamic", "--out", str(root)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(args) == 0
    return CliExport(root / "yolov8n-eca" / "ort-fp32", printed.getvalue())


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator for reproducible test inputs."""
    return torch.Generator().manual_seed(0)
