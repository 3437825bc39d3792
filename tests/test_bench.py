"""Benchmark tooling: statistics, interleaving, the attention table, seed claims, and the `bench` CLI.

No assertion depends on how fast anything ran: timings are checked for shape and consistency only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy import machine
from attn_deploy.attention import list_attention
from attn_deploy.bench.attention_cost import attention_table, resolve_attentions
from attn_deploy.bench.claims import compare_with_seed, load_claims
from attn_deploy.bench.render import attention_cost_table, seed_table
from attn_deploy.bench.run import BenchRun, TargetResult, bench_models
from attn_deploy.bench.targets import BenchTarget, parse_choices
from attn_deploy.bench.timing import (
    LatencyStats,
    interleaved_order,
    p50_ratio_margin,
    percentile,
    physical_cores,
    time_interleaved,
)
from attn_deploy.cli import main
from attn_deploy.errors import ConfigError

SEED_PREFIX = "the seed article"


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Benchmarks fix torch's thread count process-wide; give other tests back what they had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ statistics


def test_percentile_interpolates_linearly() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(1, 101)), 90) == pytest.approx(90.1)
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 100) == 3
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_stats_and_coefficient_of_variation() -> None:
    stats = LatencyStats.from_samples([18, 10, 14, 12, 16])
    assert (stats.runs, stats.mean_ms, stats.min_ms, stats.p50_ms) == (5, 14.0, 10.0, 14.0)
    assert stats.std_ms == pytest.approx(math.sqrt(10.0))  # sample std (ddof=1)
    assert stats.cv == pytest.approx(math.sqrt(10.0) / 14.0)
    assert stats.p90_ms == pytest.approx(17.2) and stats.p99_ms == pytest.approx(17.92)
    assert stats.fps(4) == pytest.approx(4000.0 / 14.0)
    assert stats.noisy  # CV 0.23 > 0.10
    steady = LatencyStats.from_samples([5.0, 5.0, 5.0])
    assert steady.cv == 0.0 and not steady.noisy
    assert LatencyStats.from_samples([3.0]).std_ms == 0.0
    assert set(stats.to_dict()) >= {"p50_ms", "p90_ms", "p99_ms", "cv", "runs"}


def test_p50_ratio_margin_is_two_standard_errors_of_the_medians() -> None:
    steady = LatencyStats.from_samples([5.0] * 10)
    assert p50_ratio_margin(steady, steady) == 0.0
    a = LatencyStats.from_samples([9.0, 11.0] * 10)  # cv = 1 / mean-ish
    expected = 2 * math.sqrt(math.pi / 2) * math.sqrt(a.cv**2 / 20 + 0.0)
    assert p50_ratio_margin(a, steady) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------- interleaving


def test_interleaved_order_rotates_the_first_backend() -> None:
    order = interleaved_order(["a", "b", "c"], 4)
    assert order == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert all(sorted(row) == ["a", "b", "c"] for row in order)
    assert interleaved_order([], 3) == []


def test_time_interleaved_warms_up_by_time_then_round_robins() -> None:
    now = [0.0]
    calls: list[str] = []

    def make(name: str, gpu_ms: float | None):
        def call() -> float | None:
            calls.append(name)
            now[0] += 1.0  # every call "takes" one second on the fake clock
            return gpu_ms

        return call

    samples = time_interleaved(
        {"a": make("a", None), "b": make("b", 0.25)},
        runs=3,
        warmup_s=2.5,
        clock=lambda: now[0],
        sleep=lambda s: None,
    )
    # Warm-up: rounds until 2.5 s passed (2 rounds = 4 s), rotating like the timed rounds.
    assert calls[:4] == ["a", "b", "b", "a"]
    assert calls[4:] == [n for row in interleaved_order(["a", "b"], 3) for n in row]
    assert samples["a"].wall_ms == [1000.0] * 3 and samples["a"].gpu_ms == []
    assert samples["b"].gpu_ms == [0.25] * 3
    calls.clear()
    time_interleaved({"a": make("a", None)}, runs=1, warmup_s=0, clock=lambda: now[0], sleep=lambda s: None)
    assert calls == ["a", "a", "a"]  # at least two warm-up rounds, then one timed run
    with pytest.raises(ValueError):
        time_interleaved({"a": make("a", None)}, runs=0)


def test_physical_cores_counts_cores_not_hyperthreads(tmp_path, monkeypatch) -> None:
    # 4 usable CPUs: two hyper-thread pairs of one socket -> 2 physical cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    blocks = [f"processor\t: {p}\nphysical id\t: 0\ncore id\t\t: {p // 2}\n" for p in range(4)]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("\n".join(blocks))
    assert physical_cores(cpuinfo) == 2
    # a process allowed on CPUs 0 and 1 only (one pair) has one physical core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert physical_cores(cpuinfo) == 1
    # no cpuinfo (or no core ids, as in some VMs): the usable CPUs count
    assert physical_cores(tmp_path / "missing") == 2


def test_parse_choices_checks_and_deduplicates() -> None:
    assert parse_choices("torch, ORT,torch", ("torch", "ort"), "backend") == ["torch", "ort"]
    with pytest.raises(ConfigError, match="unknown backend 'tf'; choose from torch, ort"):
        parse_choices("torch,tf", ("torch", "ort"), "backend")
    assert resolve_attentions("se,none,se") == ["none", "se"]
    with pytest.raises(ConfigError, match="unknown attention 'nope'"):
        resolve_attentions("nope")


# ------------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "resnet18-none", "--backends", "torch,foo"], "unknown backend 'foo'"),
        (["--model", "resnet18-none", "--precision", "fp64"], "unknown precision 'fp64'"),
        (["--model", "resnet18-none", "--attention", "se"], "--attention goes with --arch"),
        (["--arch", "resnet18", "--attention", "se,bogus"], "unknown attention 'bogus'"),
    ],
)
def test_cli_bad_options_give_one_line_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err.replace("\n", " ")
    assert "Traceback" not in err


@pytest.mark.slow
def test_cli_json_schema_and_report_on_a_tiny_run(tmp_path: Path) -> None:
    out, report = tmp_path / "bench.json", tmp_path / "report"
    argv = ["bench", "--model", "resnet18-none", "--imgsz", "64", "--runs", "3", "--warmup-s", "0"]
    assert main([*argv, "--json", str(out), "--out", str(report)]) == 0
    doc = json.loads(out.read_text())
    assert {"model", "batch", "imgsz", "threads", "machine", "results"} <= set(doc)
    assert (doc["model"], doc["batch"], doc["imgsz"], doc["threads"]) == (
        "resnet18-none",
        1,
        [64, 64],
        physical_cores(),
    )
    assert {"cpu", "isa", "physical_cores", "memory_gib", "load_average", "versions"} <= set(doc["machine"])
    assert (
        doc["machine"]["isa"] == machine.describe_cpu()["isa"]
    )  # one reader for bench, manifests and validation
    results = {r["backend"]: r for r in doc["results"]}
    assert set(results) == {"torch", "ort", "ort-naive"}
    for r in results.values():
        assert {"backend", "precision", "p50_ms", "p90_ms", "p99_ms", "fps", "ratio_vs_torch"} <= set(r)
        assert r["precision"] == "fp32" and r["runs"] == 3
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["fps"] == pytest.approx(1000.0 / r["p50_ms"])
        assert r["ratio_vs_torch"] == pytest.approx(results["torch"]["p50_ms"] / r["p50_ms"])
    assert results["torch"]["ratio_vs_torch"] == 1.0
    assert results["ort"]["verified"] is True and results["ort-naive"]["verified"] is True
    assert (
        "adaptive_avg_pool->reduce_mean" in results["ort"]["rewrites"]
        and results["ort-naive"]["rewrites"] == []
    )
    files = sorted(p.name for p in report.iterdir())
    assert files == ["bench-resnet18-none-latency.png", "bench-resnet18-none.json", "bench-resnet18-none.md"]
    assert (report / "bench-resnet18-none-latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| resnet18-none | ort-naive | fp32 |" in (report / "bench-resnet18-none.md").read_text()


# ------------------------------------------------------------------------------------ attention table


@pytest.mark.slow
def test_attention_table_lists_every_attention_with_overhead_vs_none() -> None:
    names = [f"resnet18-{a}" for a in resolve_attentions("all")]
    run = bench_models(names, backends=["torch"], imgsz=64, runs=1, warmup_s=0, threads=1)
    rows = attention_table(run, "resnet18")
    assert [r.attention for r in rows] == resolve_attentions("all")
    assert {r.attention for r in rows} == set(list_attention())
    none = rows[0]
    assert (
        none.attention == "none"
        and none.latency_overhead_pct["torch"] == 0.0
        and none.params_overhead_pct == 0
    )
    for row in rows[1:]:
        if row.skipped:  # sparse keeps 32 positions; a 64x64 input leaves 2x2 at the last stage
            assert (
                row.attention == "sparse" and "needs 32 positions on its stride-32 feature map" in row.skipped
            )
            continue
        assert row.params_m > 0 and row.gflops > 0
        overhead = row.latency_overhead_pct["torch"]
        assert overhead == pytest.approx(
            (row.latency["torch"].wall.p50_ms / none.latency["torch"].wall.p50_ms - 1) * 100
        )
        assert row.params_overhead_pct is not None and row.params_overhead_pct >= 0
    table = attention_cost_table(rows, "resnet18", batch=1)
    assert [r[0] for r in table.rows] == [r.attention for r in rows]
    assert "torch +latency %" in table.headers and "+GFLOPs %" in table.headers
    assert any("sparse: not measured" in n for n in table.notes) and any("SimAM" in n for n in table.notes)


# ------------------------------------------------------------------------------------------ seed claims


def _result(model: str, p50: float) -> TargetResult:
    target = BenchTarget(model, "ort", "fp32", call=lambda: None)
    return TargetResult(target, LatencyStats.from_samples([p50] * 20), None, None)


def test_seed_comparison_flags_deployed_overhead_above_the_claim(tmp_path: Path) -> None:
    p50 = {"none": 10.0, "se": 12.0, "cbam": 10.0, "coordatt": 10.3}
    models = [f"resnet50-{a}" for a in p50]
    run = BenchRun(models, 1, (224, 224), 2, 20, 0.0, {})
    run.results = [_result(f"resnet50-{a}", v) for a, v in p50.items()]
    run.profiles = {m: {"params_m": 25.0 + i, "gflops": 8.0} for i, m in enumerate(models)}
    claims_file = tmp_path / "claims.json"
    claims_file.write_text(
        json.dumps(
            {
                "conventions": {"qualitative_threshold_pct": 5.0},
                "tables": [
                    {"arch": "resnet50", "source": "seed", "rows": {"se": {"params_m": None}}},
                    {
                        "arch": "resnet50",
                        "source": "A",
                        "rows": {"none": {"latency_ms": 164}, "se": {"latency_ms": 167}},
                    },
                    {
                        "arch": "resnet50",
                        "source": "B",
                        "flops_unit": "GMACs",
                        "rows": {"none": {"gflops": 3.858, "params_m": 25.56}, "cbam": {"gflops": 3.864}},
                    },
                    {
                        "arch": "*",
                        "source": "C",
                        "rows": {"coordatt": {"qualitative": "nearly no", "about": "cost"}},
                    },
                ],
            }
        )
    )
    comparison = compare_with_seed(attention_table(run, "resnet50"), "resnet50", load_claims(claims_file))
    rows = {r.attention: r for r in comparison.rows}
    assert rows["se"].claim_basis == "latency" and rows["se"].claimed_overhead_pct.value == pytest.approx(
        300 / 164
    )
    assert rows["se"].deployed_overhead_pct == pytest.approx(20.0) and rows["se"].flagged
    assert rows["cbam"].claim_basis == "gflops" and not rows["cbam"].flagged
    assert rows["cbam"].claimed_gflops.value == pytest.approx(2 * 3.864)  # GMACs doubled
    assert (
        rows["coordatt"].claim_basis == "qualitative" and rows["coordatt"].claimed_overhead_pct.value == 5.0
    )
    assert not rows["coordatt"].flagged  # +3% < 5%
    assert (
        rows["none"].claimed_params_m.value == 25.56
        and comparison.sources[rows["none"].claimed_params_m.source] == "B"
    )
    assert [r.attention for r in comparison.flagged()] == ["se"]
    assert seed_table(comparison).rows[1][-1] == "FLAG"


def test_seed_claims_file_holds_the_seed_articles_figures() -> None:
    claims = load_claims()
    assert all(t.source for t in claims.tables)
    for arch in ("yolov8s", "resnet50"):
        seed = [t for t in claims.for_arch(arch) if t.source.startswith(SEED_PREFIX)]
        assert len(seed) == 1 and claims.for_arch(arch)[0] is seed[0], arch  # first: it wins
        assert set(seed[0].rows) == {"none", "se", "cbam", "eca", "ema"}
        assert not seed[0].recalled
        assert all(v is not None for row in seed[0].rows.values() for v in row.values())  # no null slots
    yolo = claims.for_arch("yolov8s")[0]
    assert (yolo.imgsz, yolo.value("none", "fps"), yolo.value("eca", "gflops")) == (640, 142, 28.8)
    assert claims.for_arch("resnet50")[0].rows["eca"]["speed_x"] == 1.2
    assert all(t.recalled for t in claims.tables if "recalled" in t.source)


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_torch_cuda_call_reports_gpu_compute_time(cuda_graph: bool) -> None:
    from attn_deploy.bench.gpu import TorchCudaCall

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    call = TorchCudaCall(model, torch.from_numpy(np.ones((1, 3, 32, 32), np.float32)), cuda_graph)
    assert all(call() > 0 for _ in range(3))


def test_isa_features_from_cpuinfo(tmp_path: Path, monkeypatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "model name\t: AMD EPYC\nflags\t\t: fpu sse2 fma f16c avx2 avx512f avx512_vnni sha_ni\n"
    )
    monkeypatch.setattr(machine, "CPUINFO", cpuinfo)
    assert machine.isa_features() == ["avx2", "avx512f", "avx512_vnni", "f16c", "fma"]  # ISA_FEATURES' order
    assert machine.describe_cpu()["cpu"] == "AMD EPYC"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")  # Arm: none of the x86 features
    assert machine.isa_features() == []
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "missing")  # macOS, Windows: unknown, not "none"
    assert machine.isa_features() is None and machine.describe_cpu()["cpu"]
