"""Attention sites of a model, the maps each attention family produces, and the teacher/student pairing.

A *site* is an attention module inside a model: an instance of a registered attention class
(:func:`attn_deploy.attention.registry.attention_classes`) that no other attention module contains. The zoo places
them at the same places for every family (``layer1.0.attn`` in a ResNet, ``attn.15`` in a YOLOv8), so a teacher
and a student of one architecture have the same site names.

The *maps* of a family are the gates it multiplies the features by, read from the submodule that produces them:

============================  ================================  ==========================================
family                        channel gate ``(B, C, 1, 1)``     spatial gate ``(B, 1, H, W)``
============================  ================================  ==========================================
SE                            ``fc.3`` (the Sigmoid)            -
ECA                           ``sigmoid``                       -
CBAM, hybrid (ECA + spatial)  ``channel_attention.sigmoid``     ``spatial_attention.sigmoid``
============================  ================================  ==========================================

EMA, CoordAtt, SimAM, sparse and dynamic attention have no such gate (EMA's is per channel group, CoordAtt's is
a pair of H and W strips, SimAM's is per element, ...). Where teacher and student produce the same kinds of map
(SE and ECA: a channel gate each; CBAM and hybrid: both), the loss compares the maps; everywhere else (EMA ->
ECA, CBAM -> SE) it compares the attention module's output features, which every family has.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from attn_deploy.attention import CBAM, EfficientChannelAttention, HybridAttention, SqueezeExcite
from attn_deploy.attention.registry import attention_classes
from attn_deploy.errors import ConfigError

FEATURES = "features"
"""Kind of the map every site has: the attention module's output ``(B, C, H, W)``."""

GATES: dict[type[nn.Module], dict[str, str]] = {
    SqueezeExcite: {"channel": "fc.3"},
    EfficientChannelAttention: {"channel": "sigmoid"},
    CBAM: {"channel": "channel_attention.sigmoid", "spatial": "spatial_attention.sigmoid"},
    HybridAttention: {"channel": "channel_attention.sigmoid", "spatial": "spatial_attention.sigmoid"},
}
"""Attention class -> map kind -> submodule whose output is that gate."""

_SHOWN = 4


def attention_sites(model: nn.Module) -> dict[str, nn.Module]:
    """The attention sites of ``model`` by module name, in forward-definition order (outermost modules only)."""
    classes = attention_classes()
    sites: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, classes) and not any(name.startswith(f"{s}.") for s in sites):
            sites[name] = module
    return sites


def gate_kinds(module: nn.Module) -> tuple[str, ...]:
    """The gate kinds (``"channel"``, ``"spatial"``) attention module ``module`` produces; ``()`` when none."""
    return tuple(GATES.get(type(module), {}))


@dataclass(frozen=True)
class SitePair:
    """A teacher site and the student site trained toward it, and the maps compared there."""

    teacher: str
    student: str
    kinds: tuple[str, ...]
    """``gate_kinds`` shared by both (``("channel",)``), or ``(FEATURES,)`` where the families differ."""


def pair_sites(teacher: nn.Module, student: nn.Module) -> list[SitePair]:
    """Pair the attention sites of ``teacher`` and ``student``: by name when the names are the same, else by
    position when both have as many sites. A one-line ``ConfigError`` lists the sites that do not line up."""
    t_sites, s_sites = attention_sites(teacher), attention_sites(student)
    if not t_sites or not s_sites:
        which = " and ".join(w for w, s in (("teacher", t_sites), ("student", s_sites)) if not s)
        raise ConfigError(
            f"the {which} has no attention module, so there is nothing to distil; "
            "pass a teacher and a student that both carry attention (e.g. resnet50-ema -> resnet50-eca)"
        )
    if len(t_sites) != len(s_sites):
        only_t = [n for n in t_sites if n not in s_sites] or list(t_sites)[len(s_sites) :]
        only_s = [n for n in s_sites if n not in t_sites] or list(s_sites)[len(t_sites) :]
        raise ConfigError(
            f"attention sites do not line up: teacher has {len(t_sites)}, student {len(s_sites)}; "
            f"only in the teacher: {_first(only_t)}; only in the student: {_first(only_s)}; "
            "use a student of the teacher's architecture and attention placement"
        )
    pairs = []
    for t_name, s_name in zip(t_sites, s_sites, strict=True):
        t_kinds, s_kinds = gate_kinds(t_sites[t_name]), gate_kinds(s_sites[s_name])
        kinds = t_kinds if t_kinds and t_kinds == s_kinds else (FEATURES,)
        pairs.append(SitePair(t_name, s_name, kinds))
    return pairs


def _first(names: list[str]) -> str:
    more = f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return (", ".join(names[:_SHOWN]) or "(none)") + more


@contextmanager
def capture_maps(model: nn.Module, sites: dict[str, tuple[str, ...]]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks recording the maps of ``sites`` (site name -> kinds) while the block runs.

    Yields a dict filled on every forward pass with ``"<site>/<kind>"`` -> tensor: channel gates as
    ``(B, C, 1, 1)``, spatial gates ``(B, 1, H, W)``, features ``(B, C, H, W)``. The hooks go when the block ends.
    """
    modules = dict(model.named_modules())
    maps: dict[str, torch.Tensor] = {}
    handles = []

    def record(key: str, kind: str):
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            maps[key] = output.reshape(output.shape[0], -1, 1, 1) if kind == "channel" else output

        return hook

    try:
        for site, kinds in sites.items():
            for kind in kinds:
                name = site if kind == FEATURES else f"{site}.{GATES[type(modules[site])][kind]}"
                handles.append(modules[name].register_forward_hook(record(f"{site}/{kind}", kind)))
        yield maps
    finally:
        for handle in handles:
            handle.remove()
