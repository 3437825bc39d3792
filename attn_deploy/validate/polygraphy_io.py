"""Validation inputs and reference outputs in Polygraphy's JSON formats, to re-check with NVIDIA's own tool.

``inputs.json`` is a list of feed dicts (``polygraphy.json.save_json``), what ``--load-inputs`` reads;
``outputs.json`` is a ``RunResults`` holding the PyTorch FP32 outputs, what ``--load-outputs`` reads. Then::

    polygraphy run model.onnx --onnxrt --load-inputs inputs.json --load-outputs outputs.json \\
        --atol 1e-3 --rtol 1e-3

runs the graph with ONNX Runtime on the same inputs and compares against PyTorch's outputs (``--trt`` instead
of ``--onnxrt`` does the same with TensorRT on a GPU machine).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from polygraphy.comparator import IterationResult, RunResults
from polygraphy.json import save_json

from attn_deploy.fsutil import write_with

INPUTS_NAME = "polygraphy_inputs.json"
OUTPUTS_NAME = "polygraphy_outputs.json"


def save_polygraphy_data(
    folder: str | os.PathLike[str],
    feeds: Sequence[dict[str, np.ndarray]],
    reference_outputs: Sequence[dict[str, np.ndarray]],
    runner_name: str = "pytorch-fp32",
) -> tuple[Path, Path]:
    """Write one feed dict and one output dict per iteration; return (inputs path, outputs path)."""
    folder = Path(folder)
    inputs_path, outputs_path = folder / INPUTS_NAME, folder / OUTPUTS_NAME
    write_with(inputs_path, lambda tmp: save_json([dict(f) for f in feeds], str(tmp), description="inputs"))
    results = RunResults()
    results.append(
        (runner_name, [IterationResult(outputs=dict(o), runner_name=runner_name) for o in reference_outputs])
    )
    write_with(outputs_path, lambda tmp: results.save(str(tmp)))
    return inputs_path, outputs_path


def polygraphy_command(onnx_name: str, atol: float, rtol: float, backend: str = "--onnxrt") -> str:
    """The command line that reproduces the check in an artifact directory."""
    parts = ["polygraphy", "run", onnx_name, backend, "--load-inputs", INPUTS_NAME, "--load-outputs", OUTPUTS_NAME]
    parts += ["--atol", f"{atol:g}", "--rtol", f"{rtol:g}"]
    return shlex.join(parts)
