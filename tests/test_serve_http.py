"""The v2 server over real HTTP on 127.0.0.1, driven by the official tritonclient[http] client unchanged,
plus raw HTTP for malformed requests. Served outputs must equal running the ONNX in onnxruntime."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from attn_deploy.serve.metrics import fetch_metrics
from attn_deploy.serve.model_pool import ServeOptions
from attn_deploy.serve.server import BackgroundServer
from tests._serve_helpers import (
    INPUT_SHAPE,
    http_request,
    make_artifact,
    make_uint8_artifact,
    onnx_reference,
    raw_request,
)

MODEL = "tiny-gate"
STATIC = "tiny-gate-static"
UINT8 = "u8-head"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engines")
    return {
        MODEL: make_artifact(root / MODEL / "ort-fp32", name=MODEL, dynamic_batch=True),
        STATIC: make_artifact(root / STATIC / "ort-fp32", name=STATIC, dynamic_batch=False),
        UINT8: make_uint8_artifact(root / UINT8 / "ort-fp32", name=UINT8),
    }


@pytest.fixture(scope="module")
def server(artifacts: dict[str, Path]) -> Iterator[BackgroundServer]:
    options = ServeOptions(max_batch=8, max_delay_ms=2, threads=2, max_body_mb=1)
    with BackgroundServer(list(artifacts.values()), options) as srv:
        yield srv


@pytest.fixture()
def client(server: BackgroundServer) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=server.url)
    yield c
    c.close()


def _images(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *INPUT_SHAPE)).astype(np.float32)


def _infer(
    client: httpclient.InferenceServerClient, images: np.ndarray, *, binary: bool, model: str = MODEL, **kw
):
    inp = httpclient.InferInput("images", list(images.shape), "FP32")
    inp.set_data_from_numpy(images, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("features", "pooled")]
    return client.infer(model, [inp], outputs=outputs, **kw)


def metric(server: BackgroundServer, name: str, model: str = MODEL) -> float:
    """One value from the server's /metrics."""
    return fetch_metrics(server.url)[(name, model)]


def test_health_and_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(STATIC, model_version="1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL, model_version="7")


def test_server_and_model_metadata(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "attn-deploy"
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["name"] == MODEL and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, *INPUT_SHAPE]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in model["outputs"]] == [
        ("features", "FP32", [-1, 8, 16, 16]),
        ("pooled", "FP32", [-1, 8]),
    ]
    assert client.get_model_metadata(STATIC, model_version="1")["inputs"][0]["shape"] == [1, *INPUT_SHAPE]


def test_model_config_matches_signature_and_batching(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "images", "data_type": "TYPE_FP32", "dims": list(INPUT_SHAPE)}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    static = client.get_model_config(STATIC)
    assert static["max_batch_size"] == 0 and "dynamic_batching" not in static
    assert static["input"][0]["dims"] == [1, *INPUT_SHAPE]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_infer_equals_onnxruntime(
    client: httpclient.InferenceServerClient, artifacts: dict[str, Path], binary: bool, batch: int
) -> None:
    images = _images(batch, seed=batch)
    result = _infer(client, images, binary=binary)
    expected = onnx_reference(artifacts[MODEL], images)
    for name in ("features", "pooled"):
        got = result.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == expected[name].shape
        np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=1e-6)
    assert result.get_response()["model_name"] == MODEL


@pytest.mark.parametrize("binary", [True, False])
def test_uint8_in_fp16_and_int64_out(
    client: httpclient.InferenceServerClient, artifacts: dict[str, Path], binary: bool
) -> None:
    pixels = np.random.default_rng(7).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    inp = httpclient.InferInput("images", [2, 3, 8, 8], "UINT8").set_data_from_numpy(
        pixels, binary_data=binary
    )
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "label")]
    result = client.infer(UINT8, [inp], outputs=outputs)
    expected = onnx_reference(artifacts[UINT8], pixels)
    assert result.as_numpy("scores").dtype == np.float16 and result.as_numpy("label").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("scores"), expected["scores"])
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    assert client.get_model_metadata(UINT8)["inputs"][0]["datatype"] == "UINT8"


def test_infer_versioned_static_model_with_default_outputs_and_gzip(
    client: httpclient.InferenceServerClient, artifacts: dict[str, Path]
) -> None:
    images = _images(1, seed=5)
    inp = httpclient.InferInput("images", list(images.shape), "FP32").set_data_from_numpy(images)
    result = client.infer(
        STATIC,
        [inp],
        model_version="1",
        request_compression_algorithm="gzip",
        response_compression_algorithm="gzip",
    )
    expected = onnx_reference(artifacts[STATIC], images)
    np.testing.assert_allclose(result.as_numpy("pooled"), expected["pooled"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("features"), expected["features"], rtol=1e-5, atol=1e-6)


def test_client_sees_clear_errors(client: httpclient.InferenceServerClient) -> None:
    wrong = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(InferenceServerException) as info:
        _infer(client, wrong, binary=True)
    assert info.value.status() == "400"
    assert "input 'images' has shape [1, 3, 8, 8], the model expects [-1, 3, 16, 16]" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        _infer(client, _images(2), binary=True, model=STATIC)
    assert info.value.status() == "400" and "expects [1, 3, 16, 16]" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        _infer(client, _images(), binary=True, model="nope")
    assert info.value.status() == "404" and "unknown model 'nope'" in info.value.message()


def _binary_body(images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    return raw_request({"images": images}, binary=True)


BAD_REQUESTS = {
    "malformed json": (f"/v2/models/{MODEL}/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    "unknown model": ("/v2/models/nope/infer", b"{}", {}, 404, "unknown model 'nope'"),
    "unknown version": (f"/v2/models/{MODEL}/versions/3/infer", b"{}", {}, 404, "has no version '3'"),
    "unknown route": ("/v2/nothing/here", b"", {}, 404, "Not Found"),
    "wrong input name": (
        f"/v2/models/{MODEL}/infer",
        *raw_request({"pixels": np.zeros((1, *INPUT_SHAPE), np.float32)}, binary=False),
        400,
        "unknown input 'pixels'",
    ),
    "wrong rank": (
        f"/v2/models/{MODEL}/infer",
        *raw_request({"images": np.zeros((3, 16, 16), np.float32)}, binary=True),
        400,
        "has shape [3, 16, 16], the model expects [-1, 3, 16, 16]",
    ),
    "wrong datatype": (
        f"/v2/models/{MODEL}/infer",
        *raw_request({"images": np.zeros((1, *INPUT_SHAPE), np.float16)}, binary=True, datatype="FP16"),
        400,
        "has datatype 'FP16', the model expects FP32",
    ),
    "bad header length": (
        f"/v2/models/{MODEL}/infer",
        b"{}",
        {"Inference-Header-Content-Length": "abc"},
        400,
        "must be an integer",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_and_server_keeps_serving(
    server: BackgroundServer, client: httpclient.InferenceServerClient, case: str
) -> None:
    path, body, headers, status, message = BAD_REQUESTS[case]
    got_status, got_body, got_headers = http_request(
        server.port, "POST" if path.endswith("infer") else "GET", path, body, headers
    )
    assert got_status == status
    assert got_headers["Content-Type"].startswith("application/json")
    error = json.loads(got_body)["error"]
    assert message in error and "\n" not in error
    assert _infer(client, _images(), binary=True).as_numpy("pooled").shape == (1, 8)  # still serving


def test_binary_sizes_that_do_not_add_up(server: BackgroundServer) -> None:
    body, headers = _binary_body(_images())
    for tampered, message in ((body[:-100], "follow the JSON header"), (body + b"\0" * 4, "add up to")):
        status, raw, _ = http_request(server.port, "POST", f"/v2/models/{MODEL}/infer", tampered, headers)
        assert status == 400 and message in json.loads(raw)["error"]


def test_body_over_the_limit_is_413(
    server: BackgroundServer, client: httpclient.InferenceServerClient
) -> None:
    big = np.zeros(
        (400, *INPUT_SHAPE), np.float32
    )  # ~1.2 MB: over the 1 MB limit, and over what batch 8 needs
    body, headers = _binary_body(big)
    status, raw, _ = http_request(server.port, "POST", f"/v2/models/{MODEL}/infer", body, headers)
    assert status == 413 and "that model 'tiny-gate' can need" in json.loads(raw)["error"]
    assert client.is_server_ready()


def test_metrics_count_requests_items_and_executions(
    server: BackgroundServer, client: httpclient.InferenceServerClient
) -> None:
    names = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count")
    before = {n: metric(server, n) for n in names}
    failures = metric(server, "nv_inference_request_failure")
    for _ in range(3):
        _infer(client, _images(2), binary=True)
    with pytest.raises(InferenceServerException):
        _infer(client, np.zeros((1, 3, 4, 4), np.float32), binary=True)
    after = {n: metric(server, n) for n in names}
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == 3
    assert after["nv_inference_count"] - before["nv_inference_count"] == 6
    assert 1 <= after["nv_inference_exec_count"] - before["nv_inference_exec_count"] <= 3
    assert metric(server, "nv_inference_request_failure") == failures + 1
    assert metric(server, "nv_inference_request_duration_us") > 0
    assert metric(server, "nv_inference_queue_duration_us") >= 0


def test_graceful_shutdown_finishes_in_flight_requests(artifacts: dict[str, Path]) -> None:
    # A long batching delay keeps requests queued inside the server while it is told to stop.
    srv = BackgroundServer([artifacts[MODEL]], ServeOptions(max_batch=64, max_delay_ms=5000))
    results: dict[int, np.ndarray | BaseException] = {}

    def one(i: int) -> None:
        c = httpclient.InferenceServerClient(url=srv.url, network_timeout=60)
        try:
            results[i] = _infer(c, _images(1, seed=100 + i), binary=True).as_numpy("pooled")
        except BaseException as exc:  # recorded and asserted below
            results[i] = exc
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = 200
    while metric(srv, "nv_inference_pending_request_count") < 6 and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert metric(srv, "nv_inference_pending_request_count") == 6
    srv.stop()  # returns once in-flight requests are answered
    for t in threads:
        t.join(timeout=30)
    for i in range(6):
        expected = onnx_reference(artifacts[MODEL], _images(1, seed=100 + i))["pooled"]
        assert isinstance(results[i], np.ndarray), results[i]
        np.testing.assert_allclose(results[i], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5).connect()
