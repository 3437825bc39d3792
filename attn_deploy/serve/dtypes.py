"""Data-type names across the three vocabularies the server speaks: KServe v2, ONNX and Triton configs.

KServe v2 / Triton tensor datatypes ("FP32", "INT64", "BYTES", ...) are listed in the Open Inference
Protocol's "Tensor Data Types" table (https://kserve.github.io/website/docs/concepts/architecture/
data-plane/v2-protocol); Triton's model configuration spells the same types ``TYPE_FP32`` etc.
(``TYPE_STRING`` for BYTES), see triton-inference-server/server docs/user_guide/model_configuration.md.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

# v2 datatype -> numpy dtype (little-endian: the binary extension is little-endian, row major).
_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

_ONNX_TO_V2: dict[int, str] = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}

V2_DATATYPES: tuple[str, ...] = tuple(_V2_TO_NUMPY)


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a v2 datatype name ("FP32" -> float32). KeyError for unknown names."""
    return _V2_TO_NUMPY[datatype]


def v2_datatype_of_numpy(dtype: np.dtype) -> str:
    """The v2 datatype name of a numpy dtype (float32 -> "FP32"); ValueError when it has none."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    for name, candidate in _V2_TO_NUMPY.items():
        if candidate == dtype.newbyteorder("<") or candidate == dtype:
            return name
    raise ValueError(f"numpy dtype {dtype} has no KServe v2 datatype")


def v2_datatype_of_onnx(elem_type: int) -> str:
    """The v2 datatype name of an ONNX ``TensorProto`` element type; ValueError when unsupported."""
    try:
        return _ONNX_TO_V2[elem_type]
    except KeyError:
        name = TensorProto.DataType.Name(elem_type)
        raise ValueError(f"ONNX element type {name} has no KServe v2 datatype") from None


def triton_config_type(datatype: str) -> str:
    """Triton model-config type of a v2 datatype ("FP32" -> "TYPE_FP32", "BYTES" -> "TYPE_STRING")."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
