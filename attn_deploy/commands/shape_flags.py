"""TensorRT optimization profiles from the command line, in trtexec's syntax (``--min-shape images:1x3x320x320``),
for `attn-deploy export` and `attn-deploy build-engine`. Light: no heavy imports."""

from __future__ import annotations

import argparse
import re
from typing import Any

from attn_deploy.errors import ConfigError

FLAGS = ("min", "opt", "max")
MAX_DIM = 1 << 20  # a larger dim is a typo, not a tensor
_SPEC = re.compile(r"^(?:(?P<name>[^:,]+):)?(?P<dims>\d+(?:x\d+)*)$")


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--min-shape / --opt-shape / --max-shape`` (all three together; they override the config's
    ``profiles``)."""
    for which in FLAGS:
        parser.add_argument(
            f"--{which}-shape",
            default=None,
            metavar="[NAME:]1x3xHxW",
            help=f"TensorRT profile {which} shape, as trtexec's --{which}Shapes (NAME:1x3x320x320[,NAME2:...]; "
            "no NAME: every input). Give all three.",
        )


def parse_shapes(text: str, flag: str) -> dict[str, list[int]]:
    """``"images:1x3x320x320,mask:1x1x320x320"`` -> ``{"images": [1, 3, 320, 320], ...}``; a bare
    ``1x3x320x320`` is every input (``"*"``). A one-line ``ConfigError`` for anything else."""
    shapes: dict[str, list[int]] = {}
    for part in text.split(","):
        match = _SPEC.match(part.strip())
        if not match:
            raise ConfigError(f"{flag} {text!r}: write NAME:1x3x320x320 (dims joined by x, inputs by commas)")
        dims = [int(d) for d in match["dims"].split("x")]
        if not all(1 <= d <= MAX_DIM for d in dims):
            raise ConfigError(f"{flag} {text!r}: every dim must be 1..{MAX_DIM}")
        name = (match["name"] or "*").strip()
        if name in shapes:
            raise ConfigError(f"{flag} {text!r}: input {name!r} is given twice")
        shapes[name] = dims
    if "*" in shapes and len(shapes) > 1:
        raise ConfigError(f"{flag} {text!r}: a shape without NAME: is every input; give it alone")
    return shapes


def profile_overrides(args: argparse.Namespace) -> dict[str, dict[str, list[int]]] | None:
    """The ``profiles`` mapping the three flags give (``None`` when none is given), for
    :func:`attn_deploy.config.replace_config`; each input needs all three shapes."""
    given = {w: getattr(args, f"{w}_shape", None) for w in FLAGS}
    if not any(given.values()):
        return None
    missing = [f"--{w}-shape" for w, text in given.items() if not text]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} missing: a TensorRT profile needs --min-shape, --opt-shape and --max-shape"
        )
    parsed = {w: parse_shapes(str(text), f"--{w}-shape") for w, text in given.items()}
    names = list(parsed["min"])
    for w in FLAGS:
        if sorted(parsed[w]) != sorted(names):
            raise ConfigError(
                f"--min-shape/--opt-shape/--max-shape name different inputs ({', '.join(names)} vs "
                f"{', '.join(parsed[w])}); give each input in all three"
            )
    return {n: {w: parsed[w][n] for w in FLAGS} for n in names}


def with_cli_profiles(config: Any, args: argparse.Namespace) -> Any:
    """``config`` (an :class:`~attn_deploy.config.ExportConfig`) with the flags' profiles over its own, checked
    like a YAML ``profiles:`` entry (min <= opt <= max, same rank)."""
    from attn_deploy.config import replace_config  # torch-free; imported with the config it changes

    overrides = profile_overrides(args)
    if overrides is None:
        return config
    if config.runtime != "tensorrt":
        raise ConfigError(
            f"--min-shape/--opt-shape/--max-shape set TensorRT profiles; {config.name} is an ONNX Runtime target "
            "(use --config trt-fp16 or trt-int8)"
        )
    own = {
        n: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for n, p in config.profiles.items()
    }
    try:
        base = {} if "*" in overrides else own  # a bare shape is every input: it replaces the named ones too
        return replace_config(config, {"profiles": {**base, **overrides}})
    except ConfigError as exc:
        raise ConfigError(f"--min-shape/--opt-shape/--max-shape: {exc}") from None
