"""KServe v2 inference request/response bodies, with Triton's binary tensor data extension.

Request: a JSON object, optionally followed by the raw bytes of the inputs whose ``parameters``
carry ``binary_data_size``; the ``Inference-Header-Content-Length`` HTTP header then gives the JSON
part's length. Outputs come back as binary when their requested ``parameters.binary_data`` is true,
or, for outputs that do not say, when the request's ``parameters.binary_data_output`` is true; the
response then carries the same header. Binary tensors are little-endian, row major, no padding;
BOOL is one byte per element; a BYTES element is a 4-byte little-endian length followed by the bytes.
Source: Triton "Binary Tensor Data Extension"
(https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_binary_data.html)
and the KServe copy (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol/
binary-tensor-data-extension). tritonclient 2.73 (``tritonclient/http/_utils.py``
``_get_inference_request``) sends ``binary_data_output: true`` when no outputs are named, and its
``InferResult`` reads ``parameters.binary_data_size`` of each output in order to slice the tail.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from attn_deploy.errors import InputError
from attn_deploy.serve.dtypes import numpy_dtype, v2_datatype_of_numpy
from attn_deploy.serve.signature import ModelSignature, TensorSpec, element_count

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_TENSOR_BYTES = 2**62
"""No tensor may be larger than this (numpy's own limit is 2**63 - 1 bytes, empty arrays included)."""

_JSON_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "float",
    type(None): "null",
    dict: "object",
    list: "array",
}


class ProtocolError(InputError):
    """An inference request the server cannot accept; answered with ``status`` (400 unless overridden)."""

    status = 400


class PayloadTooLargeError(ProtocolError):
    """The request body is over the server's size limit (HTTP 413)."""

    status = 413


class RequestTimeoutError(ProtocolError):
    """The client did not send the request body in time (HTTP 408)."""

    status = 408


class UnsupportedMediaTypeError(ProtocolError):
    """The request body is in a format the server does not read (HTTP 415)."""

    status = 415


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded, validated inference request: numpy inputs by name and the outputs to return."""

    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    id: str | None = None


def error_body(message: str) -> bytes:
    """The v2 error object ``{"error": message}`` as bytes."""
    return json.dumps({"error": message}).encode()


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int (None when absent)."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if length < 0:
        raise ProtocolError(f"{HEADER_LENGTH} must be >= 0, got {length}")
    return length


def decode_infer_request(body: bytes, header_length: int | None, signature: ModelSignature) -> InferRequest:
    """Parse and validate an inference request body against the model ``signature``.

    Raises ProtocolError with a one-line message for anything the model cannot take: malformed JSON,
    unknown or missing inputs, wrong datatype, rank or static dimension, data that does not fill the
    shape, and binary sizes that do not add up to the bytes after the JSON header.
    """
    if header_length is None:
        header_length = len(body)
    if header_length > len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {header_length} but the body has only {len(body)} bytes")
    header = _parse_json_object(body[:header_length])
    tail = memoryview(body)[header_length:]
    inputs_json = header.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise ProtocolError('inference request needs a non-empty "inputs" list')

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in inputs_json:
        spec, shape, params = _check_input_header(item, signature)
        if spec.name in inputs:
            raise ProtocolError(f"input '{spec.name}' appears twice in the request")
        if "data" not in item and "binary_data_size" not in params:
            if "shared_memory_region" in params:
                raise ProtocolError(f"input '{spec.name}': shared memory is not supported by this server")
            raise ProtocolError(f"input '{spec.name}' has neither \"data\" nor parameters.binary_data_size")
        if element_count(shape) > len(body):
            raise ProtocolError(
                f"input '{spec.name}' has shape {list(shape)} of {element_count(shape)} elements, "
                f"more than the {len(body)}-byte request can carry"
            )
        if "binary_data_size" in params:
            if "data" in item:
                raise ProtocolError(f"input '{spec.name}' has both JSON data and binary_data_size")
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input '{spec.name}': binary_data_size must be an integer >= 0")
            if offset + size > len(tail):
                raise ProtocolError(
                    f"binary_data_size of the inputs up to '{spec.name}' adds up to {offset + size} bytes, "
                    f"but only {len(tail)} bytes follow the JSON header"
                )
            inputs[spec.name] = _array_from_binary(tail[offset : offset + size], spec, shape)
            offset += size
        else:
            inputs[spec.name] = _array_from_json(item["data"], spec, shape)
    if offset != len(tail):
        raise ProtocolError(
            f"{len(tail)} bytes follow the JSON header but the inputs' binary_data_size add up to {offset}"
        )
    missing = [t.name for t in signature.inputs if t.name not in inputs]
    if missing:
        raise ProtocolError(f"missing input(s) {', '.join(missing)}; the model needs all of its inputs")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f'the request "id" must be a string, got {_clip(request_id)}')
    return InferRequest(inputs=inputs, outputs=_requested_outputs(header, signature), id=request_id)


def encode_infer_response(
    model_name: str,
    model_version: str,
    outputs: dict[str, np.ndarray],
    requested: list[RequestedOutput],
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """Build the response body; returns ``(body, header_length)``, header_length None for pure JSON."""
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for want in requested:
        array = outputs[want.name]
        datatype = v2_datatype_of_numpy(array.dtype)
        entry: dict[str, Any] = {"name": want.name, "datatype": datatype, "shape": list(array.shape)}
        if want.binary:
            raw = tensor_to_bytes(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array, datatype)
        entries.append(entry)
    response["outputs"] = entries
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def tensor_to_bytes(array: np.ndarray, datatype: str) -> bytes:
    """Raw binary-extension bytes of ``array`` (BYTES elements length-prefixed)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in map(_as_bytes, array.ravel()))
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()


def tensor_from_bytes(raw: bytes | memoryview, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``tensor_to_bytes``; ValueError when ``raw`` does not hold exactly ``shape``."""
    count = element_count(shape)
    if datatype == "BYTES":
        elements = list(_split_bytes_elements(raw))
        if len(elements) != count:
            raise ValueError(f"holds {len(elements)} BYTES elements, shape {list(shape)} needs {count}")
        out = np.empty(count, dtype=object)
        out[:] = elements
        return out.reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise ValueError(
            f"is {len(raw)} bytes, shape {list(shape)} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _parse_json_object(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers over 4300 digits
        raise ProtocolError(f"malformed JSON in the inference request: {str(exc)[:200]}") from None
    except RecursionError:
        raise ProtocolError(
            "the inference request's JSON is nested too deeply; send tensor data as a flat list"
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError("the inference request must be a JSON object")
    return header


def _check_input_header(item: Any, signature: ModelSignature) -> tuple[TensorSpec, tuple[int, ...], dict]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError('each request input must be an object with a "name"')
    name = item["name"]
    spec = signature.input(name)
    if spec is None:
        expected = ", ".join(t.name for t in signature.inputs)
        raise ProtocolError(f"unknown input '{name}'; the model's inputs are: {expected}")
    datatype = item.get("datatype")
    if datatype != spec.datatype:
        raise ProtocolError(f"input '{name}' has datatype {datatype!r}, the model expects {spec.datatype}")
    raw_shape = item.get("shape")
    if not isinstance(raw_shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw_shape
    ):
        raise ProtocolError(f"input '{name}': shape must be a list of integers >= 0, got {_clip(raw_shape)}")
    shape = tuple(raw_shape)
    itemsize = numpy_dtype(spec.datatype).itemsize
    if len(shape) > len(spec.shape) or math.prod(max(d, 1) for d in shape) * itemsize > MAX_TENSOR_BYTES:
        raise ProtocolError(
            f"input '{name}' has shape {_clip(raw_shape)}, the model expects {list(spec.shape)} (-1 = any size)"
        )
    if not spec.accepts_shape(shape):
        raise ProtocolError(
            f"input '{name}' has shape {list(shape)}, the model expects {list(spec.shape)} (-1 = any size)"
        )
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"input '{name}': parameters must be an object")
    return spec, shape, params


def _array_from_binary(raw: memoryview, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return tensor_from_bytes(raw, spec.datatype, shape)
    except ValueError as exc:
        raise ProtocolError(f"input '{spec.name}': binary data {exc}") from None


def _array_from_json(data: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    count = element_count(shape)
    flat = _flatten(data, spec.name, shape)
    if len(flat) != count:
        raise ProtocolError(
            f"input '{spec.name}' has {len(flat)} data elements, shape {list(shape)} needs {count}"
        )
    _check_json_types(flat, spec)
    try:
        if spec.datatype == "BYTES":
            array = np.empty(len(flat), dtype=object)
            array[:] = [x.encode("utf-8") for x in flat]
        else:
            array = np.asarray(flat, dtype=numpy_dtype(spec.datatype))
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError) as exc:
        raise ProtocolError(f"input '{spec.name}': data does not convert to {spec.datatype}: {exc}") from None
    return array.reshape(shape)


def _check_json_types(flat: list[Any], spec: TensorSpec) -> None:
    """JSON element types must fit the datatype, as Triton checks: no strings as numbers, no 1 as true."""
    datatype = spec.datatype
    if datatype == "BYTES":
        allowed: tuple[type, ...] = (str,)
    elif datatype == "BOOL":
        allowed = (bool,)
    elif datatype.startswith("FP"):
        allowed = (int, float)
    else:  # INT* / UINT*
        allowed = (int,)
    wrong = set(map(type, flat)).difference(allowed)
    if wrong:
        found = ", ".join(sorted(_JSON_TYPE_NAMES.get(t, t.__name__) for t in wrong))
        takes = " or ".join(_JSON_TYPE_NAMES[t] for t in allowed)
        raise ProtocolError(
            f"input '{spec.name}': data does not convert to {datatype}: JSON data of a {datatype} tensor "
            f"takes {takes} values, found {found}"
        )


def _clip(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _requested_outputs(header: dict[str, Any], signature: ModelSignature) -> list[RequestedOutput]:
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("request parameters must be an object")
    binary_default = _flag(params, "binary_data_output", False, "request parameters")
    outputs_json = header.get("outputs")
    if outputs_json is None:
        return [RequestedOutput(t.name, binary_default) for t in signature.outputs]
    if not isinstance(outputs_json, list):
        raise ProtocolError('"outputs" must be a list of objects with a "name"')
    requested = []
    for item in outputs_json:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError('each requested output must be an object with a "name"')
        if signature.output(item["name"]) is None:
            expected = ", ".join(t.name for t in signature.outputs)
            raise ProtocolError(f"unknown output '{item['name']}'; the model's outputs are: {expected}")
        out_params = item.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise ProtocolError(f"output '{item['name']}': parameters must be an object")
        if "classification" in out_params or "shared_memory_region" in out_params:
            raise ProtocolError(
                f"output '{item['name']}': classification and shared memory are not supported"
            )
        binary = _flag(out_params, "binary_data", binary_default, f"output '{item['name']}' parameters")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: {key} must be true or false, got {_clip(value)}")
    return value


def _json_data(array: np.ndarray, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        return [_as_bytes(x).decode("utf-8", errors="replace") for x in array.ravel()]
    return array.ravel().tolist()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"BYTES elements must be strings, got {type(value).__name__}")


def _flatten(data: Any, name: str, shape: tuple[int, ...]) -> list[Any]:
    """Row-major elements of JSON ``data``: a flat list, or lists nested at most as deep as ``shape``."""
    level = data if isinstance(data, list) else [data]
    depth = 1
    while any(isinstance(x, list) for x in level):
        if depth >= max(len(shape), 1):
            raise ProtocolError(
                f"input '{name}': data is nested deeper than its shape {list(shape)}; "
                "send a flat list or lists nested as the shape"
            )
        if not all(isinstance(x, list) for x in level):
            raise ProtocolError(f"input '{name}': data mixes nested lists and values at one level")
        level = list(itertools.chain.from_iterable(level))
        depth += 1
    return level


def _split_bytes_elements(raw: bytes | memoryview) -> Iterator[bytes]:
    view = memoryview(raw)
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise ValueError("ends inside a BYTES length prefix")
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + length > len(view):
            raise ValueError("has a BYTES element running past its end")
        yield bytes(view[pos : pos + length])
        pos += length
