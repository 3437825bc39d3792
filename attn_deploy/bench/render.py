"""Benchmark tables, checks against the targets, and report files (Markdown + JSON + PNG).

Each table is built once as :class:`TableData` and rendered both as Markdown (reports) and as a rich table
(the CLI), so the two never disagree.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attn_deploy import fsutil
from attn_deploy.bench import plots
from attn_deploy.bench.attention_cost import BASELINE, AttentionRow, label, latency_labels
from attn_deploy.bench.claims import SeedComparison
from attn_deploy.bench.machine import machine_slug
from attn_deploy.bench.run import BenchRun
from attn_deploy.bench.timing import CV_WARN, p50_ratio_margin
from attn_deploy.markdown import fmt, markdown_table

TARGET_SPEEDUP = 1.3
"""Target: the deployed ONNX Runtime graph is at least this many times faster than PyTorch eager."""

FLOPS_NOTE = (
    "GFLOPs: torch.utils.flop_counter, 2 FLOPs per multiply-add (Ultralytics' convention; papers that say "
    "'GFLOPs' for multiply-adds report half). The counter sees convolutions and matmuls only: modules made "
    "of elementwise ops and reductions (SimAM, the pooling and gating parts of the others) add 0 GFLOPs here "
    "although they do run work, which the latency columns show."
)


@dataclass
class TableData:
    """A table: title, headers, rows of plain values (formatted by :func:`attn_deploy.markdown.fmt`)."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """``### title``, the table, and its notes."""
        notes = "".join(f"\n{n}\n" for n in self.notes)
        return f"### {self.title}\n\n{markdown_table(self.headers, self.rows)}{notes}"


@dataclass(frozen=True)
class Check:
    """A target checked on one model."""

    target: str
    model: str
    value: float
    limit: str
    passed: bool
    note: str = ""


def _verified(value: bool | None) -> str:
    return {True: "yes", False: "NO (wrong outputs)", None: "-"}[value]


def latency_table(run: BenchRun) -> TableData:
    """Every timed target: p50/p90/p99, FPS, speed-up over PyTorch eager, CV."""
    table = TableData(
        f"Latency (batch {run.batch}, {run.imgsz[0]}x{run.imgsz[1]}, {run.threads} threads, {run.runs} runs"
        + (", ONNX exported with dynamic batch/H/W)" if run.dynamic else ")"),
        [
            "model",
            "backend",
            "precision",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "FPS",
            "x torch",
            "CV",
            "matches PyTorch",
        ],
    )
    for r in run.results:
        t = r.target
        table.rows.append(
            [
                t.model,
                t.backend,
                t.precision,
                r.wall.p50_ms,
                r.wall.p90_ms,
                r.wall.p99_ms,
                r.wall.fps(run.batch),
                r.ratio_vs_torch,
                r.wall.cv,
                _verified(t.verified),
            ]
        )
        if r.gpu:
            table.notes.append(
                f"{t.key}: GPU compute p50 {fmt(r.gpu.p50_ms)} ms (end-to-end {fmt(r.wall.p50_ms)} ms)"
            )
    table.notes.append(
        "x torch = PyTorch eager p50 / this p50, same interleaved run (> 1: faster). "
        f"CV = std / mean; above {CV_WARN:.2f} the machine was noisy."
    )
    table.notes += [f"skipped {s.backend}/{s.precision} ({s.model}): {s.reason}" for s in run.skipped]
    return table


def speed_checks(run: BenchRun, deployed: str = "ort") -> list[Check]:
    """The targets: deployed ORT >= 1.3x PyTorch eager; our export never slower than the naive export.

    "Never slower" allows the run's noise margin (two standard errors of the p50 ratio).
    """
    checks = []
    for model in run.models:
        ours, naive = run.result(model, deployed), run.result(model, "ort-naive")
        if ours and ours.ratio_vs_torch is not None:
            checks.append(
                Check(
                    "ONNX Runtime vs PyTorch eager (p50 speed-up)",
                    model,
                    ours.ratio_vs_torch,
                    f">= {TARGET_SPEEDUP}",
                    ours.ratio_vs_torch >= TARGET_SPEEDUP,
                )
            )
        if ours and naive:
            ratio = naive.wall.p50_ms / ours.wall.p50_ms
            margin = p50_ratio_margin(naive.wall, ours.wall)
            rewrites = ", ".join(ours.target.export.rewrites) if ours.target.export else ""
            if not rewrites:
                note = "no rewrite applied: the same graph twice"
            elif ratio > 1 + margin:
                note = f"faster: rewrites {rewrites}"
            elif ratio >= 1 - margin:
                note = f"same within noise (+-{margin:.1%})"
            else:
                note = f"SLOWER beyond noise (+-{margin:.1%})"
            if naive.target.verified is False:
                note += "; the naive graph does not match PyTorch"
            checks.append(
                Check(
                    "our export vs naive export (naive p50 / ours)",
                    model,
                    ratio,
                    ">= 1.0",
                    ratio >= 1 - margin,
                    note,
                )
            )
    return checks


def checks_table(checks: Sequence[Check]) -> TableData:
    """The checks as a table."""
    table = TableData("Targets", ["target", "model", "value", "limit", "met", "note"])
    table.rows = [[c.target, c.model, c.value, c.limit, c.passed, c.note] for c in checks]
    return table


def attention_cost_table(rows: Sequence[AttentionRow], arch: str, batch: int) -> TableData:
    """Params, GFLOPs, and per backend p50 / FPS / overhead vs ``none``."""
    labels = latency_labels(rows)
    headers = ["attention", "params M", "+params %", "GFLOPs", "+GFLOPs %"]
    for lbl in labels:
        headers += [f"{lbl} p50 ms", f"{lbl} FPS", f"{lbl} +latency %"]
    table = TableData(f"Attention cost on {arch} (vs {BASELINE}, one interleaved run)", headers)
    for row in rows:
        cells: list[Any] = [
            row.attention,
            row.params_m,
            row.params_overhead_pct,
            row.gflops,
            row.gflops_overhead_pct,
        ]
        for lbl in labels:
            r = row.latency.get(lbl)
            cells += (
                [r.wall.p50_ms, r.wall.fps(batch), row.latency_overhead_pct.get(lbl)] if r else [None] * 3
            )
        table.rows.append(cells)
        if row.skipped:
            table.notes.append(f"{row.attention}: not measured: {row.skipped}")
    table.notes.append(FLOPS_NOTE)
    return table


def seed_table(comparison: SeedComparison) -> TableData:
    """Claimed vs measured for one architecture, with the flag."""
    d = comparison.deployed
    table = TableData(
        f"Claimed vs measured on {comparison.arch}",
        [
            "attention",
            "params M",
            "claimed params M",
            "GFLOPs",
            "claimed GFLOPs",
            "claimed overhead %",
            "claim basis",
            f"{d} +latency %",
            "noise +-",
            "exceeds claim",
        ],
    )

    def cite(c: Any) -> str:
        return f"{fmt(c.value)} [{c.source + 1}]" if c else "-"

    for r in comparison.rows:
        basis = r.claim_basis or "-"
        if r.claim_basis == "qualitative":
            basis = f'"{r.qualitative}"'
        table.rows.append(
            [
                r.attention,
                r.params_m,
                cite(r.claimed_params_m),
                r.gflops,
                cite(r.claimed_gflops),
                cite(r.claimed_overhead_pct),
                basis,
                r.deployed_overhead_pct,
                r.noise_margin_pct,
                "FLAG" if r.flagged else ("no" if r.claimed_overhead_pct else "-"),
            ]
        )
    table.notes += [f"[{i + 1}] {s}" for i, s in enumerate(comparison.sources)]
    table.notes.append(
        "Claimed GFLOPs in multiply-adds were doubled. 'exceeds claim': the deployed latency overhead is "
        "above the claimed overhead by more than the noise margin (two standard errors of the p50 ratio)."
    )
    return table


def machine_lines(run: BenchRun) -> str:
    """A Markdown bullet list describing the machine and the run."""
    m = run.machine
    v = m.get("versions", {})
    cores = f"{m.get('physical_cores')} physical cores, {m.get('logical_cpus')} logical"
    load = f"before timing {m.get('load_average_before')}, after {m.get('load_average')}"
    return "\n".join(
        [
            f"- CPU: {m.get('cpu')} ({cores}), RAM {m.get('memory_gib')} GiB, GPU: {m.get('gpu') or 'none'}",
            f"- threads: {run.threads} (torch.set_num_threads and ORT intra_op_num_threads)",
            f"- load average (1/5/15 min): {load}",
            f"- torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, onnx {v.get('onnx')}, "
            f"python {v.get('python')}, {m.get('os')}",
            f"- {run.runs} timed runs per target after {run.warmup_s:g} s warm-up, targets interleaved",
        ]
    )


def results_json(run: BenchRun) -> dict[str, Any]:
    """The ``--json`` document: model, batch, imgsz, threads, machine, results; then details."""
    return {
        "model": run.models[0] if len(run.models) == 1 else run.models,
        "batch": run.batch,
        "imgsz": list(run.imgsz),
        "threads": run.threads,
        "machine": run.machine,
        "dynamic": run.dynamic,
        "results": [r.to_dict(run.batch) for r in run.results],
        "runs": run.runs,
        "warmup_s": run.warmup_s,
        "profiles": run.profiles,
        "skipped": [s.to_dict() for s in run.skipped],
        "warnings": run.warnings(),
        "checks": [c.__dict__ for c in speed_checks(run)],
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def results_folder(run: BenchRun, root: str | os.PathLike[str] = "benchmarks/results") -> Path:
    """``<root>/<date>-<machine>/``."""
    return Path(root) / f"{dt.date.today().isoformat()}-{machine_slug(run.machine)}"


def latency_bars_data(run: BenchRun) -> tuple[dict[str, dict[str, tuple[float, float] | None]], list[str]]:
    """Bar-chart data: per model, per ``backend[/precision]``: (p50, p90)."""
    series = list(dict.fromkeys(label(r) for r in run.results))
    bars: dict[str, dict[str, tuple[float, float] | None]] = {m: {} for m in run.models}
    for r in run.results:
        bars[r.target.model][label(r)] = (r.wall.p50_ms, r.wall.p90_ms)
    return bars, series


def write_model_report(run: BenchRun, folder: str | os.PathLike[str], stem: str) -> list[Path]:
    """``<stem>.md``, ``<stem>.json`` and ``<stem>-latency.png`` for a single-model run; returns the paths."""
    folder = Path(folder)
    tables = [latency_table(run), checks_table(speed_checks(run))]
    text = f"# Benchmark: {', '.join(run.models)}\n\n{machine_lines(run)}\n\n" + "\n".join(
        t.markdown() for t in tables
    )
    text += "".join(f"\n- warning: {w}" for w in run.warnings())
    bars, series = latency_bars_data(run)
    png = folder / f"{stem}-latency.png"
    plots.latency_bars(bars, series, png, f"{', '.join(run.models)}: latency p50 (whisker p90)")
    return [
        fsutil.write_text(folder / f"{stem}.md", text + "\n"),
        fsutil.write_json(folder / f"{stem}.json", results_json(run)),
        png,
    ]


def attention_json(
    run: BenchRun, arch: str, rows: Sequence[AttentionRow], seed: SeedComparison | None
) -> dict[str, Any]:
    """The attention-cost JSON: the run's results plus the table and the seed comparison."""
    return {
        "arch": arch,
        **results_json(run),
        "flops_convention": FLOPS_NOTE,
        "table": [row.to_dict(run.batch) for row in rows],
        "seed": seed.to_dict() if seed else None,
    }


def write_attention_report(
    run: BenchRun,
    arch: str,
    rows: Sequence[AttentionRow],
    seed: SeedComparison | None,
    folder: str | os.PathLike[str],
) -> list[Path]:
    """``attention-<arch>.md/.json`` and the latency and overhead charts; returns the paths."""
    folder, stem = Path(folder), f"attention-{arch}"
    tables = [
        attention_cost_table(rows, arch, run.batch),
        latency_table(run),
        checks_table(speed_checks(run)),
    ]
    if seed is not None:
        tables.insert(1, seed_table(seed))
    text = f"# Attention cost: {arch}\n\n{machine_lines(run)}\n\n" + "\n".join(t.markdown() for t in tables)
    text += "".join(f"\n- warning: {w}" for w in run.warnings())
    if seed is not None and seed.flagged():
        names = ", ".join(r.attention for r in seed.flagged())
        text += f"\n\n**Deployed overhead above the claim:** {names}.\n"

    labels = latency_labels(rows)
    latency = {
        r.attention: {lbl: (x.wall.p50_ms, x.wall.p90_ms) for lbl, x in r.latency.items()} for r in rows
    }
    overhead = {
        r.attention: {lbl: (v, v) if v is not None else None for lbl, v in r.latency_overhead_pct.items()}
        for r in rows
        if r.attention != BASELINE
    }
    claimed = (
        {r.attention: r.claimed_overhead_pct.value for r in seed.rows if r.claimed_overhead_pct}
        if seed
        else {}
    )
    size = f"{run.imgsz[0]}x{run.imgsz[1]}, batch {run.batch}"
    paths = [folder / f"{stem}-latency.png", folder / f"{stem}-overhead.png"]
    plots.latency_bars(latency, labels, paths[0], f"{arch} + attention: latency p50 ({size})")
    plots.overhead_chart(overhead, labels, paths[1], f"{arch}: latency overhead vs none ({size})", claimed)
    return [
        fsutil.write_text(folder / f"{stem}.md", text + "\n"),
        fsutil.write_json(folder / f"{stem}.json", attention_json(run, arch, rows, seed)),
        *paths,
    ]
