"""GPU check, prepared for the first machine with an NVIDIA GPU: ``make gpu-check`` (about 5 minutes there).

    python -m benchmarks.gpu_check [--runs 50] [--out benchmarks/results/gpu-check.json]

On yolov8s-{none,eca} and resnet50-{none,se} at their default sizes, batch 1, in one process:

1. PyTorch CUDA eager and CUDA graphs, FP32 and FP16 (``attn_deploy.bench.gpu.TorchCudaCall``: GPU compute
   time by CUDA events, end-to-end time by the interleaved loop), all timed interleaved per model;
2. ONNX Runtime's CUDA provider and TensorRT, FP32/FP16, through ``attn_deploy.bench.run.bench_models``, each
   recorded as skipped with its reason where onnxruntime-gpu or TensorRT is not installed.

Status: not yet run on a GPU (the development machines have none). Without CUDA it writes a JSON that says
why it skipped and exits 0 (tested on CPU: tests/test_gpu_check.py). Each step that fails records its error
and the check goes on, so a first run on a new machine brings back everything that did work.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from attn_deploy.bench.gpu import TorchCudaCall, cuda_skip_reason
from attn_deploy.bench.machine import describe_machine
from attn_deploy.bench.render import results_json
from attn_deploy.bench.run import bench_models, prepare_model
from attn_deploy.bench.timing import LatencyStats, time_interleaved
from attn_deploy.errors import AttnDeployError, exception_summary
from attn_deploy.fsutil import write_json

MODELS = ("yolov8s-none", "yolov8s-eca", "resnet50-none", "resnet50-se")
DEFAULT_OUT = Path("benchmarks/results/gpu-check.json")


def torch_cuda_rows(name: str, runs: int) -> list[dict[str, Any]]:
    """Eager vs CUDA graphs, FP32 vs FP16, for one zoo model: end-to-end and GPU compute p50 (ms)."""
    mut = prepare_model(name, None, 1)
    calls = {}
    for precision in ("fp32", "fp16"):
        model, sample = copy.deepcopy(mut.module), mut.sample
        if precision == "fp16":
            model, sample = model.half(), sample.half()
        for graphs in (False, True):
            calls[(precision, graphs)] = TorchCudaCall(model, sample, cuda_graph=graphs)
    samples = time_interleaved({f"{p}/{g}": c for (p, g), c in calls.items()}, runs=runs, warmup_s=1.0)
    rows = []
    for precision, graphs in calls:
        s = samples[f"{precision}/{graphs}"]
        rows.append(
            {
                "model": name,
                "backend": "torch-cuda-graph" if graphs else "torch-cuda",
                "precision": precision,
                "p50_ms": LatencyStats.from_samples(s.wall_ms).p50_ms,
                "gpu_compute_p50_ms": LatencyStats.from_samples(s.gpu_ms).p50_ms if s.gpu_ms else None,
            }
        )
    return rows


def run_check(models: tuple[str, ...] = MODELS, runs: int = 50) -> dict[str, Any]:
    """The check's JSON document; ``{"skipped": reason}`` without a CUDA GPU."""
    doc: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "models": list(models),
        "machine": describe_machine(1),
    }
    reason = cuda_skip_reason()
    if reason:
        return {**doc, "skipped": reason}
    doc["torch_cuda"], doc["errors"] = [], []
    for name in models:
        try:
            doc["torch_cuda"] += torch_cuda_rows(name, runs)
        except (AttnDeployError, RuntimeError) as exc:  # CUDA errors are RuntimeErrors
            doc["errors"].append(f"{name} torch-cuda: {exception_summary(exc)}")
    try:
        run = bench_models(
            list(models), backends=("torch-cuda", "ort-cuda", "trt"), precisions=("fp32", "fp16"), runs=runs
        )
        doc["runtimes"] = results_json(run)
    except (AttnDeployError, RuntimeError) as exc:
        doc["errors"].append(f"ORT CUDA / TensorRT: {exception_summary(exc)}")
    return doc


def main(argv: list[str] | None = None) -> int:
    """Run the check and write its JSON; 0 also when skipped (the reason is in the JSON and printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per target (default 50)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    doc = run_check(runs=args.runs)
    write_json(args.out, doc)
    print(f"gpu-check {'skipped: ' + doc['skipped'] if 'skipped' in doc else 'done'}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
