"""`attn-deploy export`: zoo model -> verified ONNX artifact under engines/<model>/<target>/."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table

from attn_deploy.commands.shape_flags import add_profile_arguments, with_cli_profiles
from attn_deploy.commands.tables import precision_tables
from attn_deploy.display import add_json_option, console, emit_json, stage_progress, warn
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
    add_json_option(p, "what was written (artifact, files, parity, manifest)")
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
    if args.json:
        emit_json(export_json(artifact, result), args.json)
    return 0


def print_export_summary(artifact: Artifact, result: ExportResult) -> None:
    """A short summary: what was written, parity vs PyTorch, rewrites; the rewrite sites and the op histogram
    are in the artifact's report.md."""
    from attn_deploy.validate.report import far_off_warnings
    from attn_deploy.validate.scoring import Check

    m = artifact.manifest
    p = result.parity
    info = Table(title=f"{m['model']} -> {artifact.dir}", show_header=False)
    info.add_row("files", ", ".join(sorted(f.name for f in artifact.dir.iterdir())))
    info.add_row("input", "; ".join(f"{v['name']} {v['shape']}" for v in m["inputs"]))
    info.add_row("output", "; ".join(f"{v['name']} {v['shape']}" for v in m["outputs"]))
    info.add_row("opset / dynamic", f"{m['opset']} / batch={m['dynamic']['batch']} hw={m['dynamic']['hw']}")
    shapes = ", ".join("x".join(map(str, s)) for s in result.shapes)
    verdict = "[green]PASSED[/]" if p.passed else "[red]FAILED[/]"
    info.add_row(
        "parity vs PyTorch",
        f"{verdict} at {shapes}: max abs {fmt(p.max_abs)}, max rel {fmt(p.max_rel)}, cosine {p.cosine:.8f}",
    )
    counts = {rule: sum(1 for s in result.rewrite_sites if s.rule == rule) for rule in result.rewrites}
    info.add_row("rewrites", ", ".join(f"{r} x{n}" for r, n in counts.items()) or "none needed")
    info.add_row(
        "ops", f"{sum(result.ops_before.values())} -> {sum(result.ops_after.values())} after simplify"
    )
    info.add_row("TensorRT lint", "clean" if not result.lint else "; ".join(map(str, result.lint)))
    info.add_row("time", f"{result.seconds:.1f} s")
    console.print(info)
    for table in precision_tables(m):  # precision targets: the converted graph's checks, the TensorRT engine
        console.print(table)
    for warning in far_off_warnings([Check(**c) for c in m.get("parity", {}).get("checks", [])]):
        warn(warning)
    console.print(f"rewrite sites, ops before/after simplify: {artifact.dir / 'report.md'}", highlight=False)


def export_json(artifact: Artifact, result: ExportResult) -> dict[str, Any]:
    """``--json``: the artifact folder, its files, parity and the manifest."""
    return {
        "artifact": str(artifact.dir),
        "files": sorted(f.name for f in artifact.dir.iterdir()),
        "passed": result.parity.passed,
        "rewrites": result.rewrites,
        "seconds": result.seconds,
        "manifest": artifact.manifest,
    }
