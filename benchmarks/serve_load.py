"""Serving throughput with and without dynamic micro-batching.

    python benchmarks/serve_load.py engines/<model>/<target> [--clients 16 --requests 50]

Starts `attn-deploy serve` on the artifact twice -- batching off (``--max-batch 1``) and on
(``--max-batch N --max-delay-ms D``) -- drives each with the same closed-loop load (tritonclient[http],
binary tensors, one batch-1 request at a time per client), prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from attn_deploy.artifacts import load_artifact
from attn_deploy.display import console
from attn_deploy.errors import AttnDeployError, InputError
from attn_deploy.fsutil import write_json
from attn_deploy.serve.dtypes import numpy_dtype
from attn_deploy.serve.loadgen import run_load
from attn_deploy.serve.metrics import fetch_metrics
from attn_deploy.serve.process import ServerProcess
from attn_deploy.serve.signature import DYNAMIC, read_signature


def _batch1_feed(artifact_dir: Path, seed: int) -> dict[str, np.ndarray]:
    """A batch-1 input at the export shape (dynamic dims filled from the manifest's export_shape)."""
    artifact = load_artifact(artifact_dir)
    (spec, *others) = read_signature(artifact.onnx_path).inputs
    if others:
        raise InputError("serve_load.py drives single-input models only")
    export_shape = artifact.manifest.get("export_shape") or [1] * len(spec.shape)
    shape = [1, *(e if d == DYNAMIC else d for d, e in zip(spec.shape[1:], export_shape[1:], strict=True))]
    data = np.random.default_rng(seed).standard_normal(shape)
    return {spec.name: data.astype(numpy_dtype(spec.datatype))}


def _measure(
    artifact_dir: Path, model: str, options: list[str], clients: int, requests: int
) -> dict[str, Any]:
    feeds = [[_batch1_feed(artifact_dir, c)] * requests for c in range(clients)]
    with ServerProcess([artifact_dir], *options) as server:
        run_load(server.url, model, [row[:5] for row in feeds])  # warm-up: sessions, connections
        before = fetch_metrics(server.url)
        result = run_load(server.url, model, feeds)
        after = fetch_metrics(server.url)
    executions = after[("nv_inference_exec_count", model)] - before[("nv_inference_exec_count", model)]
    items = after[("nv_inference_count", model)] - before[("nv_inference_count", model)]
    return {
        "server_options": options,
        "requests": result.requests,
        "errors": len(result.errors),
        "seconds": round(result.seconds, 3),
        "requests_per_s": round(result.throughput, 1),
        "p50_ms": round(result.latency_percentile(50), 2),
        "p99_ms": round(result.latency_percentile(99), 2),
        "executions": int(executions),
        "mean_batch": round(items / executions, 2) if executions else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both configurations, print the table, write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", type=Path, help="artifact directory (engines/<model>/<target>)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.json"))
    args = parser.parse_args(argv)
    try:
        model = load_artifact(args.artifact).name
        common = ["--threads", str(args.threads)]
        batched = ["--max-batch", str(args.max_batch), "--max-delay-ms", f"{args.max_delay_ms:g}"]
        runs = {
            "batching off": _measure(
                args.artifact, model, ["--max-batch", "1", *common], args.clients, args.requests
            ),
            f"batching on (<= {args.max_batch}, {args.max_delay_ms:g} ms)": _measure(
                args.artifact, model, [*batched, *common], args.clients, args.requests
            ),
        }
    except AttnDeployError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2

    table = Table(
        title=f"serve load: {model}, {args.clients} clients x {args.requests} requests (batch 1 each)"
    )
    for column in ("mode", "req/s", "p50 ms", "p99 ms", "executions", "mean batch", "errors"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, r in runs.items():
        row = (r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["executions"], r["mean_batch"], r["errors"])
        table.add_row(mode, *map(str, row))
    console.print(table)
    write_json(
        args.out,
        {
            "model": model,
            "artifact": str(args.artifact),
            "clients": args.clients,
            "requests_per_client": args.requests,
            "runs": runs,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "onnxruntime": metadata.version("onnxruntime"),
                "aiohttp": metadata.version("aiohttp"),
                "note": "client threads and server share this machine's CPUs",
            },
        },
    )
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
