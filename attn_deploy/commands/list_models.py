"""`attn-deploy list`: every zoo model with params (M) and GFLOPs at its default input.

The table is static (``attn_deploy/data/zoo_table.json``, made by :func:`attn_deploy.models.profile.zoo_table`
and checked against the zoo by ``tests/test_front_door.py``), so `list` answers without torch or building a
model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from attn_deploy.display import add_json_option, console, emit_json
from attn_deploy.errors import ModelNotFoundError

ZOO_TABLE = Path(__file__).resolve().parent.parent / "data" / "zoo_table.json"
CAPTION = "GFLOPs = 2 x multiply-adds of convolutions and matmuls (as Ultralytics reports them)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``list`` parser."""
    p = sub.add_parser("list", help="list zoo models with params and GFLOPs")
    p.add_argument("--arch", default=None, help="only models of this architecture (e.g. yolov8s)")
    add_json_option(p, "the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the zoo table (or JSON); an unknown ``--arch`` is a one-line error naming the valid ones."""
    table = json.loads(ZOO_TABLE.read_text(encoding="utf-8"))
    rows = filter_arch(table, args.arch)
    if args.json:
        emit_json({"models": rows, "gflops": CAPTION}, args.json)
        return 0
    out = Table(title="attn-deploy model zoo")
    for col in ("model", "task", "attention", "input", "params (M)", "GFLOPs"):
        out.add_column(col, justify="right" if col in ("params (M)", "GFLOPs") else "left")
    for r in rows:
        size = "x".join(map(str, r["input"]))
        out.add_row(r["model"], r["task"], r["attention"], size, f"{r['params_m']:.2f}", f"{r['gflops']:.2f}")
    console.print(out)
    console.print(f"[dim]{CAPTION}[/]", highlight=False)
    return 0


def filter_arch(table: dict[str, Any], arch: str | None) -> list[dict[str, Any]]:
    """The rows of ``arch`` (aliases resolved, case-insensitive), every row for ``None``."""
    rows = table["models"]
    if arch is None:
        return rows
    archs = sorted({r["arch"] for r in rows})
    key = arch.strip().lower()
    key = table["aliases"].get(key, key)
    if key not in archs:
        raise ModelNotFoundError(f"unknown architecture {arch!r}; choose from {', '.join(archs)}")
    return [r for r in rows if r["arch"] == key]
