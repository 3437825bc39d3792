"""What ONNX Runtime actually runs: the op histogram of its optimised graph (``bench --explain``).

ORT rewrites a graph when it creates a session (fusions, the NCHWc blocked layout with its ``ReorderInput`` /
``ReorderOutput`` copies); ``SessionOptions.optimized_model_filepath`` saves the result. Counting its ops shows
where an attention module breaks the blocked-layout chain (reorders), materialises a tensor (``Expand``) or keeps
a residual ``Add``/``Relu`` out of the convolution it would otherwise be fused into. The saved graph is
specific to this machine's CPU (ORT warns so): it is counted, never shipped.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort

from attn_deploy.backends.ort_nchwc import fuse_blocked_gates, shapes_of
from attn_deploy.errors import InputError, exception_summary
from attn_deploy.fsutil import scratch_dir

DOMAIN_PREFIX = {"": "", "ai.onnx": "", "com.microsoft": "ms:", "com.microsoft.nchwc": "nchwc:"}
EXPLAIN_COLUMNS = {
    "NCHWc Conv": ("nchwc:Conv",),
    "reorders": ("nchwc:ReorderInput", "nchwc:ReorderOutput"),
    "Expand": ("Expand",),
    "unfused Add": ("Add",),
    "unfused Relu": ("Relu",),
    "Mul": ("Mul",),
}
"""The explain table's columns and the ops each counts (an ``Add``/``Relu`` left in the optimised graph is one
ORT did not fuse into a convolution)."""


def histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op counts of a graph, most frequent first, with ORT's domains as short prefixes (``nchwc:Conv``)."""
    counts = Counter(
        DOMAIN_PREFIX.get(node.domain, f"{node.domain}:") + node.op_type for node in model.graph.node
    )
    return dict(counts.most_common())


def optimized_graph(path: str | os.PathLike[str], blocked_gates: bool = True) -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU provider runs for ``path`` (all optimisations on, as the benchmark runs it),
    with the channel gates :func:`attn_deploy.backends.ort.make_session` moves into the blocked layout
    (``blocked_gates``; the session also checks that rewrite on one input, which this count does not)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the "hardware specific" warning of saving an NCHWc graph is expected
    with scratch_dir("attn-deploy-explain-") as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types for unreadable graphs
            raise InputError(f"ONNX Runtime cannot load {path}: {exception_summary(exc)}") from None
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    if blocked_gates:
        fuse_blocked_gates(optimized, shapes_of(onnx.load(str(path), load_external_data=False)))
    return optimized


def optimized_op_histogram(path: str | os.PathLike[str]) -> dict[str, int]:
    """:func:`histogram` of :func:`optimized_graph`."""
    return histogram(optimized_graph(path))


def explain_counts(ops: dict[str, int]) -> dict[str, int]:
    """The explain columns from a histogram, and ``nodes`` (all ops)."""
    counts = {column: sum(ops.get(op, 0) for op in names) for column, names in EXPLAIN_COLUMNS.items()}
    return {**counts, "nodes": sum(ops.values())}
