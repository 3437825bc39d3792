"""Rich tables of what the library returns: checks against tolerances, an export's precision step (bench
tables print through :func:`attn_deploy.display.print_table`, shared with the benchmark scripts).

The library returns plain data (dataclasses, manifest dicts); the commands render it here. Imports stay light:
the library modules load inside the functions, once a command has data to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from attn_deploy.validate.scoring import Check


def checks_table(title: str, checks: Sequence[Check], caption: str | None = None) -> Table:
    """A rich table of checks: metric, value, tolerance, pass / FAIL / not checked (yellow when far off)."""
    from attn_deploy.validate.report import show_value

    table = Table(title=title, caption=caption)
    for col in ("metric", "value", "tolerance", "result"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    style = {"pass": "[green]", "FAIL": "[red]", "not checked": "[dim]"}
    for c in checks:
        table.add_row(
            c.metric, show_value(c), c.tolerance, ("[yellow]" if c.far_off else style[c.result]) + c.result
        )
    return table


def precision_tables(manifest: dict[str, Any], folder: Path) -> list[Table]:
    """Tables for the export summary from an artifact's manifest (in ``folder``): the precision graph's checks
    against PyTorch (its ``parity`` block) and the TensorRT engine (its ``engine`` block), where there are any."""
    from attn_deploy.validate.scoring import Check

    tables = []
    parity = manifest.get("parity", {})
    if "checks" in parity:
        checks = [Check(**c) for c in parity["checks"]]
        title = (
            f"{manifest['precision'].upper()} graph vs PyTorch FP32 ({manifest['target']}, ONNX Runtime CPU)"
        )
        tables.append(checks_table(title, checks, parity.get("reference")))
    engine = manifest.get("engine")
    if engine:
        tables.append(engine_table(engine, folder))
    return tables


def engine_table(engine: dict[str, Any], folder: Path) -> Table:
    """The TensorRT step of a manifest's ``engine`` block: built or plainly not, profiles, and the commands
    that build it on a GPU machine, with the artifact ``folder`` they run in (their paths are relative)."""
    if engine.get("built"):
        title = "[green]TensorRT engine: built[/]"
    else:
        title = (
            "[yellow]TensorRT engine: NOT built[/] (the verified ONNX graph is the artifact; no model.plan)"
        )
    table = Table(title=title, show_header=False)
    if engine.get("built"):
        table.add_row("engine", f"{engine['plan']} ({engine['gpu']}, TensorRT {engine['tensorrt']})")
    else:
        table.add_row("reason", escape(str(engine.get("reason", "not attempted"))))
    for name, (lo, opt, hi) in engine.get("profiles", {}).items():
        table.add_row(f"profile {name}", f"min {lo}  opt {opt}  max {hi}")
    if not engine.get("built") and engine.get("commands"):
        table.add_row("run these in", escape(str(folder.resolve())))
        for tool, line in engine["commands"].items():
            table.add_row(f"build with {tool}", escape(line))
    return table
