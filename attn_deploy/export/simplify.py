"""Graph simplification with onnxslim.

Why onnxslim over onnxsim: it is pure Python (no native build to break on new Pythons), it keeps
symbolic dims as named dims (checked in tests), and its public surface is one call,
``onnxslim.slim(model) -> ModelProto``.
"""

from __future__ import annotations

import contextlib
import io

import onnx
import onnxslim

from attn_deploy.errors import ExportError, exception_summary


def simplify_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-node removal and pattern fusion; ``ExportError`` if onnxslim fails."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(model)
    except Exception as exc:
        raise ExportError(
            f"onnxslim failed to simplify the graph ({type(exc).__name__}: {exception_summary(exc)}); "
            "export with simplify=False / --no-simplify"
        ) from None
    if slim is None:
        raise ExportError("onnxslim returned no model; export with simplify=False / --no-simplify")
    return slim
