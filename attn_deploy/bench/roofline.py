"""Roofline: how far a model's achieved GFLOP/s is from this machine's measured GEMM peak.

Peaks are measured once per benchmark run, with the run's thread count, by the fastest of repeated square GEMMs:

* FP32: ONNX Runtime ``MatMul`` (MLAS SGEMM, the kernel family ORT's convolutions run on);
* INT8: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32), the kernel ORT's quantized convolutions use
  (MLAS). On AVX2 without VNNI it multiplies with ``vpmaddubsw`` and its peak is what INT8 can reach here.

ORT's thread pool, not PyTorch's: on a shared machine PyTorch's OpenMP team at 2 threads measured 1-15 GFLOP/s
against 88 at 1 thread (its threads wait for each other on busy cores), which is no peak at all.

A model's achieved rate is its FLOPs (FlopCounterMode: convolutions and matmuls only, 2 per multiply-add) over
its p50 latency. Elementwise work is not counted, so a graph dominated by it shows a low percentage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from attn_deploy.backends.ort import make_session

PEAK_SIZE = 384
"""Square GEMM size of the probes (2 x 384^3 = 0.11 GFLOP per call: about a millisecond, cache-resident)."""
PEAK_SECONDS = 0.4
"""Each probe repeats its GEMM for this long and keeps the fastest call: on a shared machine most calls are
slowed by other processes, the fastest one is the closest to what the cores can do."""


def _best_gflops(call: Callable[[], object], flops: float, seconds: float) -> float:
    call()  # warm-up: packing buffers, thread pool
    best, started, calls = float("inf"), time.perf_counter(), 0
    while calls < 5 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return flops / best / 1e9


def gemm_model(n: int, int8: bool) -> onnx.ModelProto:
    """A one-node GEMM graph with constant (n, n) weights: ``MatMul`` in FP32, or ``MatMulInteger``
    (uint8 activations x int8 weights -> int32)."""
    rng = np.random.default_rng(0)
    if int8:
        values = rng.integers(-64, 64, (n, n), dtype=np.int8)
        kind, in_type, out_type, op = TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32, "MatMulInteger"
    else:
        values = rng.standard_normal((n, n)).astype(np.float32)
        kind, in_type, out_type, op = TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    weight = helper.make_tensor("w", kind, [n, n], values.tobytes(), raw=True)
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])],
        "gemm_probe",
        [helper.make_tensor_value_info("a", in_type, [n, n])],
        [helper.make_tensor_value_info("y", out_type, [n, n])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def gemm_peak(threads: int, int8: bool, n: int = PEAK_SIZE, seconds: float = PEAK_SECONDS) -> float:
    """The fastest ONNX Runtime GEMM over ``seconds`` at ``threads`` threads, in GFLOP/s (GOP/s for INT8)."""
    session = make_session(gemm_model(n, int8).SerializeToString(), threads=threads)
    rng = np.random.default_rng(1)
    a = (
        rng.integers(0, 255, (n, n), dtype=np.uint8)
        if int8
        else rng.standard_normal((n, n)).astype(np.float32)
    )
    return _best_gflops(lambda: session.run(None, {"a": a}), 2.0 * n**3, seconds)


def measure_peaks(threads: int) -> dict[str, float]:
    """``{"fp32": SGEMM GFLOP/s, "int8": MatMulInteger GOP/s}`` at ``threads`` threads."""
    return {"fp32": gemm_peak(threads, int8=False), "int8": gemm_peak(threads, int8=True)}


def achieved(gflops: float | None, p50_ms: float) -> float | None:
    """GFLOP/s achieved by one forward pass of ``gflops`` in ``p50_ms`` milliseconds."""
    return gflops / (p50_ms / 1000.0) if gflops and p50_ms > 0 else None


def peak_for(precision: str, peaks: dict[str, float]) -> float | None:
    """The peak a target is measured against: the INT8 GEMM for int8 graphs, SGEMM otherwise (ORT's CPU
    provider runs FP16 graphs largely through FP32 kernels)."""
    return peaks.get("int8" if precision == "int8" else "fp32")
