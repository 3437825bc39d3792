"""Benchmark targets: one timed call per (model, backend, precision), built from the Runner backends.

Backends:

* ``torch``      PyTorch eager on CPU, FP32 (the reference every ratio is taken against);
* ``ort``        attn-deploy's export (deploy rewrites, verified against PyTorch) on ONNX Runtime CPU;
* ``ort-naive``  plain ``torch.onnx.export`` of the same model (``rewrite=False``, same static shape) on the
  same runtime, so the table shows what the rewrites bought. Whether it matches PyTorch is recorded:
  a naive graph that exports but computes something else is timed and flagged, not hidden;
* ``trt``        TensorRT engine compiled from the precision graph (needs TensorRT and an NVIDIA GPU);
* ``torch-cuda`` PyTorch eager on the GPU, optionally replayed as a CUDA graph;
* ``ort-cuda``   our export on ONNX Runtime's CUDA provider (needs onnxruntime-gpu).

Every call goes numpy in -> numpy out through the backend's Runner, so end-to-end times are comparable.
ONNX files are exported once per run into a temporary folder (:class:`OnnxCache`).
Precisions other than FP32 are made by the precision stage (:func:`attn_deploy.precision.apply.convert_onnx`)
with the ``ort-<precision>`` / ``trt-<precision>`` target configs.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attn_deploy.backends.base import Runner
from attn_deploy.backends.ort import OrtRunner
from attn_deploy.backends.tensorrt import TensorRTRunner, gpu_identity, require_tensorrt
from attn_deploy.backends.torch_runner import TorchRunner
from attn_deploy.bench.gpu import TorchCudaCall, cuda_skip_reason
from attn_deploy.bench.timing import TimedCall
from attn_deploy.config import load_config
from attn_deploy.errors import AttnDeployError, ConfigError, ExportError
from attn_deploy.export.pipeline import export_onnx
from attn_deploy.precision.apply import ModelIO, convert_onnx
from attn_deploy.precision.engine import PLAN_NAME, compile_engine

BACKENDS = ("torch", "ort", "ort-naive", "trt", "torch-cuda", "ort-cuda")
PRECISIONS = ("fp32", "fp16", "int8")
ORT_BENCH_CONFIG = {"session.force_spinning_stop": "1"}
"""ONNX Runtime keeps its default spin-waiting inside a run but parks its threads when ``run`` returns
(onnxruntime_session_options_config_keys.h: "forces any TP threads spinning stop immediately when the last of
concurrent Run() call returns"). Otherwise an idle session's pool keeps spinning and steals the cores of
whatever runs next in the interleaved loop: PyTorch, or the many other sessions of an attention table."""
REFERENCE = "torch"
"""The backend every ``ratio_vs_torch`` is taken against (PyTorch eager, CPU, FP32)."""


def parse_choices(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``, each checked against ``allowed``; a one-line ``ConfigError`` otherwise."""
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ConfigError(
            f"unknown {option} {', '.join(map(repr, bad)) or repr(text)}; choose from {', '.join(allowed)}"
        )
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class ExportInfo:
    """An FP32 ONNX export made for the benchmark and whether it matches PyTorch."""

    path: Path
    verified: bool
    rewrites: list[str]
    seconds: float
    problem: str | None = None
    """Why it does not verify (the verification error), when it does not."""


@dataclass
class BenchTarget:
    """One thing to time: ``call()`` runs one batch."""

    model: str
    backend: str
    precision: str
    call: TimedCall
    export: ExportInfo | None = None
    onnx_path: Path | None = None
    """The ONNX file an ONNX Runtime target runs (its precision copy), for ``--explain``."""

    @property
    def key(self) -> str:
        """Unique label in a run."""
        return f"{self.model}/{self.backend}/{self.precision}"

    @property
    def verified(self) -> bool | None:
        """Whether this FP32 graph matches PyTorch (``None``: not an export, or a reduced-precision copy,
        whose accuracy ``attn-deploy validate`` measures)."""
        return self.export.verified if self.export and self.precision == "fp32" else None


@dataclass(frozen=True)
class Skipped:
    """A requested (model, backend, precision) that could not be timed, and why."""

    model: str
    backend: str
    precision: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "reason": self.reason,
        }


@dataclass
class ModelUnderTest:
    """A zoo model with the sample batch it is timed on and what the precision stage needs to know."""

    name: str
    module: nn.Module
    sample: torch.Tensor
    input_name: str
    output_names: list[str]
    task: str | None
    preprocess: Any  # attn_deploy.data.preprocess.PreprocessSpec

    @property
    def feed(self) -> dict[str, np.ndarray]:
        """The sample as a numpy feed."""
        return {self.input_name: self.sample.numpy()}

    def io(self) -> Any:
        """The precision stage's view of the model (``attn_deploy.precision.apply.ModelIO``)."""
        shape = tuple(self.sample.shape)
        return ModelIO(self.module, self.input_name, self.output_names, self.task, self.preprocess, shape)


@dataclass
class OnnxCache:
    """FP32 exports (ours and naive) and their precision copies, made once per run under ``folder``.

    ``dynamic``: export with dynamic batch, height and width (still timed at the sample's shape). Static
    graphs of ours and the naive export barely differ; dynamic ones are where naive exports of EMA and
    CoordAtt stop matching PyTorch.
    """

    folder: Path
    dynamic: bool = False
    _exports: dict[tuple[str, bool], ExportInfo | ExportError] = field(default_factory=dict)

    def fp32(self, mut: ModelUnderTest, rewrite: bool) -> ExportInfo:
        """Our verified export (``rewrite=True``) or the naive one; raises ``ExportError`` if it fails."""
        key = (mut.name, rewrite)
        if key not in self._exports:
            self._exports[key] = self._export(mut, rewrite)
        found = self._exports[key]
        if isinstance(found, ExportError):
            raise found
        return found

    def _export(self, mut: ModelUnderTest, rewrite: bool) -> ExportInfo | ExportError:
        path = self.folder / mut.name / ("model.onnx" if rewrite else "naive.onnx")
        kwargs: dict[str, Any] = {
            "rewrite": rewrite,
            "input_names": [mut.input_name],
            "output_names": mut.output_names,
            "dynamic_batch": self.dynamic,
            "dynamic_hw": self.dynamic,
        }
        try:
            result = export_onnx(mut.module, mut.sample, path, **kwargs)
            return ExportInfo(path, True, [*result.rewrites, *result.graph_passes], result.seconds)
        except ExportError as exc:
            if rewrite:
                return exc
            problem = str(exc)
        try:  # the naive graph failed verification or export; time it anyway if it exports at all
            result = export_onnx(mut.module, mut.sample, path, verify=False, **kwargs)
        except ExportError as exc:
            return exc
        return ExportInfo(path, False, result.rewrites, result.seconds, problem)

    def with_precision(self, mut: ModelUnderTest, base: ExportInfo, precision: str, runtime: str) -> Path:
        """A copy of ``base`` converted to ``precision`` by the precision stage for ``runtime``."""
        if precision == "fp32" and runtime == "ort":
            return base.path

        # One folder per variant: a TensorRT plan is written next to its ONNX.
        path = base.path.parent / f"{base.path.stem}-{runtime}-{precision}" / "model.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base.path, path)
            try:
                convert_onnx(path, load_config(f"{runtime}-{precision}"), mut.io())
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return path


def _runner_call(runner: Runner, feed: dict[str, np.ndarray]) -> TimedCall:
    runner.activate()

    def call() -> None:
        runner.infer(feed)

    return call


def build_targets(
    mut: ModelUnderTest,
    backends: Sequence[str],
    precisions: Sequence[str],
    *,
    threads: int,
    cache: OnnxCache,
    cuda_graphs: bool = False,
) -> tuple[list[BenchTarget], list[Skipped]]:
    """Targets for every requested backend x precision of one model, and those that cannot run (why)."""
    targets: list[BenchTarget] = []
    skipped: list[Skipped] = []
    for backend in backends:
        for precision in precisions if backend not in ("torch", "torch-cuda") else ["fp32"]:
            try:
                targets.append(_build(mut, backend, precision, threads, cache, cuda_graphs))
            except AttnDeployError as exc:
                skipped.append(Skipped(mut.name, backend, precision, str(exc)))
    return targets, skipped


def _build(
    mut: ModelUnderTest, backend: str, precision: str, threads: int, cache: OnnxCache, cuda_graphs: bool
) -> BenchTarget:
    if backend == "torch":
        runner = TorchRunner(mut.module, [mut.input_name], mut.output_names)
        return BenchTarget(mut.name, backend, precision, _runner_call(runner, mut.feed))
    if backend == "torch-cuda":
        reason = cuda_skip_reason()
        if reason:
            raise ConfigError(reason)
        return BenchTarget(mut.name, backend, precision, TorchCudaCall(mut.module, mut.sample, cuda_graphs))
    info = cache.fp32(mut, rewrite=backend != "ort-naive")
    if backend == "trt":
        return _tensorrt_target(mut, info, precision, cache)
    providers = ["CUDAExecutionProvider"] if backend == "ort-cuda" else []
    path = cache.with_precision(mut, info, precision, "ort")
    ort_runner = OrtRunner(
        path, providers=[*providers, "CPUExecutionProvider"], threads=threads, config=ORT_BENCH_CONFIG
    )
    call = _runner_call(ort_runner, mut.feed)
    return BenchTarget(mut.name, backend, precision, call, export=info, onnx_path=path)


def _tensorrt_target(mut: ModelUnderTest, info: ExportInfo, precision: str, cache: OnnxCache) -> BenchTarget:
    require_tensorrt()  # InputError with the reason when TensorRT is missing
    gpu_identity()  # ... or when no GPU is visible
    if precision == "fp32":
        raise ConfigError(
            "TensorRT targets are fp16 or int8 (strongly typed FP16/INT8 graphs); use --precision"
        )
    path = cache.with_precision(mut, info, precision, "trt")
    io = mut.io()
    engine = compile_engine(path, load_config(f"trt-{precision}"), {io.input_name: list(io.export_shape)})
    if not engine.get("built"):
        raise ExportError(f"TensorRT engine not built: {engine.get('reason')}")
    runner = TensorRTRunner(path.parent / PLAN_NAME)
    return BenchTarget(mut.name, "trt", precision, _runner_call(runner, mut.feed), export=info)
