"""Load a user's state_dict into a zoo model (``torch.load(weights_only=True)``, never pickled code).

An Ultralytics checkpoint (``best.pt``) is read with the restricted unpickler of :mod:`attn_deploy.models.checkpoint`
instead (``weights_only=True`` refuses its pickled classes) and gives its network's state_dict.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from attn_deploy.errors import WeightsError, exception_summary
from attn_deploy.models.checkpoint import read_checkpoint
from attn_deploy.models.registry import is_attention_key
from attn_deploy.models.ultralytics import is_ultralytics, read_ultralytics

log = logging.getLogger(__name__)

_CONTAINER_KEYS = ("state_dict", "model")
_SHOWN = 3


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load the state_dict saved at ``path`` into ``model`` in place; return the keys left at their init.

    ``path`` holds a raw state_dict, or a dict whose ``"state_dict"`` or ``"model"`` entry is one;
    a ``"module."`` prefix (DataParallel) is stripped. Every model key must be present with the
    same shape, except keys inside attention submodules (``attn``) and BatchNorm
    ``num_batches_tracked`` counters: so a plain torchvision ResNet-50 checkpoint loads into
    ``resnet50-se`` with SE at its default init. Anything else raises ``WeightsError``.
    """
    return load_state(model, read_state_dict(path), path)


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]
) -> list[str]:
    """:func:`load_weights` for a state_dict already read from ``path`` (named in errors)."""
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in state]
    required = [k for k in missing if not (is_attention_key(k) or k.endswith("num_batches_tracked"))]
    problems = [
        (label, keys)
        for label, keys in (
            ("shape mismatch", mismatched),
            ("unexpected keys", unexpected),
            ("missing keys", required),
        )
        if keys
    ]
    if problems:
        detail = "; ".join(f"{label}: {_first(keys)}" for label, keys in problems)
        raise WeightsError(
            f"weights '{path}' do not fit this model ({detail}); pass weights saved from the same model"
        )
    model.load_state_dict(state, strict=False)
    left = [k for k in missing if is_attention_key(k)]
    if left:  # a warning, not INFO (never shown): the attention of the exported model is untrained
        log.warning(
            "warning: weights '%s' hold no attention weights; %d attention tensors keep their random init "
            "(the attention is untrained; recorded in the manifest as source.attention_at_init)",
            path,
            len(left),
        )
    return left


def checkpoint_num_classes(
    state: Mapping[str, torch.Tensor], classes_key: str, path: str | os.PathLike[str]
) -> int:
    """The class count of checkpoint ``state`` (read from ``path``): dim 0 of the key matching ``classes_key``
    (a regex). Lets a fine-tuned checkpoint (e.g. a 10-class ResNet) load without naming its class count.
    """
    pattern = re.compile(classes_key)
    found = [v for k, v in state.items() if pattern.fullmatch(k)]
    if len(found) != 1 or found[0].ndim < 1:
        raise WeightsError(
            f"weights '{path}' have no single class-count tensor matching {classes_key!r}; "
            "pass weights saved from this model's architecture"
        )
    return int(found[0].shape[0])


def load_weights_only(path: str | os.PathLike[str]) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings about the file's pickle
    protocol: the caller turns a failure into one line of its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """The state_dict saved at ``path`` (``weights_only=True``; container and ``module.`` prefix unwrapped)."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights '{path}' is a folder; pass --weights PATH to a .pt/.pth state_dict file")
    if not path.is_file():
        raise WeightsError(
            f"weights file '{path}' not found; pass --weights PATH to an existing .pt/.pth state_dict"
        )
    try:
        obj = load_weights_only(path)
    except Exception as exc:  # any failure to decode the user's bytes: KeyError, EOFError, ...
        if zipfile.is_zipfile(path):  # an Ultralytics best.pt: its tensors, read without running its code
            state = _ultralytics_state(path)
            if state is not None:
                return state
        raise WeightsError(
            f"cannot read weights '{path}' as a plain state_dict "
            f"({type(exc).__name__}: {exception_summary(exc, limit=160)}); "
            "save one with torch.save(model.state_dict(), PATH), or export a pickled model with --checkpoint PATH "
            "--trust-checkpoint"
        ) from exc
    for key in _CONTAINER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(
            f"weights '{path}' hold no state_dict of tensors; "
            "save one with torch.save(model.state_dict(), PATH)"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _ultralytics_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The state_dict of the Ultralytics checkpoint at ``path``, ``None`` when it is not one (or unreadable)."""
    try:
        checkpoint = read_checkpoint(path)
    except WeightsError:
        return None
    return read_ultralytics(path, checkpoint).state if is_ultralytics(checkpoint) else None


def _first(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more
