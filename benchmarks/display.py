"""The benchmark scripts' own terminal display: a rich console, progress and tables.

The scripts use the library's public API only (never ``attn_deploy.commands``, the CLI's internals); this is
their small counterpart of the CLI's progress display and table printing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from attn_deploy.bench.render import TableData
from attn_deploy.markdown import fmt

console = Console()


@contextmanager
def bench_progress(
    title: str,
) -> Iterator[tuple[Callable[[str], None], Callable[[int], None], Callable[[str, bool], None]]]:
    """A spinner while models build, then a bar over the timed calls.

    Yields ``(on_stage, on_timing_start, on_call)`` for :func:`attn_deploy.bench.run.bench_models`.
    """
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(title, total=None)

        def on_stage(name: str) -> None:
            progress.update(task, description=f"{title}: {name}")

        def on_timing_start(total: int) -> None:
            progress.update(task, description=f"{title}: warm-up", total=total, completed=0)

        def on_call(name: str, warming_up: bool) -> None:
            if not warming_up:
                progress.update(task, description=f"{title}: timing {name}", advance=1)

        yield on_stage, on_timing_start, on_call


def print_table(data: TableData) -> None:
    """Print a :class:`attn_deploy.bench.render.TableData` as a rich table with its notes."""
    table = Table(title=data.title)
    for i, header in enumerate(data.headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in data.rows:
        table.add_row(*(fmt(c) for c in row))
    console.print(table)
    for note in data.notes:
        console.print(f"[dim]{escape(note)}[/]", highlight=False)
