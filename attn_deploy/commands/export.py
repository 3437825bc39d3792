"""`attn-deploy export`: zoo model -> verified ONNX artifact under engines/<model>/<target>/."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from attn_deploy.commands.shape_flags import add_profile_arguments, with_cli_profiles
from attn_deploy.commands.tables import precision_tables
from attn_deploy.display import console, stage_progress
from attn_deploy.markdown import fmt

if TYPE_CHECKING:
    from attn_deploy.artifacts import Artifact
    from attn_deploy.export.pipeline import ExportResult


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = sub.add_parser("export", help="export a zoo model to a verified ONNX artifact")
    p.add_argument("--model", required=True, help="zoo model, e.g. yolov8-eca, yolov8s-cbam, resnet50-se")
    p.add_argument("--imgsz", default=None, help="input size: 640 or H,W (default: the model's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the export shape (default 1)")
    dyn = p.add_mutually_exclusive_group()
    dyn.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    dyn.add_argument(
        "--dynamic-batch", action="store_true", help="dynamic batch only (fixed H/W, for models that need it)"
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; TensorRT parses <= 20)")
    p.add_argument("--weights", default=None, help="state_dict .pt/.pth to load (default: built-in weights)")
    p.add_argument("--out", default="engines", help="output root (default engines/)")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxslim")
    p.add_argument(
        "--config", default=None, help="deploy target: export_configs/<name>.yaml or a name (trt-fp16)"
    )
    p.add_argument(
        "--precision", choices=("fp32", "fp16", "int8"), default=None, help="shortcut for ort-<precision>"
    )
    p.add_argument(
        "--calib-dir", default=None, help="INT8 calibration images (jpg/png; default: synthetic set)"
    )
    p.add_argument(
        "--calib-method", choices=("minmax", "entropy", "percentile"), default=None, help="INT8 calibration"
    )
    add_profile_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print the summary."""
    # the export pipeline (torch, onnxslim) loads only when a command runs it: parsing stays light
    from attn_deploy.config import resolve_export_config
    from attn_deploy.data.preprocess import check_image_dir
    from attn_deploy.workflow.zoo import export_zoo_model

    config = resolve_export_config(
        args.config,
        args.precision,
        dynamic=args.dynamic or args.dynamic_batch,
        dynamic_hw=not args.dynamic_batch,
        opset=args.opset,
        calib_method=args.calib_method,
        calib_dir=args.calib_dir,
    )
    config = with_cli_profiles(config, args)  # --min/--opt/--max-shape: TensorRT targets only
    if args.calib_dir:  # a missing folder or bad image fails now, not after export
        check_image_dir(args.calib_dir, config.int8.num_images)
    with stage_progress(f"export {args.model}") as on_stage:
        artifact, result = export_zoo_model(
            args.model,
            imgsz=args.imgsz,
            batch=args.batch,
            dynamic=args.dynamic or args.dynamic_batch,
            dynamic_hw=not args.dynamic_batch,
            opset=args.opset or 18,
            weights=args.weights,
            out_root=args.out,
            simplify=args.simplify,
            on_stage=on_stage,
            config=config,
            calib_dir=args.calib_dir,
        )
    print_export_summary(artifact, result)
    return 0


def print_export_summary(artifact: Artifact, result: ExportResult) -> None:
    """Tables: artifact, parity vs PyTorch, rewrites, op counts before/after simplify."""
    m = artifact.manifest
    info = Table(title=f"{m['model']} -> {artifact.dir}", show_header=False)
    info.add_row("files", ", ".join(sorted(p.name for p in artifact.dir.iterdir())))
    info.add_row("input", "; ".join(f"{v['name']} {v['shape']}" for v in m["inputs"]))
    info.add_row("output", "; ".join(f"{v['name']} {v['shape']}" for v in m["outputs"]))
    info.add_row("opset / dynamic", f"{m['opset']} / batch={m['dynamic']['batch']} hw={m['dynamic']['hw']}")
    info.add_row(
        "time",
        f"{result.seconds:.1f} s ({', '.join(f'{k} {v:.1f}s' for k, v in result.stage_seconds.items())})",
    )
    info.add_row("TensorRT lint", "clean" if not result.lint else "; ".join(map(str, result.lint)))
    console.print(info)

    p = result.parity
    parity = Table(title="Parity vs PyTorch FP32 (ONNX Runtime CPU)")
    for col in ("shape", "output", "max abs", "max rel", "cosine", "tolerance"):
        parity.add_column(col, justify="right")
    per_shape = len(p.per_output) // max(len(result.shapes), 1)
    for i, out in enumerate(p.per_output):
        shape = result.shapes[i // per_shape] if per_shape else "-"
        parity.add_row(
            "x".join(map(str, shape)),
            out.name,
            fmt(out.max_abs),
            fmt(out.max_rel),
            f"{out.cosine:.8f}",
            fmt(out.tolerance),
        )
    parity.caption = "[green]PASSED[/]" if p.passed else "[red]FAILED[/]"
    console.print(parity)
    for table in precision_tables(m):  # precision targets: the converted graph's checks, the TensorRT engine
        console.print(table)

    if result.rewrites:
        rewrites = Table(title="Rewrites applied")
        rewrites.add_column("rule")
        rewrites.add_column("sites", justify="right")
        for rule in result.rewrites:
            rewrites.add_row(rule, str(sum(1 for s in result.rewrite_sites if s.rule == rule)))
        console.print(rewrites)

    ops = Table(title="Ops before / after simplify")
    for col in ("op", "before", "after"):
        ops.add_column(col, justify="right" if col != "op" else "left")
    names = sorted(set(result.ops_before) | set(result.ops_after), key=lambda o: -result.ops_before.get(o, 0))
    for op in names:
        ops.add_row(op, str(result.ops_before.get(op, 0)), str(result.ops_after.get(op, 0)))
    ops.add_row("[bold]total", str(sum(result.ops_before.values())), str(sum(result.ops_after.values())))
    console.print(ops)
