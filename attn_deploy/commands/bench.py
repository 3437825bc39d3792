"""`attn-deploy bench`: backend latency against PyTorch eager, and attention cost tables.

attn-deploy bench --model yolov8-eca --backends torch,ort,ort-naive [--json [out.json]]
attn-deploy bench --arch yolov8s --attention all          # every attention vs none, one run
"""

from __future__ import annotations

import argparse
import os

from attn_deploy.display import add_json_option, bench_progress, console, emit_json, print_table, warn

DEFAULT_BACKENDS = "torch,ort,ort-naive"
MAX_RUNS = 10_000
MAX_WARMUP_S = 600.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` parser."""
    p = sub.add_parser("bench", help="time backends against PyTorch eager; attention cost tables")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="zoo model to time, e.g. yolov8-eca, resnet50-se")
    what.add_argument("--arch", help="architecture for an attention cost table: yolov8n/s/m, resnet18/50")
    p.add_argument(
        "--attention", default=None, help="with --arch: 'all' (default) or a comma list; none is added"
    )
    p.add_argument(
        "--backends",
        default=DEFAULT_BACKENDS,
        help=f"comma list of torch, ort, ort-naive, trt, torch-cuda, ort-cuda (default {DEFAULT_BACKENDS})",
    )
    p.add_argument(
        "--precision", default="fp32", help="fp32, fp16, int8 or a comma list (ONNX graphs; torch is fp32)"
    )
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--imgsz", default=None, help="input size: 640 or H,W (default: the model's)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch and ORT (default: physical cores)"
    )
    p.add_argument("--warmup-s", type=float, default=2.0, help="warm-up seconds before timing (default 2)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per backend (default 30)")
    p.add_argument(
        "--dynamic", action="store_true", help="export with dynamic batch and H/W (timed at --imgsz/--batch)"
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="torch-cuda: replay the forward as a CUDA graph"
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="show the op histogram of the graph ONNX Runtime optimised (NCHWc convs, reorders, unfused ops)",
    )
    add_json_option(p, "the results")
    p.add_argument(
        "--out",
        default=None,
        help="report folder (Markdown, JSON, PNG); --arch default: benchmarks/results/<date>-<machine>/",
    )
    p.add_argument(
        "--seed-claims",
        default=None,
        help="claims file (default: the seed article figures shipped with attn-deploy)",
    )
    p.set_defaults(func=run)


def check_options(args: argparse.Namespace, names: list[str]) -> None:
    """Bounds of the sizes, timing options and output paths: one-line errors before any model is built."""
    # a command imports only what it runs: the model zoo (torch) loads when bench does
    from attn_deploy.errors import ConfigError
    from attn_deploy.fsutil import check_writable_dir
    from attn_deploy.models import model_spec
    from attn_deploy.models.registry import check_count
    from attn_deploy.workflow.zoo import parse_imgsz

    for name in names:
        check_count(args.batch, parse_imgsz(args.imgsz, model_spec(name)), "--batch")
    if not 1 <= args.runs <= MAX_RUNS:
        raise ConfigError(f"--runs must be 1..{MAX_RUNS}, got {args.runs}")
    if not 0 <= args.warmup_s <= MAX_WARMUP_S:  # also refuses nan
        raise ConfigError(f"--warmup-s must be 0..{MAX_WARMUP_S:g} seconds, got {args.warmup_s}")
    cores = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= cores:
        raise ConfigError(f"--threads must be 1..{cores} (the CPU count), got {args.threads}")
    if args.out:
        check_writable_dir(args.out)


def run(args: argparse.Namespace) -> int:
    """Parse the options (fast, one-line errors), run the benchmark, print and write the reports."""
    # a command imports only what it runs: torch, the zoo and the runners load when bench does
    from attn_deploy.bench import render
    from attn_deploy.bench.attention_cost import attention_table, resolve_attentions
    from attn_deploy.bench.claims import compare_with_seed, load_claims
    from attn_deploy.bench.run import bench_models
    from attn_deploy.bench.targets import BACKENDS, PRECISIONS, parse_choices
    from attn_deploy.errors import ConfigError
    from attn_deploy.models import model_spec

    backends = parse_choices(args.backends, BACKENDS, "backend")
    precisions = parse_choices(args.precision, PRECISIONS, "precision")
    if args.model and args.attention:
        raise ConfigError("--attention goes with --arch (an attention cost table); --model names one model")
    if args.model and args.seed_claims:
        raise ConfigError(
            "--seed-claims goes with --arch (claims vs measured per attention); --model names one model"
        )
    if args.cuda_graphs and "torch-cuda" not in backends:
        raise ConfigError("--cuda-graphs replays the torch-cuda backend's forward; add --backends torch-cuda")
    arch = model_spec(args.arch).arch if args.arch else None
    if arch:
        names = [f"{arch}-{a}" for a in resolve_attentions(args.attention or "all")]
    else:
        names = [model_spec(args.model).name]
    check_options(args, names)
    claims = load_claims(args.seed_claims) if arch else None
    title = arch or names[0]
    with bench_progress(f"bench {title}") as (on_stage, on_timing_start, on_call):
        result = bench_models(
            names,
            backends=backends,
            precisions=precisions,
            batch=args.batch,
            imgsz=args.imgsz,
            threads=args.threads,
            runs=args.runs,
            warmup_s=args.warmup_s,
            cuda_graphs=args.cuda_graphs,
            dynamic=args.dynamic,
            on_stage=on_stage,
            on_call=on_call,
            on_timing_start=on_timing_start,
            explain=args.explain,
        )
    console.print(
        f"threads fixed at {result.threads} (torch.set_num_threads, ORT intra_op_num_threads); "
        f"load average {result.machine.get('load_average')}",
        highlight=False,
    )
    rows, seed = [], None
    if arch:
        rows = attention_table(result, arch)
        seed = (
            compare_with_seed(rows, arch, claims, imgsz=result.square_size)
            if claims and claims.for_arch(arch)
            else None
        )
        print_table(render.attention_cost_table(rows, arch, result.batch))
        if seed is not None:
            print_table(render.seed_table(seed))
    print_table(render.latency_table(result))
    checks = render.speed_checks(result) + (render.overhead_checks(rows, arch, seed) if arch else [])
    print_table(render.checks_table(checks))
    if args.explain:
        print_table(render.explain_table(result))
    for warning in result.warnings():
        warn(warning)
    if args.json:
        document = render.attention_json(result, arch, rows, seed) if arch else render.results_json(result)
        emit_json(document, args.json)
    out = args.out or (render.results_folder(result) if arch else None)
    if out:
        paths = (
            render.write_attention_report(result, arch, rows, seed, out)
            if arch
            else render.write_model_report(
                result, out, f"bench-{names[0]}{'-dynamic' if args.dynamic else ''}"
            )
        )
        console.print(f"report: {', '.join(str(p) for p in paths)}", highlight=False)
    return 0
