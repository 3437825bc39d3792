"""Attention distillation on a trained detector: yolov8n-ema distilled into yolov8n-eca with the data's boxes.

    python -m benchmarks.distill_detector [--steps 300] [--batch 16] [--data build/detect-data-128/data.yaml]

The teacher is ``build/trained/yolov8n-ema.pt`` (``benchmarks/train_detectors.py``; its class count is read from
the weights and must be the data's). The student starts from the teacher's non-attention weights and learns from
the data.yaml's train split (``attn-deploy distill --data``: attention maps, the teacher's head outputs and the
YOLO task loss on the boxes); :func:`attn_deploy.distill.report.distill_report` then scores both on the val split
(mAP50, mAP50-95, AP small, box agreement), exports both through the verified zoo pipeline and times both ONNX
graphs interleaved. The run folder (checkpoint, weights, report, export) is
``benchmarks/.cache/distill/yolov8n-ema-to-yolov8n-eca-data``; an interrupted run resumes from its checkpoint.
Writes ``benchmarks/results/distill_detector.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from attn_deploy.display import console, progress_display, step_progress
from attn_deploy.distill import distill, yolo_source
from attn_deploy.distill.report import SUMMARY_HEADERS, distill_report, loss_curves, map_table, summary_row
from attn_deploy.fsutil import write_json, write_text
from attn_deploy.markdown import markdown_table
from attn_deploy.models import create_model
from benchmarks.int8_trained import CACHE
from benchmarks.precision_eval import RESULTS

TEACHER = "yolov8n-ema"
STUDENT = "yolov8n-eca"
IMGSZ = 128


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Distil (or resume) the student and write its report in the run folder; the report."""
    folder = args.cache / "distill" / f"{TEACHER}-to-{STUDENT}-data"
    teacher = create_model(TEACHER, weights=args.teacher_weights)
    student = create_model(STUDENT, num_classes=teacher.spec.num_classes, calibrate=False)
    with step_progress(f"distil {TEACHER} -> {STUDENT}") as on_step:
        result = distill(
            teacher,
            student,
            yolo_source(args.data, (args.imgsz, args.imgsz)),
            steps=args.steps,
            batch=args.batch,
            imgsz=args.imgsz,
            lr=args.lr,
            out=folder,
            resume=(folder / "checkpoint.pt").is_file(),
            checkpoint_every=10,
            on_step=on_step,
        )
    with progress_display(f"report {STUDENT}") as (_, _, on_stage):
        report = distill_report(
            teacher,
            args.teacher_weights,
            result,
            folder,
            eval_images=args.eval_images,
            latency_runs=args.latency_runs,
            threads=args.threads,
            on_stage=on_stage,
        )
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "distill_detector.json", report)
    write_text(args.results / "distill_detector.md", markdown(report))
    loss_curves({f"{TEACHER} -> {STUDENT}": result.history}, args.results / "distill_detector.png")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The summary table (mAP50-95 teacher / student and its drop in points), the mAP table, how it ran."""
    tr, machine = report["training"], report["machine"]
    headers = [*SUMMARY_HEADERS, "distil CPU-min"]
    row = [*summary_row(report), f"{tr['cpu_seconds'] / 60:.1f}"]
    return (
        f"# Attention distillation on a trained detector: {TEACHER} -> {STUDENT} (ONNX Runtime CPU)\n\n"
        f"{markdown_table(headers, [row])}\n{map_table(report['scores'])}"
        f"Distilled for {tr['steps']} steps of {tr['batch']} images at {tr['imgsz'][0]}x{tr['imgsz'][1]} from "
        f"{tr['source']} (attention maps, the teacher's head outputs and the YOLO task loss on the boxes), loss "
        f"weights {tr['loss_weights']}, lr {tr['lr']} (attention) / x{tr['backbone_lr_factor']} (rest). Latency: "
        f"ONNX Runtime CPU FP32, batch 1, {report['latency_imgsz'][0]}x{report['latency_imgsz'][1]}, p50 of "
        f"{report['latency_runs']} interleaved runs per model. Machine: {machine.get('cpu')}, "
        f"{machine.get('threads')} threads, load average {machine.get('load_average')}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Distil the trained detector and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-weights", type=Path, default=Path("build/trained/yolov8n-ema.pt"))
    parser.add_argument("--data", type=Path, default=Path("build/detect-data-128/data.yaml"))
    parser.add_argument("--imgsz", type=int, default=IMGSZ)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads of the ORT timing (default: cores)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = run(args)
    console.print(markdown_table(SUMMARY_HEADERS, [summary_row(report)]), highlight=False, soft_wrap=True)
    console.print(f"done in {time.perf_counter() - started:.0f} s", highlight=False)


if __name__ == "__main__":
    main()
