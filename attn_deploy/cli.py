"""`attn-deploy` command line: thin. Parses arguments, calls the library, prints.

Each sub-command lives in ``attn_deploy/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed arguments, returns an exit code). A command
imports only what it runs: a command module's top level holds its parser and light imports, and ``run`` imports
the library it needs (torch, onnxslim, ONNX Runtime), so ``--help``, parsing, ``serve`` and ``triton-repo``
never load torch (``tests/test_light_cli.py``).

Exit codes (``--help`` lists them: :data:`EPILOG`): 0 done, 1 a check failed, 2 a user error (one red line:
an ``AttnDeployError``, or the system refusing a file (``OSError``: permissions, a file where a folder belongs,
a full disk) or memory), 128 + signal when interrupted (130 for Ctrl-C; see
:func:`attn_deploy.fsutil.exit_on_signals`). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from rich.markup import escape

from attn_deploy import __version__
from attn_deploy.display import STDOUT, check_json_target, console, err_console
from attn_deploy.errors import AttnDeployError
from attn_deploy.fsutil import exit_on_signals

COMMAND_MODULES = (
    "list_models",
    "export",
    "validate",
    "bench",
    "serve",
    "triton_repo",
    "build_engine",
    "show_config",
    "make_data",
    "distill",
)

EPILOG = """exit codes:
  0    done (validate: every gate passed)
  1    a check failed: validate found a gate missed (its tables say which)
  2    usage or input error, or an export refused (e.g. its graph does not match PyTorch): one red
       line naming the problem and the fix, nothing written (argparse's usage errors are 2 too)
  130  interrupted (Ctrl-C; 128 + signal number for other signals); nothing half-written is left
  141  the reader of standard output went away (`attn-deploy list | head -1`), as for SIGPIPE

`attn-deploy COMMAND --help` shows a command's options."""


def version_line() -> str:
    """``attn-deploy X (torch Y, onnx Z, onnxruntime W, Python V)``: installed versions, nothing imported."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("torch", "onnx", "onnxruntime"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return f"attn-deploy {__version__} ({', '.join(parts)}, Python {sys.version.split()[0]})"


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_line` and exit 0 (the metadata is read only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, help="print the version (and torch/onnx/ORT's) and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered (each gets ``-q/--quiet``)."""
    parser = argparse.ArgumentParser(
        prog="attn-deploy",
        description="Deploy CNNs with attention modules to ONNX Runtime and TensorRT, verified against PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"attn_deploy.commands.{name}").register(sub)
    for command in sub.choices.values():
        command.add_argument(
            "-q", "--quiet", action="store_true", help="print only errors and warnings (stderr)"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``attn-deploy`` console script."""
    with exit_on_signals(announce_interrupt):  # first: a command's imports (torch) take seconds
        args = build_parser().parse_args(argv)
        empty = _empty_value(args, sys.argv[1:] if argv is None else argv)
        if empty:
            return fail(f"{empty} is empty; give it a value")
        was_quiet = console.quiet
        console.quiet = args.quiet or getattr(args, "json", None) == STDOUT  # stdout holds only the JSON
        try:
            check_json_target(getattr(args, "json", None))
            return int(args.func(args) or 0)
        except AttnDeployError as exc:
            return fail(getattr(exc, "cli_hint", None) or str(exc))  # the hint names flags, not API arguments
        except BrokenPipeError:  # `--json | head`: the reader went away, as rich's own tables handle it
            console.on_broken_pipe()
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
        finally:
            console.quiet = (
                was_quiet  # main() called from Python (tests, notebooks) leaves the console as it was
            )


def _empty_value(args: argparse.Namespace, argv: list[str]) -> str | None:
    """The option (or argument) given as an empty or blank string: an unset shell variable, which would
    otherwise quietly mean the current folder (``--out ""``) or the default (``--name ""``)."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            option = f"--{dest.replace('_', '-')}"
            return option if option in argv or any(a.startswith(f"{option}=") for a in argv) else dest.upper()
    return None


def fail(message: str) -> int:
    """Print ``message`` as one red error line; the exit code of a user error (2)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return 2


def announce_interrupt(signum: int) -> None:
    """The one line printed when a signal ends a command (staging is already removed)."""
    if console.is_terminal:  # end the progress display's line, show the cursor it hid
        console.line()
        console.show_cursor(True)
    err_console.print(
        f"[yellow]interrupted ({signal.Signals(signum).name}); nothing half-written was left[/]"
    )


if __name__ == "__main__":
    sys.exit(main())
