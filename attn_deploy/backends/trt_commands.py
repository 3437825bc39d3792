"""The ``trtexec`` and ``polygraphy convert`` commands that build the same engine as
:func:`attn_deploy.backends.tensorrt.build_engine`, so a user can build with NVIDIA's own tools. Plain CPU code.

Both compile a strongly typed network (precision is already in the ONNX graph: an FP16 graph conversion or
Q/DQ INT8 nodes), so they take ``--stronglyTyped`` / ``--strongly-typed`` and never ``--fp16`` / ``--int8``:
with a strongly typed network TensorRT refuses those builder flags (and 11.x removed them). Shapes are passed
for the dynamic inputs only (a static input's shape is fixed by the model; trtexec refuses explicit shapes for
a fully static model).

Flags relied on: trtexec ``--onnx --saveEngine --stronglyTyped --minShapes/--optShapes/--maxShapes
(name:1x3x640x640) --memPoolSize=workspace:<n>M --builderOptimizationLevel --timingCacheFile`` (TensorRT
samples/common/sampleOptions.cpp help text); Polygraphy ``convert --convert-to trt -o --trt-min-shapes
name:[1,3,640,640] --pool-limit workspace:<n>M --builder-optimization-level --load-timing-cache``
(tools/Polygraphy/polygraphy/tools/args/backend/trt/config.py) and ``--strongly-typed --save-timing-cache``
(.../backend/trt/loader.py).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attn_deploy.config import ShapeProfile, TensorRTConfig


def dynamic_profiles(
    inputs: Sequence[Mapping[str, Any]], profiles: Mapping[str, ShapeProfile]
) -> dict[str, ShapeProfile]:
    """The profiles of the inputs that have a dynamic dim in the manifest (a string dim), in input order."""
    dynamic = [str(e["name"]) for e in inputs if any(not isinstance(d, int) for d in e["shape"])]
    return {name: profiles[name] for name in dynamic if name in profiles}


def _dims(dims: Sequence[int], sep: str) -> str:
    return sep.join(str(int(d)) for d in dims)


def trtexec_command(
    onnx_path: str | Path,
    plan_path: str | Path,
    profiles: Mapping[str, ShapeProfile],
    tensorrt: TensorRTConfig,
    timing_cache: str | Path | None = None,
) -> list[str]:
    """``trtexec`` argv building ``plan_path`` from ``onnx_path`` with ``profiles`` (dynamic inputs only)."""
    argv = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        "--stronglyTyped",
        f"--memPoolSize=workspace:{tensorrt.workspace_mib}M",
        f"--builderOptimizationLevel={tensorrt.optimization_level}",
    ]
    if profiles:
        for flag, pick in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            argv.append(
                f"{flag}=" + ",".join(f"{n}:{_dims(getattr(p, pick), 'x')}" for n, p in profiles.items())
            )
    if timing_cache:
        argv.append(f"--timingCacheFile={timing_cache}")
    return argv


def polygraphy_command(
    onnx_path: str | Path,
    plan_path: str | Path,
    profiles: Mapping[str, ShapeProfile],
    tensorrt: TensorRTConfig,
    timing_cache: str | Path | None = None,
) -> list[str]:
    """``polygraphy convert`` argv building the same engine as :func:`trtexec_command`."""
    argv = [
        "polygraphy",
        "convert",
        str(onnx_path),
        "--convert-to",
        "trt",
        "-o",
        str(plan_path),
        "--strongly-typed",
        "--pool-limit",
        f"workspace:{tensorrt.workspace_mib}M",
        "--builder-optimization-level",
        str(tensorrt.optimization_level),
    ]
    for flag, pick in (("--trt-min-shapes", "min"), ("--trt-opt-shapes", "opt"), ("--trt-max-shapes", "max")):
        if profiles:
            argv += [flag, *(f"{n}:[{_dims(getattr(p, pick), ',')}]" for n, p in profiles.items())]
    if timing_cache:
        argv += ["--load-timing-cache", str(timing_cache), "--save-timing-cache", str(timing_cache)]
    return argv


def shell_line(argv: Sequence[str]) -> str:
    """``argv`` as one line a POSIX shell runs as is (paths with spaces, brackets quoted)."""
    return shlex.join(argv)


def engine_markdown(engine: Mapping[str, Any]) -> str:
    """The ``## TensorRT engine`` section of report.md from a manifest's ``engine`` block: what was built, or
    plainly that nothing was, and the commands that build it (run in the artifact folder)."""
    lines = ["## TensorRT engine\n"]
    if engine.get("built"):
        lines.append(
            f"Built: `{engine.get('plan')}` on {engine.get('gpu')} with TensorRT {engine.get('tensorrt')} "
            "(runs only on that GPU model and TensorRT version).\n"
        )
    else:
        lines.append(
            "**Not built**: the ONNX graph above is the verified artifact; no `model.plan` exists. "
            f"Reason: {engine.get('reason', 'not attempted')}\n"
        )
    for name, (lo, opt, hi) in (engine.get("profiles") or {}).items():
        lines.append(f"- profile `{name}`: min {lo}, opt {opt}, max {hi}")
    commands = engine.get("commands") or {}
    if commands:
        lines.append(
            "\nBuild it on a machine with an NVIDIA GPU and TensorRT, in this folder, with any of:\n"
        )
        lines += ["```sh", *commands.values(), "```"]
    return "\n".join(lines) + "\n"
