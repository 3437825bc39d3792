"""`attn-deploy` command line: thin. Parses arguments, calls the library, prints.

Each sub-command lives in ``attn_deploy/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed arguments, returns an exit code). A command
imports only what it runs: a command module's top level holds its parser and light imports, and ``run`` imports
the library it needs (torch, onnxslim, ONNX Runtime), so ``--help``, parsing, ``serve`` and ``triton-repo``
never load torch (``tests/test_light_cli.py``).

Exit codes: 0 done, 1 a check failed, 2 a user error (one red line: an ``AttnDeployError``, or the system
refusing a file (``OSError``: permissions, a file where a folder belongs, a full disk) or memory), 128 + signal
when interrupted (130 for Ctrl-C; see :func:`attn_deploy.fsutil.exit_on_signals`). Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from rich.console import Console
from rich.markup import escape

from attn_deploy.errors import AttnDeployError
from attn_deploy.fsutil import exit_on_signals

COMMAND_MODULES = ("list_models", "export", "validate", "bench", "distill", "serve", "triton_repo")

err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="attn-deploy",
        description="Deploy CNNs with attention modules to ONNX Runtime and TensorRT, verified against PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"attn_deploy.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``attn-deploy`` console script."""
    with exit_on_signals(announce_interrupt):  # first: a command's imports (torch) take seconds
        args = build_parser().parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except AttnDeployError as exc:
            return fail(getattr(exc, "cli_hint", None) or str(exc))  # the hint names flags, not API arguments
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            return fail(
                f"{exc.strerror or exc}{where}; check the path, its permissions and the free disk space"
            )
        except MemoryError:
            return fail("out of memory; use a smaller --imgsz, --batch or --images")
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            return 130


def fail(message: str) -> int:
    """Print ``message`` as one red error line; the exit code of a user error (2)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return 2


def announce_interrupt(signum: int) -> None:
    """The one line printed when a signal ends a command (staging is already removed)."""
    from attn_deploy.display import console

    if console.is_terminal:  # end the progress display's line, show the cursor it hid
        console.line()
        console.show_cursor(True)
    err_console.print(
        f"[yellow]interrupted ({signal.Signals(signum).name}); nothing half-written was left[/]"
    )


if __name__ == "__main__":
    sys.exit(main())
