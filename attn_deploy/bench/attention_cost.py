"""Attention cost tables: every attention module against ``none`` on one architecture, from one run.

Each row holds the model's parameters and GFLOPs (``torch.utils.flop_counter``: 2 FLOPs per multiply-add,
Ultralytics' convention; the counter sees convolutions and matmuls only, so a module made of elementwise
ops and reductions, such as SimAM, shows 0 extra GFLOPs although it does run work), and per backend the
p50 latency, FPS and overhead against ``none`` measured in the same interleaved run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from attn_deploy.attention import list_attention
from attn_deploy.bench.run import BenchRun, TargetResult
from attn_deploy.errors import ConfigError

BASELINE = "none"


def resolve_attentions(text: str | Sequence[str]) -> list[str]:
    """``"all"`` or a comma list -> attention names, ``none`` first (the baseline of every row)."""
    known = list_attention()
    names = (
        known
        if text == "all"
        else [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    )
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(
            f"unknown attention {', '.join(map(repr, bad))}; choose from all, {', '.join(known)}"
        )
    return [BASELINE, *[n for n in dict.fromkeys(names) if n != BASELINE]]


def pct(value: float | None, base: float | None) -> float | None:
    """``(value / base - 1) * 100``, or ``None`` when either is missing or the base is 0."""
    if value is None or not base:
        return None
    return (value / base - 1.0) * 100.0


@dataclass
class AttentionRow:
    """One attention module on the architecture."""

    attention: str
    model: str
    params_m: float | None
    gflops: float | None
    params_overhead_pct: float | None
    gflops_overhead_pct: float | None
    latency: dict[str, TargetResult] = field(default_factory=dict)
    """Per ``backend/precision`` label."""
    latency_overhead_pct: dict[str, float | None] = field(default_factory=dict)
    skipped: str | None = None
    """Why the model could not be built or timed at all (e.g. a module that needs a larger input)."""

    def to_dict(self, batch: int) -> dict[str, Any]:
        """JSON form."""
        return {
            "attention": self.attention,
            "model": self.model,
            "params_m": self.params_m,
            "gflops": self.gflops,
            "params_overhead_pct": self.params_overhead_pct,
            "gflops_overhead_pct": self.gflops_overhead_pct,
            "skipped": self.skipped,
            "latency": {
                label: {
                    "p50_ms": r.wall.p50_ms,
                    "p90_ms": r.wall.p90_ms,
                    "fps": r.wall.fps(batch),
                    "cv": r.wall.cv,
                    "ratio_vs_torch": r.ratio_vs_torch,
                    "overhead_pct": self.latency_overhead_pct.get(label),
                    "verified": r.target.verified,
                }
                for label, r in self.latency.items()
            },
        }


def label(result: TargetResult) -> str:
    """Column label of a result: ``backend`` for FP32, ``backend/precision`` otherwise."""
    t = result.target
    return t.backend if t.precision == "fp32" else f"{t.backend}/{t.precision}"


def attention_table(run: BenchRun, arch: str) -> list[AttentionRow]:
    """Rows for every model of ``run`` (``<arch>-<attention>``), overheads relative to ``<arch>-none``.

    A model that could not be built at the run's size still gets a row, with the reason in ``skipped``.
    """
    base_model = f"{arch}-{BASELINE}"
    base_profile = run.profiles.get(base_model, {})
    base_latency = {label(r): r.wall.p50_ms for r in run.results if r.target.model == base_model}
    whole_model_skips = {s.model: s.reason for s in run.skipped if s.backend == "*"}
    rows = []
    for model in run.models:
        prof = run.profiles.get(model, {})
        row = AttentionRow(
            attention=model.split("-", 1)[1],
            model=model,
            params_m=prof.get("params_m"),
            gflops=prof.get("gflops"),
            params_overhead_pct=pct(prof.get("params_m"), base_profile.get("params_m")),
            gflops_overhead_pct=pct(prof.get("gflops"), base_profile.get("gflops")),
            skipped=whole_model_skips.get(model),
        )
        for r in run.results:
            if r.target.model == model:
                row.latency[label(r)] = r
                row.latency_overhead_pct[label(r)] = pct(r.wall.p50_ms, base_latency.get(label(r)))
        rows.append(row)
    return rows


def latency_labels(rows: Sequence[AttentionRow]) -> list[str]:
    """Every backend label present in the rows, in first-seen order."""
    return list(dict.fromkeys(lbl for row in rows for lbl in row.latency))
