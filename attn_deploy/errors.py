"""Error types. Every user-facing failure is one of these; the CLI prints its message on one line."""

from __future__ import annotations

import re


class AttnDeployError(Exception):
    """Base class: a problem the user can fix. The message says what went wrong and what to do."""


class ConfigError(AttnDeployError):
    """A config file or option is invalid (unknown key, bad value)."""


class ModelNotFoundError(AttnDeployError):
    """A model or attention name is not in the registry."""


class WeightsError(AttnDeployError):
    """A weights file is missing, unreadable or does not match the model."""


class ExportError(AttnDeployError):
    """Export produced a graph that fails, or that differs from PyTorch; nothing was written."""


class StaticShapeError(ExportError):
    """The model runs at fewer shapes than the requested dynamic dims need.

    ``str(exc)`` names the API arguments to use (``dynamic_hw=False, dynamic_batch=True``); ``cli_hint`` is the
    same one-line message for the command line, naming flags instead; ``dynamic_batch_ok`` says whether a dynamic
    batch alone (static H/W) would work.
    """

    def __init__(self, message: str, cli_hint: str, dynamic_batch_ok: bool) -> None:
        super().__init__(message)
        self.cli_hint = cli_hint
        self.dynamic_batch_ok = dynamic_batch_ok


class UnsupportedOpError(ExportError):
    """The graph holds an op or pattern the target runtime cannot take."""


class InputError(AttnDeployError):
    """Bad input data: wrong tensor shape or dtype, unreadable image, empty directory, corrupt ONNX."""


def exception_summary(exc: BaseException, *, fold: bool = False, limit: int = 400) -> str:
    """A library exception's message for a one-line error: its first line (or, with ``fold``, every line
    joined), ANSI colours removed, truncated to ``limit``; the exception's type name when it has no message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    summary = " ".join(" ".join(lines).split()) if fold else (lines[0] if lines else "")
    summary = summary or type(exc).__name__
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."
