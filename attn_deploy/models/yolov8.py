"""YOLOv8 n/s/m detectors in Ultralytics' structure, with attention modules at a chosen placement.

The layers follow ``ultralytics/cfg/models/v8/yolov8.yaml`` one for one (Conv = Conv2d + BN + SiLU,
C2f, SPPF, nearest Upsample + Concat FPN/PAN neck, Detect with a 16-bin DFL), and the state_dict
keys are Ultralytics' (``model.<layer>.…``), so a ``DetectionModel.state_dict()`` saved with
``torch.save`` loads into the ``-none`` models. Scales ``[depth, width, max_channels]``:
n ``[0.33, 0.25, 1024]``, s ``[0.33, 0.50, 1024]``, m ``[0.67, 0.75, 768]``.

Layers (index: module, output stride)::

    0 Conv /2   1 Conv /4   2 C2f   3 Conv /8   4 C2f   5 Conv /16   6 C2f   7 Conv /32   8 C2f   9 SPPF
    10 Upsample  11 Concat(10, 6)  12 C2f  13 Upsample  14 Concat(13, 4)  15 C2f  -> P3/8
    16 Conv  17 Concat(16, 12)  18 C2f  -> P4/16   19 Conv  20 Concat(19, 9)  21 C2f  -> P5/32
    22 Detect(15, 18, 21)

Attention placement (modules live in ``attn.<layer>`` and replace that layer's output everywhere
it is used, as when a ``yolov8-<att>.yaml`` inserts a module after the layer):

* ``"neck"`` (default): after layers 15, 18, 21, the three neck outputs P3/P4/P5 right before Detect
  (P3's and P4's attended features also feed the PAN's downsampling path);
* ``"backbone"``: after SPPF (layer 9), the end of the backbone;
* ``"all"``: after every C2f of backbone and neck (2, 4, 6, 8, 12, 15, 18, 21) and after SPPF (9).

Output in eval mode, as Ultralytics' Detect at inference/export: ``(B, 4 + nc, anchors)``, boxes as
``xywh`` in input pixels followed by sigmoid class scores; 8400 anchors at 640x640. Anchors are
computed from the feature-map sizes on every call (``torch.arange`` of the runtime sizes), so the
model exports with dynamic batch, height and width. Input height and width must be multiples of 32;
eager calls raise ``InputError`` otherwise (the check is skipped while ``torch.export`` traces).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from attn_deploy.attention import create_attention
from attn_deploy.models.registry import Family, check_input_size, register_model

YOLO = Family(
    task="detect",
    input_size=(640, 640),
    num_classes=80,
    output_names=("output0",),
    preprocess="letterbox",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    placements=("neck", "backbone", "all"),
    size_divisor=32,
    classes_key=r"(.*\.)?cv3\.0\.2\.weight",  # the Detect head's class-score conv at the first stride
)

SCALES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
}
STRIDES = (8, 16, 32)
REG_MAX = 16

PLACEMENT_LAYERS: dict[str, tuple[int, ...]] = {
    "neck": (15, 18, 21),
    "backbone": (9,),
    "all": (2, 4, 6, 8, 9, 12, 15, 18, 21),
}
_SOURCES: dict[int, tuple[int, ...]] = {11: (-1, 6), 14: (-1, 4), 17: (-1, 12), 20: (-1, 9), 22: (15, 18, 21)}
"""Layers that take earlier outputs (-1 = previous layer); every other layer takes the previous output."""


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) + BatchNorm2d(eps=1e-3, momentum=0.03) + SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 Convs with an optional residual connection."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool):
        super().__init__()
        self.cv1 = Conv(c_in, c_out, 3)
        self.cv2 = Conv(c_out, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with 2 convolutions: split, ``n`` chained Bottlenecks, concatenate every stage."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool = False):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools, concatenated with their input."""

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along channels."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution Focal Loss integral: expected value of a softmax over ``bins`` distance bins."""

    def __init__(self, bins: int = REG_MAX):
        super().__init__()
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1)
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return self.conv(x.view(b, 4, self.bins, -1).transpose(2, 1).softmax(1)).view(b, 4, -1)


class Detect(nn.Module):
    """Anchor-free decoupled head: per level a box branch (4 x 16 DFL bins) and a class branch.

    Returns ``(B, 4 + nc, anchors)``: ``xywh`` boxes in input pixels, then sigmoid class scores.
    """

    def __init__(self, num_classes: int, channels: tuple[int, int, int]):
        super().__init__()
        self.nc = num_classes
        c2 = max(16, channels[0] // 4, REG_MAX * 4)
        c3 = max(channels[0], min(num_classes, 100))
        # Ultralytics' Detect.bias_init: box logits 1.0; class prior of ~5 objects per 640x640 image
        self.cv2 = nn.ModuleList(_branch(c, c2, 4 * REG_MAX, 1.0) for c in channels)
        self.cv3 = nn.ModuleList(
            _branch(c, c3, num_classes, math.log(5 / num_classes / (640 / stride) ** 2))
            for c, stride in zip(channels, STRIDES, strict=True)
        )
        self.dfl = DFL(REG_MAX)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        b = feats[0].shape[0]
        raw = [
            torch.cat((box(x), cls(x)), 1).view(b, 4 * REG_MAX + self.nc, -1)
            for x, box, cls in zip(feats, self.cv2, self.cv3, strict=True)
        ]
        box, cls = torch.cat(raw, 2).split((4 * REG_MAX, self.nc), 1)
        anchors, strides = _anchors(feats)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors - lt, anchors + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((xywh, cls.sigmoid()), 1)


def _branch(c_in: int, hidden: int, c_out: int, bias: float) -> nn.Sequential:
    """Two 3x3 Convs, then a 1x1 prediction conv whose bias starts at ``bias``."""
    convs = (Conv(c_in, hidden, 3), Conv(hidden, hidden, 3))
    prediction = nn.Conv2d(hidden, c_out, 1)
    nn.init.constant_(prediction.get_parameter("bias"), bias)
    return nn.Sequential(*convs, prediction)


def _anchors(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres ``(2, A)`` in grid units and their strides ``(1, A)``, from the runtime sizes."""
    points, strides = [], []
    for x, stride in zip(feats, STRIDES, strict=True):
        h, w = x.shape[2], x.shape[3]
        sx = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
        sy = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), 0).view(2, -1))
        strides.append(torch.full_like(gx, stride).view(1, -1))
    return torch.cat(points, 1), torch.cat(strides, 1)


class YOLOv8(nn.Module):
    """YOLOv8 detection model at one scale (``"n"``, ``"s"``, ``"m"``); see the module docstring."""

    def __init__(
        self,
        scale: str,
        attention: str = "none",
        num_classes: int = 80,
        placement: str = "neck",
        **attn_kwargs: Any,
    ):
        super().__init__()
        depth, width, max_channels = SCALES[scale]

        def ch(c: int) -> int:
            return math.ceil(min(c, max_channels) * width / 8) * 8

        def n(repeats: int) -> int:
            return max(round(repeats * depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        layers: list[nn.Module] = [
            Conv(3, c1, 3, 2),
            Conv(c1, c2, 3, 2),
            C2f(c2, c2, n(3), shortcut=True),
            Conv(c2, c3, 3, 2),
            C2f(c3, c3, n(6), shortcut=True),
            Conv(c3, c4, 3, 2),
            C2f(c4, c4, n(6), shortcut=True),
            Conv(c4, c5, 3, 2),
            C2f(c5, c5, n(3), shortcut=True),
            SPPF(c5, c5, 5),
            nn.Upsample(scale_factor=2, mode="nearest"),
            Concat(),
            C2f(c5 + c4, c4, n(3)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            Concat(),
            C2f(c4 + c3, c3, n(3)),
            Conv(c3, c3, 3, 2),
            Concat(),
            C2f(c3 + c4, c4, n(3)),
            Conv(c4, c4, 3, 2),
            Concat(),
            C2f(c4 + c5, c5, n(3)),
            Detect(num_classes, (c3, c4, c5)),
        ]
        self.model = nn.ModuleList(layers)
        out_channels = {2: c2, 4: c3, 6: c4, 8: c5, 9: c5, 12: c4, 15: c3, 18: c4, 21: c5}
        self.attn = nn.ModuleDict(
            {
                str(i): create_attention(attention, out_channels[i], **attn_kwargs)
                for i in PLACEMENT_LAYERS[placement]
            }
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            check_input_size("YOLOv8", int(images.shape[-2]), int(images.shape[-1]), YOLO.size_divisor)
        outputs: list[torch.Tensor] = []
        x: Any = images
        for i, layer in enumerate(self.model):
            if i in _SOURCES:
                x = [x if j == -1 else outputs[j] for j in _SOURCES[i]]
            x = layer(x)
            if str(i) in self.attn:
                x = self.attn[str(i)](x)
            outputs.append(x)
        return x


@register_model("yolov8n", YOLO)
def yolov8n(attention: str, *, num_classes: int, placement: str, **attn_kwargs: Any) -> YOLOv8:
    """YOLOv8n (Ultralytics, 2023): depth 0.33, width 0.25."""
    return YOLOv8("n", attention, num_classes, placement, **attn_kwargs)


@register_model("yolov8s", YOLO, aliases=("yolov8",))
def yolov8s(attention: str, *, num_classes: int, placement: str, **attn_kwargs: Any) -> YOLOv8:
    """YOLOv8s (Ultralytics, 2023): depth 0.33, width 0.50; also named plain ``yolov8``."""
    return YOLOv8("s", attention, num_classes, placement, **attn_kwargs)


@register_model("yolov8m", YOLO)
def yolov8m(attention: str, *, num_classes: int, placement: str, **attn_kwargs: Any) -> YOLOv8:
    """YOLOv8m (Ultralytics, 2023): depth 0.67, width 0.75, at most 768 channels."""
    return YOLOv8("m", attention, num_classes, placement, **attn_kwargs)
