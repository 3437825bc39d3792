"""Read-only views of an ONNX graph for the precision passes: producers, consumers, types, constants."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from attn_deploy.errors import ExportError, InputError, exception_summary

Dim = int | str | None


@dataclass(frozen=True)
class TensorType:
    """Element type (``onnx.TensorProto`` enum) and shape (int, symbolic name or ``None`` per dim; ``None``
    when the rank is unknown)."""

    elem_type: int
    shape: tuple[Dim, ...] | None


class GraphView:
    """Producer/consumer maps, inferred tensor types and constant values of one (shape-inferred) model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            self.model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except onnx.shape_inference.InferenceError as exc:
            raise ExportError(f"ONNX shape inference failed: {exception_summary(exc)}") from None
        graph = self.model.graph
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.types: dict[str, TensorType] = {}
        for vi in (*graph.input, *graph.value_info, *graph.output):
            self.types[vi.name] = _value_info_type(vi)
        for t in graph.initializer:
            self.types[t.name] = TensorType(t.data_type, tuple(t.dims))
        self.graph_outputs = {o.name for o in graph.output}

    def elem_type(self, name: str) -> int:
        """The inferred element type of tensor ``name`` (``UNDEFINED`` when unknown)."""
        tt = self.types.get(name)
        return tt.elem_type if tt else onnx.TensorProto.UNDEFINED

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        """The inferred shape of tensor ``name`` (``None`` when unknown)."""
        tt = self.types.get(name)
        return tt.shape if tt else None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is an initializer or a ``Constant`` node's output, else ``None``."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                return np.asarray(onnx.helper.get_attribute_value(attr))
        return None


def _value_info_type(vi: onnx.ValueInfoProto) -> TensorType:
    tensor_type = vi.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorType(tensor_type.elem_type, None)
    dims: list[Dim] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorType(tensor_type.elem_type, tuple(dims))


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (quantization and policies address nodes by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def load_onnx(path: str) -> onnx.ModelProto:
    """Load an ONNX file; a missing, truncated or non-ONNX file raises a one-line :class:`InputError`."""
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise InputError(f"ONNX file {path} does not exist; export the model first") from None
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        raise InputError(
            f"{path} is not a valid ONNX model ({exception_summary(exc)}); re-export it"
        ) from None
    return model
