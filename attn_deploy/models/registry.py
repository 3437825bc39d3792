"""The zoo's registry: architecture builders registered by name (timm's ``@register_model`` idea).

A model name is ``"<arch>-<attention>"``. Each architecture registers one builder with the
defaults of its family (task, input size, classes, preprocessing, where attention may go);
``attn_deploy.models`` combines them with the attention registry into the model list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from attn_deploy.config import MAX_BATCH, MAX_SIDE, MIN_SIDE
from attn_deploy.data.preprocess import PreprocessSpec
from attn_deploy.errors import ConfigError, InputError

MAX_PIXELS = 1 << 28
"""Largest images x height x width held at once (3 GiB as float32 RGB)."""

_MIN_POSITIONS = {"simam": 2, "sparse": 32}
"""Attention that needs this many positions (H*W) on the coarsest feature map (stride 32 in the zoo):
SimAM divides by H*W - 1 (NaN at 1x1), sparse attention keeps topk=32 positions."""
_TRACE_MIN_POSITIONS = {**_MIN_POSITIONS, "ema": 2}
"""What exporting needs besides: EMA normalises each channel over its map, and PyTorch's exporter refuses a 1x1
one (the exported graph runs one; so servers take any size)."""

ATTN = "attn"
"""Name of every attention submodule in zoo models; state_dict keys holding it belong to attention."""


def is_attention_key(key: str) -> bool:
    """True when a state_dict key or module name lies inside an attention submodule (``...attn...``)."""
    return ATTN in key.split(".")


@dataclass(frozen=True)
class Family:
    """Defaults shared by the architectures of one family (ResNet, YOLOv8)."""

    task: Literal["detect", "classify"]
    input_size: tuple[int, int]
    num_classes: int
    output_names: tuple[str, ...]
    preprocess: Literal["letterbox", "resize_crop"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    placements: tuple[str, ...]
    """Where attention may go; the first is the default."""
    size_divisor: int
    """Input height and width must be multiples of this."""
    classes_key: str
    """Regex of the state_dict key whose first dimension is the class count (read from ``--weights``)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a deployer needs to know about a zoo model: its I/O contract and preprocessing.

    Pixels are normalised as ``(rgb / 255 - mean) / std`` (``mean=0, std=1`` for YOLO: ``/255`` only).
    """

    name: str
    arch: str
    attention: str
    task: Literal["detect", "classify"]
    input_size: tuple[int, int]
    num_classes: int
    input_name: str
    output_names: tuple[str, ...]
    preprocess: Literal["letterbox", "resize_crop"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    placement: str
    size_divisor: int

    def check_size(self, height: int, width: int) -> None:
        """Raise ``InputError`` unless ``height`` and ``width`` are multiples of ``size_divisor`` in
        ``MIN_SIDE..MAX_SIDE`` and at least :meth:`min_size`."""
        if max(height, width) > MAX_SIDE:
            raise InputError(
                f"input size {height}x{width} is larger than {MAX_SIDE}; use e.g. {self.input_size[0]}"
            )
        check_input_size(self.name, height, width, self.size_divisor)
        needed = _TRACE_MIN_POSITIONS.get(self.attention)
        positions = -(-height // 32) * -(-width // 32)  # the stride-32 map of the zoo's networks
        if needed is not None and positions < needed:
            raise InputError(
                f"{self.name} needs {needed} positions on its stride-32 feature map ({self.attention}); "
                f"{height}x{width} gives {positions}: use a larger --imgsz, e.g. {_side_for(needed, self.size_divisor)}"
            )

    def min_size(self) -> int | None:
        """Smallest height/width (a multiple of ``size_divisor``) whose stride-32 feature map is big enough
        for the attention (``None``: global pooling, any size runs)."""
        positions = _MIN_POSITIONS.get(self.attention)
        return None if positions is None else _side_for(positions, self.size_divisor)

    def preprocess_info(self, size: tuple[int, int]) -> dict[str, Any]:
        """The manifest's ``preprocess`` block at input ``size`` (H, W): how raw images become the model's input.

        The one source of the model's preprocessing: :meth:`preprocessing` and :meth:`normalize` derive from
        it. ``stride`` (when the model needs H and W to be multiples of it) and ``min_size`` (when H and W must
        each be at least that) tell servers which dynamic sizes the model really accepts.
        """
        info: dict[str, Any] = {
            "kind": self.preprocess,
            "size": [int(size[0]), int(size[1])],
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.size_divisor > 1:
            info["stride"] = self.size_divisor
        min_size = self.min_size()
        if min_size is not None:
            info["min_size"] = min_size
        return info

    def preprocessing(self, size: tuple[int, int]) -> PreprocessSpec:
        """The :class:`PreprocessSpec` (raw images -> input at ``size``) of :meth:`preprocess_info`."""
        return PreprocessSpec.from_dict(self.preprocess_info(size))

    def normalize(self, images: np.ndarray) -> torch.Tensor:
        """Turn ``uint8`` RGB images ``(N, H, W, 3)`` into the model's float32 input ``(N, 3, H, W)``."""
        images = np.asarray(images)
        spec = self.preprocessing((images.shape[1], images.shape[2]))
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(spec.std).view(1, 3, 1, 1)
        return (x - mean) / std


class Builder(Protocol):
    """Builds an architecture with attention ``attention`` at ``placement``; ``attn_kwargs`` go to it."""

    def __call__(
        self, attention: str, *, num_classes: int, placement: str, **attn_kwargs: Any
    ) -> nn.Module: ...


@dataclass(frozen=True)
class Arch:
    """A registered architecture."""

    name: str
    family: Family
    build: Builder


ARCHS: dict[str, Arch] = {}
ARCH_ALIASES: dict[str, str] = {}


def register_model(name: str, family: Family, aliases: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` as architecture ``name`` (and its ``aliases``) of ``family``."""

    def decorate(builder: Builder) -> Builder:
        if name in ARCHS or any(a in ARCH_ALIASES for a in aliases):
            raise ValueError(f"architecture {name!r} or one of its aliases is already registered")
        ARCHS[name] = Arch(name, family, builder)
        ARCH_ALIASES.update(dict.fromkeys(aliases, name))
        return builder

    return decorate


def check_input_size(model: str, height: int, width: int, divisor: int) -> None:
    """Raise a one-line ``InputError`` unless ``height`` and ``width`` are multiples of ``divisor``, at least
    ``MIN_SIDE``."""
    low = -(-MIN_SIDE // divisor) * divisor
    if height < low or width < low or height % divisor or width % divisor:

        def up(v: int) -> int:
            return max(low, -(-v // divisor) * divisor)

        what = f"multiples of {divisor}" if divisor > 1 else f"at least {low}"
        raise InputError(
            f"{model} needs input height and width that are {what}, got {height}x{width}; "
            f"resize or letterbox to e.g. {up(height)}x{up(width)}"
        )


def _side_for(positions: int, divisor: int) -> int:
    """Smallest square side (a multiple of ``divisor``) whose stride-32 map has ``positions`` cells."""
    cells = 1
    while cells * cells < positions:
        cells += 1
    return -(-(32 * (cells - 1) + 1) // divisor) * divisor


def check_count(count: int, size: tuple[int, int], what: str, limit: int = MAX_BATCH) -> int:
    """``count`` images of ``size`` (H, W) if ``1 <= count <= limit`` and they fit ``MAX_PIXELS``, else a one-line
    ``ConfigError`` naming the option ``what`` (``--batch``, ``--images``)."""
    fits = max(1, min(limit, MAX_PIXELS // (size[0] * size[1])))
    if not 1 <= count <= fits:
        raise ConfigError(f"{what} must be between 1 and {fits} for {size[0]}x{size[1]} images, got {count}")
    return count
