"""Parity metrics between a reference (PyTorch FP32) and a candidate (exported graph) on the same inputs.

Numbers in, numbers out: max absolute error, max relative error (relative to the reference's largest
magnitude, so near-zero elements do not dominate), and cosine similarity, per output and overall.

Tolerance per output is ``atol + rtol * max|reference|``: an absolute bound for normalised outputs (scores,
logits) that scales for outputs in pixels. Measured on yolov8s-eca at 640: PyTorch FP32 itself is 0.018 px away
from a float64 run on the box rows (ONNX Runtime 0.016 px), so no FP32 backend meets a 1e-4 px absolute bound
there, while class scores agree to 1e-5. ``max_outlier_frac`` allows a tiny fraction of elements past the
bound for graphs with TopK, where a last-bit difference can flip which element is selected. Integer and
boolean outputs (indices, counts, masks) are compared exactly: no rounding explains a different integer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class OutputParity:
    """Errors of one output tensor."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    cosine: float
    nonfinite: int
    tolerance: float
    outlier_frac: float


@dataclass(frozen=True)
class ParityReport:
    """Errors over all outputs; ``passed`` means every output is within tolerance and finite."""

    max_abs: float
    max_rel: float
    cosine: float
    passed: bool
    atol: float
    min_cosine: float
    rtol: float = 0.0
    max_outlier_frac: float = 0.0
    judged_by: str = "tolerance"
    per_output: tuple[OutputParity, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    def worst(self) -> OutputParity:
        """The output with the largest absolute error."""
        return max(self.per_output, key=lambda o: (o.nonfinite, o.outlier_frac, o.max_abs))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a64) * np.linalg.norm(b64)
    if denom == 0.0:
        return 1.0 if np.array_equal(a64, b64) else 0.0
    return float(np.dot(a64, b64) / denom)


def is_exact_dtype(array: np.ndarray) -> bool:
    """True for integer and boolean arrays, which must match exactly."""
    return np.asarray(array).dtype.kind in "biu"


def output_parity(
    name: str, reference: np.ndarray, candidate: np.ndarray, atol: float = 1e-4, rtol: float = 0.0
) -> OutputParity:
    """Errors of ``candidate`` against ``reference`` (same shape required); tolerance ``atol + rtol*max|ref|``."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output '{name}': shape {cand.shape} differs from the reference's {ref.shape}")
    nonfinite = int(np.count_nonzero(~np.isfinite(cand)) - np.count_nonzero(~np.isfinite(ref)))
    diff = np.abs(ref - cand)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref[np.isfinite(ref)]).max()) if np.isfinite(ref).any() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    tolerance = 0.0 if is_exact_dtype(reference) else atol + rtol * scale
    outlier_frac = float(np.count_nonzero(diff > tolerance) / diff.size) if diff.size else 0.0
    return OutputParity(
        name,
        tuple(ref.shape),
        max_abs,
        max_rel,
        _cosine(ref, cand),
        max(nonfinite, 0),
        tolerance,
        outlier_frac,
    )


def _passes(p: OutputParity, min_cosine: float, max_outlier_frac: float) -> bool:
    return p.nonfinite == 0 and p.cosine >= min_cosine and p.outlier_frac <= max_outlier_frac


def compare_outputs(
    reference: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    candidate: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    *,
    atol: float = 1e-4,
    rtol: float = 0.0,
    min_cosine: float = 0.99999,
    max_outlier_frac: float = 0.0,
) -> ParityReport:
    """Compare two lists (or name->array mappings) of outputs; pass when every output has no new non-finite
    values, ``cosine >= min_cosine``, and at most ``max_outlier_frac`` of its elements (default: none) off by more
    than ``atol + rtol * max|reference|``."""
    if isinstance(reference, Mapping):
        names = list(names or reference.keys())
        ref_list = [reference[n] for n in names]
        cand_list = [candidate[n] for n in names] if isinstance(candidate, Mapping) else list(candidate)
    else:
        ref_list = list(reference)
        cand_list = list(candidate.values()) if isinstance(candidate, Mapping) else list(candidate)
        names = list(names or [f"output{i}" for i in range(len(ref_list))])
    if len(ref_list) != len(cand_list):
        raise ValueError(f"{len(cand_list)} outputs to compare with {len(ref_list)} reference outputs")
    per = tuple(
        output_parity(n, r, c, atol, rtol) for n, r, c in zip(names, ref_list, cand_list, strict=True)
    )
    return ParityReport(
        max_abs=max((p.max_abs for p in per), default=0.0),
        max_rel=max((p.max_rel for p in per), default=0.0),
        cosine=min((p.cosine for p in per), default=1.0),
        passed=all(_passes(p, min_cosine, max_outlier_frac) for p in per),
        atol=atol,
        min_cosine=min_cosine,
        rtol=rtol,
        max_outlier_frac=max_outlier_frac,
        per_output=per,
    )


NOISE_FACTOR = 2.0
# The float64 rule trusts a float64 run as "exact" only while PyTorch FP32 stays within this fraction of the
# output's scale (max|float64 output|) of it. FP32 carries 24 significant bits (unit roundoff 6e-8); 1e-3 of the
# scale is ~2^14 units of accumulated rounding, over 10x what the zoo's deep nets reach (measured at full size:
# yolov8s box rows 0.018 px of ~640 px = 3e-5; resnet50 logits up to 3.5e-3 abs, <= 6e-5 of their scale) and
# far below what a different computation gives (the float64 copy run on an input written in place, or random
# noise added: 0.1-1 of the scale). Past it, the float64 copy computes something else than FP32 (dtype-dependent
# code, eps from finfo, random ops, another input) and proves nothing: the fixed tolerance stands.
FP32_REL_BOUND = 1e-3


def within_fp32_noise(
    reference: Sequence[np.ndarray],
    reference64: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    atol: float = 1e-5,
    min_cosine: float = 0.99999,
) -> bool:
    """True when ``candidate`` is as close to the float64 answer as the FP32 ``reference`` itself is.

    Per output, all of: ``max|reference - ref64| <= FP32_REL_BOUND * max|ref64| + atol`` (the FP32 and float64
    runs differ by rounding only); ``max|candidate - ref64| <= NOISE_FACTOR * max|reference - ref64| + atol``;
    cosine(candidate, ref64) >= ``min_cosine``; integer/boolean outputs equal the reference exactly; everything
    finite. This is the honest bound for outputs whose FP32 rounding error exceeds a fixed tolerance (deep nets,
    pixel-valued boxes): the exported graph may differ from PyTorch FP32 only as much as PyTorch FP32 differs
    from exact, and never by more than rounding can explain.
    """
    for ref, ref64, cand in zip(reference, reference64, candidate, strict=True):
        if is_exact_dtype(ref):
            if not np.array_equal(ref, cand):
                return False
            continue
        exact = np.asarray(ref64, dtype=np.float64)
        scale = float(np.abs(exact).max(initial=0.0))
        torch_err = float(np.abs(np.asarray(ref, dtype=np.float64) - exact).max(initial=0.0))
        cand_err = float(np.abs(np.asarray(cand, dtype=np.float64) - exact).max(initial=0.0))
        if not (np.isfinite(scale) and np.isfinite(torch_err) and np.isfinite(cand_err)):
            return False
        if torch_err > FP32_REL_BOUND * scale + atol or cand_err > NOISE_FACTOR * torch_err + atol:
            return False
        if _cosine(exact, cand) < min_cosine:
            return False
    return True


def merge_reports(reports: Sequence[ParityReport]) -> ParityReport:
    """The worst case over several comparisons (e.g. one per input shape)."""
    per = tuple(p for r in reports for p in r.per_output)
    return ParityReport(
        max_abs=max(r.max_abs for r in reports),
        max_rel=max(r.max_rel for r in reports),
        cosine=min(r.cosine for r in reports),
        passed=all(r.passed for r in reports),
        atol=reports[0].atol,
        min_cosine=reports[0].min_cosine,
        rtol=reports[0].rtol,
        max_outlier_frac=reports[0].max_outlier_frac,
        judged_by=", ".join(sorted({r.judged_by for r in reports})),
        per_output=per,
    )
