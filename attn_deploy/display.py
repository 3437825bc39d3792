"""Terminal display of the two front ends, the CLI (``attn_deploy.commands``) and the benchmark scripts: one
rich console, progress displays, and the printer of bench tables.

Torch-free and light (rich only). No stage room imports it: the library returns data, the front ends show it
(``tests/test_architecture.py`` checks who imports this module).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from attn_deploy import fsutil
from attn_deploy.errors import ConfigError
from attn_deploy.markdown import fmt

if TYPE_CHECKING:
    from attn_deploy.bench.render import TableData

PIPED_WIDTH = 1000
"""Columns of a console whose output is not a terminal (a file, a pipe, a CI log): wide enough that tables and
paths stay whole instead of being cut at rich's default 80 (``COLUMNS`` still wins when set)."""


BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE
"""Exit status when the reader of standard output went away (``attn-deploy list | head -1``): what a shell
reports for a process SIGPIPE ended (141), not 1, which means a failed check."""


class _Console(Console):
    def print(self, *objects: Any, **kwargs: Any) -> None:
        """As rich's, but a table's cells fold a value too wide for its column onto more lines instead of
        cutting it with an ellipsis (a model name, a path or a latency cut at an 80-column terminal)."""
        for table in objects:
            if isinstance(table, Table):
                for column in table.columns:
                    column.overflow = "fold"
        super().print(*objects, **kwargs)

    def on_broken_pipe(self) -> None:
        """rich silences standard output and exits 1; this CLI exits as SIGPIPE would."""
        try:
            super().on_broken_pipe()
        except SystemExit:
            raise SystemExit(BROKEN_PIPE_EXIT) from None


def make_console(*, stderr: bool = False) -> Console:
    """A rich console; when it writes to a file or pipe (and ``COLUMNS`` is unset), :data:`PIPED_WIDTH` wide."""
    made = _Console(stderr=stderr)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = PIPED_WIDTH
    return made


console = make_console()
"""Standard output: tables, summaries (silenced by ``--quiet`` and ``--json``)."""
err_console = make_console(stderr=True)
"""Standard error: errors and warnings (shown even with ``--quiet``)."""


def warn(message: str) -> None:
    """Print one yellow warning line on standard error."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


STDOUT = "-"


def add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json [PATH]``: ``what`` as JSON on standard output (alone: nothing else is printed there), or
    written to PATH."""
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        default=None,
        metavar="PATH",
        help=f"{what} as JSON: on stdout (alone, machine-readable), or written to PATH",
    )


def check_json_target(target: str | None) -> None:
    """A ``--json PATH`` that cannot be written is a one-line ``ConfigError`` before the command works."""
    if target in (None, STDOUT):
        return
    if os.path.isdir(target):
        raise ConfigError(f"--json '{target}' is a folder; give a file path, e.g. result.json")
    written = fsutil.write_target(target, "--json")  # a link is checked where it points
    if not _is_stream(written):
        fsutil.check_writable_dir(os.path.dirname(written), "--json")


def _is_stream(target: str) -> bool:
    """True for a character device or FIFO (``/dev/null``, ``/dev/stderr``, a named pipe): written into, as a
    shell redirection would, never replaced by a file."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def emit_json(data: Any, target: str) -> None:
    """``data`` as indented JSON: printed on standard output for ``-``, written into a device or pipe at
    ``target`` (``/dev/stderr``, a FIFO), else written atomically to ``target``."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    if target == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
    elif _is_stream(target):
        try:
            # a pipe nobody reads would block for ever: opened without waiting, it is ENXIO instead
            fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            reason = "no process reads the pipe" if exc.errno == errno.ENXIO else exc.strerror
            raise ConfigError(f"cannot write --json '{target}': {reason}") from None
        console.print(f"wrote {escape(target)}", highlight=False)
    else:
        console.print(f"wrote {escape(str(fsutil.write_text(target, text)))}", highlight=False)


@contextmanager
def progress_display(
    title: str, *, bar: bool = False
) -> Iterator[tuple[Progress, TaskID, Callable[[str], None]]]:
    """A spinner with the current stage and elapsed time (plus a bar and count with ``bar=True``).

    Yields ``(progress, task, on_stage)``; ``on_stage(name)`` shows ``title: name``. Shown on a terminal only:
    standard output's, else standard error's (``cmd > result.txt`` still shows its progress); never with
    ``--quiet`` or ``--json``.
    """
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if bar:
        columns += [BarColumn(), MofNCompleteColumn()]
    # Off a terminal (a pipe, a file, a CI log) the transient display would leave only a blank line behind.
    shown_on = next((c for c in (console, err_console) if c.is_terminal), None)
    quiet = shown_on is None or console.quiet
    with Progress(
        *columns, TimeElapsedColumn(), console=shown_on or console, transient=True, disable=quiet
    ) as progress:
        task = progress.add_task(title, total=None)

        def on_stage(name: str) -> None:
            progress.update(task, description=f"{title}: {name}")

        yield progress, task, on_stage


@contextmanager
def stage_progress(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the current stage; yields ``on_stage(name)`` to advance it."""
    with progress_display(title) as (_, _, on_stage):
        yield on_stage


@contextmanager
def step_progress(title: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """A bar over training steps; yields ``on_step(step, total, terms)``, which shows the loss terms."""
    with progress_display(title, bar=True) as (progress, task, _):

        def on_step(step: int, total: int, terms: dict[str, float]) -> None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != "step")
            progress.update(task, total=total, completed=step, description=f"{title}: {shown}")

        yield on_step


@contextmanager
def bench_progress(
    title: str,
) -> Iterator[tuple[Callable[[str], None], Callable[[int], None], Callable[[str, bool], None]]]:
    """A progress display: a spinner while models build, then a bar over the timed calls.

    Yields ``(on_stage, on_timing_start, on_call)`` for :func:`attn_deploy.bench.run.bench_models`.
    """
    with progress_display(title, bar=True) as (progress, task, on_stage):

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
