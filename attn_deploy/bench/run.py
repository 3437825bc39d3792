"""Benchmark runs: prepare zoo models, build their targets, time them all interleaved, collect results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attn_deploy.bench.explain import optimized_op_histogram
from attn_deploy.bench.machine import describe_machine, load_average
from attn_deploy.bench.roofline import measure_peaks
from attn_deploy.bench.targets import (
    REFERENCE,
    BenchTarget,
    ModelUnderTest,
    OnnxCache,
    Skipped,
    build_targets,
)
from attn_deploy.bench.timing import CV_WARN, LatencyStats, fix_threads, time_interleaved
from attn_deploy.data.synthetic import synthetic_images
from attn_deploy.errors import AttnDeployError, ConfigError
from attn_deploy.fsutil import scratch_dir
from attn_deploy.models import create_model, model_spec, resolve_name
from attn_deploy.models.profile import count_gflops, count_params
from attn_deploy.workflow.zoo import SAMPLE_SEED, parse_imgsz

BUSY_LOAD = 0.5
"""Warn when the 1-minute load average before timing exceeds this many times the physical cores."""
StageCallback = Callable[[str], None]
CallCallback = Callable[[str, bool], None]


@dataclass
class TargetResult:
    """Timings of one target; ``gpu`` holds GPU compute time where the backend measures it."""

    target: BenchTarget
    wall: LatencyStats
    gpu: LatencyStats | None
    ratio_vs_torch: float | None
    """PyTorch eager p50 / this p50 from the same run (> 1: faster than PyTorch)."""

    def to_dict(self, batch: int) -> dict[str, Any]:
        """The JSON result entry (the documented keys first, details after; roofline in ``render``)."""
        t, export = self.target, self.target.export
        return {
            "backend": t.backend,
            "precision": t.precision,
            "p50_ms": self.wall.p50_ms,
            "p90_ms": self.wall.p90_ms,
            "p99_ms": self.wall.p99_ms,
            "fps": self.wall.fps(batch),
            "ratio_vs_torch": self.ratio_vs_torch,
            "model": t.model,
            "mean_ms": self.wall.mean_ms,
            "min_ms": self.wall.min_ms,
            "cv": self.wall.cv,
            "runs": self.wall.runs,
            "gpu_compute_p50_ms": self.gpu.p50_ms if self.gpu else None,
            "verified": t.verified,
            "rewrites": export.rewrites if export else None,
            "problem": export.problem if export else None,
        }


@dataclass
class BenchRun:
    """Everything one interleaved run measured."""

    models: list[str]
    batch: int
    imgsz: tuple[int, int]
    threads: int
    runs: int
    warmup_s: float
    machine: dict[str, Any]
    results: list[TargetResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)
    dynamic: bool = False
    """The ONNX graphs were exported with dynamic batch and H/W."""
    peaks: dict[str, float] = field(default_factory=dict)
    """Measured GEMM peaks at the run's threads (:func:`attn_deploy.bench.roofline.measure_peaks`)."""
    explain: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per ONNX Runtime target key: op histogram of the graph ORT runs (``--explain``)."""

    @property
    def square_size(self) -> int | None:
        """The input size when H == W (what claim tables state as ``imgsz``), else ``None``."""
        return int(self.imgsz[0]) if self.imgsz[0] == self.imgsz[1] and self.imgsz[0] else None

    def result(self, model: str, backend: str, precision: str = "fp32") -> TargetResult | None:
        """The result of one target, if it was timed."""
        for r in self.results:
            if (r.target.model, r.target.backend, r.target.precision) == (model, backend, precision):
                return r
        return None

    def warnings(self) -> list[str]:
        """A busy machine, noisy timings (CV above the threshold) and exported graphs that do not verify."""
        load = (self.machine.get("load_average_before") or [0.0])[0]
        cores = self.machine.get("physical_cores") or 1
        notes = []
        if load > BUSY_LOAD * cores:
            notes.append(
                f"machine busy: 1-min load average {load} on {cores} cores before timing; PyTorch's OpenMP "
                "threads slow down far more than ONNX Runtime's on busy cores: 'x torch' is inflated"
            )
        notes += [
            f"{r.target.key}: CV {r.wall.cv:.2f} > {CV_WARN:.2f}, timings are noisy "
            f"(load average {self.machine.get('load_average')}); compare ratios, not absolute times"
            for r in self.results
            if r.wall.noisy
        ]
        seen: set[str] = set()
        for r in self.results:
            e = r.target.export
            if e and r.target.verified is False and r.target.model + r.target.backend not in seen:
                seen.add(r.target.model + r.target.backend)
                notes.append(
                    f"{r.target.model}/{r.target.backend}: graph does NOT match PyTorch: {e.problem}"
                )
        return notes


def prepare_model(name: str, imgsz: int | str | tuple[int, int] | None, batch: int) -> ModelUnderTest:
    """A zoo model and a deterministic synthetic batch, preprocessed as the model expects."""
    spec = model_spec(name)
    size = parse_imgsz(imgsz, spec)
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    module = create_model(spec.name)
    sample = spec.normalize(synthetic_images(batch, size, seed=SAMPLE_SEED))
    return ModelUnderTest(
        name=spec.name,
        module=module,
        sample=sample,
        input_name=spec.input_name,
        output_names=list(spec.output_names),
        task=spec.task,
        preprocess=spec.preprocessing(size),
    )


def profile(mut: ModelUnderTest) -> dict[str, float]:
    """Parameters (millions) and GFLOPs of one forward pass at the benchmark's input shape."""
    return {
        "params_m": count_params(mut.module) / 1e6,
        "gflops": count_gflops(mut.module, tuple(mut.sample.shape)),
    }


def bench_models(
    names: Sequence[str],
    *,
    backends: Sequence[str],
    precisions: Sequence[str] = ("fp32",),
    batch: int = 1,
    imgsz: int | str | tuple[int, int] | None = None,
    threads: int | None = None,
    runs: int = 30,
    warmup_s: float = 2.0,
    cuda_graphs: bool = False,
    dynamic: bool = False,
    workdir: str | Path | None = None,
    on_stage: StageCallback | None = None,
    on_call: CallCallback | None = None,
    on_timing_start: Callable[[int], None] | None = None,
    explain: bool = False,
) -> BenchRun:
    """Time every model x backend x precision in ONE interleaved run.

    ``dynamic`` exports the ONNX graphs with dynamic batch and H/W (timed at the sample's shape).
    ``workdir`` keeps the exported ONNX files (default: a temporary folder removed afterwards).
    ``on_timing_start(total_calls)`` is told how many timed calls follow (progress bars).
    ``explain`` records the op histogram of the graph ONNX Runtime optimised for each ORT target.
    The GEMM peaks of the roofline columns are measured once, after the timing.
    """
    if runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {runs}")
    if warmup_s < 0:
        raise ConfigError(f"--warmup-s must be >= 0, got {warmup_s}")
    count = fix_threads(threads)
    with scratch_dir("attn-deploy-bench-") as tmp:
        cache = OnnxCache(Path(workdir) if workdir else Path(tmp), dynamic)
        names = [resolve_name(n) for n in names]
        run = BenchRun(names, batch, (0, 0), count, runs, warmup_s, {}, dynamic=dynamic)
        targets: list[BenchTarget] = []
        for name in names:
            if on_stage:
                on_stage(f"{name}: build")
            try:
                mut = prepare_model(name, imgsz, batch)
                run.profiles[mut.name] = profile(mut)
            except AttnDeployError as exc:
                if len(names) == 1:
                    raise
                run.skipped.append(
                    Skipped(name, "*", "*", str(exc))
                )  # e.g. a module that needs a larger input
                continue
            run.imgsz = tuple(mut.sample.shape[2:])  # type: ignore[assignment]
            if on_stage:
                on_stage(f"{name}: export + sessions")
            built, skipped = build_targets(
                mut, backends, precisions, threads=count, cache=cache, cuda_graphs=cuda_graphs
            )
            targets += built
            run.skipped += skipped
        if not targets:
            raise ConfigError(
                "nothing to time: " + "; ".join(f"{s.backend}/{s.precision}: {s.reason}" for s in run.skipped)
            )
        if on_stage:
            on_stage("timing")
        if on_timing_start:
            on_timing_start(runs * len(targets))
        load_before = load_average()
        calls = {t.key: t.call for t in targets}
        samples = time_interleaved(calls, runs=runs, warmup_s=warmup_s, on_call=on_call)
        run.machine = {**describe_machine(count), "load_average_before": load_before}
        if on_stage:
            on_stage("GEMM peaks" + (" + optimized graphs" if explain else ""))
        run.peaks = measure_peaks(count)
        if explain:
            run.explain = {t.key: optimized_op_histogram(t.onnx_path) for t in targets if t.onnx_path}
    for t in targets:
        s = samples[t.key]
        gpu = LatencyStats.from_samples(s.gpu_ms) if s.gpu_ms else None
        run.results.append(TargetResult(t, LatencyStats.from_samples(s.wall_ms), gpu, None))
    for r in run.results:
        ref = run.result(r.target.model, REFERENCE)
        r.ratio_vs_torch = ref.wall.p50_ms / r.wall.p50_ms if ref else None
    return run
