"""The report of a zoo distillation: agreement, accuracy, size, ORT latency of both, and the verified export.

:func:`distill_report` exports teacher and student through the zoo's verified pipeline
(:func:`~attn_deploy.workflow.zoo.export_zoo_model`: ONNX checked against PyTorch in ONNX Runtime), times both
ONNX graphs in one interleaved loop (:func:`~attn_deploy.bench.timing.time_interleaved`, so load from other
processes hits both alike and the ratio holds on a busy machine), and writes ``report.md``, ``report.json`` and
``loss.png`` (the loss terms per step) into the run's folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from attn_deploy.backends.ort import OrtRunner
from attn_deploy.bench.machine import describe_machine
from attn_deploy.bench.targets import ORT_BENCH_CONFIG
from attn_deploy.bench.timing import LatencyStats, fix_threads, time_interleaved
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.distill.evaluate import MAP_KEYS, agreement, size_and_compute
from attn_deploy.distill.loop import DistillResult
from attn_deploy.fsutil import atomic_path, write_json, write_text, write_with
from attn_deploy.markdown import markdown_table
from attn_deploy.workflow.zoo import SAMPLE_SEED, export_zoo_model

EXPORTS = "export"
"""Sub-folder of the run with the exported teacher and student (``export/<model>/ort-fp32``)."""


def distill_report(
    teacher: nn.Module,
    teacher_weights: str | os.PathLike[str] | None,
    result: DistillResult,
    out: str | os.PathLike[str],
    *,
    eval_images: int = 500,
    latency_imgsz: tuple[int, int] | None = None,
    latency_runs: int = 30,
    threads: int | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score, export and time a finished zoo distillation; write ``report.{md,json}`` and ``loss.png`` to ``out``.

    ``teacher`` and ``result.student`` are zoo models (``model.spec``) and ``result.student_path`` is saved;
    ``teacher_weights`` is the file the teacher was loaded from (``None``: its state is saved next to the student,
    so the export is of this teacher, not of the zoo's default weights).
    ``latency_imgsz``: the size the ONNX graphs are exported and timed at (default the training size).
    Returns the report as a dict (what ``report.json`` holds).
    """
    folder = Path(out)
    stage = on_stage or (lambda name: None)
    student, spec_t, spec_s = result.student, teacher.spec, result.student.spec  # type: ignore[union-attr]
    size = tuple(result.settings["imgsz"])
    timed = latency_imgsz or size
    if teacher_weights is None:
        teacher_weights = folder / "teacher.pt"
        with atomic_path(teacher_weights) as tmp:
            torch.save(teacher.state_dict(), tmp)
    stage("evaluate")
    scores = agreement(teacher, student, result.source, spec_t.preprocessing(size), eval_images)
    models: dict[str, dict[str, Any]] = {}
    for role, model, spec, weights in (
        ("teacher", teacher, spec_t, teacher_weights),
        ("student", student, spec_s, result.student_path),
    ):
        stage(f"export {role} {spec.name}")
        artifact, exported = export_zoo_model(
            spec.name, imgsz=timed, weights=weights, out_root=folder / EXPORTS
        )
        models[role] = {
            "model": spec.name,
            **size_and_compute(model, timed),
            "onnx": str(artifact.dir / "model.onnx"),
            "export_verified": bool(exported.parity.passed),
            "export_max_abs": float(exported.parity.max_abs),
        }
    stage("latency")
    count = fix_threads(threads)
    feed = {spec_t.input_name: spec_t.normalize(synthetic_images(1, timed, seed=SAMPLE_SEED)).numpy()}
    runners = {
        role: OrtRunner(m["onnx"], threads=count, config=ORT_BENCH_CONFIG) for role, m in models.items()
    }
    for runner in runners.values():
        runner.activate()
    samples = time_interleaved(
        {role: (lambda r=runner: r.infer(feed) and None) for role, runner in runners.items()},
        runs=latency_runs,
    )
    for role, sample in samples.items():
        stats = LatencyStats.from_samples(sample.wall_ms)
        models[role]["ort_p50_ms"], models[role]["ort_cv"] = stats.p50_ms, stats.cv
    report = {
        "teacher": models["teacher"],
        "student": models["student"],
        "latency_drop": 1.0 - models["student"]["ort_p50_ms"] / models["teacher"]["ort_p50_ms"],
        "latency_imgsz": list(timed),
        "latency_runs": latency_runs,
        "scores": scores,
        "training": {
            **result.settings,
            "steps_run": result.steps - result.resumed_from,
            "resumed_from": result.resumed_from,
            "seconds": round(result.seconds, 1),
            "cpu_seconds": round(result.cpu_seconds, 1),
            "final": _final(result.history),
        },
        "student_weights": str(result.student_path),
        "machine": describe_machine(count),
    }
    write_json(folder / "report.json", report)
    write_text(folder / "report.md", render(report))
    loss_curves({f"{spec_t.name} -> {spec_s.name}": result.history}, folder / "loss.png")
    return report


def _timed(runner: OrtRunner, feed: dict[str, np.ndarray]) -> Callable[[], None]:
    def call() -> None:
        runner.infer(feed)

    return call


def _final(history: Sequence[dict[str, float]], window: int = 20) -> dict[str, float]:
    """Mean of each loss term over the last ``window`` steps."""
    tail = history[-window:]
    return {k: float(np.mean([h[k] for h in tail])) for k in tail[0] if k != "step"} if tail else {}


def summary_row(report: dict[str, Any]) -> list[str]:
    """One table row: teacher, student, agreement, accuracies (detectors on a data.yaml: mAP50-95 and its drop in
    points), params, GFLOPs, latencies, drop, export."""
    t, s, sc = report["teacher"], report["student"], report["scores"]
    agree = sc.get("top1_agreement", sc.get("box_agreement"))
    if "student_map" in sc:
        acc = (
            f"{100 * sc['teacher_map']['map50_95']:.2f} / {100 * sc['student_map']['map50_95']:.2f} "
            f"mAP50-95 (drop {100 * sc['map50_95_drop']:.2f})"
        )
    elif "student_accuracy" in sc:
        acc = f"{sc['teacher_accuracy']:.1%} / {sc['student_accuracy']:.1%}"
    else:
        acc = "-"
    return [
        t["model"], s["model"], f"{agree:.1%}", acc,
        f"{t['params'] / 1e6:.2f}M / {s['params'] / 1e6:.2f}M", f"{t['gflops']:.2f} / {s['gflops']:.2f}",
        f"{t['ort_p50_ms']:.1f} / {s['ort_p50_ms']:.1f}",
        f"{-report['latency_drop']:+.0%}",
        "verified" if s["export_verified"] else "FAILED", f"{report['training']['seconds'] / 60:.1f}",
    ]  # fmt: skip


SUMMARY_HEADERS = [
    "teacher", "student", "agreement", "accuracy (teacher / student)", "params", "GFLOPs",
    "ORT p50 ms (teacher / student)", "latency change", "student export", "distil minutes",
]  # fmt: skip


def render(report: dict[str, Any]) -> str:
    """``report.md``: the summary table, the loss terms and where things are."""
    tr, sc = report["training"], report["scores"]
    final = ", ".join(f"{k} {v:.4f}" for k, v in tr["final"].items())
    held = "the training images (too few to hold some out)" if sc["holdout_shared"] else "held-out images"
    return (
        f"# Distillation {report['teacher']['model']} -> {report['student']['model']}\n\n"
        f"{markdown_table(SUMMARY_HEADERS, [summary_row(report)])}\n"
        f"Scored on {sc['images']} {held}. Latency: ONNX Runtime CPU, batch 1, "
        f"{report['latency_imgsz'][0]}x{report['latency_imgsz'][1]}, p50 of {report['latency_runs']} interleaved "
        f"runs each, {report['machine'].get('threads')} threads.\n\n"
        f"{map_table(sc)}"
        f"Training: {tr['steps_run']} steps ({tr['seconds']:.0f} s, {tr['cpu_seconds']:.0f} CPU-s) of "
        f"{tr['batch']} images at "
        f"{tr['imgsz'][0]}x{tr['imgsz'][1]} from {tr['source']}; lr {tr['lr']} (attention), x"
        f"{tr['backbone_lr_factor']} for the rest; loss weights {tr['loss_weights']}. Final loss terms (mean of "
        f"the last 20 steps): {final}.\n\n"
        f"Student weights: `{report['student_weights']}`; its verified ONNX: `{report['student']['onnx']}`.\n"
    )


def map_table(scores: dict[str, Any]) -> str:
    """The mAP table of a labeled detection source (val split), or nothing."""
    if "student_map" not in scores:
        return ""

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    rows = [[role, *(cell(scores[f"{role}_map"][k]) for k in MAP_KEYS)] for role in ("teacher", "student")]
    return f"mAP on the val split (%):\n\n{markdown_table(['model', *MAP_KEYS], rows)}\n"


def loss_curves(runs: Mapping[str, Sequence[dict[str, float]]], path: str | os.PathLike[str]) -> None:
    """PNG with one panel per run (title -> loss history): every loss term per step on a log scale, the raw values
    faint and a 20-step running mean over them."""
    fig = Figure(figsize=(6.0 * max(1, len(runs)), 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(runs)), squeeze=False)[0]
    for ax, (title, history) in zip(axes, runs.items(), strict=False):
        steps = np.array([h["step"] for h in history])
        for key in [k for k in (history[0] if history else {}) if k != "step"]:
            values = np.array([h.get(key, np.nan) for h in history])
            line = ax.plot(steps, values, alpha=0.25, linewidth=0.8)[0]
            window = min(20, len(values))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color=line.get_color(), label=key)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
