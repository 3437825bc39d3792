"""`attn-deploy validate engines/<model>/<target>`: compare an artifact with PyTorch FP32, per metric."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from attn_deploy.commands.tables import checks_table
from attn_deploy.display import add_json_option, console, emit_json, progress_display, warn
from attn_deploy.errors import ConfigError, InputError

if TYPE_CHECKING:
    from attn_deploy.backends.base import Runner
    from attn_deploy.config import ExportConfig

MAX_IMAGES = 10_000
"""Most images one validation holds (fewer when large: see ``attn_deploy.models.registry.MAX_PIXELS``)."""

BACKENDS = ("ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``validate`` parser."""
    p = sub.add_parser(
        "validate", help="compare an exported artifact with PyTorch FP32 (tolerances from its config)"
    )
    p.add_argument("artifact", help="artifact directory, e.g. engines/yolov8s-eca/ort-fp16")
    p.add_argument(
        "--backend", choices=BACKENDS, default="ort-cpu", help="what runs the graph (default ort-cpu)"
    )
    p.add_argument(
        "--config", default=None, help="export config whose tolerances apply (default: the artifact's)"
    )
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help="number of images (default: from config, or all of --image-dir)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the synthetic images (default: from config)"
    )
    p.add_argument(
        "--image-dir",
        default=None,
        help="validate on your own .jpg/.png images (all, or the first --images) instead of synthetic ones",
    )
    add_json_option(p, "the report (validation.json's content)")
    p.add_argument(
        "--min-top1",
        type=float,
        default=None,
        metavar="FRACTION",
        help="gate: top-1 agreement with PyTorch of a classifier must reach this (0..1, e.g. 0.95)",
    )
    p.add_argument(
        "--min-box-agreement",
        type=float,
        default=None,
        metavar="FRACTION",
        help="gate: decoded-box agreement with PyTorch of a detector must reach this (0..1, e.g. 0.9)",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="rebuild an artifact exported with --checkpoint --trust-checkpoint or --module: runs that code again",
    )
    p.add_argument(
        "--data",
        default=None,
        help="detectors: a data.yaml (Ultralytics layout); mAP of PyTorch FP32 and the artifact on its val images",
    )
    p.add_argument(
        "--max-map-drop",
        type=float,
        default=None,
        help="with --data: fail when mAP50-95 drops by more than this many points (e.g. 1.0)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate, print the tables, return 0 when every check passed, 1 otherwise."""
    gates = gate_overrides(args.min_top1, args.min_box_agreement)  # a bad value fails before anything loads
    # a command imports only what it runs: torch, the zoo and Polygraphy load when validate does
    from attn_deploy.artifacts import load_artifact
    from attn_deploy.config import load_config, replace_config
    from attn_deploy.data.preprocess import list_images
    from attn_deploy.models.registry import check_count
    from attn_deploy.validate.report import VALIDATION_JSON, agreement_lines
    from attn_deploy.validate.validation import artifact_config, validate_artifact

    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.max_map_drop is not None and (args.data is None or not 0 <= args.max_map_drop <= 100):
        raise ConfigError("--max-map-drop needs --data and a value in 0..100 (points of mAP50-95)")
    if args.data is not None and args.image_dir is not None:
        raise ConfigError("--data and --image-dir both choose the images; pass one of them")
    artifact = load_artifact(args.artifact)
    config = load_config(args.config) if args.config else artifact_config(artifact.manifest)
    check_gates_fit(gates, artifact.manifest)
    config = replace_config(config, gates) if gates else config
    size = image_size(artifact.manifest)
    if size is not None:  # without one, validate_artifact says the artifact needs a re-export
        count = len(list_images(args.image_dir)) if args.image_dir else config.validation.num_images
        check_count(count if args.images is None else args.images, size, "--images", MAX_IMAGES)
    runner = make_runner(args.backend, artifact.onnx_path, config, artifact.manifest)
    with progress_display(f"validate {args.artifact}", bar=True) as (progress, task, _):
        report = validate_artifact(
            artifact.dir,
            runner=runner,
            config=config,
            num_images=args.images,
            seed=args.seed,
            image_dir=args.image_dir,
            data=args.data,
            max_map_drop=None if args.max_map_drop is None else args.max_map_drop / 100,
            on_batch=lambda done, total: progress.update(task, completed=done, total=total),
            trust=args.trust_checkpoint,
        )

    title = f"{report.model} / {report.target} ({report.backend}) vs PyTorch FP32"
    caption = f"{report.num_images} images, input {report.input_shape}, {report.seconds} s"
    checks = checks_table(title, report.checks, caption)
    console.print(checks)
    for line in agreement_lines(report.details):
        console.print(line)
    if report.detection is not None:
        console.print(detection_table(report.detection))
    outputs = Table(title="Per output")
    for col in ("output", "max abs", "max rel", "cosine", "non-finite"):
        outputs.add_column(col, justify="right")
    for p in report.per_output:
        outputs.add_row(
            p["name"], f"{p['max_abs']:.3g}", f"{p['max_rel']:.3g}", f"{p['cosine']:.7f}", str(p["nonfinite"])
        )
    console.print(outputs)
    for warning in report.warnings:
        warn(warning)
    gates = sum(c.gated for c in report.checks)
    unchecked = len(report.checks) - gates
    verdict = "[bold green]PASSED" if report.passed else "[bold red]FAILED"
    console.print(
        f"{verdict}[/] ({gates} gates; {unchecked} metrics reported, not checked) - "
        f"{escape(str(artifact.dir / VALIDATION_JSON))}, report.md, polygraphy_*.json written",
        highlight=False,
    )
    if args.json:
        emit_json(report.to_dict(), args.json)
    return 0 if report.passed else 1


def gate_overrides(min_top1: float | None, min_box_agreement: float | None) -> dict[str, float]:
    """The config overrides making top-1 / box agreement gates (``--min-top1``, ``--min-box-agreement``)."""
    overrides = {}
    for flag, key, value in (
        ("--min-top1", "tolerances.top1", min_top1),
        ("--min-box-agreement", "tolerances.box_agreement", min_box_agreement),
    ):
        if value is None:
            continue
        if not 0 <= value <= 1:  # NaN too
            raise ConfigError(f"{flag} must be a fraction in [0, 1] (0.95 for 95%), got {value:g}")
        overrides[key] = value
    return overrides


GATED_TASKS = {
    "tolerances.top1": ("--min-top1", "classify"),
    "tolerances.box_agreement": ("--min-box-agreement", "detect"),
}
TASK_NOUNS = {"classify": "classifier", "detect": "detector"}


def check_gates_fit(gates: dict[str, float], manifest: dict[str, Any]) -> None:
    """A ``ConfigError`` when a gate cannot apply: top-1 agreement gates classifiers, box agreement detectors."""
    task = manifest.get("task")
    for key in gates:
        flag, wants = GATED_TASKS[key]
        if task != wants:
            is_a = f"a {TASK_NOUNS[task]}" if task in TASK_NOUNS else f"of task {task!r}"
            raise ConfigError(f"{flag} gates {TASK_NOUNS[wants]}s; {manifest['model']} is {is_a}")


def detection_table(detection: dict[str, Any]) -> Table:
    """mAP of PyTorch FP32 and the artifact side by side, in points (``-`` where the split has no such box)."""
    table = Table(title=f"Detection accuracy on {detection['data']} (val)")
    for col in ("metric", "PyTorch FP32", "artifact", "drop"):
        table.add_column(col, justify="right")
    ref, cand = detection["reference"], detection["candidate"]
    for key in ("map50", "map50_95", "precision", "recall", "ap_small", "ap_medium", "ap_large"):
        drop = None if ref[key] is None or cand[key] is None else ref[key] - cand[key]
        table.add_row(key, *(("-" if v is None else f"{100 * v:.2f}") for v in (ref[key], cand[key], drop)))
    return table


def image_size(manifest: dict[str, Any]) -> tuple[int, int] | None:
    """The (H, W) the artifact's images are preprocessed to (``None`` without a ``preprocess`` entry); an
    ``InputError`` unless it is two sizes in 1..MAX_SIDE (a hand-edited manifest)."""
    from attn_deploy.config import MAX_SIDE

    preprocess = manifest.get("preprocess")
    if not preprocess:
        return None
    size = preprocess.get("size") if isinstance(preprocess, dict) else None
    if not (
        isinstance(size, list) and len(size) == 2 and all(type(v) is int and 1 <= v <= MAX_SIDE for v in size)
    ):
        raise InputError(
            f"the manifest's preprocess size {size!r} is not [height, width] in 1..{MAX_SIDE}; re-export"
        )
    return size[0], size[1]


def make_runner(backend: str, onnx_path: Path, config: ExportConfig, manifest: dict[str, Any]) -> Runner:
    """The runner for ``--backend``: ONNX Runtime (CPU / CUDA / TensorRT EP) or a TensorRT engine."""
    from attn_deploy.backends.ort import OrtRunner  # ONNX Runtime loads only when validate runs

    if backend == "ort-cpu":
        return OrtRunner(onnx_path)
    if backend == "ort-cuda":
        return OrtRunner(onnx_path, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    if backend == "ort-tensorrt":
        return OrtRunner(onnx_path, providers=("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    from attn_deploy.backends.tensorrt import TensorRTRunner, build_engine, resolve_profiles

    export_shape = manifest.get("export_shape") or []
    inputs = manifest["inputs"]
    profiles = resolve_profiles(config, inputs, {inputs[0]["name"]: export_shape})
    return TensorRTRunner(build_engine(onnx_path, config, profiles).plan)
