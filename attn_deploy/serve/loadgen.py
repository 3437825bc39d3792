"""Closed-loop load against a v2 server with the official tritonclient[http] client: N client threads,
each sending its own requests one after another. Used by the load test and benchmarks/serve_load.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from attn_deploy.errors import ConfigError

Feed = Mapping[str, np.ndarray]


@dataclass
class LoadResult:
    """What a load run measured; ``outputs[c][r]`` is client c's r-th response (None on error)."""

    seconds: float
    latencies_ms: list[float]
    errors: list[str]
    outputs: list[list[dict[str, np.ndarray] | None]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests answered without error."""
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the whole run."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def latency_percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def run_load(
    url: str, model: str, inputs: Sequence[Sequence[Feed]], *, keep_outputs: bool = False
) -> LoadResult:
    """One client thread per entry of ``inputs`` (its requests, in order) against ``url`` (host:port).

    All clients start together; binary tensors both ways. ``keep_outputs`` stores every response.
    """
    try:  # optional: tritonclient is an extra, needed only for load generation
        import tritonclient.http as httpclient
        from tritonclient.utils import np_to_triton_dtype
    except ImportError:
        raise ConfigError("load generation needs tritonclient: pip install 'tritonclient[http]'") from None
    began: list[float] = []  # set once, when every client is connected and ready
    start = threading.Barrier(len(inputs), action=lambda: began.append(time.perf_counter()))

    def client_loop(feeds: Sequence[Feed]) -> tuple[list[float], list[str], list[dict | None], float]:
        latencies: list[float] = []
        errors: list[str] = []
        outputs: list[dict[str, np.ndarray] | None] = []
        client = httpclient.InferenceServerClient(url=url, network_timeout=120)
        try:
            start.wait()
            for feed in feeds:
                request = [
                    httpclient.InferInput(n, list(a.shape), np_to_triton_dtype(a.dtype)).set_data_from_numpy(
                        a
                    )
                    for n, a in feed.items()
                ]
                sent = time.perf_counter()
                try:
                    result = client.infer(model, request)
                except Exception as exc:  # every failure is reported, none stops the run
                    errors.append(f"{type(exc).__name__}: {exc}")
                    outputs.append(None)
                    continue
                latencies.append((time.perf_counter() - sent) * 1e3)
                if keep_outputs:
                    outputs.append(
                        {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
                    )
        finally:
            client.close()
        return latencies, errors, outputs, time.perf_counter()

    with ThreadPoolExecutor(len(inputs)) as pool:
        per_client = list(pool.map(client_loop, inputs))
    return LoadResult(
        seconds=max(done for *_, done in per_client) - began[0],
        latencies_ms=[lat for latencies, *_ in per_client for lat in latencies],
        errors=[err for _, errors, *_ in per_client for err in errors],
        outputs=[outputs for _, _, outputs, _ in per_client] if keep_outputs else [],
    )
