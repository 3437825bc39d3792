"""Graph statistics: op histograms and tensor signatures."""

from __future__ import annotations

from collections import Counter

import onnx


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each op type in the main graph and its subgraphs, most frequent first."""
    counts: Counter[str] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    return dict(counts.most_common())


def value_signature(value: onnx.ValueInfoProto) -> dict:
    """``{"name", "dtype", "shape"}`` with an int per static dim and a name (string) per dynamic one."""
    tensor = value.type.tensor_type
    dims: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return {"name": value.name, "dtype": dtype, "shape": dims}


def graph_signature(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """Signatures of the graph inputs (initializers excluded) and outputs."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [value_signature(v) for v in model.graph.input if v.name not in initializers]
    outputs = [value_signature(v) for v in model.graph.output]
    return inputs, outputs
