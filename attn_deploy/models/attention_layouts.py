"""Map a foreign attention layer's tensors onto ours: class spellings, options read from shapes, keys by shape.

People paste attention modules into Ultralytics under many names (``SE``/``SEAttention``/``SELayer``, ``ECA``/
``ECAAttention``/``EfficientChannelAttention``, ``CoordAtt``/``CA``, ...) and with their own parameter names
(``ca.fc1`` for our ``channel_attention.mlp.0``; bias-free ``nn.Linear`` where ours has biases). We never run
their code: :func:`attention_kind` maps the class name to our module family, :func:`build_attention` reads the
options from the tensor shapes (SE/CBAM reduction from the hidden width, ECA and CBAM kernel sizes, EMA's
factor from the group width, CoordAtt's middle width), builds our implementation and pairs the checkpoint's
layers (a module path's ``weight``/``bias``/BatchNorm statistics) with ours, in registration order, by shape.

What is assumed, not checked: that the foreign module computes what the paper's reference code computes (SE:
ReLU then sigmoid; CBAM: shared MLP on average- and max-pooled features, then a spatial conv on channel mean and
max; ...). A layout that does not fit (Ultralytics' own ``CBAM``, whose channel attention is one biased 1x1 conv
without max pooling, has two layers where ours has three) is refused with the keys that did not pair.
A layer without bias paired with one of ours that has a bias gets a zero bias: the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attn_deploy.attention import create_attention
from attn_deploy.errors import WeightsError

SPELLINGS: dict[str, tuple[str, ...]] = {
    "se": ("se", "seattention", "selayer", "seblock", "squeezeexcite", "squeezeexcitation", "senet"),
    "cbam": ("cbam", "cbamblock", "cbamattention"),
    "eca": ("eca", "ecaattention", "efficientchannelattention", "ecalayer", "ecablock", "ecanet"),
    "ema": ("ema", "emaattention", "efficientmultiscaleattention", "emamodule"),
    "coordatt": ("coordatt", "coordattention", "ca", "coordinateattention"),
    "simam": ("simam", "simamattention", "simammodule"),
}
"""Our attention name -> the class names (lower case, without '_' and '-') that mean it."""

_KIND = {spelling: kind for kind, spellings in SPELLINGS.items() for spelling in spellings}


def attention_kind(class_name: str) -> str | None:
    """Our attention name for a foreign class name (``"SEAttention"`` -> ``"se"``), ``None`` when unknown."""
    return _KIND.get(class_name.rsplit(".", 1)[-1].lower().replace("_", "").replace("-", ""))


def known_spellings() -> str:
    """The accepted class names, for error messages."""
    return ", ".join(sorted({s for group in SPELLINGS.values() for s in group}))


Layers = list[tuple[str, dict[str, torch.Tensor]]]


def _layers(state: Mapping[str, torch.Tensor]) -> Layers:
    """``state`` grouped by module path, in order: ``[("fc.0", {"weight": t, "bias": t}), ...]``."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        path, _, leaf = key.rpartition(".")
        groups.setdefault(path, {})[leaf] = tensor
    return list(groups.items())


def _weights(layers: Layers) -> list[torch.Tensor]:
    return [tensors["weight"] for _, tensors in layers if "weight" in tensors]


def _hidden_ratio(channels: int, hidden: int, floor: int = 1) -> int | None:
    """The reduction r with ``max(floor, channels // r) == hidden`` (smallest such r), ``None`` if none."""
    return next((r for r in range(1, channels + 1) if max(floor, channels // r) == hidden), None)


def _options(kind: str, channels: int, layers: Layers, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Our module's options for ``kind`` read from the checkpoint layer's tensor shapes (``{}`` when the shapes
    say nothing; the pairing then refuses what does not fit)."""
    weights = _weights(layers)
    if kind in ("se", "cbam") and weights:
        ratio = _hidden_ratio(channels, int(weights[0].shape[0]))
        options: dict[str, Any] = {"reduction": ratio} if ratio else {}
        if kind == "cbam" and weights[-1].dim() == 4 and weights[-1].shape[:2] == (1, 2):
            options["kernel_size"] = int(weights[-1].shape[-1])
        return options
    if kind == "eca" and len(weights) == 1 and weights[0].dim() == 3:
        return {"kernel_size": int(weights[0].shape[-1])}
    if kind == "ema":
        group = next((int(w.shape[0]) for w in weights if w.dim() == 4 and w.shape[-1] == 3), None)
        return {"factor": channels // group} if group and channels % group == 0 else {}
    if kind == "coordatt" and weights:
        ratio = _hidden_ratio(channels, int(weights[0].shape[0]), floor=8)
        return {"reduction": ratio} if ratio else {}
    if kind == "simam":
        value = attributes.get("e_lambda")
        return {"e_lambda": float(value)} if isinstance(value, float) else {}
    return {}


def _fits(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> bool:
    """Their tensors fill our layer: same names and element counts, shapes equal up to size-1 dims (a Linear's
    weight fills a 1x1 conv's); a bias only ours has is allowed (zero) when theirs has a weight."""
    if not set(theirs) <= set(ours) or not set(ours) - set(theirs) <= {"bias"}:
        return False
    if "bias" not in theirs and "bias" in ours and "weight" not in theirs:
        return False
    return all(_squeezed(ours[k].shape) == _squeezed(t.shape) for k, t in theirs.items())


def _squeezed(shape: torch.Size) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def build_attention(
    kind: str,
    channels: int,
    state: Mapping[str, torch.Tensor],
    attributes: Mapping[str, Any],
    where: str,
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, str]]:
    """Our ``kind`` module for ``channels`` with the checkpoint layer's tensors ``state`` (keys relative to the
    layer, e.g. ``fc.0.weight``) and attributes; returns the module, its full state_dict filled from ``state``
    (converted to our shapes, missing biases zero) and the path map (their module path -> ours).

    Raises ``WeightsError`` naming ``where`` (the layer) and the keys that did not pair.
    """
    try:
        module = create_attention(kind, channels, **_options(kind, channels, _layers(state), attributes))
    except Exception as exc:  # options the shapes implied that our module refuses (EMA factor, ECA kernel)
        raise WeightsError(
            f"{where}: cannot build {kind} for {channels} channels from its tensors ({exc})"
        ) from exc
    ours = _layers(module.state_dict())
    theirs = _layers(state)
    filled: dict[str, torch.Tensor] = {}
    paths: dict[str, str] = {}
    used: set[int] = set()
    unfilled: list[str] = []
    for path, tensors in ours:
        index = next((i for i, (_, t) in enumerate(theirs) if i not in used and _fits(tensors, t)), None)
        if index is None:
            unfilled.extend(f"{path}.{k}" for k in tensors)
            continue
        used.add(index)
        their_path, their_tensors = theirs[index]
        paths[their_path] = path
        for leaf, target in tensors.items():
            source = their_tensors.get(leaf)
            value = (
                torch.zeros_like(target) if source is None else source.reshape(target.shape).to(target.dtype)
            )
            filled[f"{path}.{leaf}" if path else leaf] = value
    unused = [f"{p}.{k}" if p else k for i, (p, t) in enumerate(theirs) if i not in used for k in t]
    if unfilled or unused:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in state.items()) or "no tensors"
        raise WeightsError(
            f"{where}: the tensors of this {kind} layer do not fit attn-deploy's {kind} "
            f"(ours unfilled: {', '.join(unfilled) or 'none'}; theirs unused: {', '.join(unused) or 'none'}; "
            f"theirs: {shapes}); its computation differs from the reference module, export it with "
            "--checkpoint --trust-checkpoint instead"
        )
    return module, filled, paths
