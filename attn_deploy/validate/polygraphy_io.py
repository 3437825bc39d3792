"""Validation inputs and reference outputs in Polygraphy's JSON formats, to re-check with NVIDIA's own tool.

``polygraphy_inputs.json`` is a list of feed dicts (``polygraphy.json.save_json``), read by ``--load-inputs``;
``polygraphy_outputs.json`` is a ``RunResults`` of PyTorch FP32 outputs, read by ``--load-outputs``. Then::

    polygraphy run model.onnx --onnxrt --load-inputs polygraphy_inputs.json \\
        --load-outputs polygraphy_outputs.json --atol 1e-3 --rtol 1e-3

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
from polygraphy.logger import G_LOGGER

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
    results = RunResults()
    results.append(
        (runner_name, [IterationResult(outputs=dict(o), runner_name=runner_name) for o in reference_outputs])
    )
    with G_LOGGER.verbosity(G_LOGGER.ERROR):  # no "[I] Saving ..." lines on our console
        write_with(
            inputs_path, lambda tmp: save_json([dict(f) for f in feeds], str(tmp), description="inputs")
        )
        write_with(outputs_path, lambda tmp: results.save(str(tmp)))
    return inputs_path, outputs_path


# Elementwise tolerances of `polygraphy run` (|candidate - reference| <= atol + rtol * |reference|);
# INT8 is compared on the mean error, as single elements legitimately move by a quantization step.
POLYGRAPHY_TOLERANCES = {
    "fp32": ["--atol", "1e-3", "--rtol", "1e-3"],
    "fp16": ["--atol", "1e-2", "--rtol", "1e-2"],
    "int8": ["--atol", "0.1", "--rtol", "0.1", "--check-error-stat", "mean"],
}


def polygraphy_command(onnx_name: str, precision: str = "fp32", backend: str = "--onnxrt") -> str:
    """The command line that reproduces the check in an artifact directory."""
    parts = ["polygraphy", "run", onnx_name, backend, "--load-inputs", INPUTS_NAME]
    parts += ["--load-outputs", OUTPUTS_NAME]
    return shlex.join(parts + POLYGRAPHY_TOLERANCES.get(precision, POLYGRAPHY_TOLERANCES["fp32"]))
