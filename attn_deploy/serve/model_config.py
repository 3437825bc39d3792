"""Triton model configuration of a served model: one dict, shown as JSON by the server's
``/v2/models/{m}/config`` and written as ``config.pbtxt`` by the repository writer.

Field names and layout follow Triton's ``ModelConfig`` protobuf (triton-inference-server/common
``protobuf/model_config.proto``) and the guide docs/user_guide/model_configuration.md: with
``max_batch_size > 0`` the dims exclude the batch dimension; -1 marks a dynamic dimension. The TensorRT
accelerator block for the ONNX Runtime backend follows triton-inference-server/onnxruntime_backend
README, "ONNX Runtime with TensorRT optimization":
``optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt"
parameters { key: "precision_mode" value: "FP16" } } ] } }`` (precision_mode: FP32, FP16 or INT8).
"""

from __future__ import annotations

import json
from typing import Any

from attn_deploy.serve.dtypes import triton_config_type
from attn_deploy.serve.signature import ModelSignature, TensorSpec

ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
TRT_PRECISIONS = ("fp32", "fp16", "int8")

_ENUM_FIELDS = frozenset({"data_type", "kind", "format"})  # protobuf enums: written unquoted in pbtxt
_MAP_FIELDS = frozenset({"parameters"})  # map<string, string>: repeated { key value } entries in pbtxt


def _tensor_config(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {"name": spec.name, "data_type": triton_config_type(spec.datatype), "dims": dims}


def build_model_config(
    name: str,
    signature: ModelSignature,
    *,
    platform: str = ONNX_PLATFORM,
    max_batch_size: int = 0,
    max_queue_delay_us: int = 0,
    trt_precision: str | None = None,
) -> dict[str, Any]:
    """Triton ``ModelConfig`` as a dict (protobuf JSON field names).

    ``max_batch_size > 0`` declares batching (the model must have a dynamic batch dimension) and adds
    ``dynamic_batching``; ``trt_precision`` (fp32/fp16/int8) adds the ONNX Runtime TensorRT accelerator.
    """
    batched = max_batch_size > 0
    if batched and not signature.dynamic_batch:
        raise ValueError(f"model '{name}' has a static batch dimension; it cannot have max_batch_size > 0")
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "max_batch_size": max_batch_size if batched else 0,
        "input": [_tensor_config(t, batched) for t in signature.inputs],
        "output": [_tensor_config(t, batched) for t in signature.outputs],
    }
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    if trt_precision is not None:
        if trt_precision not in TRT_PRECISIONS:
            raise ValueError(f"TensorRT precision must be one of {TRT_PRECISIONS}, got {trt_precision!r}")
        accelerator = {"name": "tensorrt", "parameters": {"precision_mode": trt_precision.upper()}}
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    return config


def to_pbtxt(config: dict[str, Any]) -> str:
    """Render a config dict in protobuf text format (the ``config.pbtxt`` Triton reads)."""
    return "".join(_pbtxt_fields(config, indent=0))


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if key in _ENUM_FIELDS:
        return str(value)
    return json.dumps(str(value))  # a valid protobuf text string literal for printable text


def _pbtxt_fields(message: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if key in _MAP_FIELDS:
            for k, v in value.items():
                lines.append(f"{pad}{key} {{ key: {json.dumps(k)} value: {json.dumps(str(v))} }}\n")
        elif isinstance(value, dict):
            lines += [f"{pad}{key} {{\n", *_pbtxt_fields(value, indent + 1), f"{pad}}}\n"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [\n")
            for i, item in enumerate(value):
                sep = "," if i < len(value) - 1 else ""
                lines += [f"{pad}  {{\n", *_pbtxt_fields(item, indent + 2), f"{pad}  }}{sep}\n"]
            lines.append(f"{pad}]\n")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}\n")
    return lines
