"""`attn-deploy distill`: train a student with a cheap attention toward a teacher with a costly one."""

from __future__ import annotations

import argparse
from dataclasses import replace

from attn_deploy.commands.bench import MAX_RUNS
from attn_deploy.commands.validate import MAX_IMAGES
from attn_deploy.display import console, progress_display, step_progress
from attn_deploy.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``distill`` parser."""
    p = sub.add_parser(
        "distill",
        help="distil a teacher's attention into a cheaper one (resnet50-ema -> resnet50-eca), report and export",
    )
    p.add_argument("--teacher", required=True, help="zoo model of the teacher, e.g. resnet50-ema")
    p.add_argument("--weights", required=True, help="the teacher's trained state_dict (.pt/.pth)")
    p.add_argument(
        "--student", required=True, help="zoo model of the student: same architecture, e.g. resnet50-eca"
    )
    p.add_argument(
        "--images",
        default=None,
        help="folder of .jpg/.png (unlabeled; ImageFolder sub-folders add labels), or synthetic:scenes / "
        "synthetic:images (needed unless --data)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="detectors: an Ultralytics data.yaml; its train images and boxes add the YOLO task loss, its val "
        "split is scored (mAP)",
    )
    p.add_argument("--steps", type=int, default=300, help="optimiser steps in all (default 300)")
    p.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--imgsz", type=int, default=64, help="training input size in pixels (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the attention (default 1e-3)")
    p.add_argument(
        "--backbone-lr-factor",
        type=float,
        default=None,
        help="learning rate of the copied non-attention weights, as a fraction of --lr (default 0.1)",
    )
    p.add_argument(
        "--batchnorm",
        choices=("frozen", "train"),
        default=None,
        help="student BatchNorm statistics: keep the teacher's (frozen) or follow the images (train); default "
        "frozen for classifiers, train for detectors",
    )
    p.add_argument("--out", default=None, help="run folder (default engines/distill/<teacher>-to-<student>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    for term, what in (
        ("attention", "the attention-site term (classifiers 10, detectors 1)"),
        ("output", "the output distillation (1)"),
        ("task", "the task loss with labels (1)"),
    ):
        p.add_argument(f"--{term}-weight", type=float, default=None, help=f"weight of {what}")
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="softening temperature of the KL terms (classifiers 1, detectors 4)",
    )
    p.add_argument("--eval-images", type=int, default=500, help="held-out images scored at the end (500)")
    p.add_argument(
        "--latency-imgsz", type=int, default=None, help="size the ONNX latency is timed at (--imgsz)"
    )
    p.add_argument("--latency-runs", type=int, default=30, help="interleaved timed runs per model (30)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Distil, report, export; print the summary."""
    # torch, the zoo and the export pipeline load only when the command runs
    from pathlib import Path

    from attn_deploy.bench.timing import fix_threads
    from attn_deploy.distill import distill, open_source, yolo_source
    from attn_deploy.distill.loop import BACKBONE_LR_FACTOR
    from attn_deploy.distill.losses import default_weights
    from attn_deploy.distill.report import SUMMARY_HEADERS, distill_report, summary_row
    from attn_deploy.fsutil import check_writable_dir
    from attn_deploy.markdown import markdown_table
    from attn_deploy.models import create_model, model_spec
    from attn_deploy.models.registry import check_count
    from attn_deploy.models.weights import read_state_dict

    teacher_spec, student_spec = model_spec(args.teacher), model_spec(args.student)
    if teacher_spec.arch != student_spec.arch:
        raise ConfigError(
            f"teacher {teacher_spec.name} and student {student_spec.name} are different architectures; "
            f"distil into {teacher_spec.arch}-<attention>, e.g. {teacher_spec.arch}-eca"
        )
    teacher_spec.check_size(args.imgsz, args.imgsz)
    if args.latency_imgsz is not None:
        teacher_spec.check_size(args.latency_imgsz, args.latency_imgsz)
    # the report's options too: a bad one used to surface as a traceback after the whole training
    check_count(args.eval_images, (args.imgsz, args.imgsz), "--eval-images", MAX_IMAGES)
    if not 1 <= args.latency_runs <= MAX_RUNS:
        raise ConfigError(f"--latency-runs must be 1..{MAX_RUNS}, got {args.latency_runs}")
    if (args.images is None) == (args.data is None):
        raise ConfigError(
            "pass the images: --images (a folder or synthetic:...) or --data (a data.yaml), one"
        )
    if args.data is not None and teacher_spec.task != "detect":
        raise ConfigError(
            f"--data (a detection data.yaml) is for detector teachers; {teacher_spec.name} is a classifier, "
            "use --images"
        )
    given = {
        "attention": args.attention_weight,
        "output": args.output_weight,
        "task": args.task_weight,
        "temperature": args.temperature,
    }
    weights = replace(
        default_weights(teacher_spec.task == "detect"), **{k: v for k, v in given.items() if v is not None}
    )
    out = Path(args.out or f"engines/distill/{teacher_spec.name}-to-{student_spec.name}")
    check_writable_dir(out, "--out")
    read_state_dict(args.weights)  # a missing or foreign file fails before the images are read
    size = (args.imgsz, args.imgsz)
    source = open_source(args.images, size) if args.data is None else yolo_source(args.data, size)
    threads = fix_threads(args.threads)
    teacher = create_model(teacher_spec.name, weights=args.weights)
    student = create_model(student_spec.name, num_classes=teacher.spec.num_classes, calibrate=False)

    title = f"distil {teacher_spec.name} -> {student_spec.name}"
    with step_progress(title) as on_step:
        result = distill(
            teacher,
            student,
            source,
            steps=args.steps,
            batch=args.batch,
            imgsz=args.imgsz,
            lr=args.lr,
            backbone_lr_factor=BACKBONE_LR_FACTOR
            if args.backbone_lr_factor is None
            else args.backbone_lr_factor,
            freeze_batchnorm=None if args.batchnorm is None else args.batchnorm == "frozen",
            weights=weights,
            out=out,
            resume=args.resume,
            on_step=on_step,
        )
    with progress_display(f"report {student_spec.name}") as (_, _, on_stage):
        report = distill_report(
            teacher,
            args.weights,
            result,
            out,
            eval_images=args.eval_images,
            latency_imgsz=None if args.latency_imgsz is None else (args.latency_imgsz, args.latency_imgsz),
            latency_runs=args.latency_runs,
            threads=threads,
            on_stage=on_stage,
        )
    console.print(markdown_table(SUMMARY_HEADERS, [summary_row(report)]), highlight=False, soft_wrap=True)
    console.print(
        f"student weights: {result.student_path}\nreport: {out / 'report.md'} (+ report.json, loss.png)\n"
        f"export it: attn-deploy export --model {student_spec.name} --weights {result.student_path}",
        highlight=False,
    )
    return 0
