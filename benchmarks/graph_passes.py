"""Before/after of the deploy-time ONNX graph passes (issue 13) on ONNX Runtime CPU, FP32, batch 1.

    python -m benchmarks.graph_passes [--models resnet50-none,resnet50-se,...] [--rounds 15] [--threads 2]

For each model: the naive export (plain ``torch.onnx.export``, no rewrites), our export without the passes
("before") and with them, run in ORT's plain session ("passes") and in the session ``make_session`` creates,
whose channel gates run in ORT's blocked layout ("after", ``attn_deploy/backends/ort_nchwc.py``), all verified
against PyTorch by the export; the op histogram of the graph ONNX Runtime runs for each (``bench --explain``);
then every session timed interleaved, round-robin, ``--rounds`` rounds. Reported: the medians over rounds of the
per-round ratios before / after, passes / after (the blocked gates alone) and naive / after (robust on a shared
machine: the calls of a round see the same load), and each model's latency overhead over ``<arch>-none`` before
and after. Writes ``benchmarks/results/<--name>.{md,json}`` (default ``graph_passes``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from attn_deploy.backends.ort import make_session
from attn_deploy.bench.explain import explain_counts, histogram, optimized_graph
from attn_deploy.bench.machine import describe_machine, load_average
from attn_deploy.bench.run import prepare_model
from attn_deploy.bench.targets import ORT_BENCH_CONFIG
from attn_deploy.bench.timing import SETTLE_S, fix_threads, interleaved_order
from attn_deploy.errors import AttnDeployError, ConfigError, ExportError
from attn_deploy.export.pipeline import export_onnx
from attn_deploy.fsutil import check_name, check_writable_dir, write_json, write_text
from attn_deploy.markdown import fmt, markdown_table

DEFAULT_MODELS = "resnet50-none,resnet50-se,resnet50-eca,resnet50-cbam,resnet50-coordatt,resnet50-ema"
OUT = Path("benchmarks/results")
MAX_ROUNDS = 1000


EXPORTS: dict[str, dict[str, bool]] = {
    "naive": {"rewrite": False, "graph_passes": False},  # plain torch.onnx.export, what the issue compares to
    "before": {"graph_passes": False},  # our rewrites, without the passes
    "passes": {},  # our export as shipped, in ORT's own session
}
VARIANTS = [*EXPORTS, "after"]
"""``after``: the shipped export in the session :func:`make_session` makes, its channel gates run blocked
(``attn_deploy.backends.ort_nchwc``); every other variant runs in ORT's plain session."""


def export_pair(name: str, folder: Path) -> dict[str, Any]:
    """The naive export of ``name`` and ours without and with the graph passes; paths, passes, explain counts.

    A naive export that fails verification is left out (its row then has no naive ratio)."""
    mut = prepare_model(name, None, 1)
    entry: dict[str, Any] = {"model": name, "feed": mut.feed}
    for variant, options in EXPORTS.items():
        path = folder / f"{name}-{variant}.onnx"
        try:
            result = export_onnx(
                mut.module,
                mut.sample,
                path,
                input_names=[mut.input_name],
                output_names=mut.output_names,
                **options,
            )
        except ExportError as exc:
            if variant != "naive":
                raise
            print(f"{name}: naive export left out: {exc}")
            continue
        entry[variant] = {
            "path": path,
            "passes": result.graph_passes,
            "explain": explain_counts(histogram(optimized_graph(path, blocked_gates=False))),
            "max_abs_err": result.parity.max_abs,
            "cosine": result.parity.cosine,
        }
    entry["after"] = {
        **entry["passes"],
        "explain": explain_counts(histogram(optimized_graph(entry["passes"]["path"]))),
    }
    return entry


def time_rounds(entries: list[dict[str, Any]], threads: int, rounds: int) -> dict[str, list[float]]:
    """Interleaved wall times (ms) per ``model/variant``, one call each per round, order rotating."""
    calls = {}
    for e in entries:
        for variant in [v for v in VARIANTS if v in e]:
            session = make_session(
                e[variant]["path"], threads=threads, config=ORT_BENCH_CONFIG, blocked_gates=variant == "after"
            )
            feed = e["feed"]
            calls[f"{e['model']}/{variant}"] = lambda s=session, f=feed: s.run(None, f)
    for call in calls.values():  # warm-up
        call()
        call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for order in interleaved_order(list(calls), rounds):
        for key in order:
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            calls[key]()
            times[key].append((time.perf_counter() - started) * 1000.0)
    return times


def _round_ratio(times: dict[str, list[float]], slower: str, faster: str) -> tuple[float, list[float]]:
    """Median and IQR over rounds of the per-round ratio ``slower / faster`` (two keys of ``times``)."""
    ratio = np.array(times[slower]) / np.array(times[faster])
    return float(np.median(ratio)), [float(np.percentile(ratio, 25)), float(np.percentile(ratio, 75))]


def summarise(entries: list[dict[str, Any]], times: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Per model: p50 before/after, median per-round speed-ups over before and naive, overhead vs the arch's
    none before/after."""
    rows = []
    for e in entries:
        name = e["model"]
        base = f"{name.split('-', 1)[0]}-none"
        speedup, speedup_iqr = _round_ratio(times, f"{name}/before", f"{name}/after")
        gates, gates_iqr = _round_ratio(times, f"{name}/passes", f"{name}/after")
        row = {
            "model": name,
            "p50_before_ms": float(np.median(times[f"{name}/before"])),
            "p50_after_ms": float(np.median(times[f"{name}/after"])),
            "speedup": speedup,
            "speedup_iqr": speedup_iqr,
            "gates_speedup": gates,
            "gates_speedup_iqr": gates_iqr,
            "passes": e["after"]["passes"],
            "explain_before": e["before"]["explain"],
            "explain_after": e["after"]["explain"],
        }
        if f"{name}/naive" in times:  # left out when the naive export failed verification
            row["naive_over_ours"], row["naive_over_ours_iqr"] = _round_ratio(
                times, f"{name}/naive", f"{name}/after"
            )
        for variant in ("before", "after"):
            if f"{base}/{variant}" in times and base != name:
                ratio, _ = _round_ratio(times, f"{name}/{variant}", f"{base}/{variant}")
                row[f"overhead_{variant}_pct"] = (ratio - 1.0) * 100.0
        rows.append(row)
    return rows


def _fps_drop_pct(overhead_pct: float | None) -> float | None:
    """The FPS lost to a latency overhead (the seed article's claims are FPS drops)."""
    return None if overhead_pct is None else (1.0 - 1.0 / (1.0 + overhead_pct / 100.0)) * 100.0


def _with_iqr(value: float | None, iqr: list[float] | None) -> str:
    return "-" if value is None or iqr is None else f"{value:.3f} ({iqr[0]:.2f}-{iqr[1]:.2f})"


def _load_note(doc: dict[str, Any]) -> str:
    """Whether other jobs shared the CPU: a 1-minute load above the threads this benchmark runs says so."""
    peak = max(doc["load_before"][0], doc["load_after"][0])
    if peak > doc["threads"] + 0.5:
        return (
            f"SHARED machine (1-min load up to {peak:.1f} on {doc['threads']} threads): other jobs ran during "
            "the measurement, so absolute times are inflated and noisy."
        )
    return f"Quiet machine: the 1-min load stayed at or below {peak:.1f} ({doc['threads']} threads, this run's own)."


def markdown(rows: list[dict[str, Any]], doc: dict[str, Any]) -> str:
    """The results file."""
    m = doc["machine"]
    table = [
        [
            r["model"],
            r["p50_before_ms"],
            r["p50_after_ms"],
            r["speedup"],
            f"{r['speedup_iqr'][0]:.2f}-{r['speedup_iqr'][1]:.2f}",
            _with_iqr(r.get("gates_speedup"), r.get("gates_speedup_iqr")),
            r.get("overhead_before_pct"),
            r.get("overhead_after_pct"),
            _fps_drop_pct(r.get("overhead_after_pct")),
            _with_iqr(r.get("naive_over_ours"), r.get("naive_over_ours_iqr")),
            f"{r['explain_before']['reorders']} / {r['explain_after']['reorders']}",
            f"{r['explain_before']['Expand']} / {r['explain_after']['Expand']}",
            f"{r['explain_before']['nodes']} / {r['explain_after']['nodes']}",
            ", ".join(f"{k} {v}" for k, v in r["passes"].items()) or "-",
        ]
        for r in rows
    ]
    headers = [
        "model",
        "p50 before ms",
        "p50 after ms",
        "before / after (median of rounds)",
        "IQR",
        "of which blocked gates (IQR)",
        "overhead vs none before %",
        "after %",
        "FPS drop after %",
        "naive / ours (median of rounds, IQR)",
        "ORT reorders b/a",
        "Expand b/a",
        "ORT nodes b/a",
        "passes applied",
    ]
    return (
        "# Deploy-time graph passes: before / after on ONNX Runtime CPU (FP32, batch 1)\n\n"
        f"- CPU: {m.get('cpu')} ({m.get('physical_cores')} cores), {doc['threads']} threads, "
        f"{doc['rounds']} interleaved rounds; load average before {doc['load_before']}, after {doc['load_after']}\n"
        f"- {_load_note(doc)} "
        "Each ratio is the median over rounds of before/after measured back to back in the same round; "
        "the IQR column shows its spread. FPS drop = 1 - 1 / (1 + overhead).\n"
        "- before = our export without the graph passes (what every export was until 2026-12-01); after = with "
        "them (our export as shipped), in the session make_session creates, whose channel gates run in ORT's "
        "blocked layout (attn_deploy/backends/ort_nchwc.py); 'of which blocked gates' = the same export in ORT's "
        "plain session / after; naive = plain torch.onnx.export of the same model, no rewrites, no passes, "
        "ORT's plain session. "
        "All verified against PyTorch by the export.\n\n" + markdown_table(headers, table) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Export, explain, time, write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--name", default="graph_passes", help="file stem of the results (default graph_passes)"
    )
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.rounds <= MAX_ROUNDS:
            raise ConfigError(f"--rounds must be 1..{MAX_ROUNDS}, got {args.rounds}")
        name = check_name(args.name, "--name", fix="use one file stem, e.g. graph_passes-yolov8s")
        out = check_writable_dir(args.out)
        threads = fix_threads(args.threads)
        with tempfile.TemporaryDirectory(prefix="graph-passes-") as tmp:
            entries = [export_pair(model, Path(tmp)) for model in args.models.split(",")]
            load_before = load_average()
            times = time_rounds(entries, threads, args.rounds)
            load_after = load_average()
    except AttnDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = summarise(entries, times)
    doc = {
        "machine": describe_machine(threads),
        "threads": threads,
        "rounds": args.rounds,
        "load_before": load_before,
        "load_after": load_after,
        "rows": rows,
        "times_ms": times,
    }
    write_json(out / f"{name}.json", doc)
    write_text(out / f"{name}.md", markdown(rows, doc))
    for r in rows:
        print(r["model"], fmt(r["speedup"]), r.get("overhead_before_pct"), r.get("overhead_after_pct"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
