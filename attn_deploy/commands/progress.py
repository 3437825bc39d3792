"""Shared rich console and the progress display of long CLI work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

console = Console()


@contextmanager
def progress_display(
    title: str, *, bar: bool = False
) -> Iterator[tuple[Progress, TaskID, Callable[[str], None]]]:
    """A spinner with the current stage and elapsed time (plus a bar and count with ``bar=True``).

    Yields ``(progress, task, on_stage)``; ``on_stage(name)`` shows ``title: name``.
    """
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if bar:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(title, total=None)

        def on_stage(name: str) -> None:
            progress.update(task, description=f"{title}: {name}")

        yield progress, task, on_stage


@contextmanager
def stage_progress(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the current stage; yields ``on_stage(name)`` to advance it."""
    with progress_display(title) as (_, _, on_stage):
        yield on_stage
