"""``export_onnx``: any ``nn.Module`` -> a verified ONNX file, or a clear ``ExportError`` and nothing written.

Stages (each reported to ``on_stage`` for progress display):
trace with the deploy rewrites -> ONNX (dynamo exporter) -> simplify (onnxslim) -> check dynamic dims ->
verify in ONNX Runtime against PyTorch at the export shape and, when dynamic, at two other shapes -> write.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from attn_deploy import fsutil
from attn_deploy.backends.ort import make_session
from attn_deploy.backends.torch_runner import flatten_outputs
from attn_deploy.errors import AttnDeployError, ExportError, exception_summary
from attn_deploy.export.lint import LintIssue, lint_tensorrt
from attn_deploy.export.shapes import dynamic_axes_for, rename_dims, torch_dynamic_shapes, verification_shapes
from attn_deploy.export.simplify import simplify_model
from attn_deploy.export.stats import graph_signature, op_histogram
from attn_deploy.rewrite import DeployRewriteMode, RewriteSite
from attn_deploy.validate.parity import ParityReport, compare_outputs, merge_reports, within_fp32_noise

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


def _trace_to_onnx(
    model: nn.Module,
    sample: tuple[torch.Tensor, ...],
    axes: list[dict[int, str]],
    input_names: list[str],
    output_names: list[str],
    opset: int,
    rewrite: bool,
) -> tuple[onnx.ModelProto, list[RewriteSite]]:
    mode = DeployRewriteMode(model) if rewrite else contextlib.nullcontext()
    dynamic = any(axes)
    # The exporter logs a warning per torchvision op it cannot register; they are irrelevant here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), mode:
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                sample,
                dynamo=True,
                dynamic_shapes=torch_dynamic_shapes(axes) if dynamic else None,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                verbose=False,
            )
    except Exception as exc:
        cause = _root_cause(exc)
        if isinstance(cause, AttnDeployError):
            raise cause from None
        raise ExportError(f"torch.onnx.export failed: {exception_summary(cause, fold=True)}") from None
    proto = program.model_proto
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


def _sample_like(sample: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A deterministic input of ``shape`` with the sample's value range (uniform within its min/max)."""
    if tuple(sample.shape) == tuple(shape):
        return sample
    gen = torch.Generator().manual_seed(seed)
    lo, hi = float(sample.min()), float(sample.max())
    if not sample.is_floating_point():
        return torch.randint(int(lo), int(hi) + 1, shape, generator=gen, dtype=sample.dtype)
    return torch.rand(shape, generator=gen, dtype=sample.dtype) * (hi - lo) + lo


def _float64_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray] | None:
    """The model's outputs computed in float64 (``None`` if the model cannot run in float64)."""
    try:
        exact = copy.deepcopy(model).double()
        with torch.inference_mode():
            out = exact(*(t.double() if t.is_floating_point() else t for t in inputs))
        return [t.numpy() for t in flatten_outputs(out)]
    except Exception:  # a model with float32-only ops: the fixed tolerance stands
        return None


def _verify(
    model: nn.Module,
    proto_bytes: bytes,
    sample: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    shapes: list[tuple[int, ...]],
    tolerances: dict[str, float],
    sites: list[RewriteSite],
    export_reference: list[np.ndarray],
) -> tuple[ParityReport, list[tuple[int, ...]]]:
    """Compare ORT with PyTorch at the export shape (whose PyTorch outputs are ``export_reference``) and the
    first two candidate shapes PyTorch accepts."""
    session = make_session(proto_bytes)
    reports: list[ParityReport] = []
    verified: list[tuple[int, ...]] = []
    for index, shape in enumerate(shapes):
        if len(verified) == 3:
            break
        # Every input takes the new batch; only 4-D inputs take the new H/W.
        inputs = tuple(
            _sample_like(s, shape if s.dim() == len(shape) else (shape[0], *s.shape[1:]), seed=index)
            for s in sample
        )
        try:
            with torch.inference_mode():
                reference = (
                    export_reference if index == 0 else [t.numpy() for t in flatten_outputs(model(*inputs))]
                )
        except Exception:
            if index == 0:
                raise
            continue  # the model itself does not take this shape (e.g. too small for its top-k): next one
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
            if exact is not None and within_fp32_noise(reference, exact, got):
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
        verified.append(shape)
    if len(shapes) > 1 and len(verified) < 3:
        raise ExportError(
            f"the model runs at its export shape only (tried {shapes[1:]}); export without --dynamic"
        )
    return merge_reports(reports), verified


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
        sample: one input tensor or a tuple of them, at the export shape.
        path: where to write the ``.onnx`` file (atomically; nothing is written on failure).
        dynamic_batch: make dim 0 of every input dynamic ("batch").
        dynamic_hw: make dims 2 and 3 of 4-D inputs dynamic ("height", "width").
        opset: ONNX opset (TensorRT parses up to 20).
        simplify: run onnxslim on the graph.
        verify: compare ONNX Runtime with PyTorch at the export shape and, when dynamic, two unseen shapes.
        rewrite: apply the deploy rewrites while tracing (``False`` gives the naive export, for comparison).
        input_names / output_names: graph names (default ``images`` / ``output0..N``).
        atol, rtol: an output passes when every element is within ``atol + rtol * max|reference|`` (graphs
            with TopK may have 0.1% of elements past it: a last-bit difference can flip a selection);
        min_cosine: lowest cosine similarity allowed per output.
        on_stage: called with a stage name as each stage starts (progress display).
    """
    started = time.perf_counter()
    timer = _StageTimer(on_stage)
    timer.start("trace")
    model = model.eval()
    samples = _as_tuple(sample)
    in_names = (
        list(input_names)
        if input_names
        else (["images"] if len(samples) == 1 else [f"input{i}" for i in range(len(samples))])
    )
    with torch.inference_mode():  # the reference at the export shape, reused by the verification
        reference = [t.numpy() for t in flatten_outputs(model(*samples))]
    n_out = len(reference)
    out_names = list(output_names) if output_names else [f"output{i}" for i in range(n_out)]
    if len(in_names) != len(samples) or len(out_names) != n_out:
        raise ExportError(
            f"{len(in_names)} input names for {len(samples)} inputs / {len(out_names)} output names for "
            f"{n_out} outputs; pass one name per tensor"
        )
    axes = [dynamic_axes_for(s, dynamic_batch, dynamic_hw) for s in samples]

    # torch.export specialises size-1 dims (0/1 specialisation): trace a dynamic batch at batch 2.
    traced = tuple(torch.cat([s, s]) if dynamic_batch and s.shape[0] == 1 else s for s in samples)
    proto, sites = _trace_to_onnx(model, traced, axes, in_names, out_names, opset, rewrite)
    ops_before = op_histogram(proto)
    if simplify:
        timer.start("simplify")
        proto = simplify_model(proto)
    ops_after = op_histogram(proto)
    inputs, outputs = graph_signature(proto)
    timer.start("check")
    _check_dynamic_dims(inputs, outputs, axes, traced[0].shape[0])
    lint = lint_tensorrt(proto)
    proto_bytes = proto.SerializeToString()
    shapes = verification_shapes(tuple(samples[0].shape), dynamic_batch, dynamic_hw)
    if verify:
        timer.start("verify")
        tolerances = {
            "atol": atol,
            "rtol": rtol,
            "min_cosine": min_cosine,
            "max_outlier_frac": TOPK_OUTLIER_FRAC if "TopK" in ops_after else 0.0,
        }
        parity, shapes = _verify(
            model, proto_bytes, samples, in_names, out_names, shapes, tolerances, sites, reference
        )
    else:
        parity = ParityReport(float("nan"), float("nan"), float("nan"), False, atol, min_cosine, rtol)
        shapes = []
    timer.start("write")
    fsutil.write_bytes(path, proto_bytes)
    timer.start("done")
    return ExportResult(
        path=Path(path),
        rewrites=sorted({s.rule for s in sites}),
        parity=parity,
        shapes=shapes,
        ops_before=ops_before,
        ops_after=ops_after,
        inputs=inputs,
        outputs=outputs,
        opset=opset,
        seconds=time.perf_counter() - started,
        rewrite_sites=sites,
        lint=lint,
        stage_seconds=timer.seconds,
    )
