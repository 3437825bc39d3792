"""Claimed versus measured: the seed article's (and primary sources') figures next to ours.

Claims live in ``attn_deploy/data/seed_claims.json`` (shipped in the package): tables per architecture
(``"*"``: any), each with its source, its FLOPs unit (``GMACs`` figures are doubled to our
2-FLOPs-per-multiply-add GFLOPs) and rows per attention
(``params_m``, ``gflops``, ``latency_ms``, ``fps``, or a ``qualitative`` claim). Tables come first-listed
first: the seed article's own figures, once filled in, win over the references.

A module is flagged when its deployed latency overhead (ONNX Runtime, vs ``none``, same run) exceeds the
claimed cost overhead by more than the measurement's noise margin. The claimed cost overhead is, in order of
preference: a claimed latency or FPS change, a claimed FLOPs change, or a qualitative claim read as
``conventions.qualitative_threshold_pct``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attn_deploy.bench.attention_cost import BASELINE, AttentionRow, pct
from attn_deploy.bench.timing import p50_ratio_margin
from attn_deploy.errors import ConfigError

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "data" / "seed_claims.json"  # package data


@dataclass(frozen=True)
class ClaimTable:
    """One source's figures for one architecture."""

    arch: str
    source: str
    flops_unit: str
    rows: dict[str, dict[str, Any]]

    def value(self, attention: str, key: str) -> float | None:
        """A numeric figure, with GMACs converted to GFLOPs (x2); ``None`` when absent."""
        v = self.rows.get(attention, {}).get(key)
        if v is None:
            return None
        return float(v) * (2.0 if key == "gflops" and self.flops_unit.upper() == "GMACS" else 1.0)


@dataclass(frozen=True)
class Claims:
    """All claim tables and the conventions used to read them."""

    tables: list[ClaimTable]
    qualitative_threshold_pct: float
    path: str

    def for_arch(self, arch: str) -> list[ClaimTable]:
        """Tables about ``arch`` (and those about any architecture), in file order."""
        return [t for t in self.tables if t.arch in (arch, "*")]


def load_claims(path: str | os.PathLike[str] | None = None) -> Claims:
    """Read the claims file; a one-line ``ConfigError`` when it is missing or malformed."""
    file = Path(path) if path else CLAIMS_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        tables = [
            ClaimTable(str(t["arch"]), str(t["source"]), str(t.get("flops_unit", "GFLOPs")), dict(t["rows"]))
            for t in data["tables"]
        ]
        threshold = float(data.get("conventions", {}).get("qualitative_threshold_pct", 5.0))
    except FileNotFoundError:
        raise ConfigError(f"seed claims file {file} not found; pass --seed-claims PATH") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"seed claims file {file} is malformed ({exc}); see attn_deploy/data/seed_claims.json"
        ) from None
    return Claims(tables, threshold, str(file))


@dataclass(frozen=True)
class Claimed:
    """One claimed figure and the index of its source in the comparison's ``sources``."""

    value: float
    source: int


@dataclass
class SeedRow:
    """Measured versus claimed for one attention module."""

    attention: str
    params_m: float | None
    gflops: float | None
    claimed_params_m: Claimed | None
    claimed_gflops: Claimed | None
    claimed_overhead_pct: Claimed | None
    claim_basis: (
        str | None
    )  # "latency", "fps", "gflops", "qualitative" (what the claimed overhead comes from)
    qualitative: str | None
    deployed_overhead_pct: float | None
    noise_margin_pct: float | None
    flagged: bool

    def to_dict(self, sources: Sequence[str]) -> dict[str, Any]:
        """JSON form, sources spelled out."""

        def claim(c: Claimed | None) -> dict[str, Any] | None:
            return {"value": c.value, "source": sources[c.source]} if c else None

        return {
            "attention": self.attention,
            "params_m": self.params_m,
            "gflops": self.gflops,
            "claimed_params_m": claim(self.claimed_params_m),
            "claimed_gflops": claim(self.claimed_gflops),
            "claimed_overhead_pct": claim(self.claimed_overhead_pct),
            "claim_basis": self.claim_basis,
            "qualitative": self.qualitative,
            "deployed_overhead_pct": self.deployed_overhead_pct,
            "noise_margin_pct": self.noise_margin_pct,
            "flagged": self.flagged,
        }


@dataclass
class SeedComparison:
    """Claimed-vs-measured rows for one architecture and the sources they cite."""

    arch: str
    deployed: str  # the backend label whose overhead is compared (e.g. "ort")
    rows: list[SeedRow] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def flagged(self) -> list[SeedRow]:
        """Rows whose deployed overhead exceeds the claim."""
        return [r for r in self.rows if r.flagged]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "arch": self.arch,
            "deployed": self.deployed,
            "sources": self.sources,
            "rows": [r.to_dict(self.sources) for r in self.rows],
        }


def noise_margin_pct(row: AttentionRow, base: AttentionRow, label: str) -> float | None:
    """The noise margin of ``row``'s overhead over ``base`` on backend ``label``, in percentage points."""
    a, b = row.latency.get(label), base.latency.get(label)
    return 100.0 * p50_ratio_margin(a.wall, b.wall) if a and b else None


def _first(tables: Sequence[ClaimTable], attention: str, key: str, sources: list[str]) -> Claimed | None:
    for t in tables:
        v = t.value(attention, key)
        if v is not None:
            return Claimed(v, _source_index(sources, t.source))
    return None


def _source_index(sources: list[str], source: str) -> int:
    if source not in sources:
        sources.append(source)
    return sources.index(source)


def _qualitative(tables: Sequence[ClaimTable], attention: str) -> str | None:
    texts = (t.rows.get(attention, {}).get("qualitative") for t in tables)
    return next((str(q) for q in texts if q), None)


def _claimed_overhead(
    tables: Sequence[ClaimTable], attention: str, threshold: float, sources: list[str]
) -> tuple[Claimed | None, str | None]:
    """The claimed cost overhead in percent, from the most direct figure any table gives."""
    for key, basis in (("latency_ms", "latency"), ("fps", "fps"), ("gflops", "gflops")):
        for t in tables:
            value, base = t.value(attention, key), t.value(BASELINE, key)
            if value is not None and base:
                overhead = pct(base, value) if key == "fps" else pct(value, base)
                return Claimed(float(overhead or 0.0), _source_index(sources, t.source)), basis
    for t in tables:
        row = t.rows.get(attention, {})
        if row.get("qualitative") and row.get("about") == "cost":
            return Claimed(threshold, _source_index(sources, t.source)), "qualitative"
    return None, None


def compare_with_seed(
    rows: Sequence[AttentionRow], arch: str, claims: Claims, deployed: str = "ort"
) -> SeedComparison:
    """Claimed-vs-measured rows for every measured attention that any claim table mentions."""
    tables = claims.for_arch(arch)
    comparison = SeedComparison(arch, deployed)
    base = next((r for r in rows if r.attention == BASELINE), None)
    for row in rows:
        if row.skipped or not any(row.attention in t.rows for t in tables):
            continue
        sources = comparison.sources
        claimed, basis = (None, None)
        if row.attention != BASELINE:
            claimed, basis = _claimed_overhead(
                tables, row.attention, claims.qualitative_threshold_pct, sources
            )
        deployed_pct = row.latency_overhead_pct.get(deployed)
        margin = noise_margin_pct(row, base, deployed) if base is not None else None
        flagged = (
            claimed is not None
            and deployed_pct is not None
            and deployed_pct > claimed.value + (margin or 0.0)
        )
        comparison.rows.append(
            SeedRow(
                attention=row.attention,
                params_m=row.params_m,
                gflops=row.gflops,
                claimed_params_m=_first(tables, row.attention, "params_m", sources),
                claimed_gflops=_first(tables, row.attention, "gflops", sources),
                claimed_overhead_pct=claimed,
                claim_basis=basis,
                qualitative=_qualitative(tables, row.attention),
                deployed_overhead_pct=deployed_pct,
                noise_margin_pct=margin,
                flagged=bool(flagged),
            )
        )
    return comparison
