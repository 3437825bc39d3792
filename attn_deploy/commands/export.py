"""`attn-deploy export`: a model -> verified ONNX artifact under engines/<model>/<target>/.

The model comes from the zoo (``--model``, optionally ``--weights``), an Ultralytics checkpoint (``--weights
best.pt`` or ``--checkpoint best.pt``, read without running its code), a trusted pickled module (``--checkpoint
model.pt --trust-checkpoint``) or the user's factory (``--module pkg.mod:factory``): see
:mod:`attn_deploy.models.source`.
"""

from __future__ import annotations

import argparse
from textwrap import shorten
from typing import TYPE_CHECKING, Any

from rich.table import Table

from attn_deploy.commands.shape_flags import add_profile_arguments, with_cli_profiles
from attn_deploy.commands.tables import precision_tables
from attn_deploy.display import add_json_option, console, emit_json, stage_progress, warn
from attn_deploy.markdown import fmt

if TYPE_CHECKING:
    from attn_deploy.artifacts import Artifact
    from attn_deploy.export.pipeline import ExportResult
    from attn_deploy.models.source import LoadedModel


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = sub.add_parser(
        "export",
        help="export a zoo model, an Ultralytics best.pt or your own model to a verified ONNX artifact",
    )
    p.add_argument("--model", default=None, help="zoo model, e.g. yolov8-eca, yolov8s-cbam, resnet50-se")
    p.add_argument("--imgsz", default=None, help="input size: 640 or H,W (default: the model's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the export shape (default 1)")
    dyn = p.add_mutually_exclusive_group()
    dyn.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    dyn.add_argument(
        "--dynamic-batch", action="store_true", help="dynamic batch only (fixed H/W, for models that need it)"
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; TensorRT parses <= 20)")
    p.add_argument(
        "--weights",
        default=None,
        help="state_dict .pt/.pth to load into --model, or an Ultralytics best.pt/last.pt (without --model: "
        "arch, classes and names come from the file; read without running code from it)",
    )
    own = p.add_argument_group("your own model (instead of --model)")
    own.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint: an Ultralytics best.pt is read safely; any other pickled model needs --trust-checkpoint",
    )
    own.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle --checkpoint with weights_only=False: this RUNS CODE stored in the file (a pickle can call "
        "anything); only for files you made or trust",
    )
    own.add_argument(
        "--module",
        default=None,
        help="package.module:factory, a callable returning your nn.Module (like uvicorn)",
    )
    own.add_argument(
        "--task",
        choices=("detect", "classify"),
        default=None,
        help="what the model does (default: "
        "from its output: (B, classes) or (B, 4+nc, anchors) / Ultralytics' (y, x))",
    )
    own.add_argument(
        "--name",
        default=None,
        help="artifact name (default: the checkpoint's stem, <run>-best for <run>/weights/best.pt, or the "
        "factory's name)",
    )
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
    from attn_deploy.workflow.zoo import export_loaded_model, export_zoo_model

    check_source_flags(args)
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
    options = {
        "imgsz": args.imgsz,
        "batch": args.batch,
        "dynamic": args.dynamic or args.dynamic_batch,
        "dynamic_hw": not args.dynamic_batch,
        "opset": args.opset or 18,
        "out_root": args.out,
        "simplify": args.simplify,
        "config": config,
        "calib_dir": args.calib_dir,
    }
    what = args.model or args.module or args.checkpoint or args.weights
    with stage_progress(f"export {what}") as on_stage:
        if args.model:
            artifact, result = export_zoo_model(
                args.model, weights=args.weights, on_stage=on_stage, **options
            )
        else:
            on_stage("build model")
            loaded = load_own_model(args)
            artifact, result = export_loaded_model(loaded, on_stage=on_stage, **options)
    print_export_summary(artifact, result)
    if args.json:
        emit_json(export_json(artifact, result), args.json)
    return 0


def check_source_flags(args: argparse.Namespace) -> None:
    """Exactly one model source: --model [--weights] | --weights ULTRALYTICS | --checkpoint | --module."""
    from attn_deploy.errors import ConfigError

    given = [
        flag
        for flag, value in (
            ("--model", args.model),
            ("--checkpoint", args.checkpoint),
            ("--module", args.module),
        )
        if value
    ]
    if args.weights and not args.model:
        given.append("--weights")
    if len(given) != 1:
        raise ConfigError(
            f"name one model source, got {', '.join(given) or 'none'}: --model NAME [--weights state_dict.pt], "
            "--weights best.pt (Ultralytics), --checkpoint PATH [--trust-checkpoint] or --module pkg.mod:factory"
        )
    if args.trust_checkpoint and not args.checkpoint:
        raise ConfigError(
            "--trust-checkpoint goes with --checkpoint PATH (it allows unpickling that file's code)"
        )
    if args.model and (args.task or args.name):
        raise ConfigError("--task and --name are for your own models; a zoo model has its own task and name")


def load_own_model(args: argparse.Namespace) -> LoadedModel:
    """The model of --weights (Ultralytics) / --checkpoint [--trust-checkpoint] / --module."""
    from attn_deploy.config import MAX_SIDE, MIN_SIDE
    from attn_deploy.errors import ConfigError
    from attn_deploy.models.source import load_checkpoint, load_factory
    from attn_deploy.workflow.zoo import parse_size

    imgsz = parse_size(args.imgsz)
    if imgsz and not all(MIN_SIDE <= v <= MAX_SIDE for v in imgsz):
        raise ConfigError(
            f"--imgsz {args.imgsz!r} must be in {MIN_SIDE}..{MAX_SIDE}; use e.g. 640 or 480,640"
        )
    if args.module:
        return load_factory(args.module, task=args.task, imgsz=imgsz, name=args.name)
    path = args.checkpoint or args.weights
    return load_checkpoint(path, trust=args.trust_checkpoint, task=args.task, imgsz=imgsz, name=args.name)


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
    info.add_row(
        "exporter", m["exporter"] + (" (the dynamo exporter was refused)" if result.exporter_fallback else "")
    )
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
    if result.exporter_fallback:
        warn(
            f"the dynamo exporter was refused ({shorten(result.exporter_fallback, 300, placeholder=' ...')}); "
            f"the {result.exporter} exporter's "
            "graph was written instead, verified the same way (manifest.json: exporter_fallback)"
        )
    # precision targets: the converted graph's checks, the TensorRT engine
    for table in precision_tables(m, artifact.dir):
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
