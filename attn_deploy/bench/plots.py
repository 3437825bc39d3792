"""PNG charts of benchmark results.

matplotlib's object API (``Figure`` drawn on the Agg canvas), not pyplot: headless, no global state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from attn_deploy.fsutil import write_with

MAX_WIDTH = 12.0
"""Figure width cap in inches."""
Bars = Mapping[str, Mapping[str, tuple[float, float] | None]]
"""category -> series -> (value, upper whisker) or None where not measured."""


def _grouped_bars(ax: Axes, bars: Bars, series: Sequence[str], noise: bool = False) -> list[Artist]:
    """Bars with a whisker up to the cell's second number or, with ``noise``, a +- band of that size;
    bars within their noise band are drawn hatched and pale (not distinguishable from zero). Returns the
    legend's entries: one plain swatch per series (not the style of its first bar) and, with ``noise``, a key
    for the hatching."""
    handles: list[Artist] = []
    categories = list(bars)
    x = np.arange(len(categories))
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        cells = [bars[c].get(name) for c in categories]
        values = [cell[0] if cell else np.nan for cell in cells]
        if noise:
            band = [abs(cell[1]) if cell else 0.0 for cell in cells]
            yerr = [band, band] if any(band) else None
        else:
            upper = [max(cell[1] - cell[0], 0.0) if cell else 0.0 for cell in cells]
            yerr = [[0.0] * len(upper), upper] if any(upper) else None
        drawn = ax.bar(
            x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=yerr, capsize=2
        )
        handles.append(Patch(facecolor=drawn.patches[0].get_facecolor(), label=name))
        if noise:
            for patch, cell in zip(drawn, cells, strict=True):
                if cell and abs(cell[0]) <= abs(cell[1]):
                    patch.set_alpha(0.35)
                    patch.set_hatch("//")
    ax.set_xticks(
        x,
        categories,
        rotation=30 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
    )
    ax.grid(axis="y", alpha=0.3)
    if noise:
        handles.append(Patch(facecolor="white", edgecolor="gray", hatch="//", label="within noise"))
    return handles


def _figure(width: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, 4.2))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def latency_bars(bars: Bars, series: Sequence[str], path: str | os.PathLike[str], title: str) -> None:
    """Grouped bars of p50 latency (ms) per category and backend, whiskers up to p90."""
    fig, ax = _figure(min(MAX_WIDTH, max(6.0, 0.35 * len(bars) * max(len(series), 1) + 3)))
    ax.legend(handles=_grouped_bars(ax, bars, series), fontsize=8)
    ax.set_ylabel("latency p50 (ms), whisker p90")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def overhead_chart(
    overheads: Bars,
    series: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
    claimed: Mapping[str, float] | None = None,
) -> None:
    """Grouped bars of latency overhead (%) vs ``none`` per attention and backend; claims as black marks.

    ``overheads`` cells are (overhead %, noise margin in points): drawn as a +- error bar, and a bar within
    its margin is hatched and pale, so a -8% bar that is noise does not read as a speed-up.
    """
    fig, ax = _figure(min(MAX_WIDTH, max(6.0, 0.9 * len(overheads) + 3)))
    handles = _grouped_bars(ax, overheads, series, noise=True)
    if claimed:
        categories = list(overheads)
        xs = [categories.index(c) for c in claimed if c in categories]
        ys = [claimed[c] for c in claimed if c in categories]
        handles.append(ax.scatter(xs, ys, marker="_", s=600, color="black", zorder=3, label="claimed"))
    ax.legend(handles=handles, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("latency overhead vs none (%), +- noise (2 s.e.)")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
