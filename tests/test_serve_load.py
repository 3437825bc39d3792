"""Load on the real `attn-deploy serve` command (a subprocess): 16 concurrent tritonclient clients x 100
requests, each with its own input, 0 errors, no cross-talk between batched requests; SIGTERM stops it
gracefully (exit code 0, checked by ServerProcess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from attn_deploy.serve.loadgen import LoadResult, run_load
from attn_deploy.serve.metrics import fetch_metrics
from attn_deploy.serve.process import ServerProcess
from tests._serve_helpers import INPUT_SHAPE, make_artifact

MODEL = "tiny-gate"
CLIENTS = 16
REQUESTS = 100


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("engines") / MODEL / "ort-fp32", name=MODEL)


def _inputs(clients: int, requests: int) -> list[list[dict[str, np.ndarray]]]:
    """A distinct input per (client, request); every third request carries 2 items."""
    return [
        [
            {
                "images": np.random.default_rng(1000 * c + r)
                .standard_normal((1 + (r % 3 == 0), *INPUT_SHAPE))
                .astype(np.float32)
            }
            for r in range(requests)
        ]
        for c in range(clients)
    ]


def _problems(result: LoadResult, expected: list[list[np.ndarray]]) -> list[str]:
    """One line per failed request or response that is not its own input's result."""
    problems = list(result.errors)
    for c, (got_row, want_row) in enumerate(zip(result.outputs, expected, strict=True)):
        for r, (got, want) in enumerate(zip(got_row, want_row, strict=True)):
            if got is not None and not (
                got["pooled"].shape == want.shape and np.allclose(got["pooled"], want, rtol=1e-5, atol=1e-6)
            ):
                problems.append(f"client {c} request {r}: response differs from its own input's result")
    return problems


def _sequential_results(artifact: Path, inputs: list[list[dict[str, np.ndarray]]]) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return [[session.run(["pooled"], feed)[0] for feed in row] for row in inputs]


@pytest.mark.slow
def test_16_clients_x_100_requests_batched_without_cross_talk(artifact: Path) -> None:
    inputs = _inputs(CLIENTS, REQUESTS)
    expected = _sequential_results(artifact, inputs)
    items = sum(len(feed["images"]) for row in inputs for feed in row)
    with ServerProcess([artifact], "--max-batch", "16", "--max-delay-ms", "2", "--threads", "2") as server:
        problems = _problems(run_load(server.url, MODEL, inputs, keep_outputs=True), expected)
        metrics = fetch_metrics(server.url)
    assert problems == [], f"{len(problems)} failed requests, first: {problems[:3]}"
    requests = CLIENTS * REQUESTS
    assert metrics[("nv_inference_request_success", MODEL)] == requests
    assert metrics[("nv_inference_request_failure", MODEL)] == 0
    assert metrics[("nv_inference_count", MODEL)] == items
    assert metrics[("nv_inference_exec_count", MODEL)] < requests  # requests were batched together
    assert "server stopped" in server.output  # SIGTERM: graceful stop, exit code 0


@pytest.mark.slow
def test_batching_off_runs_each_request_alone(artifact: Path) -> None:
    inputs = _inputs(4, 25)
    expected = _sequential_results(artifact, inputs)
    with ServerProcess([artifact], "--max-batch", "1") as server:
        assert _problems(run_load(server.url, MODEL, inputs, keep_outputs=True), expected) == []
        assert fetch_metrics(server.url)[("nv_inference_exec_count", MODEL)] == 100
