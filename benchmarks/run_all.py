"""The recorded benchmark tables: attention cost per architecture, backends against PyTorch, seed claims.

    python -m benchmarks.run_all                       # yolov8s at 640 and resnet50 at 224 (make bench)
    python -m benchmarks.run_all --archs yolov8s,resnet50,yolov8n,resnet18 --runs 20
    python -m benchmarks.run_all --quick               # resnet18 at 64x64, a few runs: checks the tooling

Builds and exports every model of an architecture first, then waits (up to ``--max-wait-s``) for the
1-minute load average to drop below ``--max-load`` before timing, since a shared CPU makes timings noisy (and
PyTorch's OpenMP threads far more than ONNX Runtime's); the load is recorded in every report. Writes
``attention-<arch>.{md,json}`` (with the op histogram of the graph ONNX Runtime runs per model and the
roofline columns) and two PNG charts per architecture, plus ``summary.md`` / ``summary.json``, under
``benchmarks/results/<date>-<machine>/``. The before/after of the deploy-time graph passes alone:
``python -m benchmarks.graph_passes``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from attn_deploy.bench import render
from attn_deploy.bench.attention_cost import AttentionRow, attention_table, resolve_attentions
from attn_deploy.bench.claims import SeedComparison, compare_with_seed, load_claims
from attn_deploy.bench.run import BenchRun, bench_models
from attn_deploy.display import bench_progress, console, print_table
from attn_deploy.errors import AttnDeployError
from attn_deploy.fsutil import write_json, write_text
from attn_deploy.markdown import markdown_table

DEFAULT_ARCHS = "yolov8s,resnet50"
BACKENDS = ("torch", "ort", "ort-naive")


def wait_for_quiet(max_load: float, max_wait_s: float, poll_s: float = 15.0) -> list[float]:
    """Sleep until the 1-minute load is below ``max_load`` (or ``max_wait_s`` passed); return the load."""
    deadline = time.monotonic() + max_wait_s
    load = list(os.getloadavg())
    while load[0] >= max_load and time.monotonic() < deadline:
        console.print(f"[dim]load average {load[0]:.2f} >= {max_load}: waiting[/]", highlight=False)
        time.sleep(poll_s)
        load = list(os.getloadavg())
    return [round(v, 2) for v in load]


def bench_arch(
    arch: str, args: argparse.Namespace
) -> tuple[BenchRun, list[AttentionRow], SeedComparison | None]:
    """One attention cost table: every attention on ``arch`` against none, one interleaved run."""
    names = [f"{arch}-{a}" for a in resolve_attentions(args.attention)]
    with bench_progress(f"bench {arch}") as (on_stage, start_bar, on_call):

        def on_timing_start(total: int) -> None:
            # Models are built and exported by now (minutes for yolov8s): wait for a quiet CPU to time them.
            on_stage("waiting for a quiet CPU")
            load = wait_for_quiet(args.max_load, args.max_wait_s)
            console.print(f"[bold]{arch}[/]: timing at load average {load}", highlight=False)
            start_bar(total)

        run = bench_models(
            names,
            backends=BACKENDS,
            imgsz=args.imgsz,
            runs=args.runs,
            warmup_s=args.warmup_s,
            threads=args.threads,
            on_stage=on_stage,
            on_timing_start=on_timing_start,
            on_call=on_call,
            explain=True,
        )
    rows = attention_table(run, arch)
    claims = load_claims()
    seed = compare_with_seed(rows, arch, claims, imgsz=run.square_size) if claims.for_arch(arch) else None
    return run, rows, seed


def summary_rows(run: BenchRun, rows: list[AttentionRow]) -> list[list[Any]]:
    """Compact per-attention rows: params, GFLOPs, p50 per backend, speed-ups, overhead."""
    out = []
    for row in rows:
        t, o, n = (row.latency.get(b) for b in BACKENDS)
        out.append(
            [
                row.model,
                row.params_m,
                row.gflops,
                t.wall.p50_ms if t else None,
                o.wall.p50_ms if o else None,
                n.wall.p50_ms if n else None,
                o.ratio_vs_torch if o else None,
                n.wall.p50_ms / o.wall.p50_ms if o and n else None,
                o.wall.fps(run.batch) if o else None,
                row.latency_overhead_pct.get("ort"),
                {True: "yes", False: "NO", None: "-"}[n.target.verified if n else None],
            ]
        )
    return out


SUMMARY_HEADERS = [
    "model",
    "params M",
    "GFLOPs",
    "torch p50 ms",
    "ORT p50 ms",
    "naive ORT p50 ms",
    "ORT x torch",
    "naive / ours",
    "ORT FPS",
    "ORT +latency % vs none",
    "naive matches PyTorch",
]


def main(argv: list[str] | None = None) -> int:
    """Run the tables and write the reports; returns an exit code."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=DEFAULT_ARCHS, help=f"comma list (default {DEFAULT_ARCHS})")
    p.add_argument("--attention", default="all", help="'all' or a comma list (none is always included)")
    p.add_argument("--imgsz", default=None, help="input size (default: each model's)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per target (default 20)")
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=None, help="default: physical cores")
    p.add_argument("--max-load", type=float, default=1.0, help="wait until the 1-min load is below this")
    p.add_argument("--max-wait-s", type=float, default=1200.0, help="give up waiting after this long")
    p.add_argument("--out", default=None, help="default benchmarks/results/<date>-<machine>/")
    p.add_argument("--quick", action="store_true", help="resnet18 at 64x64, 3 runs, no waiting: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.archs, args.imgsz, args.runs, args.warmup_s, args.max_wait_s = "resnet18", "64", 3, 0.5, 0.0

    sections, documents, checks = [], {}, []
    folder: Path | None = Path(args.out) if args.out else None
    try:
        for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
            run, rows, seed = bench_arch(arch, args)
            folder = folder or render.results_folder(run)
            render.write_attention_report(run, arch, rows, seed, folder)
            print_table(render.attention_cost_table(rows, arch, run.batch))
            if seed is not None:
                print_table(render.seed_table(seed))
            arch_checks = render.speed_checks(run) + render.overhead_checks(rows, arch, seed)
            checks += arch_checks
            size = f"{run.imgsz[0]}x{run.imgsz[1]}"
            sections.append(
                f"## {arch} at {size}, batch {run.batch}\n\n{render.machine_lines(run)}\n\n"
                + markdown_table(SUMMARY_HEADERS, summary_rows(run, rows))
                + "".join(f"\n{r.attention}: not measured: {r.skipped}\n" for r in rows if r.skipped)
                + (f"\n{render.seed_table(seed).markdown()}" if seed else "")
                + f"\nDetails: [attention-{arch}.md](attention-{arch}.md)\n"
            )
            documents[arch] = render.attention_json(run, arch, rows, seed)
    except AttnDeployError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    if folder is None:
        return 0
    target_table = render.checks_table(checks)
    print_table(target_table)
    text = (
        "# Benchmarks\n\n" + "\n".join(sections) + "\n" + target_table.markdown() + f"\n{render.FLOPS_NOTE}\n"
    )
    write_text(folder / "summary.md", text)
    write_json(folder / "summary.json", {"archs": documents, "checks": [c.to_dict() for c in checks]})
    console.print(f"wrote {folder}/summary.md", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
