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

Like with like: a claimed GFLOPs figure is compared only when its table's input size (``imgsz``) is the
measured one or is not stated (GFLOPs grow with the pixel count: a claim at 640 px is 4x one at 320 px).
Figures a table marks as recalled from memory (``"recalled": true``, or "(recalled)" in its source) are shown
but never decide a flag: their row says "unchecked".
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
    imgsz: int | None = None
    """The input size the figures were measured at (square), when the source states it."""
    recalled: bool = False
    """Figures written from memory of the source, not checked against it."""

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
            ClaimTable(
                str(t["arch"]),
                str(t["source"]),
                str(t.get("flops_unit", "GFLOPs")),
                dict(t["rows"]),
                int(t["imgsz"]) if t.get("imgsz") is not None else None,
                bool(t.get("recalled", "(recalled)" in str(t["source"]))),
            )
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
    recalled: bool = False


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
    gflops_note: str | None = None
    """Why a claimed GFLOPs figure was not compared (measured at another input size)."""
    claimed_fps_drop_pct: Claimed | None = None
    deployed_fps_drop_pct: float | None = None
    """FPS drop vs ``none`` in percent: ``(1 - fps / fps_none) * 100``, measured and claimed (FPS tables)."""

    @property
    def unchecked(self) -> bool:
        """The claimed overhead comes from figures recalled from memory: shown, never flagged."""
        return bool(self.claimed_overhead_pct and self.claimed_overhead_pct.recalled)

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
            "unchecked": self.unchecked,
            "gflops_note": self.gflops_note,
            "claimed_fps_drop_pct": claim(self.claimed_fps_drop_pct),
            "deployed_fps_drop_pct": self.deployed_fps_drop_pct,
        }


@dataclass(frozen=True)
class SpeedRatio:
    """A claimed relative speed of one module against another (``speed_x``: reference = 1.0) and ours."""

    attention: str
    reference: str
    claimed: float
    measured: float | None
    """``p50(reference) / p50(attention)`` on the deployed backend, same run (> 1: faster)."""
    source: int


@dataclass
class SeedComparison:
    """Claimed-vs-measured rows for one architecture and the sources they cite."""

    arch: str
    deployed: str  # the backend label whose overhead is compared (e.g. "ort")
    rows: list[SeedRow] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    speed_ratios: list[SpeedRatio] = field(default_factory=list)

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
            "speed_ratios": [r.__dict__ | {"source": self.sources[r.source]} for r in self.speed_ratios],
        }


def noise_margin_pct(row: AttentionRow, base: AttentionRow, label: str) -> float | None:
    """The noise margin of ``row``'s overhead over ``base`` on backend ``label``, in percentage points."""
    a, b = row.latency.get(label), base.latency.get(label)
    return 100.0 * p50_ratio_margin(a.wall, b.wall) if a and b else None


def same_size(table: ClaimTable, imgsz: int | None) -> bool:
    """False only when both the claim's and the measurement's input sizes are known and differ."""
    return table.imgsz is None or imgsz is None or table.imgsz == imgsz


def _first(
    tables: Sequence[ClaimTable], attention: str, key: str, sources: list[str], imgsz: int | None = None
) -> Claimed | None:
    for t in tables:
        v = t.value(attention, key)
        if v is not None and (key != "gflops" or same_size(t, imgsz)):
            return Claimed(v, _source_index(sources, t.source), t.recalled)
    return None


def _gflops_note(tables: Sequence[ClaimTable], attention: str, imgsz: int | None) -> str | None:
    for t in tables:
        if t.value(attention, "gflops") is not None and not same_size(t, imgsz):
            return f"claimed at {t.imgsz} px, measured at {imgsz} px: not compared"
    return None


def _source_index(sources: list[str], source: str) -> int:
    if source not in sources:
        sources.append(source)
    return sources.index(source)


def _qualitative(tables: Sequence[ClaimTable], attention: str) -> str | None:
    texts = (t.rows.get(attention, {}).get("qualitative") for t in tables)
    return next((str(q) for q in texts if q), None)


def _claimed_overhead(
    tables: Sequence[ClaimTable], attention: str, threshold: float, sources: list[str], imgsz: int | None
) -> tuple[Claimed | None, str | None]:
    """The claimed cost overhead in percent, from the most direct figure any table gives."""
    for key, basis in (("latency_ms", "latency"), ("fps", "fps"), ("gflops", "gflops")):
        for t in tables:
            value, base = t.value(attention, key), t.value(BASELINE, key)
            if value is not None and base and (key != "gflops" or same_size(t, imgsz)):
                overhead = pct(base, value) if key == "fps" else pct(value, base)
                return Claimed(float(overhead or 0.0), _source_index(sources, t.source), t.recalled), basis
    for t in tables:
        row = t.rows.get(attention, {})
        if row.get("qualitative") and row.get("about") == "cost":
            return Claimed(threshold, _source_index(sources, t.source), t.recalled), "qualitative"
    return None, None


def fps_drop_pct(latency_ms: float | None, base_latency_ms: float | None) -> float | None:
    """FPS drop in percent from latencies: ``(1 - base / latency) * 100`` (fps is 1 / latency)."""
    if latency_ms is None or not base_latency_ms or not latency_ms:
        return None
    return (1.0 - base_latency_ms / latency_ms) * 100.0


def _claimed_fps_drop(tables: Sequence[ClaimTable], attention: str, sources: list[str]) -> Claimed | None:
    for t in tables:
        fps, base = t.value(attention, "fps"), t.value(BASELINE, "fps")
        if fps is not None and base:
            return Claimed((1.0 - fps / base) * 100.0, _source_index(sources, t.source), t.recalled)
    return None


def _speed_ratios(
    tables: Sequence[ClaimTable], rows: Sequence[AttentionRow], deployed: str, sources: list[str]
) -> list[SpeedRatio]:
    """Claimed ``speed_x`` figures (relative to the row whose ``speed_x`` is 1.0) next to ours."""
    by_name = {r.attention: r for r in rows}
    found = []
    for t in tables:
        speeds = {a: float(r["speed_x"]) for a, r in t.rows.items() if r.get("speed_x") is not None}
        reference = next((a for a, v in speeds.items() if v == 1.0), None)
        for attention, claimed in speeds.items():
            if reference is None or attention == reference or attention not in by_name:
                continue
            a, ref = by_name[attention].latency.get(deployed), by_name.get(reference)
            b = ref.latency.get(deployed) if ref else None
            measured = b.wall.p50_ms / a.wall.p50_ms if a and b else None
            found.append(
                SpeedRatio(attention, reference, claimed, measured, _source_index(sources, t.source))
            )
    return found


def compare_with_seed(
    rows: Sequence[AttentionRow], arch: str, claims: Claims, deployed: str = "ort", imgsz: int | None = None
) -> SeedComparison:
    """Claimed-vs-measured rows for every measured attention that any claim table mentions.

    ``imgsz``: the measured (square) input size; GFLOPs claimed at another size are not compared.
    """
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
                tables, row.attention, claims.qualitative_threshold_pct, sources, imgsz
            )
        deployed_pct = row.latency_overhead_pct.get(deployed)
        margin = noise_margin_pct(row, base, deployed) if base is not None else None
        flagged = (
            claimed is not None
            and not claimed.recalled
            and deployed_pct is not None
            and deployed_pct > claimed.value + (margin or 0.0)
        )
        mine, theirs = row.latency.get(deployed), base.latency.get(deployed) if base else None
        comparison.rows.append(
            SeedRow(
                attention=row.attention,
                params_m=row.params_m,
                gflops=row.gflops,
                claimed_params_m=_first(tables, row.attention, "params_m", sources),
                claimed_gflops=_first(tables, row.attention, "gflops", sources, imgsz),
                claimed_overhead_pct=claimed,
                claim_basis=basis,
                qualitative=_qualitative(tables, row.attention),
                deployed_overhead_pct=deployed_pct,
                noise_margin_pct=margin,
                flagged=bool(flagged),
                gflops_note=_gflops_note(tables, row.attention, imgsz),
                claimed_fps_drop_pct=_claimed_fps_drop(tables, row.attention, sources),
                deployed_fps_drop_pct=fps_drop_pct(
                    mine.wall.p50_ms if mine else None, theirs.wall.p50_ms if theirs else None
                ),
            )
        )
    comparison.speed_ratios = _speed_ratios(tables, rows, deployed, comparison.sources)
    return comparison
