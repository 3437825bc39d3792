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
from attn_deploy.bench.claims import SeedComparison, noise_margin_pct
from attn_deploy.bench.explain import EXPLAIN_COLUMNS, explain_counts
from attn_deploy.bench.machine import machine_slug
from attn_deploy.bench.roofline import achieved, peak_for
from attn_deploy.bench.run import BenchRun, TargetResult
from attn_deploy.bench.timing import CV_WARN, p50_ratio_margin
from attn_deploy.markdown import fmt, markdown_table

TARGET_SPEEDUP = 1.5
"""Target: the deployed ONNX Runtime FP32 graph is at least this many times faster than PyTorch eager."""
TARGET_INT8_SPEEDUP = 2.5
"""Target (issue 13): ONNX Runtime INT8 at least this many times faster than PyTorch eager FP32."""
TARGET_OVER_NAIVE = {f"resnet50-{a}": 1.1 for a in ("se", "cbam", "eca", "ema")}
"""Target: our export at least this many times faster than the naive export (others: never slower, 1.0)."""
OVERHEAD_LIMITS_PCT = {"resnet50": {"se": 10.0, "eca": 10.0, "cbam": 20.0, "coordatt": 20.0, "ema": 50.0}}
"""Target: ORT FP32 latency overhead over ``none`` per attention (yolov8s: the seed's claimed FPS drop)."""

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
    """A target checked on one model.

    ``passed`` is the value against the limit, nothing else: a value short of the limit is never "met", even
    when the shortfall is within the run's noise (``within_noise`` then says the miss is not conclusive).
    """

    target: str
    model: str
    value: float
    limit: str
    passed: bool
    note: str = ""
    within_noise: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with the verdict."""
        return {**self.__dict__, "verdict": self.verdict}

    @property
    def verdict(self) -> str:
        """``met``, ``missed (within noise)`` or ``MISSED``."""
        if self.passed:
            return "met"
        return "missed (within noise)" if self.within_noise else "MISSED"


def at_least(value: float, limit: float, margin: float) -> tuple[bool, bool]:
    """(met, missed only within noise) for a ``value >= limit`` target with a relative noise ``margin``."""
    return value >= limit, value < limit and value >= limit * (1.0 - margin)


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
            "GFLOP/s",
            "% of peak",
            "matches PyTorch",
        ],
    )
    for r in run.results:
        t = r.target
        rate, share = roofline_cells(run, r)
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
                rate,
                share,
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
    if run.peaks:
        table.notes.append(
            f"Roofline: GFLOP/s = the model's GFLOPs / p50; % of peak against this run's measured GEMM peak "
            f"(ONNX Runtime MatMul FP32 {run.peaks['fp32']:.0f} GFLOP/s, MatMulInteger INT8 "
            f"{run.peaks['int8']:.0f} GOP/s, {run.threads} threads; int8 targets against the INT8 peak). "
            "Convolutions and matmuls only are counted."
        )
    table.notes += [f"skipped {s.backend}/{s.precision} ({s.model}): {s.reason}" for s in run.skipped]
    return table


def _vs_torch(run: BenchRun, model: str, backend: str, precision: str, limit: float) -> Check | None:
    result, torch_result = run.result(model, backend, precision), run.result(model, "torch")
    if result is None or torch_result is None or result.ratio_vs_torch is None:
        return None
    met, noise = at_least(result.ratio_vs_torch, limit, p50_ratio_margin(torch_result.wall, result.wall))
    name = "ONNX Runtime" if precision == "fp32" else f"ONNX Runtime {precision.upper()}"
    return Check(
        f"{name} vs PyTorch eager FP32 (p50 speed-up)",
        model,
        result.ratio_vs_torch,
        f">= {limit}",
        met,
        "",
        noise,
    )


def roofline_cells(run: BenchRun, result: TargetResult) -> tuple[float | None, float | None]:
    """(achieved GFLOP/s, % of the measured peak) of one result; ``None`` where unknown."""
    rate = achieved(run.profiles.get(result.target.model, {}).get("gflops"), result.wall.p50_ms)
    peak = peak_for(result.target.precision, run.peaks)
    return rate, (100.0 * rate / peak if rate is not None and peak else None)


def explain_table(run: BenchRun) -> TableData:
    """Per ONNX Runtime target: what its optimised graph holds (NCHWc convs, reorders, Expand, unfused ops)."""
    table = TableData(
        "What ONNX Runtime runs (optimised graph, --explain)",
        ["model", "backend", "precision", *EXPLAIN_COLUMNS, "nodes"],
    )
    for r in run.results:
        ops = run.explain.get(r.target.key)
        if ops is None:
            continue
        counts = explain_counts(ops)
        table.rows.append([r.target.model, r.target.backend, r.target.precision, *counts.values()])
    table.notes.append(
        "Saved with SessionOptions.optimized_model_filepath at ORT_ENABLE_ALL. nchwc: ops run in ORT's blocked "
        "channel layout; each reorder copies a full tensor between layouts; an Add or Relu still present was not "
        "fused into a convolution. The full histogram of each graph: the JSON report's 'explain'."
    )
    return table


def speed_checks(run: BenchRun, deployed: str = "ort") -> list[Check]:
    """The targets: deployed ORT FP32 >= 1.5x PyTorch eager, ORT INT8 >= 2.5x; our export >= the naive one
    (>= 1.1x on resnet50 with SE, CBAM, ECA, EMA).

    A value below its limit is a miss; one within the run's noise margin (two standard errors of the p50
    ratio) of the limit is reported as "missed (within noise)", never as met.
    """
    checks = []
    for model in run.models:
        ours, naive = run.result(model, deployed), run.result(model, "ort-naive")
        for precision, limit in (("fp32", TARGET_SPEEDUP), ("int8", TARGET_INT8_SPEEDUP)):
            check = _vs_torch(run, model, deployed, precision, limit)
            if check:
                checks.append(check)
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
            limit = TARGET_OVER_NAIVE.get(model, 1.0)
            met, noise = at_least(ratio, limit, margin)
            checks.append(
                Check(
                    "our export vs naive export (naive p50 / ours)",
                    model,
                    ratio,
                    f">= {limit}",
                    met,
                    note,
                    noise,
                )
            )
    return checks


def overhead_checks(rows: Sequence[AttentionRow], arch: str, seed: SeedComparison | None) -> list[Check]:
    """ORT FP32 latency overhead over ``none`` against issue 13's limits (resnet50) or, where the seed article
    claims an FPS drop (yolov8s), the measured FPS drop against the claimed one. Noise: two standard errors."""
    checks = []
    limits = OVERHEAD_LIMITS_PCT.get(arch, {})
    for row in rows:
        value = row.latency_overhead_pct.get("ort")
        if value is not None and row.attention in limits:
            limit = limits[row.attention]
            margin = _overhead_margin(rows, row)
            checks.append(
                Check(
                    "ORT FP32 latency overhead vs none (%)",
                    row.model,
                    value,
                    f"<= {limit:g}",
                    value <= limit,
                    f"noise +-{margin:.1f} points",
                    value > limit and value <= limit + margin,
                )
            )
    for seed_row in seed.rows if seed else []:
        claimed, measured = seed_row.claimed_fps_drop_pct, seed_row.deployed_fps_drop_pct
        if claimed is None or measured is None or seed_row.attention == BASELINE or claimed.recalled:
            continue
        margin = seed_row.noise_margin_pct or 0.0
        checks.append(
            Check(
                "ORT FP32 FPS drop vs none (%), claimed by the seed article",
                f"{arch}-{seed_row.attention}",
                measured,
                f"<= {claimed.value:.1f}",
                measured <= claimed.value,
                f"noise +-{margin:.1f} points",
                measured > claimed.value and measured <= claimed.value + margin,
            )
        )
    return checks


def _overhead_margin(rows: Sequence[AttentionRow], row: AttentionRow) -> float:
    base = next((r for r in rows if r.attention == BASELINE), None)
    a, b = row.latency.get("ort"), base.latency.get("ort") if base else None
    return 100.0 * p50_ratio_margin(a.wall, b.wall) if a and b else 0.0


def checks_table(checks: Sequence[Check]) -> TableData:
    """The checks as a table."""
    table = TableData("Targets", ["target", "model", "value", "limit", "verdict", "note"])
    table.rows = [[c.target, c.model, c.value, c.limit, c.verdict, c.note] for c in checks]
    table.notes.append(
        "verdict: 'met' only when the value meets the limit; 'missed (within noise)' when it misses by less than "
        "the run's noise margin (two standard errors of the p50 ratio): not conclusive either way."
    )
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


def _cite(claim: Any, qualitative: bool = False) -> str:
    """A claimed figure with its source number; recalled figures say so; a qualitative claim is a reading."""
    if not claim:
        return "-"
    text = f"<= {claim.value:g} (our reading)" if qualitative else fmt(claim.value)
    return f"{text} [{claim.source + 1}]" + (" recalled" if claim.recalled else "")


def _exceeds(row: Any) -> str:
    if row.claimed_overhead_pct is None:
        return "-"
    if row.unchecked:
        return "unchecked (recalled claim)"
    return "FLAG" if row.flagged else "no"


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
            "claimed FPS drop %",
            f"{d} FPS drop %",
            "noise +-",
            "exceeds claim",
        ],
    )
    for r in comparison.rows:
        basis = r.claim_basis or "-"
        qualitative = r.claim_basis == "qualitative"
        if qualitative:
            basis = f'"{r.qualitative}"'
        table.rows.append(
            [
                r.attention,
                r.params_m,
                _cite(r.claimed_params_m),
                r.gflops,
                _cite(r.claimed_gflops) if r.claimed_gflops or not r.gflops_note else "not comparable",
                _cite(r.claimed_overhead_pct, qualitative),
                basis,
                r.deployed_overhead_pct,
                _cite(r.claimed_fps_drop_pct),
                r.deployed_fps_drop_pct,
                r.noise_margin_pct,
                _exceeds(r),
            ]
        )
        if r.gflops_note and not r.claimed_gflops:
            table.notes.append(f"{r.attention} GFLOPs: {r.gflops_note}")
    table.notes += [f"[{i + 1}] {s}" for i, s in enumerate(comparison.sources)]
    for ratio in comparison.speed_ratios:
        measured = f"{ratio.measured:.2f}x" if ratio.measured is not None else "not measured"
        table.notes.append(
            f"{ratio.attention} vs {ratio.reference} speed: claimed {ratio.claimed:g}x [{ratio.source + 1}], "
            f"measured {measured} on {d} (p50 {ratio.reference} / p50 {ratio.attention}, same run)"
        )
    table.notes.append(
        "Claimed GFLOPs in multiply-adds were doubled; GFLOPs claimed at another input size are not compared. "
        "'exceeds claim': the deployed latency overhead is above the claimed overhead by more than the noise "
        "margin (two standard errors of the p50 ratio); claims recalled from memory are shown, never flagged. "
        "A qualitative claim ('negligible') is our reading of it as a latency limit, not a figure of the source."
    )
    return table


def plot_machine(run: BenchRun) -> str:
    """The second title line of a plot: where and how it was timed (a PNG travels without its Markdown)."""
    return f"{run.machine.get('cpu')}, {run.threads} threads, {run.runs} runs"


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
        "peaks": run.peaks,
        "explain": run.explain,
        "skipped": [s.to_dict() for s in run.skipped],
        "warnings": run.warnings(),
        "checks": [c.to_dict() for c in speed_checks(run)],
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
    if run.explain:
        tables.append(explain_table(run))
    text = f"# Benchmark: {', '.join(run.models)}\n\n{machine_lines(run)}\n\n" + "\n".join(
        t.markdown() for t in tables
    )
    text += "".join(f"\n- warning: {w}" for w in run.warnings())
    bars, series = latency_bars_data(run)
    png = folder / f"{stem}-latency.png"
    plots.latency_bars(
        bars, series, png, f"{', '.join(run.models)}: latency p50 (whisker p90)\n{plot_machine(run)}"
    )
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
        "checks": [c.to_dict() for c in speed_checks(run) + overhead_checks(rows, arch, seed)],
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
        checks_table(speed_checks(run) + overhead_checks(rows, arch, seed)),
    ]
    if seed is not None:
        tables.insert(1, seed_table(seed))
    if run.explain:
        tables.append(explain_table(run))
    text = f"# Attention cost: {arch}\n\n{machine_lines(run)}\n\n" + "\n".join(t.markdown() for t in tables)
    text += "".join(f"\n- warning: {w}" for w in run.warnings())
    if seed is not None and seed.flagged():
        names = ", ".join(r.attention for r in seed.flagged())
        text += f"\n\n**Deployed overhead above the claim:** {names}.\n"

    labels = latency_labels(rows)
    base = next((r for r in rows if r.attention == BASELINE), None)
    latency = {
        r.attention: {lbl: (x.wall.p50_ms, x.wall.p90_ms) for lbl, x in r.latency.items()} for r in rows
    }
    overhead = {
        r.attention: {
            lbl: (v, noise_margin_pct(r, base, lbl) or 0.0) if v is not None and base else None
            for lbl, v in r.latency_overhead_pct.items()
        }
        for r in rows
        if r.attention != BASELINE
    }
    claimed = (
        {r.attention: r.claimed_overhead_pct.value for r in seed.rows if r.claimed_overhead_pct}
        if seed
        else {}
    )
    shape = f"{run.imgsz[0]}x{run.imgsz[1]}, batch {run.batch}\n{plot_machine(run)}"
    paths = [folder / f"{stem}-latency.png", folder / f"{stem}-overhead.png"]
    plots.latency_bars(latency, labels, paths[0], f"{arch} + attention: latency p50, {shape}")
    plots.overhead_chart(overhead, labels, paths[1], f"{arch}: latency overhead vs none, {shape}", claimed)
    return [
        fsutil.write_text(folder / f"{stem}.md", text + "\n"),
        fsutil.write_json(folder / f"{stem}.json", attention_json(run, arch, rows, seed)),
        *paths,
    ]
