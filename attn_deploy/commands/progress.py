"""Shared rich console and a stage-progress display for long CLI work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console()


@contextmanager
def stage_progress(title: str) -> Iterator[callable]:
    """A spinner with the current stage and elapsed time; yields ``on_stage(name)`` to advance it."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(title, total=None)

        def on_stage(name: str) -> None:
            progress.update(task, description=f"{title}: {name}")

        yield on_stage
