"""Per-model inference counters, exposed in Prometheus text format under Triton's metric names.

Names, meanings and labels follow Triton's "Metrics" guide, "Inference Request Metrics"
(https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/user_guide/metrics.html):
request counts are per request, ``nv_inference_count`` counts batch items and
``nv_inference_exec_count`` model executions, so count / exec_count is the average batch size.
Exposition format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (attribute, metric name, help) -- all counters.
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    (
        "request_success",
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
    ),
    (
        "request_failure",
        "nv_inference_request_failure",
        "Number of failed inference requests, all batch sizes",
    ),
    ("inference_count", "nv_inference_count", "Number of inferences performed (batch items)"),
    ("exec_count", "nv_inference_exec_count", "Number of model executions performed"),
    (
        "request_duration_us",
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds",
    ),
    (
        "queue_duration_us",
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
    ),
    (
        "compute_infer_duration_us",
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds",
    ),
)


@dataclass
class ModelMetrics:
    """Counters of one model version; safe to update from any thread."""

    model: str
    version: str = "1"
    request_success: int = 0
    request_failure: int = 0
    inference_count: int = 0
    exec_count: int = 0
    request_duration_us: int = 0
    queue_duration_us: int = 0
    compute_infer_duration_us: int = 0
    pending_requests: int = 0  # a gauge: requests received and not yet answered
    success_duration_us: int = 0  # request_duration_us split by outcome, for the statistics extension
    failure_duration_us: int = 0
    last_inference_ms: int = 0  # milliseconds since the epoch of the last answered request
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_pending(self, delta: int) -> None:
        """A request starts (+1) or ends (-1) waiting for the model."""
        with self._lock:
            self.pending_requests += delta

    def record_success(self, batch_size: int, duration_us: float, queue_us: float) -> None:
        """A request of ``batch_size`` items answered with outputs."""
        with self._lock:
            self.request_success += 1
            self.inference_count += batch_size
            self.request_duration_us += round(duration_us)
            self.success_duration_us += round(duration_us)
            self.queue_duration_us += round(queue_us)
            self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, duration_us: float) -> None:
        """A request for this model answered with an error."""
        with self._lock:
            self.request_failure += 1
            self.request_duration_us += round(duration_us)
            self.failure_duration_us += round(duration_us)
            self.last_inference_ms = int(time.time() * 1000)

    def record_execution(self, compute_us: float) -> None:
        """One model execution (one ORT run, any batch size)."""
        with self._lock:
            self.exec_count += 1
            self.compute_infer_duration_us += round(compute_us)

    def statistics(self) -> dict[str, Any]:
        """The statistics extension's ``$model_stat`` (``GET /v2/models/{m}/stats``, what tritonclient's
        ``get_inference_statistics`` reads): Triton's docs/protocol/extension_statistics.md. Durations are in
        nanoseconds. ``compute_input`` / ``compute_output`` are not timed apart from ``compute_infer`` (ONNX
        Runtime takes and returns host arrays), so they report count 0; ``batch_stats`` is empty."""
        with self._lock:

            def duration(count: int, us: int) -> dict[str, int]:
                return {"count": count, "ns": us * 1000}

            return {
                "name": self.model,
                "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.exec_count,
                "inference_stats": {
                    "success": duration(self.request_success, self.success_duration_us),
                    "fail": duration(self.request_failure, self.failure_duration_us),
                    "queue": duration(self.request_success, self.queue_duration_us),
                    "compute_input": duration(0, 0),
                    "compute_infer": duration(self.exec_count, self.compute_infer_duration_us),
                    "compute_output": duration(0, 0),
                    "cache_hit": duration(0, 0),
                },
                "batch_stats": [],
            }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(m: ModelMetrics) -> str:
    return f'model="{_escape(m.model)}",version="{_escape(m.version)}"'


def render_prometheus(models: Iterable[ModelMetrics]) -> str:
    """Counters and the pending-request gauge of ``models`` as Prometheus text, labelled by model/version."""
    models = list(models)
    lines: list[str] = []
    for attr, name, help_text in _COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for m in models:
            lines.append(f"{name}{{{_labels(m)}}} {getattr(m, attr)}")
    name = "nv_inference_pending_request_count"
    lines += [
        f"# HELP {name} Instantaneous number of pending requests awaiting execution",
        f"# TYPE {name} gauge",
    ]
    lines += [f"{name}{{{_labels(m)}}} {m.pending_requests}" for m in models]
    return "\n".join(lines) + "\n"


_SAMPLE = re.compile(r'^(\w+)\{model="((?:[^"\\]|\\.)*)",version="[^"]*"\} (\S+)$', re.M)


def parse_prometheus(text: str) -> dict[tuple[str, str], float]:
    """Read text written by ``render_prometheus`` back: ``{(metric name, model): value}``."""
    return {(name, model): float(value) for name, model, value in _SAMPLE.findall(text)}


def fetch_metrics(url: str, timeout: float = 30.0) -> dict[tuple[str, str], float]:
    """GET ``http://<url>/metrics`` from a running server (``url`` is ``host:port``) and parse it."""
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=timeout) as response:
        return parse_prometheus(response.read().decode())
