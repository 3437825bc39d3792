"""Hostile and careless clients against the real v2 server over HTTP on 127.0.0.1 (issue 9, section 7):
every one gets a one-line JSON error with the right status, slow clients are cut off, disconnects are
quiet and are not inference failures, and the server keeps serving throughout."""

from __future__ import annotations

import gc
import gzip
import http.client
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from attn_deploy.artifacts import load_artifact
from attn_deploy.serve.metrics import fetch_metrics
from attn_deploy.serve.model_pool import ServeOptions
from attn_deploy.serve.server import BackgroundServer
from tests._serve_helpers import (
    INPUT_SHAPE,
    http_request,
    make_artifact,
    make_fpn_artifact,
    make_uint8_artifact,
    raw_request,
)
from tests.conftest import CliExport

MODEL = "tiny-gate"
UINT8 = "u8-head"
FPN = "tiny-fpn"  # manifest says stride 32
FPN_OLD = "tiny-fpn-old"  # the same graph, manifest from before "stride" existed
FPN_MIN = "tiny-fpn-min"  # stride 32 and min_size 96
TIMEOUT_S = 1.0  # header and body timeouts of the test server


def _copy_with_manifest(src: Path, dst: Path, name: str, preprocess: dict | None) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model"] = name
    manifest["preprocess"] = preprocess
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engines")
    fpn = make_fpn_artifact(
        root / FPN / "ort-fp32", name=FPN, preprocess={"kind": "letterbox", "size": [64, 64], "stride": 32}
    )
    letterbox = {"kind": "letterbox", "size": [64, 64]}
    return {
        MODEL: make_artifact(root / MODEL / "ort-fp32", name=MODEL),
        UINT8: make_uint8_artifact(root / UINT8 / "ort-fp32", name=UINT8),
        FPN: fpn,
        FPN_OLD: _copy_with_manifest(fpn, root / FPN_OLD / "ort-fp32", FPN_OLD, letterbox),
        FPN_MIN: _copy_with_manifest(
            fpn, root / FPN_MIN / "ort-fp32", FPN_MIN, {**letterbox, "stride": 32, "min_size": 96}
        ),
    }


@pytest.fixture(scope="module")
def server(artifacts: dict[str, Path]) -> Iterator[BackgroundServer]:
    options = ServeOptions(
        max_batch=8, max_delay_ms=2, max_body_mb=1, header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S
    )
    with BackgroundServer(list(artifacts.values()), options) as srv:
        yield srv


def _error(status: int, body: bytes, headers: dict[str, str], want_status: int, *fragments: str) -> str:
    """Assert a one-line JSON error with ``want_status`` containing every fragment; return the message."""
    assert status == want_status, body
    assert headers["Content-Type"].startswith("application/json")
    message = json.loads(body)["error"]
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def _images(batch: int = 1, hw: tuple[int, int] = INPUT_SHAPE[1:], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *hw)).astype(np.float32)


def _infer_path(model: str = MODEL) -> str:
    return f"/v2/models/{model}/infer"


def _still_serving(server: BackgroundServer) -> None:
    body, headers = raw_request({"images": _images()}, binary=True)
    status, raw, _ = http_request(server.port, "POST", _infer_path(), body, headers)
    assert status == 200, raw


def _metric(server: BackgroundServer, name: str, model: str = MODEL) -> float:
    return fetch_metrics(server.url)[(name, model)]


# 1. deep JSON nesting


def test_100k_nested_brackets_is_400_not_recursion_error(server: BackgroundServer) -> None:
    status, body, headers = http_request(server.port, "POST", _infer_path(), b"[" * 100_000)
    _error(status, body, headers, 400, "nested too deeply")
    status, body, headers = http_request(
        server.port, "POST", _infer_path(), b'{"inputs": ' + b"[" * 100_000 + b"]}"
    )
    _error(status, body, headers, 400, "nested too deeply")
    _still_serving(server)


def test_data_nested_deeper_than_the_shape_is_400(server: BackgroundServer) -> None:
    data: list = [0.0] * 768
    for _ in range(500):  # parseable JSON, but far deeper than the rank-4 shape
        data = [data]
    request = {"inputs": [{"name": "images", "shape": [1, *INPUT_SHAPE], "datatype": "FP32", "data": data}]}
    status, body, headers = http_request(server.port, "POST", _infer_path(), json.dumps(request).encode())
    _error(status, body, headers, 400, "input 'images': data is nested deeper than its shape [1, 3, 16, 16]")
    nested = _images().tolist()  # nested exactly as the shape: accepted, as before
    request["inputs"][0]["data"] = nested
    status, body, _ = http_request(server.port, "POST", _infer_path(), json.dumps(request).encode())
    assert status == 200, body


# 2. image sizes the model cannot run


@pytest.mark.parametrize("hw", [(65, 65), (100, 128)])
def test_size_off_the_stride_is_400_naming_the_rule(server: BackgroundServer, hw: tuple[int, int]) -> None:
    failures = _metric(server, "nv_inference_request_failure", FPN)
    body, headers = raw_request({"images": _images(1, hw)}, binary=True)
    status, raw, got_headers = http_request(server.port, "POST", _infer_path(FPN), body, headers)
    _error(
        status,
        raw,
        got_headers,
        400,
        f"input 'images' is {hw[0]}x{hw[1]}: height and width must be multiples of 32 for this model",
    )
    assert _metric(server, "nv_inference_request_failure", FPN) == failures + 1  # a failed request, a 400


def test_sizes_on_the_stride_run(server: BackgroundServer) -> None:
    for hw in ((64, 64), (96, 32), (128, 64)):
        body, headers = raw_request({"images": _images(2, hw)}, binary=True)
        status, raw, _ = http_request(server.port, "POST", _infer_path(FPN), body, headers)
        assert status == 200, raw


def test_old_manifest_without_stride_still_gets_400_from_the_ort_failure(server: BackgroundServer) -> None:
    body, headers = raw_request({"images": _images(1, (65, 65))}, binary=True)
    status, raw, got_headers = http_request(server.port, "POST", _infer_path(FPN_OLD), body, headers)
    _error(
        status, raw, got_headers, 400, "cannot run inputs of shape images [1, 3, 65, 65]", "[1, 3, 64, 64]"
    )
    body, headers = raw_request({"images": _images(1, (64, 96))}, binary=True)
    assert http_request(server.port, "POST", _infer_path(FPN_OLD), body, headers)[0] == 200


def test_min_size_from_the_manifest(server: BackgroundServer) -> None:
    body, headers = raw_request({"images": _images(1, (64, 128))}, binary=True)
    status, raw, got_headers = http_request(server.port, "POST", _infer_path(FPN_MIN), body, headers)
    _error(status, raw, got_headers, 400, "height and width must be at least 96 for this model")
    body, headers = raw_request({"images": _images(1, (96, 128))}, binary=True)
    assert http_request(server.port, "POST", _infer_path(FPN_MIN), body, headers)[0] == 200


@pytest.mark.slow
def test_dynamic_yolo_zoo_artifact_refuses_sizes_off_stride_32(yolo_dynamic_export: CliExport) -> None:
    artifact = load_artifact(yolo_dynamic_export.dir)
    assert artifact.manifest["preprocess"]["stride"] == 32
    assert "min_size" not in artifact.manifest["preprocess"]
    with BackgroundServer([artifact.dir], ServeOptions(max_batch=1)) as srv:
        for hw in ((65, 65), (100, 128)):
            body, headers = raw_request({"images": _images(1, hw)}, binary=True)
            status, raw, got_headers = http_request(
                srv.port, "POST", _infer_path(artifact.name), body, headers
            )
            _error(status, raw, got_headers, 400, "height and width must be multiples of 32 for this model")
        body, headers = raw_request({"images": _images(1, (64, 96))}, binary=True)
        assert http_request(srv.port, "POST", _infer_path(artifact.name), body, headers)[0] == 200


def test_zoo_manifests_record_stride_and_min_size_only_where_needed() -> None:
    from attn_deploy.models import model_spec

    def info(name: str) -> dict:
        spec = model_spec(name)
        return spec.preprocess_info(spec.input_size)

    assert info("yolov8s-eca")["stride"] == 32 and "min_size" not in info("yolov8s-eca")
    assert "stride" not in info("resnet50-se") and "min_size" not in info("resnet50-se")  # global pooling
    # measured: SimAM is NaN on a 1x1 map, sparse attention needs topk=32 positions (stride-32 map)
    assert info("resnet18-simam")["min_size"] == 33 and info("yolov8n-simam")["min_size"] == 64
    assert info("resnet18-sparse")["min_size"] == 161 and info("yolov8n-sparse")["min_size"] == 192
    assert "min_size" not in info("resnet18-ema")  # only its export needs 2 positions; the graph runs at 1x1


# 3. max_batch_size


def test_batch_over_max_batch_size_is_400(server: BackgroundServer) -> None:
    client = httpclient.InferenceServerClient(url=server.url)
    try:
        assert client.get_model_config(MODEL)["max_batch_size"] == 8
        images = _images(9)
        inp = httpclient.InferInput("images", list(images.shape), "FP32").set_data_from_numpy(images)
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [inp])
        assert info.value.status() == "400"
        assert "batch size 9 is over max_batch_size 8 of model 'tiny-gate'" in info.value.message()
        inp = httpclient.InferInput("images", [8, *INPUT_SHAPE], "FP32").set_data_from_numpy(_images(8))
        assert client.infer(MODEL, [inp]).as_numpy("pooled").shape == (8, 8)
    finally:
        client.close()


# 4. slow clients and big bodies


def _seconds_until_closed(sock: socket.socket, limit: float = 30.0) -> tuple[float, bytes]:
    """Read until the server closes ``sock``; returns (seconds waited, what it sent)."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return time.monotonic() - started, received


def test_partial_headers_are_cut_off_after_the_header_timeout(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v2/models/tiny-gate/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
        waited, received = _seconds_until_closed(sock)
    assert TIMEOUT_S * 0.5 <= waited <= TIMEOUT_S + 4, waited  # slack for a loaded 2-core machine
    assert received == b""


def test_trickled_headers_do_not_extend_the_header_timeout(server: BackgroundServer) -> None:
    started = time.monotonic()
    closed_after = None
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        try:
            for byte in b"GET /v2/health/live HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:  # reset by the server
            closed_after = time.monotonic() - started
        if closed_after is None:
            _seconds_until_closed(sock)
            closed_after = time.monotonic() - started
    assert closed_after <= TIMEOUT_S + 4, closed_after  # the trickle alone would take 13 s


def test_partial_body_gets_408_then_the_connection_closes(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v2/models/tiny-gate/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        waited, received = _seconds_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert "not received within 1 s" in json.loads(body)["error"]
    assert waited <= 2 * TIMEOUT_S + 4, waited  # body timeout, then at most the lingering time
    _still_serving(server)


def test_idle_keep_alive_connection_is_closed_and_tritonclient_reconnects(server: BackgroundServer) -> None:
    client = httpclient.InferenceServerClient(url=server.url)
    try:
        inp = httpclient.InferInput("images", [1, *INPUT_SHAPE], "FP32").set_data_from_numpy(_images())
        client.infer(MODEL, [inp])
        time.sleep(TIMEOUT_S + 0.5)  # the server has closed the pooled connection by now
        assert client.infer(MODEL, [inp]).as_numpy("pooled").shape == (1, 8)
    finally:
        client.close()


def test_bodies_over_the_limit_are_413_chunked_and_gzip_bombs_included(server: BackgroundServer) -> None:
    # tiny-fpn takes any H/W: nothing bounds its inputs, so the server's 1 MB limit applies
    bomb = gzip.compress(b"0" * 20_000_000)  # 20 MB inflated, ~20 kB on the wire, 1 MB limit
    status, body, headers = http_request(
        server.port, "POST", _infer_path(FPN), bomb, {"Content-Encoding": "gzip"}
    )
    _error(status, body, headers, 413, "over the 1 MB limit")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"0" * 100_000

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", _infer_path(FPN), body=chunks(), encode_chunked=True)
        response = conn.getresponse()
        _error(response.status, response.read(), dict(response.getheaders()), 413, "over the 1 MB limit")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the client has sent every chunk; the 413 test above holds
    finally:
        conn.close()
    _still_serving(server)


def test_a_body_larger_than_the_model_can_need_is_413_before_parsing(server: BackgroundServer) -> None:
    """tiny-gate takes at most 8 x 3 x 16 x 16 numbers: a body beyond what they can take as JSON (64 bytes a
    number) is refused by its size, before a parse that would hold the event loop (a 59 MB JSON body held health
    checks for 3.8 s). The largest valid request, pretty-printed, still fits and runs."""
    rng = np.random.default_rng(0)
    longest = (-rng.random((8, *INPUT_SHAPE)) * 1e-5).astype(np.float32)  # "-1.2345678e-06": long reprs
    entry = {"name": "images", "shape": list(longest.shape), "datatype": "FP32", "data": longest.tolist()}
    pretty = json.dumps({"inputs": [entry]}, indent=2).encode()  # each number on its own indented line
    status, body, headers = http_request(server.port, "POST", _infer_path(), pretty)
    assert status == 200, body
    padded = pretty[:-1] + b" " * (512 * 1024) + b"}"  # still valid JSON, 0.5 MB of nothing
    status, body, headers = http_request(server.port, "POST", _infer_path(), padded)
    _error(status, body, headers, 413, "that model 'tiny-gate' can need")
    _still_serving(server)


def test_a_rejected_bomb_costs_about_the_limit_and_is_freed_at_once(server: BackgroundServer) -> None:
    """aiohttp's ``request.read()`` inflated a gzip body in limit-sized pieces, and the 413 it raised kept the
    buffer in a reference cycle until the next garbage collection, which a stream of large buffers (few
    objects) rarely triggers: 5 bombs held 34 MB on a 1 MB limit. The server's own reader stops within one
    256 KiB piece of the limit and keeps nothing. Python allocations only (tracemalloc, every thread), so the
    numbers do not depend on the CPU: measured 4 MB peak and 0.9 MB left for the 5 bombs."""
    bomb = gzip.compress(b"0" * 20_000_000)
    http_request(server.port, "POST", _infer_path(FPN), bomb, {"Content-Encoding": "gzip"})  # warm-up
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            status, body, headers = http_request(
                server.port, "POST", _infer_path(FPN), bomb, {"Content-Encoding": "gzip"}
            )
            _error(status, body, headers, 413, "over the 1 MB limit")
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert (after - before) < 5e6 and (peak - before) < 12e6, (after - before, peak - before)
    _still_serving(server)


# 5. client disconnects


def _server_log_problems(records: list[logging.LogRecord]) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in records
        if r.name.startswith(("attn_deploy", "aiohttp")) and (r.levelno >= logging.WARNING or r.exc_info)
    ]


def test_disconnects_log_one_debug_line_and_are_not_failures(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    body, headers = raw_request({"images": _images()}, binary=True)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n"
    )
    failures = _metric(server, "nv_inference_request_failure")
    caplog.set_level(logging.DEBUG)
    caplog.clear()

    def disconnect(i: int) -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            if i % 2:  # mid-body
                sock.sendall(request.encode() + body[: len(body) // 2])
                time.sleep(0.05)
            else:  # whole request, gone before the answer
                sock.sendall(request.encode() + body)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST on close

    threads = [threading.Thread(target=disconnect, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)
    _still_serving(server)
    assert _metric(server, "nv_inference_request_failure") == failures
    assert _server_log_problems(caplog.records) == []
    ours = [r for r in caplog.records if r.name.startswith("attn_deploy")]
    assert len(ours) <= 20 and all(r.levelno <= logging.INFO for r in ours)
    assert any("client went away" in r.getMessage() for r in ours)  # the mid-body ones reached the handler


# 6. JSON types


@pytest.mark.parametrize(
    ("value", "found"),
    [("0.5", "string"), (True, "boolean"), (None, "null"), ({"v": 1}, "object")],
)
def test_wrong_json_types_for_fp32_are_400(server: BackgroundServer, value: object, found: str) -> None:
    data = [0.0] * 767 + [value]
    request = {"inputs": [{"name": "images", "shape": [1, *INPUT_SHAPE], "datatype": "FP32", "data": data}]}
    status, body, headers = http_request(server.port, "POST", _infer_path(), json.dumps(request).encode())
    _error(status, body, headers, 400, "input 'images'", "FP32", f"found {found}")


def test_floats_for_uint8_are_400(server: BackgroundServer) -> None:
    data = [1.5] + [0] * 191
    request = {"inputs": [{"name": "images", "shape": [1, 3, 8, 8], "datatype": "UINT8", "data": data}]}
    status, body, headers = http_request(
        server.port, "POST", _infer_path(UINT8), json.dumps(request).encode()
    )
    _error(status, body, headers, 400, "input 'images'", "UINT8", "takes integer values, found float")
    request["inputs"][0]["data"] = [300] + [0] * 191
    status, body, headers = http_request(
        server.port, "POST", _infer_path(UINT8), json.dumps(request).encode()
    )
    _error(status, body, headers, 400, "does not convert to UINT8")


# 7. Accept-Encoding


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip", "gzip"),
        ("GZip", "gzip"),
        ("gzip;q=0", None),
        ("gzip; q=0.0, deflate", "deflate"),
        ("identity", None),
        ("*", "gzip"),
        ("*;q=0", None),
        ("gzip;q=0.2, identity;q=0.9", None),
        ("br", None),
    ],
)
def test_accept_encoding_q_values(server: BackgroundServer, accept: str, coding: str | None) -> None:
    body, headers = raw_request({"images": _images()}, binary=False)
    status, raw, got = http_request(
        server.port, "POST", _infer_path(), body, {**headers, "Accept-Encoding": accept}
    )
    assert status == 200
    assert got.get("Content-Encoding") == coding
    if coding == "gzip":
        raw = gzip.decompress(raw)
    if coding is None:
        assert json.loads(raw)["model_name"] == MODEL


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compression_both_ways(server: BackgroundServer, algorithm: str) -> None:
    client = httpclient.InferenceServerClient(url=server.url)
    try:
        images = _images(2, seed=3)
        inp = httpclient.InferInput("images", list(images.shape), "FP32").set_data_from_numpy(images)
        result = client.infer(
            MODEL, [inp], request_compression_algorithm=algorithm, response_compression_algorithm=algorithm
        )
        assert result.as_numpy("pooled").shape == (2, 8)
    finally:
        client.close()


# Siblings: headers, sizes, shapes, names, routes, methods


SIBLINGS = {
    "multipart body": (
        {"Content-Type": "multipart/form-data; boundary=x"},
        b"--x--",
        415,
        "multipart/form-data",
    ),
    "unknown content encoding": ({"Content-Encoding": "br"}, b"{}", 415, "Content-Encoding 'br'"),
    "gzip that is not gzip": ({"Content-Encoding": "gzip"}, b"plain", 400, "cannot read the request body"),
    "negative header length": ({"Inference-Header-Content-Length": "-5"}, b"{}", 400, "must be >= 0"),
    "huge header length": (
        {"Inference-Header-Content-Length": "9" * 30},
        b"{}",
        400,
        "but the body has only",
    ),
    "float header length": ({"Inference-Header-Content-Length": "1e3"}, b"{}", 400, "must be an integer"),
    "5000-digit integer": ({}, b'{"inputs": [' + b"1" * 5000 + b"]}", 400, "malformed JSON"),
    "numeric request id": (
        {},
        json.dumps(
            {
                "id": 7,
                "inputs": [
                    {"name": "images", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0] * 768}
                ],
            }
        ).encode(),
        400,
        '"id" must be a string, got 7',
    ),
}


@pytest.mark.parametrize("case", list(SIBLINGS))
def test_bad_headers_get_one_line_json_errors(server: BackgroundServer, case: str) -> None:
    headers, body, status, fragment = SIBLINGS[case]
    got_status, got_body, got_headers = http_request(server.port, "POST", _infer_path(), body, headers)
    _error(got_status, got_body, got_headers, status, fragment)
    _still_serving(server)


def _binary_with(shape: list[int], size: object, tail: bytes) -> tuple[bytes, dict[str, str]]:
    entry = {"name": "images", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": size}}
    head = json.dumps({"inputs": [entry]}).encode()
    return head + tail, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("shape", "size", "tail", "fragment"),
    [
        ([1, *INPUT_SHAPE], 3072, 1000, "only 1000 bytes follow the JSON header"),
        ([1, *INPUT_SHAPE], 10**30, 3072, "adds up to"),
        ([1, *INPUT_SHAPE], -1, 3072, "binary_data_size must be an integer >= 0"),
        ([1, *INPUT_SHAPE], 3072.0, 3072, "binary_data_size must be an integer >= 0"),
        ([1, *INPUT_SHAPE], 3072, 3080, "3080 bytes follow the JSON header but"),
        ([1, -3, 16, 16], 0, 0, "shape must be a list of integers >= 0"),
        ([2**40, *INPUT_SHAPE], 0, 0, "more than the"),
        ([2**70, *INPUT_SHAPE], 0, 0, "the model expects [-1, 3, 16, 16]"),
        ([0, 2**62, 16, 16], 0, 0, "the model expects [-1, 3, 16, 16]"),
        ([1, *INPUT_SHAPE, *[1] * 1000], 0, 0, "the model expects [-1, 3, 16, 16]"),
    ],
)
def test_binary_sizes_and_shapes_that_do_not_add_up(
    server: BackgroundServer, shape: list[int], size: object, tail: int, fragment: str
) -> None:
    body, headers = _binary_with(shape, size, b"\0" * tail)
    status, raw, got_headers = http_request(server.port, "POST", _infer_path(), body, headers)
    _error(status, raw, got_headers, 400, fragment)


def test_huge_dims_on_a_dynamic_image_model(server: BackgroundServer) -> None:
    body, headers = _binary_with([1, 3, 0, 2**62], 0, b"")
    status, raw, got_headers = http_request(server.port, "POST", _infer_path(FPN), body, headers)
    _error(status, raw, got_headers, 400, "input 'images'")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/../infer",
        "/v2/models/%2e%2e/infer",
        "/v2/models/..%2F..%2Fetc%2Fpasswd/infer",
        "/v2/models/%2Fetc%2Fpasswd/ready",
        "/v2/models/" + "a" * 5000 + "/ready",
    ],
)
def test_model_names_that_are_paths_are_404(server: BackgroundServer, path: str) -> None:
    method = "POST" if path.endswith("infer") else "GET"
    status, body, headers = http_request(server.port, method, path, b"{}")
    message = _error(status, body, headers, 404)
    assert len(message) < 1000


def test_unknown_routes_and_methods(server: BackgroundServer) -> None:
    status, body, headers = http_request(server.port, "GET", "/v2/nothing/here")
    _error(status, body, headers, 404, "Not Found: GET /v2/nothing/here")
    status, body, headers = http_request(server.port, "POST", "/v2/health/live")
    _error(status, body, headers, 405, "Method Not Allowed: POST /v2/health/live")
    assert "GET" in headers["Allow"]
    status, body, headers = http_request(server.port, "GET", _infer_path())
    _error(status, body, headers, 405)
    assert headers["Allow"] == "POST"
    status, body, headers = http_request(server.port, "DELETE", f"/v2/models/{MODEL}")
    _error(status, body, headers, 405)


# The CLI


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--port", "70000"], "--port: must be an integer 0-65535"),
        (["--port", "-1"], "--port: must be an integer 0-65535 (0: any free port), got -1"),
        (["--port", "abc"], "got 'abc'"),
        (["--host", "http://0.0.0.0"], "--host: must be an IP address or host name"),
        (["--host", "0.0.0.0:8000"], "give the port with --port"),
        (["--host", ""], "--host: must be an IP address or host name"),
        (["--header-timeout", "0"], "--header-timeout: must be a number of seconds > 0"),
        (["--body-timeout", "nan"], "--body-timeout: must be a number of seconds > 0"),
    ],
)
def test_serve_cli_rejects_bad_flags_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    from attn_deploy.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path), *flags])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--max-body-mb", "nan"], "--max-body-mb must be > 0 (and finite), got nan"),
        (["--max-delay-ms", "inf"], "--max-delay-ms must be 0-60000, got inf"),
        (["--intra-op-threads", "-3"], "--intra-op-threads must be >= 1, got -3"),
    ],
)
def test_serve_cli_rejects_bad_numbers_before_loading_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    from attn_deploy.cli import main

    assert main(["serve", str(tmp_path / "not-an-artifact"), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


@pytest.mark.slow
def test_serve_command_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attn_deploy.cli", "serve", str(tmp_path), "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: argument --port: must be an integer 0-65535 (0: any free port), got 70000 "
        "(see attn-deploy serve --help)"
    )


@pytest.mark.parametrize(
    "raw_bytes",
    [
        b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n",  # header over 8 KiB
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line over 8 KiB
        b"POST /v2/models/tiny-gate/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v2/models/tiny-gate/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",  # TLS on the HTTP port
        # a body that does not inflate: answered 400 by the server, then drained by aiohttp, which logged
        # its error again as an "Unhandled exception" with a traceback
        b"POST /v2/models/tiny-gate/infer HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        b"POST /v2/models/tiny-gate/infer HTTP/1.1\r\nHost: x\r\nContent-Encoding: deflate\r\n"
        b"Content-Length: 5\r\n\r\nhello",
    ],
)
def test_unparseable_http_is_400_with_one_log_line(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture, raw_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(raw_bytes)
        _, received = _seconds_until_closed(sock)
    assert received.startswith(b"HTTP/1.0 400") or received.startswith(b"HTTP/1.1 400")
    assert _server_log_problems(caplog.records) == []
    _still_serving(server)
