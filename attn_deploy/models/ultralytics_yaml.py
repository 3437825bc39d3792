"""Build a YOLOv8 from an Ultralytics model yaml with attn-deploy's layers and attention modules.

Ultralytics' layer semantics (``ultralytics.nn.tasks.parse_model``): each entry is ``[from, repeats, module,
args]``; ``from`` is -1 (the previous layer), a layer index or a list of them; the scale's
``[depth, width, max_channels]`` scale repeats (``max(round(n * depth), 1)`` when ``n > 1``) and output channels
(``ceil(min(c, max_channels) * width / 8) * 8``, except ``nc``); a channel list follows each layer's output.
Supported modules: ``Conv [c2, k, s]``, ``C2f [c2, shortcut]``, ``SPPF [c2, k]``, ``nn.Upsample [None, 2,
"nearest"]``, ``Concat [1]``, ``Detect [nc]`` (strides 8/16/32) and attention layers in any spelling of
:data:`attn_deploy.models.attention_layouts.SPELLINGS`, which keep their input's channels (their yaml args are
ignored: options are read from their tensors). The state_dict keys are Ultralytics' (``model.<i>.…``); an
attention layer's keys are translated to ours. Anything else is refused, all unknown types named at once.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attn_deploy.errors import WeightsError
from attn_deploy.models import create_model
from attn_deploy.models.attention_layouts import attention_kind, build_attention, known_spellings
from attn_deploy.models.checkpoint import Record, module_records
from attn_deploy.models.registry import check_input_size
from attn_deploy.models.ultralytics import UltralyticsCheckpoint
from attn_deploy.models.yolov8 import SPPF, STRIDES, C2f, Concat, Conv, Detect

Source = int | list[int]
MAX_REPEATS, MAX_CHANNELS = 64, 8192
"""Bounds of a yaml's repeats and channels (YOLOv8x: 9 and 640): what a checkpoint's tensors could fill."""
_BASIC = {"Conv", "C2f", "SPPF", "nn.Upsample", "Concat", "Detect"}


class YamlDetector(nn.Module):
    """A detector whose layers run in yaml order, each on the outputs its ``from`` names (Ultralytics'
    ``_predict_once``); output as the zoo's YOLOv8: ``(B, 4 + nc, anchors)``."""

    def __init__(self, layers: list[nn.Module], sources: list[Source]) -> None:
        super().__init__()
        self.model = nn.ModuleList(layers)
        self.sources = sources

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            check_input_size("YOLOv8", int(images.shape[-2]), int(images.shape[-1]), 32)
        outputs: list[Any] = []
        x: Any = images
        for layer, source in zip(self.model, self.sources, strict=True):
            if source != -1:
                x = (
                    outputs[source]
                    if isinstance(source, int)
                    else [x if j == -1 else outputs[j] for j in source]
                )
            x = layer(x)
            outputs.append(x)
        return x


def _arg(value: Any, nc: int) -> Any:
    """A yaml arg as ``parse_model`` evaluates it: ``"nc"`` -> the class count, ``"None"`` -> None."""
    if value == "nc":
        return nc
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _scale(yaml: Mapping[str, Any]) -> tuple[float, float, float]:
    scales = yaml.get("scales")
    if isinstance(scales, dict) and scales:
        scale = yaml.get("scale") if yaml.get("scale") in scales else next(iter(scales))
        depth, width, max_channels = (float(v) for v in scales[scale])
        return depth, width, max_channels
    return float(yaml.get("depth_multiple", 1.0)), float(yaml.get("width_multiple", 1.0)), math.inf


def build_ultralytics(checkpoint: UltralyticsCheckpoint) -> tuple[nn.Module, str]:
    """The network of ``checkpoint`` with its weights (FP32, eval mode) and its arch (``"yolov8s"``, or
    ``"yolov8s-yaml"`` when built from a yaml with extra layers); ``WeightsError`` when it cannot be built."""
    if checkpoint.strides != STRIDES:
        raise WeightsError(
            f"'{checkpoint.path}': strides {list(checkpoint.strides)}; attn-deploy's Detect has strides "
            f"{list(STRIDES)} (P3-P5); export it with --checkpoint --trust-checkpoint"
        )
    arch = checkpoint.stock_arch()
    if arch is not None:
        model = create_model(f"{arch}-none", num_classes=checkpoint.num_classes, calibrate=False)
        load_strict(model, checkpoint.state, {}, checkpoint)
        return model, arch
    model, state, renamed = build_from_yaml(checkpoint)
    load_strict(model, state, renamed, checkpoint)
    return model.eval(), f"yolov8{checkpoint.scale or ''}-yaml"


def build_from_yaml(
    checkpoint: UltralyticsCheckpoint,
) -> tuple[YamlDetector, dict[str, torch.Tensor], dict[str, str]]:
    """The network of ``checkpoint.yaml`` with our layers; returns it, the checkpoint's state translated to our
    keys, and the module paths renamed (theirs -> ours, inside attention layers).

    Raises ``WeightsError`` listing every unknown module type, or naming the first layer it cannot build.
    """
    yaml, nc, state = checkpoint.yaml, checkpoint.num_classes, checkpoint.state
    entries = [*yaml["backbone"], *yaml["head"]]
    unknown = sorted(
        {
            str(e[2])
            for e in entries
            if isinstance(e, list)
            and len(e) == 4
            and str(e[2]) not in _BASIC
            and attention_kind(str(e[2])) is None
        }
    )
    if unknown:
        raise WeightsError(
            f"'{checkpoint.path}': unknown module types in the model yaml: {', '.join(unknown)}; attn-deploy builds "
            f"Conv, C2f, SPPF, nn.Upsample, Concat, Detect and attention named {known_spellings()}; export it "
            "with --checkpoint --trust-checkpoint (runs the file's code) or --module pkg.mod:factory"
        )
    depth, width, max_channels = _scale(yaml)
    channels: list[int] = []
    layers: list[nn.Module] = []
    sources: list[Source] = []
    translated = dict(state)
    renamed: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"'{checkpoint.path}' layer {i} {entry}"
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[3], list)):
            raise WeightsError(f"{where}: not [from, repeats, module, args]; fix the model yaml")
        source, repeats, name, raw_args = entry
        args = [_arg(a, nc) for a in raw_args]
        try:
            inputs = [
                channels[f] if channels else 3 for f in (source if isinstance(source, list) else [source])
            ]
        except (IndexError, TypeError):
            raise WeightsError(f"{where}: 'from' names a layer that does not exist yet") from None
        if (
            not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS
        ):  # a hostile yaml must not build for ever
            raise WeightsError(f"{where}: repeats must be an integer in 1..{MAX_REPEATS}")
        n = max(round(repeats * depth), 1) if repeats > 1 else repeats

        layer: nn.Module
        kind = attention_kind(str(name))
        if name in ("Conv", "C2f", "SPPF") and (n == 1 or name == "C2f"):
            c_out = args[0] if args else None
            if not isinstance(c_out, int) or not 1 <= c_out <= MAX_CHANNELS:
                raise WeightsError(
                    f"{where}: output channels {c_out!r} is not an integer in 1..{MAX_CHANNELS}"
                )
            c_in = inputs[0]
            c_out = c_out if c_out == nc else math.ceil(min(c_out, max_channels) * width / 8) * 8
            layer = _basic(str(name), c_in, c_out, args, n, where)
        elif name == "nn.Upsample" and n == 1:
            if args[:1] != [None] or args[1:] not in ([2], [2, "nearest"], [2.0, "nearest"]):
                raise WeightsError(f"{where}: only nn.Upsample [None, 2, 'nearest'] is supported")
            layer, c_out = nn.Upsample(scale_factor=2, mode="nearest"), inputs[0]
        elif name == "Concat" and n == 1 and args in ([], [1]):
            layer, c_out = Concat(), sum(inputs)
        elif name == "Detect" and i == len(entries) - 1 and len(inputs) == 3 and args[:1] == [nc]:
            layer, c_out = Detect(nc, (inputs[0], inputs[1], inputs[2])), 0
        elif kind is not None and n == 1:
            prefix = f"model.{i}."
            local = {
                k.removeprefix(prefix): translated.pop(k) for k in list(translated) if k.startswith(prefix)
            }
            attributes = checkpoint.layers[i].attributes if i < len(checkpoint.layers) else {}
            layer, filled, paths = build_attention(kind, inputs[0], local, attributes, where)
            translated.update({prefix + k: v for k, v in filled.items()})
            renamed.update({prefix + theirs: prefix + ours for theirs, ours in paths.items()})
            c_out = inputs[0]
        else:
            raise WeightsError(
                f"{where}: this use of {name} is not supported (repeats, args or position); "
                "export it with --checkpoint --trust-checkpoint"
            )
        layers.append(layer)
        sources.append(source)
        channels.append(c_out)
    if not isinstance(layers[-1], Detect):
        raise WeightsError(
            f"'{checkpoint.path}': the yaml does not end in Detect; only detectors are rebuilt"
        )
    return YamlDetector(layers, sources), translated, renamed


def _basic(name: str, c_in: int, c_out: int, args: list[Any], n: int, where: str) -> nn.Module:
    """Conv [c2, k, s], C2f [c2, shortcut] (n bottlenecks), SPPF [c2, k]."""
    rest = args[1:]
    if name == "Conv" and len(rest) <= 2 and all(isinstance(a, int) for a in rest):
        k, s = (*rest, 1, 1)[:2] if rest else (1, 1)
        return Conv(c_in, c_out, k, s)
    if name == "C2f" and len(rest) <= 1 and all(isinstance(a, bool) for a in rest):
        return C2f(c_in, c_out, n, shortcut=bool(rest[0]) if rest else False)
    if name == "SPPF" and len(rest) <= 1 and all(isinstance(a, int) for a in rest):
        return SPPF(c_in, c_out, rest[0] if rest else 5)
    raise WeightsError(f"{where}: {name} args {args} are not supported (groups, dilation, padding, e)")


def load_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    renamed: Mapping[str, str],
    checkpoint: UltralyticsCheckpoint,
) -> None:
    """Load ``state`` (our keys) into ``model``: every tensor used, every entry filled, shapes equal, or one
    ``WeightsError`` line listing the keys; BatchNorm ``eps`` taken from the checkpoint's records."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs ours {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        (what, keys)
        for what, keys in (
            ("shape mismatch", mismatched),
            ("unused tensors", unexpected),
            ("missing tensors", missing),
        )
        if keys
    ]
    if problems:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:4])}{f' (+{len(keys) - 4} more)' if len(keys) > 4 else ''}"
            for what, keys in problems
        )
        raise WeightsError(f"'{checkpoint.path}' does not fit the network its yaml describes ({detail})")
    model.load_state_dict(state, strict=True)
    modules = dict(model.named_modules())
    for path, record in _records(checkpoint):
        eps = record.attributes.get("eps")
        ours = modules.get(renamed.get(path, path))
        if isinstance(eps, float) and isinstance(ours, nn.modules.batchnorm._NormBase | nn.GroupNorm):
            ours.eps = eps


def _records(checkpoint: UltralyticsCheckpoint) -> list[tuple[str, Record]]:
    """(module path from the model root, record) of every layer record, recursively."""
    found: list[tuple[str, Record]] = []
    for i, layer in enumerate(checkpoint.layers):
        found.extend(module_records(layer, f"model.{i}"))
    return found
