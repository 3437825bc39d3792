"""Latency statistics and the interleaved timing loop.

Backends are timed in ONE process, round-robin: iteration ``i`` calls every backend once (the starting
backend rotates each iteration, so none always runs right after the same neighbour). Drift in clock speed,
load from other processes or thermal state then hits every backend alike, and ratios taken from the same
run stay comparable even on a noisy machine. Warm-up is by time (and at least two calls per backend).

Between calls the loop sleeps ``settle_s`` (5 ms): worker threads that spin-wait after a run (ONNX Runtime's
intra-op pool, PyTorch's OpenMP team) park before the next backend starts, instead of competing with it for
the same cores. Each backend keeps its default threading; only the leak from one backend into the next goes.

A timed call may return a GPU compute time in milliseconds (CUDA events around the device work only);
the loop always measures end-to-end wall time itself with ``time.perf_counter``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from attn_deploy.errors import ConfigError

SETTLE_S = 0.005
"""Pause between timed calls so threads spinning after one backend's run do not steal the next one's cores."""
MIN_WARMUP_ROUNDS = 2
"""Warm-up calls per backend at least (first calls build kernels, caches and memory arenas)."""
CV_WARN = 0.10
"""Coefficient of variation (std / mean) above which a measurement is flagged as noisy."""

TimedCall = Callable[[], "float | None"]
"""One inference; returns the GPU compute time in ms when it measures one, else ``None``."""


def percentile(samples: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if len(samples) == 0:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one backend's latencies in milliseconds."""

    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Statistics of ``samples_ms`` (sample standard deviation, ddof=1; 0 for a single sample)."""
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no latency samples")
        return cls(
            runs=int(values.size),
            mean_ms=float(values.mean()),
            std_ms=float(values.std(ddof=1)) if values.size > 1 else 0.0,
            min_ms=float(values.min()),
            p50_ms=percentile(values, 50),
            p90_ms=percentile(values, 90),
            p99_ms=percentile(values, 99),
        )

    @property
    def cv(self) -> float:
        """Coefficient of variation: std / mean."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else math.nan

    @property
    def noisy(self) -> bool:
        """True when the coefficient of variation exceeds :data:`CV_WARN`."""
        return self.cv > CV_WARN

    def fps(self, batch: int) -> float:
        """Images per second at the median latency: ``batch / p50``."""
        return batch * 1000.0 / self.p50_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict, with ``cv``."""
        return {**asdict(self), "cv": self.cv}


MEDIAN_SE = math.sqrt(math.pi / 2)
"""Standard error of a sample median relative to that of the mean, for normal samples."""


def p50_ratio_margin(a: LatencyStats, b: LatencyStats) -> float:
    """Two standard errors of ``a.p50 / b.p50`` as a fraction (0.02 = 2%): differences within it are noise."""
    return 2.0 * MEDIAN_SE * math.sqrt(a.cv**2 / a.runs + b.cv**2 / b.runs)


def interleaved_order(names: Sequence[str], iterations: int) -> list[list[str]]:
    """Call order per iteration: every name once, the first one rotating (``[a,b,c], [b,c,a], ...``)."""
    n = len(names)
    return [[names[(i + j) % n] for j in range(n)] for i in range(iterations)] if n else []


@dataclass
class Samples:
    """Raw samples of one backend: end-to-end wall times and, when measured, GPU compute times (ms)."""

    wall_ms: list[float]
    gpu_ms: list[float]


def time_interleaved(
    calls: Mapping[str, TimedCall],
    *,
    runs: int,
    warmup_s: float = 2.0,
    settle_s: float = SETTLE_S,
    on_call: Callable[[str, bool], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Samples]:
    """Warm up for ``warmup_s`` seconds (at least two rounds), then time ``runs`` interleaved iterations.

    ``settle_s`` is slept (untimed) before every call. ``on_call(name, warming_up)`` runs after each call
    (progress display). Returns raw samples per name.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    names = list(calls)
    started, rounds = clock(), 0
    while rounds < MIN_WARMUP_ROUNDS or clock() - started < warmup_s:
        for name in interleaved_order(names, rounds + 1)[rounds]:
            sleep(settle_s)
            calls[name]()
            if on_call:
                on_call(name, True)
        rounds += 1
    samples = {name: Samples([], []) for name in names}
    for order in interleaved_order(names, runs):
        for name in order:
            sleep(settle_s)
            t0 = clock()
            gpu_ms = calls[name]()
            samples[name].wall_ms.append((clock() - t0) * 1000.0)
            if gpu_ms is not None:
                samples[name].gpu_ms.append(float(gpu_ms))
            if on_call:
                on_call(name, False)
    return samples


def physical_cores(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> int:
    """Physical CPU cores available to this process (hyper-threads not counted), at least 1.

    Counts distinct (physical id, core id) pairs in ``cpuinfo`` among the CPUs this process may run on;
    falls back to the number of usable CPUs where that file is missing or lacks the fields.
    """
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open(cpuinfo, encoding="utf-8") as fh:
            blocks = fh.read().strip().split("\n\n")
    except OSError:
        blocks = []
    for block in blocks:
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines())
        )
        if "processor" in fields and int(fields["processor"]) in usable and "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, len(cores) or len(usable))


def fix_threads(threads: int | None) -> int:
    """Fix PyTorch's intra-op thread count to ``threads`` (default: physical cores); return the count.

    ONNX Runtime sessions take the same number as ``intra_op_num_threads`` (see ``targets.py``).
    """
    count = physical_cores() if threads is None else threads
    if count < 1:
        raise ConfigError(f"--threads must be >= 1, got {count}")
    torch.set_num_threads(count)
    return count
