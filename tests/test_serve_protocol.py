"""KServe v2 / Triton protocol pieces without a server: tensor (de)serialisation checked against the
official tritonclient, request validation, response encoding, model config, micro-batcher, metrics."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from aiohttp.web import ContentCoding
from google.protobuf import text_format
from tritonclient.http import InferInput, InferResult

from attn_deploy.serve.batcher import MicroBatcher
from attn_deploy.serve.dtypes import V2_DATATYPES, numpy_dtype
from attn_deploy.serve.encoding import choose_encoding, parse_accept_encoding
from attn_deploy.serve.metrics import ModelMetrics, render_prometheus
from attn_deploy.serve.model_config import build_model_config, to_pbtxt
from attn_deploy.serve.model_pool import ImageSizeRule
from attn_deploy.serve.protocol import (
    ProtocolError,
    RequestedOutput,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    tensor_from_bytes,
    tensor_to_bytes,
)
from attn_deploy.serve.signature import ModelSignature, TensorSpec
from tests._serve_helpers import raw_request, triton_model_config_pb2

SIG = ModelSignature(
    inputs=(TensorSpec("images", "FP32", (-1, 3, 4, 4)),),
    outputs=(TensorSpec("scores", "FP32", (-1, 5)), TensorSpec("label", "INT64", (-1,))),
)


def _sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if datatype == "BYTES":
        return np.array([f"item-{i}".encode() for i in range(int(np.prod(shape)))], dtype=object).reshape(
            shape
        )
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 100, shape).astype(dtype)


@pytest.mark.parametrize("datatype", V2_DATATYPES)
def test_binary_tensor_bytes_match_tritonclient_and_round_trip(datatype: str) -> None:
    array = _sample(datatype)
    client_input = InferInput("x", list(array.shape), datatype).set_data_from_numpy(array, binary_data=True)
    raw = tensor_to_bytes(array, datatype)
    assert raw == client_input._get_binary_data()  # the exact bytes the official client sends
    back = tensor_from_bytes(raw, datatype, array.shape)
    assert back.shape == array.shape
    assert (back == array).all()


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "INT32", "INT64", "UINT8", "BOOL", "BYTES"])
@pytest.mark.parametrize("binary", [True, False])
def test_request_decodes_what_tritonclient_encodes(datatype: str, binary: bool) -> None:
    array = _sample(datatype, (2, 3))
    sig = ModelSignature((TensorSpec("x", datatype, (-1, 3)),), (TensorSpec("y", datatype, (-1, 3)),))
    client_input = InferInput("x", [2, 3], datatype).set_data_from_numpy(array, binary_data=binary)
    header = json.dumps({"inputs": [client_input._get_tensor()], "parameters": {"binary_data_output": True}})
    tail = client_input._get_binary_data() or b""
    request = decode_infer_request(header.encode() + tail, len(header) if binary else None, sig)
    assert request.inputs["x"].dtype == array.dtype
    assert (request.inputs["x"] == array).all()
    assert request.outputs == [RequestedOutput("y", True)]


@pytest.mark.parametrize("binary", [True, False])
def test_response_reads_back_with_tritonclient(binary: bool) -> None:
    outputs = {"scores": _sample("FP32", (2, 5)), "label": np.array([3, 1], dtype=np.int64)}
    requested = [RequestedOutput("scores", binary), RequestedOutput("label", False)]
    body, header_length = encode_infer_response("m", "1", outputs, requested, request_id="42")
    assert (header_length is not None) == binary
    result = InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("scores"), outputs["scores"])
    np.testing.assert_array_equal(result.as_numpy("label"), outputs["label"])
    assert result.get_response()["id"] == "42"


def test_fp16_response_keeps_dtype_in_binary_and_json() -> None:
    half = _sample("FP16", (1, 4))
    for binary in (True, False):
        body, hlen = encode_infer_response("m", "1", {"h": half}, [RequestedOutput("h", binary)])
        got = InferResult.from_response_body(body, header_length=hlen).as_numpy("h")
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, half)


def _good_binary() -> tuple[bytes, int]:
    body, headers = raw_request({"images": np.zeros((2, 3, 4, 4), np.float32)}, binary=True)
    return body, int(headers["Inference-Header-Content-Length"])


def _json_request(**entry_overrides: object) -> bytes:
    entry = {"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}
    entry.update(entry_overrides)
    entry = {k: v for k, v in entry.items() if v is not None}  # None drops the field
    return json.dumps({"inputs": [entry]}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"inputs": []}', None, 'non-empty "inputs"'),
        (_json_request(name="pixels"), None, "unknown input 'pixels'; the model's inputs are: images"),
        (_json_request(datatype="FP16"), None, "has datatype 'FP16', the model expects FP32"),
        (_json_request(shape=[1, 3, 4]), None, "has shape [1, 3, 4], the model expects [-1, 3, 4, 4]"),
        (_json_request(shape=[1, 3, 5, 4]), None, "the model expects [-1, 3, 4, 4]"),
        (_json_request(shape=[1, -3, 4, 4]), None, "shape must be a list of integers >= 0"),
        (_json_request(data=[0.0] * 47), None, "has 47 data elements, shape [1, 3, 4, 4] needs 48"),
        (_json_request(data=["a"] * 48), None, "data does not convert to FP32"),
        (_json_request(data=None, parameters={}), None, 'neither "data" nor parameters.binary_data_size'),
        # the data's absence is named even when the declared shape is larger than the body
        (
            _json_request(data=None, shape=[64, 3, 4, 4]),
            None,
            'neither "data" nor parameters.binary_data_size',
        ),
        (
            _json_request(data=None, shape=[64, 3, 4, 4], parameters={"shared_memory_region": "r"}),
            None,
            "shared memory is not supported",
        ),
        (_good_binary()[0][:-4], _good_binary()[1], "only 380 bytes follow the JSON header"),
        (_good_binary()[0] + b"\0" * 8, _good_binary()[1], "392 bytes follow the JSON header but"),
        (_good_binary()[0], 10**6, "Inference-Header-Content-Length is 1000000 but the body has only"),
    ],
)
def test_bad_requests_raise_one_line_protocol_errors(
    body: bytes, header_length: int | None, message: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_infer_request(body, header_length, SIG)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.status == 400


def test_binary_size_not_matching_shape_is_rejected() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [1, 3, 4, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    with pytest.raises(
        ProtocolError, match="binary data is 8 bytes, shape \\[1, 3, 4, 4\\] of FP32 needs 192"
    ):
        decode_infer_request(header + b"\0" * 8, len(header), SIG)


def test_requested_outputs_follow_binary_data_and_binary_data_output() -> None:
    body = json.dumps(
        {
            "inputs": [{"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "scores"}],
        }
    ).encode()
    request = decode_infer_request(body, None, SIG)
    assert request.outputs == [RequestedOutput("label", False), RequestedOutput("scores", True)]
    with pytest.raises(ProtocolError, match="unknown output 'boxes'"):
        decode_infer_request(body.replace(b'"scores"', b'"boxes"'), None, SIG)


def test_header_length_parsing() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length("12") == 12
    for bad in ("twelve", "-1"):
        with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
            parse_header_length(bad)


def _parse_pbtxt(text: str):
    return text_format.Parse(text, triton_model_config_pb2().ModelConfig())


def test_model_config_pbtxt_parses_with_tritons_proto() -> None:
    config = build_model_config("m", SIG, max_batch_size=16, max_queue_delay_us=1500, trt_precision="fp16")
    parsed = _parse_pbtxt(to_pbtxt(config))
    pb2 = triton_model_config_pb2()
    assert parsed.name == "m" and parsed.platform == "onnxruntime_onnx"
    assert parsed.max_batch_size == 16
    assert list(parsed.input[0].dims) == [3, 4, 4]  # batch dim excluded when max_batch_size > 0
    assert parsed.input[0].data_type == pb2.TYPE_FP32
    assert [list(o.dims) for o in parsed.output] == [[5], []]
    assert parsed.output[1].data_type == pb2.TYPE_INT64
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 1500
    (accelerator,) = parsed.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}


def test_model_config_without_batching_keeps_full_dims() -> None:
    static = ModelSignature((TensorSpec("x", "UINT8", (1, 3, 8, 8)),), (TensorSpec("y", "FP16", (1, 2)),))
    parsed = _parse_pbtxt(to_pbtxt(build_model_config("s", static)))
    assert parsed.max_batch_size == 0
    assert list(parsed.input[0].dims) == [1, 3, 8, 8]
    assert parsed.input[0].data_type == triton_model_config_pb2().TYPE_UINT8
    assert not parsed.HasField("dynamic_batching")
    with pytest.raises(ValueError, match="static batch dimension"):
        build_model_config("s", static, max_batch_size=4)


def _double_and_sum(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = feed["x"]
    return {"y": x * 2, "s": x.reshape(len(x), -1).sum(1)}


def test_micro_batcher_batches_concurrent_requests_and_splits_them_back() -> None:
    executions: list[float] = []

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(
                _double_and_sum, pool, max_batch=8, max_delay_s=0.05, on_execution=executions.append
            )
            feeds = [{"x": np.full((1 + i % 2, 3), i, np.float32)} for i in range(10)]
            feeds.append({"x": np.full((1, 4), 99, np.float32)})  # other shape: never batched with the rest
            results = await asyncio.gather(*(batcher.infer(f) for f in feeds))
            return list(zip(feeds, results, strict=True))

    pairs = asyncio.run(scenario())
    for feed, result in pairs:
        expected = _double_and_sum(feed)
        np.testing.assert_array_equal(result.outputs["y"], expected["y"])
        np.testing.assert_array_equal(result.outputs["s"], expected["s"])
        assert result.exec_batch_size <= 8
    assert len(executions) < len(pairs)  # batching happened
    assert sum(r.exec_batch_size for _, r in pairs) >= len(pairs)


def test_micro_batcher_off_runs_every_request_alone() -> None:
    executions: list[float] = []

    async def scenario() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(
                _double_and_sum, pool, max_batch=1, max_delay_s=1.0, on_execution=executions.append
            )
            results = await asyncio.gather(
                *(batcher.infer({"x": np.ones((1, 3), np.float32)}) for _ in range(4))
            )
            assert all(r.exec_batch_size == 1 for r in results)

    asyncio.run(scenario())
    assert len(executions) == 4


def test_prometheus_text_uses_triton_names_and_labels() -> None:
    metrics = ModelMetrics("yolov8s-eca")
    metrics.record_execution(compute_us=100)
    metrics.record_success(batch_size=2, duration_us=250.4, queue_us=20)
    metrics.record_failure(duration_us=10)
    text = render_prometheus([metrics])
    assert "# TYPE nv_inference_request_success counter" in text
    assert 'nv_inference_request_success{model="yolov8s-eca",version="1"} 1' in text
    assert 'nv_inference_request_failure{model="yolov8s-eca",version="1"} 1' in text
    assert 'nv_inference_count{model="yolov8s-eca",version="1"} 2' in text
    assert 'nv_inference_exec_count{model="yolov8s-eca",version="1"} 1' in text
    assert 'nv_inference_request_duration_us{model="yolov8s-eca",version="1"} 260' in text
    assert 'nv_inference_queue_duration_us{model="yolov8s-eca",version="1"} 20' in text


def _typed_request(datatype: str, data: list) -> tuple[bytes, ModelSignature]:
    sig = ModelSignature((TensorSpec("x", datatype, (-1, 2)),), (TensorSpec("y", datatype, (-1, 2)),))
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]})
    return body.encode(), sig


@pytest.mark.parametrize(
    ("datatype", "data", "found"),
    [
        ("FP32", ["1.5", 2.0], "string"),
        ("FP32", [True, 2.0], "boolean"),
        ("FP16", [None, 2.0], "null"),
        ("FP64", [{"a": 1}, 2.0], "object"),
        ("INT64", [1, "2"], "string"),
        ("INT32", [1, False], "boolean"),
        ("UINT8", [1, 2.5], "float"),
        ("BOOL", [1, 0], "integer"),
        ("BOOL", ["true", False], "string"),
        ("BYTES", ["a", 1], "integer"),
        ("BYTES", ["a", True], "boolean"),
    ],
)
def test_json_data_of_the_wrong_type_is_refused(datatype: str, data: list, found: str) -> None:
    body, sig = _typed_request(datatype, data)
    with pytest.raises(ProtocolError) as info:
        decode_infer_request(body, None, sig)
    assert f"input 'x': data does not convert to {datatype}" in str(info.value)
    assert f"found {found}" in str(info.value)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("FP32", [1, 2.5]),
        ("INT8", [-3, 4]),
        ("BOOL", [True, False]),
        ("BYTES", ["a", "é"]),
        ("FP16", [[1, 2]]),
    ],
)
def test_json_data_of_the_right_type_decodes(datatype: str, data: list) -> None:
    body, sig = _typed_request(datatype, data)
    flat = data[0] if isinstance(data[0], list) else data
    got = decode_infer_request(body, None, sig).inputs["x"]
    expected = [x.encode() for x in flat] if datatype == "BYTES" else flat
    assert got.shape == (1, 2) and got.ravel().tolist() == expected


def test_deep_or_ragged_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="nested too deeply"):
        decode_infer_request(b"[" * 100_000, None, SIG)
    body, sig = _typed_request("FP32", [[[1.0, 2.0]]])  # rank 2, nested 3 deep
    with pytest.raises(ProtocolError, match="nested deeper than its shape"):
        decode_infer_request(body, None, sig)
    body, sig = _typed_request("FP32", [[1.0], 2.0])
    with pytest.raises(ProtocolError, match="mixes nested lists and values"):
        decode_infer_request(body, None, sig)


def test_accept_encoding_parsing() -> None:
    assert parse_accept_encoding("gzip;q=0.5, DEFLATE, br;q=x") == {"gzip": 0.5, "deflate": 1.0, "br": 0.0}
    assert choose_encoding(None) is None and choose_encoding("") is None
    assert choose_encoding("gzip;q=0") is None
    assert choose_encoding("gzip;q=0.1, deflate;q=0.5") == ContentCoding.deflate
    assert choose_encoding("*;q=0.3, gzip;q=0") == ContentCoding.deflate
    assert choose_encoding("identity;q=1, gzip;q=0.9") is None
    assert choose_encoding("gzip;q=2") is None  # out of range: not acceptable


def test_image_size_rule_from_manifests_old_and_new() -> None:
    assert ImageSizeRule.from_manifest({}) == ImageSizeRule()
    assert ImageSizeRule.from_manifest({"preprocess": None}) == ImageSizeRule()
    rule = ImageSizeRule.from_manifest({"preprocess": {"kind": "letterbox", "stride": 32, "min_size": 64}})
    assert rule == ImageSizeRule(stride=32, min_size=64)
    assert ImageSizeRule.from_manifest({"preprocess": {"stride": "32", "min_size": True}}) == ImageSizeRule()
    rule.check("images", 64, 96)
    with pytest.raises(ProtocolError, match=r"must be multiples of 32 for this model; .* e.g. 96x128"):
        rule.check("images", 65, 100)
    with pytest.raises(ProtocolError, match="must be at least 64"):
        rule.check("images", 32, 64)


def test_binary_data_flags_must_be_booleans() -> None:
    entry = {"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}
    body = json.dumps({"inputs": [entry], "parameters": {"binary_data_output": "false"}}).encode()
    with pytest.raises(ProtocolError, match="binary_data_output must be true or false, got 'false'"):
        decode_infer_request(body, None, SIG)
    body = json.dumps({"inputs": [entry], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]})
    with pytest.raises(ProtocolError, match="output 'label' parameters: binary_data must be true or false"):
        decode_infer_request(body.encode(), None, SIG)


def test_json_the_parser_refuses_and_ids_that_are_not_strings() -> None:
    with pytest.raises(ProtocolError, match=r"malformed JSON .* Exceeds the limit"):
        decode_infer_request(b'{"inputs": [' + b"1" * 5000 + b"]}", None, SIG)
    body, sig = _typed_request("BYTES", ["ok", "\ud800"])  # a lone surrogate is no UTF-8 text
    with pytest.raises(ProtocolError, match="data does not convert to BYTES"):
        decode_infer_request(body, None, sig)
    entry = {"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.0] * 48}
    with pytest.raises(ProtocolError, match='"id" must be a string, got 7'):
        decode_infer_request(json.dumps({"id": 7, "inputs": [entry]}).encode(), None, SIG)
    assert decode_infer_request(json.dumps({"id": "7", "inputs": [entry]}).encode(), None, SIG).id == "7"
