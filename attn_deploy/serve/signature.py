"""The tensor signature of an ONNX model as the server and Triton see it: names, v2 datatypes, dims."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from attn_deploy.errors import InputError
from attn_deploy.serve.dtypes import v2_datatype_of_onnx

DYNAMIC = -1  # a dimension the model accepts at any size (Triton writes it as -1 too)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: ``shape`` holds ints, ``DYNAMIC`` (-1) for dynamic dimensions."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, object]:
        """The KServe v2 ``$metadata_tensor`` object."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """True when ``shape`` has this tensor's rank and matches every static dimension."""
        return len(shape) == len(self.shape) and all(
            want in (DYNAMIC, got) for want, got in zip(self.shape, shape, strict=True)
        )


@dataclass(frozen=True)
class ModelSignature:
    """The inputs and outputs of a model, in graph order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def dynamic_batch(self) -> bool:
        """True when every input and output has a dynamic leading (batch) dimension."""
        tensors = self.inputs + self.outputs
        return bool(tensors) and all(t.shape and t.shape[0] == DYNAMIC for t in tensors)

    def input(self, name: str) -> TensorSpec | None:
        """The input called ``name``, or None."""
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        """The output called ``name``, or None."""
        return next((t for t in self.outputs if t.name == name), None)


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else DYNAMIC for d in tensor_type.shape.dim
    )
    return TensorSpec(value.name, v2_datatype_of_onnx(tensor_type.elem_type), dims)


def read_signature(onnx_path: str | Path) -> ModelSignature:
    """Read the graph inputs (initializers excluded) and outputs of an ONNX file, without its weights."""
    path = Path(onnx_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for unreadable files
        raise InputError(f"cannot read ONNX model {path}: {exc}; re-export the artifact") from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    try:
        inputs = tuple(_tensor_spec(v) for v in graph.input if v.name not in initializers)
        outputs = tuple(_tensor_spec(v) for v in graph.output)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; the server supports numeric and string tensors") from exc
    return ModelSignature(inputs, outputs)


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    """Number of elements of a concrete shape."""
    return math.prod(shape)
