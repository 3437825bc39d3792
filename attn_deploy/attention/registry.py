"""Name -> class registry for attention modules (timm's ``get_attn`` idea, as a decorator)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from attn_deploy.errors import ConfigError, ModelNotFoundError

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])

NONE = "none"
_REGISTRY: dict[str, type[nn.Module]] = {}


def register_attention(name: str) -> Callable[[ModuleT], ModuleT]:
    """Class decorator: make ``create_attention(name, channels, **kwargs)`` build this class."""

    def decorate(cls: ModuleT) -> ModuleT:
        if name == NONE or name in _REGISTRY:
            raise ValueError(f"attention name {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_attention() -> list[str]:
    """All attention names, sorted, including ``"none"`` (no attention: ``nn.Identity``)."""
    return sorted([*_REGISTRY, NONE])


def attention_classes() -> tuple[type[nn.Module], ...]:
    """Every registered attention class (what an attention site of a model is an instance of)."""
    return tuple(_REGISTRY.values())


def create_attention(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build the attention module registered as ``name`` for ``channels`` input channels.

    ``kwargs`` are the module's paper knobs (``reduction``, ``kernel_size``, ``factor``, ...).
    ``"none"`` gives ``nn.Identity()``. An unknown name raises ``ModelNotFoundError``; an option the
    module does not take raises ``ConfigError``; both name the valid choices.
    """
    if not isinstance(name, str):
        raise ModelNotFoundError(f"an attention name is a string such as 'se', got {type(name).__name__}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ConfigError(f"channels must be an integer >= 1, got {channels!r}")
    if name == NONE:
        return nn.Identity()
    cls = _REGISTRY.get(name)
    if cls is None:
        names = list_attention()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelNotFoundError(f"unknown attention {name!r}; {hint}available: {', '.join(names)}")
    options = [p for p in inspect.signature(cls).parameters if p != "channels"]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ConfigError(
            f"attention {name!r} has no option {', '.join(unknown)}; "
            f"its options are: {', '.join(options) or '(none)'}"
        )
    return cls(channels, **kwargs)
