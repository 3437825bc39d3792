"""Attention distillation on a trained classifier: resnet50-ema distilled into resnet50-eca and resnet50-se.

    python -m benchmarks.distill [--students resnet50-eca resnet50-se] [--steps 850] [--teacher-steps 1000]

The teacher is trained on the synthetic 10-class task exactly as ``benchmarks/int8_trained.py`` trains its models
(its ``train``, same scenes, schedule and cache under ``benchmarks/.cache/``). Each student starts from the
teacher's non-attention weights and is distilled from *unlabeled* scenes (``synthetic:scenes``: the labels are
never used in training) with :func:`attn_deploy.distill.distill`; then :func:`attn_deploy.distill.report.distill_report`
scores it on 500 held-out labeled scenes (the INT8 benchmark's test scenes), exports teacher and student through the
verified zoo pipeline and times both ONNX graphs interleaved. Each student's run folder (checkpoint, weights,
report, export) is ``benchmarks/.cache/distill/<teacher>-to-<student>``; a run that is already complete is reused.

Students may run in separate processes at once (``--students resnet50-eca`` and ``--students resnet50-se``):
every process rewrites ``distill.{md,json,png}`` from all complete run folders of this teacher, so the last one
to finish writes the full table. The latency change is set beside what the attention cost table predicts
(``benchmarks/results/*/attention-resnet50.json``, ORT FP32 at 224x224, batch 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from attn_deploy.display import console, progress_display, step_progress
from attn_deploy.distill import LossWeights, distill
from attn_deploy.distill.loop import BACKBONE_LR_FACTOR
from attn_deploy.distill.losses import CLASSIFIER_WEIGHTS
from attn_deploy.distill.report import SUMMARY_HEADERS, distill_report, loss_curves, summary_row
from attn_deploy.fsutil import write_json, write_text
from attn_deploy.markdown import markdown_table
from attn_deploy.models import create_model
from benchmarks.int8_trained import CACHE, CLASSES, train
from benchmarks.precision_eval import RESULTS

TEACHER = "resnet50-ema"
STUDENTS = ("resnet50-eca", "resnet50-se")


def run_folder(cache: Path, teacher: str, student: str) -> Path:
    """Where one student's run lives."""
    return cache / "distill" / f"{teacher}-to-{student}"


def distill_student(args: argparse.Namespace, weights: Path, student_name: str) -> dict[str, Any]:
    """Distil (or resume) one student and write its report; a complete run's report is reused."""
    folder = run_folder(args.cache, args.teacher, student_name)
    done = folder / "report.json"
    if done.is_file():
        report = json.loads(done.read_text())
        if all(report["training"].get(k) == v for k, v in settings(args).items()):
            return report
    teacher = create_model(args.teacher, weights=weights)
    student = create_model(student_name, num_classes=CLASSES, calibrate=False)
    resume = (folder / "checkpoint.pt").is_file()
    title = f"distil {args.teacher} -> {student_name}"
    with step_progress(title) as on_step:
        result = distill(
            teacher,
            student,
            "synthetic:scenes",
            steps=args.steps,
            batch=args.batch,
            imgsz=args.size,
            lr=args.lr,
            backbone_lr_factor=args.backbone_lr_factor,
            freeze_batchnorm=args.batchnorm == "frozen",
            weights=loss_weights(args),
            out=folder,
            resume=resume,
            checkpoint_every=10,
            on_step=on_step,
        )
    with progress_display(f"report {student_name}") as (_, _, on_stage):
        return distill_report(
            teacher,
            weights,
            result,
            folder,
            eval_images=args.eval_images,
            latency_imgsz=(args.latency_size, args.latency_size),
            latency_runs=args.latency_runs,
            threads=args.threads,
            on_stage=on_stage,
        )


def loss_weights(args: argparse.Namespace) -> LossWeights:
    """The loss weights of the command line."""
    return LossWeights(args.attention_weight, args.output_weight, 1.0, args.temperature)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings a stored report must have been made with to be reused."""
    return {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "backbone_lr_factor": args.backbone_lr_factor,
        "freeze_batchnorm": args.batchnorm == "frozen",
        "loss_weights": loss_weights(args).to_dict(),
    }


def predicted_change(teacher: str, student: str) -> float | None:
    """ORT FP32 latency change teacher -> student that the newest stored attention cost table predicts."""
    arch = teacher.split("-")[0]
    tables = sorted(RESULTS.glob(f"*/attention-{arch}.json"))
    if not tables:
        return None
    rows = json.loads(tables[-1].read_text())["results"]
    p50 = {r["model"]: r["p50_ms"] for r in rows if r["backend"] == "ort" and r["precision"] == "fp32"}
    return p50[student] / p50[teacher] - 1 if teacher in p50 and student in p50 else None


def summarize(args: argparse.Namespace, training: dict[str, Any]) -> None:
    """Rewrite ``distill.{md,json,png}`` from every complete run folder of this teacher."""
    reports = {}
    for folder in sorted((args.cache / "distill").glob(f"{args.teacher}-to-*")):
        if (folder / "report.json").is_file():
            reports[folder.name.split("-to-", 1)[1]] = json.loads((folder / "report.json").read_text())
    for student, report in reports.items():
        report["predicted_change"] = predicted_change(args.teacher, student)
    histories = {}
    for student in reports:
        state = torch.load(run_folder(args.cache, args.teacher, student) / "checkpoint.pt", weights_only=True)
        histories[f"{args.teacher} -> {student}"] = state["history"]
    write_json(args.results / "distill.json", {"teacher_training": training, "runs": reports})
    write_text(args.results / "distill.md", markdown(reports, training))
    loss_curves(histories, args.results / "distill.png")


def markdown(reports: dict[str, dict[str, Any]], training: dict[str, Any]) -> str:
    """The Markdown report: the summary table, the prediction of the cost table, how it was measured."""
    headers = [*SUMMARY_HEADERS, "cost table predicts", "distil CPU-min"]
    rows = []
    for report in reports.values():
        predicted = report.get("predicted_change")
        rows.append(
            [
                *summary_row(report),
                "-" if predicted is None else f"{predicted:+.0%}",
                f"{report['training']['cpu_seconds'] / 60:.1f}",
            ]
        )
    first = next(iter(reports.values()), None)
    how = ""
    if first:
        tr, sc, machine = first["training"], first["scores"], first["machine"]
        how = (
            f"Teacher: {first['teacher']['model']} trained on labeled scenes ({CLASSES} classes) for "
            f"{training.get('steps')} steps of {training.get('batch')} at {training.get('size')} px "
            f"(final loss {training.get('final_loss')}). Students: distilled for {tr['steps']} steps of {tr['batch']} "
            f"unlabeled scenes at {tr['imgsz'][0]}x{tr['imgsz'][1]} (labels never used), loss weights "
            f"{tr['loss_weights']}, lr {tr['lr']} (attention) / x{tr['backbone_lr_factor']} (rest), BatchNorm "
            f"{'frozen (the teacher statistics)' if tr.get('freeze_batchnorm') else 'statistics trained'}. Scored on "
            f"{sc['images']} held-out labeled scenes (the INT8 benchmark's test set). Latency: ONNX Runtime CPU FP32, "
            f"batch 1, {first['latency_imgsz'][0]}x{first['latency_imgsz'][1]} (the cost table's size), p50 of "
            f"{first['latency_runs']} interleaved runs per model in one process. Machine: {machine.get('cpu')}, "
            f"{machine.get('threads')} threads, load average {machine.get('load_average')}.\n"
        )
    return (
        f"# Attention distillation: {first['teacher']['model'] if first else ''} into cheaper attention "
        "(ONNX Runtime CPU)\n\n"
        f"{markdown_table(headers, rows)}\n{how}\n{NOTES}"
    )


NOTES = """Reading the numbers:

- Agreement is the student's top-1 against the teacher's on held-out scenes; accuracy is against their labels.
- "distil minutes" is wall-clock time, which other work on the machine inflates (load average above): the
  distillation's own CPU time ("distil CPU-min", all threads counted) is the fairer measure of its cost, and
  "15 minutes on 2 cores" means 30 CPU-minutes.
- With 500 scenes, one standard error of an agreement near 96% is about 0.9 points.
- Latency is measured interleaved in one process, so the teacher/student ratio holds under load even where the
  milliseconds do not; the cost table was measured on another day and machine.
"""


def main(argv: list[str] | None = None) -> None:
    """Train (or reuse) the teacher, distil each student, write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=TEACHER)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=1000,
        help="the INT8 benchmark's 1000: its cached teacher is reused",
    )
    parser.add_argument(
        "--steps", type=int, default=850, help="about 25 CPU-minutes of resnet50 (AMD EPYC, AVX2)"
    )
    parser.add_argument("--batch", type=int, default=16, help="distillation images per step")
    parser.add_argument(
        "--teacher-batch", type=int, default=32, help="the teacher's training batch (the INT8 benchmark's 32)"
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--backbone-lr-factor", type=float, default=BACKBONE_LR_FACTOR)
    parser.add_argument("--batchnorm", choices=("frozen", "train"), default="frozen")
    parser.add_argument("--attention-weight", type=float, default=CLASSIFIER_WEIGHTS.attention)
    parser.add_argument("--output-weight", type=float, default=CLASSIFIER_WEIGHTS.output)
    parser.add_argument("--temperature", type=float, default=CLASSIFIER_WEIGHTS.temperature)
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--latency-size", type=int, default=224)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads of the ORT timing (default: cores)"
    )
    parser.add_argument(
        "--train-threads", type=int, default=None, help="PyTorch threads while training (1 on a busy machine)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.train_threads:
        torch.set_num_threads(args.train_threads)
    weights, training = train(args.teacher, args.teacher_steps, args.size, args.teacher_batch, args.cache)
    console.print(f"{args.teacher}: trained ({training})", highlight=False)
    for student in args.students:
        report = distill_student(args, weights, student)
        console.print(markdown_table(SUMMARY_HEADERS, [summary_row(report)]), highlight=False, soft_wrap=True)
    summarize(args, training)
    console.print(f"done in {time.perf_counter() - started:.0f} s", highlight=False)


if __name__ == "__main__":
    main()
