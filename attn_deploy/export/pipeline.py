"""``export_onnx``: any ``nn.Module`` -> a verified ONNX file, or a clear ``ExportError`` and nothing written.

Stages (each reported to ``on_stage`` for progress display):
trace with the deploy rewrites -> ONNX (dynamo exporter) -> simplify (onnxslim) -> graph passes (ort_passes) ->
check dynamic dims ->
verify in ONNX Runtime against PyTorch at the export shape and, when dynamic, at two other shapes -> write.
When the dynamo exporter fails, specialises a dynamic dim or writes a graph that does not verify, the TorchScript
exporter (``dynamo=False``) gets the same chance; whichever graph verifies is kept (``ExportResult.exporter``).

Honest comparison: every PyTorch run gets fresh copies of its inputs (a model that writes into its input changes
a copy, never the caller's sample, and the ONNX graph is compared on the very same input values); the model must
give bit-identical outputs on two runs of the same input, one before and one after tracing (random ops, dropout
forced on, per-call state are refused); every module must be in eval mode; PyTorch's outputs must be finite.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
from torch import nn

from attn_deploy import fsutil
from attn_deploy.backends.ort import make_session
from attn_deploy.backends.torch_runner import flatten_outputs
from attn_deploy.config import check_opset
from attn_deploy.errors import (
    AttnDeployError,
    ConfigError,
    ExportError,
    StaticShapeError,
    UnsupportedOpError,
    exception_summary,
)
from attn_deploy.export.lint import LintIssue, lint_tensorrt, opset_of
from attn_deploy.export.ort_passes import apply_graph_passes
from attn_deploy.export.shapes import (
    DIM_NAMES,
    dynamic_axes_for,
    name_output_dims,
    rename_dims,
    torch_dynamic_shapes,
    verification_shapes,
)
from attn_deploy.export.simplify import simplify_model
from attn_deploy.export.stats import graph_signature, op_histogram
from attn_deploy.parity import ParityReport, compare_outputs, merge_reports, within_fp32_noise
from attn_deploy.rewrite import DeployRewriteMode, RewriteSite

StageCallback = Callable[[str], None]
TOPK_OUTLIER_FRAC = 1e-3


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and proved."""

    path: Path
    rewrites: list[str]
    parity: ParityReport
    shapes: list[tuple[int, ...]]
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    inputs: list[dict]
    outputs: list[dict]
    opset: int
    seconds: float
    rewrite_sites: list[RewriteSite] = field(default_factory=list)
    lint: list[LintIssue] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    exporter: str = "dynamo"
    exporter_fallback: str = ""
    """Why the dynamo exporter's graph was not used (it failed to export or to verify); empty when it was."""
    graph_passes: dict[str, int] = field(default_factory=dict)
    """Deploy-time ONNX graph passes applied (name -> sites), see :mod:`attn_deploy.export.ort_passes`."""


Case = tuple[tuple[int, ...], tuple[torch.Tensor, ...], list[np.ndarray]]  # shape, inputs, PyTorch outputs
EXPORTERS = ("dynamo", "torchscript")


class _StageTimer:
    """Seconds per stage; tells ``on_stage`` when a stage starts."""

    def __init__(self, on_stage: StageCallback | None) -> None:
        self.on_stage = on_stage
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._since = time.perf_counter()

    def start(self, name: str) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = round(now - self._since, 3)
        self._name, self._since = name, now
        if self.on_stage:
            self.on_stage(name)


def _as_tuple(sample: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (sample,) if isinstance(sample, torch.Tensor) else tuple(sample)


def _check_arguments(
    model: object,
    samples: tuple[object, ...],
    path: object,
    opset: object,
    tolerances: Mapping[str, object],
    names: list[str],
) -> None:
    """What the caller passed, checked before any work: a one-line ``ConfigError`` naming the argument (a bare
    TypeError deep in torch, or an export that claims an opset it did not write, otherwise)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module instance, got {type(model).__name__}")
    if not samples or not all(isinstance(t, torch.Tensor) for t in samples):
        got = ", ".join(type(t).__name__ for t in samples) or "nothing"
        raise ConfigError(f"sample must be a torch.Tensor or a tuple of them, got {got}")
    tensors = [t for t in samples if isinstance(t, torch.Tensor)]
    if any(t.dim() == 0 or t.shape[0] < 1 for t in tensors):
        raise ConfigError(
            f"every sample needs a batch of at least 1, got {[tuple(t.shape) for t in tensors]}"
        )
    if not isinstance(path, str | os.PathLike) or not str(path).strip() or os.path.isdir(path):
        raise ConfigError(f"path must name an .onnx file to write, got {path!r}")
    fsutil.check_writable_dir(os.path.dirname(os.path.abspath(path)), "path")
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise ConfigError(f"opset must be an integer 17..20, got {opset!r}")
    check_opset(opset)
    for key, value in tolerances.items():
        high = 1.0 if key == "min_cosine" else math.inf
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
            raise ConfigError(f"{key} must be a number in 0..{high:g}, got {value!r}")
    if not all(isinstance(n, str) and n for n in names):  # distinct: checked with the default names too
        raise ConfigError(f"input and output names must be non-empty strings, got {names}")


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception; an AttnDeployError anywhere in the chain wins (the exporter wraps ours)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    last = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AttnDeployError):
            return current
        seen.add(id(current))
        last = current
        current = current.__cause__ or current.__context__
    return last


def _dynamo_export(
    model: nn.Module,
    sample: tuple[torch.Tensor, ...],
    axes: list[dict[int, str]],
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> onnx.ModelProto:
    program = torch.onnx.export(
        model,
        sample,
        dynamo=True,
        dynamic_shapes=torch_dynamic_shapes(axes) if any(axes) else None,
        input_names=input_names,
        output_names=output_names,
        opset_version=opset,
        verbose=False,
    )
    return cast("torch.onnx.ONNXProgram", program).model_proto


@contextlib.contextmanager
def _silent_jit_onnx_log() -> Iterator[None]:
    """Keep the TorchScript exporter's ONNX log off for the export.

    torch's ``setup_onnx_logging`` tests the function ``_jit_is_onnx_log_enabled`` instead of calling it, so it
    turns the log on whatever ``verbose`` says, and a failed export prints its whole Torch IR graph ("Torch IR
    graph at exception", to standard output) before our one-line error. The log call is a no-op meanwhile."""
    jit = cast("Any", torch._C)
    original = getattr(jit, "_jit_onnx_log", None)
    if original is None:  # another torch: nothing to silence
        yield
        return
    jit._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        jit._jit_onnx_log = original
        jit._jit_set_onnx_log_enabled(False)


def _torchscript_export(
    model: nn.Module,
    sample: tuple[torch.Tensor, ...],
    axes: list[dict[int, str]],
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> onnx.ModelProto:
    """The legacy tracer (``dynamo=False``): the sizes it traces become Shape ops; outputs get the batch axis."""
    batch_axes = {0: DIM_NAMES[0]} if any(0 in a for a in axes) else {}
    dynamic_axes = {n: a for n, a in zip(input_names, axes, strict=True) if a}
    dynamic_axes.update({n: batch_axes for n in output_names if batch_axes})
    with fsutil.scratch_dir("attn-deploy-trace-") as tmp, _silent_jit_onnx_log():
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(
            model,
            sample,
            path,
            dynamo=False,
            dynamic_axes=dynamic_axes or None,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
        )
        return onnx.load(path)


def _trace_to_onnx(
    exporter: str,
    model: nn.Module,
    sample: tuple[torch.Tensor, ...],
    axes: list[dict[int, str]],
    input_names: list[str],
    output_names: list[str],
    opset: int,
    rewrite: bool,
) -> tuple[onnx.ModelProto, list[RewriteSite]]:
    """Trace with ``exporter`` ("dynamo": torch.export; "torchscript": the legacy tracer, ``dynamo=False``)."""
    mode = DeployRewriteMode(model) if rewrite else contextlib.nullcontext()
    export = _dynamo_export if exporter == "dynamo" else _torchscript_export
    # The exporter logs a warning per torchvision op it cannot register, and onnxscript's opset converter logs a
    # traceback when it cannot reach the opset asked for (checked after the trace, one line): both irrelevant here.
    for name in ("torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), mode:
            warnings.simplefilter("ignore")
            proto = export(model, _clones(sample), axes, input_names, output_names, opset)
    except Exception as exc:
        cause = _root_cause(exc)
        if isinstance(cause, AttnDeployError):
            raise cause from None
        raise ExportError(f"torch.onnx.export failed: {exception_summary(cause, fold=True)}") from None
    rename_dims(proto, axes)
    return proto, (list(mode.sites) if isinstance(mode, DeployRewriteMode) else [])


def _check_dynamic_dims(
    inputs: list[dict], outputs: list[dict], axes: list[dict[int, str]], batch: int
) -> None:
    for sig, want in zip(inputs, axes, strict=False):
        for axis, name in want.items():
            if not isinstance(sig["shape"][axis], str):
                raise ExportError(
                    f"dynamic dim '{name}' of input '{sig['name']}' was frozen to {sig['shape'][axis]} by the "
                    "exporter; the model specialises on that size (check code branching on x.shape)"
                )
    if any(0 in a for a in axes):
        for sig in outputs:
            dim0 = sig["shape"][0] if sig["shape"] else None
            if dim0 == batch:
                raise ExportError(
                    f"dynamic batch lost: output '{sig['name']}' has a fixed batch of {dim0}; "
                    "a reshape in the model hard-codes the batch (use x.shape[0] or -1 instead of a constant)"
                )


def _clones(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.detach().clone() for t in inputs)


def _forward(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """PyTorch's outputs on fresh copies of ``inputs``, copied out (an output aliasing a buffer stays put)."""
    with torch.inference_mode():
        return [t.numpy().copy() for t in flatten_outputs(model(*_clones(inputs)))]


def _check_eval(model: nn.Module) -> None:
    training = [name or "<root>" for name, m in model.named_modules() if m.training]
    if training:
        raise ExportError(
            f"module '{training[0]}' is in train mode after model.eval() ({len(training)} modules in all): "
            "its outputs would depend on the batch (BatchNorm) or on chance (Dropout); make its train()/eval() "
            "follow nn.Module's and export again; nothing was written"
        )


def _check_deterministic(first: list[np.ndarray], second: list[np.ndarray], shape: tuple[int, ...]) -> None:
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            diff = "its shape changed" if a.shape != b.shape else "they differ"
            raise ExportError(
                f"the model is nondeterministic: two PyTorch runs on the same input {shape} disagree at output "
                f"{index} ({diff}); random ops (torch.rand*, F.dropout without training=self.training), in-place "
                "buffer updates or other per-call state make any comparison meaningless; make forward "
                "deterministic in eval mode and export again; nothing was written"
            )


def _check_finite(reference: list[np.ndarray], names: list[str], shape: tuple[int, ...]) -> None:
    for name, ref in zip(names, reference, strict=True):
        if ref.dtype.kind == "f" and not np.isfinite(ref).all():
            raise ExportError(
                f"PyTorch's own output '{name}' has {int(np.count_nonzero(~np.isfinite(ref)))} NaN/inf values at "
                f"input shape {shape}: nothing to verify the graph against; check the weights for NaN/inf "
                "values, or export at a size (--imgsz) the model maps to finite outputs; nothing was written"
            )


def _is_constant(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.numel() > 0 and bool(t.min() == t.max())


def _sample_like(sample: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A deterministic input of ``shape`` with the sample's value range (uniform within its min/max; a constant
    sample such as zeros, which cannot tell most ops apart, gets the range [c - 1, c + 1])."""
    if tuple(sample.shape) == tuple(shape) and not _is_constant(sample):
        return sample
    gen = torch.Generator().manual_seed(seed)
    lo, hi = float(sample.min()), float(sample.max())
    if _is_constant(sample):
        lo, hi = lo - 1.0, hi + 1.0
    if not sample.is_floating_point():
        return torch.randint(int(lo), int(hi) + 1, shape, generator=gen, dtype=sample.dtype)
    return torch.rand(shape, generator=gen, dtype=sample.dtype) * (hi - lo) + lo


def _inputs_at(
    sample: tuple[torch.Tensor, ...], shape: tuple[int, ...], seed: int
) -> tuple[torch.Tensor, ...]:
    """Inputs for ``shape``: every input takes its batch; only inputs of the same rank take its H/W."""
    return tuple(
        _sample_like(s, shape if s.dim() == len(shape) else (shape[0], *s.shape[1:]), seed=seed)
        for s in sample
    )


def _verification_cases(
    model: nn.Module,
    sample: tuple[torch.Tensor, ...],
    reference: list[np.ndarray],
    shapes: list[tuple[int, ...]],
) -> list[Case]:
    """The export shape (twice for a constant sample: as given and with varied values) and the first two
    candidate shapes PyTorch accepts, with PyTorch's outputs there."""
    cases: list[Case] = [(shapes[0], sample, reference)]
    if any(_is_constant(s) for s in sample):
        varied = _inputs_at(sample, shapes[0], seed=0)
        cases.append((shapes[0], varied, _forward(model, varied)))
    for index, shape in enumerate(shapes[1:], start=1):
        if _count_shapes(cases) == 3:
            break
        inputs = _inputs_at(sample, shape, seed=index)
        try:
            cases.append((shape, inputs, _forward(model, inputs)))
        except Exception:  # the model itself does not take this shape (e.g. patch size 7): next one
            continue
    return cases


def _count_shapes(cases: list[Case]) -> int:
    return len({shape for shape, _, _ in cases})


def _refuse_static(
    model: nn.Module, sample: tuple[torch.Tensor, ...], tried: list[tuple[int, ...]], dynamic_hw: bool
) -> StaticShapeError:
    """The error for a model that runs at too few of the shapes the requested dynamic dims need."""
    shape = tuple(sample[0].shape)
    other_batches = [(shape[0] + k, *shape[1:]) for k in (1, 2)]
    batch_ok = (
        dynamic_hw
        and len(shape) == 4
        and _count_shapes(_verification_cases(model, sample, [], [shape, *other_batches])) == 3
    )
    if batch_ok:
        what = f"H/W cannot be dynamic for this model: PyTorch runs it at {shape[2]}x{shape[3]} only (tried {tried})"
        return StaticShapeError(
            f"{what}; export with dynamic_hw=False, dynamic_batch=True (a dynamic batch works); nothing was written",
            f"{what}; use --dynamic-batch instead of --dynamic (a dynamic batch works); nothing was written",
            dynamic_batch_ok=True,
        )
    what = f"the model runs at its export shape {shape} only (tried {tried})"
    return StaticShapeError(
        f"{what}; export with dynamic_batch=False, dynamic_hw=False; nothing was written",
        f"{what}; export without --dynamic; nothing was written",
        dynamic_batch_ok=False,
    )


def _float64_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray] | None:
    """The model's outputs computed in float64 (``None`` if the model cannot run in float64)."""
    try:
        exact = copy.deepcopy(model).double()
        return _forward(exact, tuple(t.double() if t.is_floating_point() else t for t in inputs))
    except Exception:  # a model with float32-only ops: the fixed tolerance stands
        return None


def _verify(
    model: nn.Module,
    proto_bytes: bytes,
    cases: list[Case],
    input_names: list[str],
    output_names: list[str],
    tolerances: dict[str, float],
    sites: list[RewriteSite],
) -> ParityReport:
    """Compare ORT with PyTorch on each case's inputs; raise ``ExportError`` at the first shape that differs."""
    session = make_session(proto_bytes)
    reports: list[ParityReport] = []
    for shape, inputs, reference in cases:
        _check_finite(reference, output_names, shape)
        try:
            got = session.run(None, {n: t.numpy() for n, t in zip(input_names, inputs, strict=True)})
        except Exception as exc:
            raise ExportError(
                f"exported graph fails in ONNX Runtime at input shape {shape}: "
                f"{exception_summary(exc, fold=True)}; nothing was written"
            ) from None
        try:
            report = compare_outputs(reference, got, output_names, **tolerances)
        except ValueError as exc:
            raise ExportError(f"exported graph differs from PyTorch at input shape {shape}: {exc}") from None
        if not report.passed:
            exact = _float64_outputs(model, inputs)
            if exact is not None and within_fp32_noise(
                reference, exact, got, min_cosine=tolerances["min_cosine"]
            ):
                report = dataclasses.replace(report, passed=True, judged_by="float64 reference")
        if not report.passed:
            worst = report.worst()
            rewritten = sorted({s.module or "<root>" for s in sites})
            hint = (
                "the graph froze a size at the export shape"
                if reports
                else "an op computes something else in ONNX"
            )
            raise ExportError(
                f"exported graph differs from PyTorch at input shape {shape}: output '{worst.name}' max abs err "
                f"{worst.max_abs:.3g} > {worst.tolerance:.3g} (cosine {worst.cosine:.6f}); {hint}; "
                f"modules rewritten: {', '.join(rewritten) or 'none'}; nothing was written "
                "(try exporting without dynamic H/W, or report the module)"
            )
        reports.append(report)
    return merge_reports(reports)


def _combined(failures: list[ExportError]) -> ExportError:
    """The dynamo exporter's error, with the TorchScript exporter's appended (both failed)."""
    dynamo, torchscript = failures
    if str(torchscript) == str(dynamo):  # the same check refused both graphs: say it once
        return ExportError(f"{dynamo}; the TorchScript exporter failed too, the same way")
    return ExportError(
        f"{dynamo}; the TorchScript exporter failed too: {exception_summary(torchscript, limit=300)}"
    )


def export_onnx(
    model: nn.Module,
    sample: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
    opset: int = 18,
    simplify: bool = True,
    verify: bool = True,
    rewrite: bool = True,
    graph_passes: bool = True,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    min_cosine: float = 0.99999,
    on_stage: StageCallback | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path``, proven equal to PyTorch; raise ``ExportError`` otherwise.

    Args:
        model: any ``nn.Module`` (put in eval mode).
        sample: one input tensor or a tuple of them, at the export shape; never modified (every PyTorch run
            gets a copy, so a model that writes into its input is compared honestly). A constant sample (zeros)
            is also verified on varied values.
        path: where to write the ``.onnx`` file (atomically; nothing is written on failure).
        dynamic_batch: make dim 0 of every input dynamic ("batch").
        dynamic_hw: make dims 2 and 3 of 4-D inputs dynamic ("height", "width").
        opset: ONNX opset (TensorRT parses up to 20).
        simplify: run onnxslim on the graph.
        verify: compare ONNX Runtime with PyTorch at the export shape and, when dynamic, two unseen shapes the
            PyTorch model accepts; refuse nondeterministic models (two runs differ), modules stuck in train mode
            and non-finite PyTorch outputs.
        rewrite: apply the deploy rewrites while tracing (``False`` gives the naive export, for comparison).
        graph_passes: with ``rewrite``, run the deploy-time ONNX graph passes (:mod:`.ort_passes`) after
            simplification (``False``: the graph as before those passes, for measuring them).
        input_names / output_names: graph names (default ``images`` / ``output0..N``).
        atol, rtol: an output passes when every element is within ``atol + rtol * max|reference|`` (graphs
            with TopK may have 0.1% of elements past it: a last-bit difference can flip a selection);
        min_cosine: lowest cosine similarity allowed per output.
        on_stage: called with a stage name as each stage starts (progress display).

    The dynamo exporter is tried first; when it fails, freezes a dynamic dim or its graph does not verify, the
    TorchScript exporter is tried the same way (``ExportResult.exporter`` says which one wrote the file).

    Raises:
        StaticShapeError: the model runs at too few shapes for the requested dynamic dims (``cli_hint``).
        UnsupportedOpError: an op or pattern the deploy rules refuse.
        ExportError: any other failure; nothing is written.
    """
    started = time.perf_counter()
    given = tuple(sample) if isinstance(sample, list | tuple) else (sample,)
    tolerances = {"atol": atol, "rtol": rtol, "min_cosine": min_cosine}
    _check_arguments(model, given, path, opset, tolerances, [*(input_names or []), *(output_names or [])])
    timer = _StageTimer(on_stage)
    timer.start("trace")
    model = model.eval()
    _check_eval(model)
    samples = _clones(_as_tuple(sample))  # the caller's tensors are never handed to the model
    in_names = (
        list(input_names)
        if input_names
        else (["images"] if len(samples) == 1 else [f"input{i}" for i in range(len(samples))])
    )
    reference = _forward(model, samples)  # the reference at the export shape, reused by the verification
    n_out = len(reference)
    out_names = list(output_names) if output_names else [f"output{i}" for i in range(n_out)]
    if len(in_names) != len(samples) or len(out_names) != n_out:
        raise ExportError(
            f"{len(in_names)} input names for {len(samples)} inputs / {len(out_names)} output names for "
            f"{n_out} outputs; pass one name per tensor"
        )
    if len(set(in_names + out_names)) != len(in_names) + len(out_names):
        raise ConfigError(f"input and output names must be distinct, got {in_names} and {out_names}")
    axes = [dynamic_axes_for(s, dynamic_batch, dynamic_hw) for s in samples]
    shapes = verification_shapes(tuple(samples[0].shape), dynamic_batch, dynamic_hw)
    cases = _verification_cases(model, samples, reference, shapes) if verify else []
    if verify and len(shapes) > 1 and _count_shapes(cases) < 3:
        raise _refuse_static(model, samples, shapes[1:], dynamic_hw)
    # torch.export specialises size-1 dims (0/1 specialisation): trace a dynamic batch at batch 2.
    traced = tuple(torch.cat([s, s]) if dynamic_batch and s.shape[0] == 1 else s for s in samples)
    failures: list[ExportError] = []
    for exporter in EXPORTERS:
        timer.start("trace")
        try:
            proto, sites = _trace_to_onnx(exporter, model, traced, axes, in_names, out_names, opset, rewrite)
        except UnsupportedOpError:
            raise  # a rule's refusal holds for every exporter
        except ExportError as exc:
            failures.append(exc)
            proto = None
        actual = opset_of(proto) if proto is not None else opset
        # onnxscript's down-conversion can fail and leave its own opset: the next exporter may not
        if actual != opset:
            failures.append(ExportError(f"the {exporter} exporter wrote opset {actual}, not {opset}"))
            proto = None
        if verify and exporter == EXPORTERS[0]:  # once, across the trace: per-call state shows up here
            _check_deterministic(reference, _forward(model, samples), tuple(samples[0].shape))
            _check_eval(model)
        if proto is None:
            continue
        ops_before = op_histogram(proto)
        if simplify:
            timer.start("simplify")
            proto = simplify_model(proto)
        passes = (
            apply_graph_passes(proto) if rewrite and graph_passes else {}
        )  # exact; verified below with the rest
        ops_after = op_histogram(proto)
        name_output_dims(proto)  # `anchors`, not a 200-character formula, in the graph and the manifest
        inputs, outputs = graph_signature(proto)
        timer.start("check")
        try:
            _check_dynamic_dims(inputs, outputs, axes, traced[0].shape[0])
            proto_bytes = proto.SerializeToString()
            if verify:
                timer.start("verify")
                outliers = TOPK_OUTLIER_FRAC if "TopK" in ops_after else 0.0
                parity = _verify(
                    model,
                    proto_bytes,
                    cases,
                    in_names,
                    out_names,
                    {**tolerances, "max_outlier_frac": outliers},
                    sites,
                )
        except ExportError as exc:
            failures.append(exc)
            continue
        break
    else:
        raise _combined(failures)
    lint = lint_tensorrt(proto)
    if not verify:
        parity = ParityReport(float("nan"), float("nan"), float("nan"), False, atol, min_cosine, rtol)
    timer.start("write")
    fsutil.write_bytes(path, proto_bytes)
    timer.start("done")
    return ExportResult(
        path=Path(path),
        rewrites=sorted({s.rule for s in sites}),
        parity=parity,
        shapes=[case[0] for case in cases],
        ops_before=ops_before,
        ops_after=ops_after,
        inputs=inputs,
        outputs=outputs,
        opset=opset,
        seconds=time.perf_counter() - started,
        rewrite_sites=sites,
        lint=lint,
        stage_seconds=timer.seconds,
        exporter=exporter,
        exporter_fallback=str(failures[0]) if failures else "",
        graph_passes=passes,
    )
