"""Write checkpoints in Ultralytics' exact layout, without the ultralytics package (AGPL, and it does not install
beside torch 2.13).

An independent, compact YOLOv8 written the way ``ultralytics/nn/tasks.py`` and ``ultralytics/nn/modules/*.py``
write it (``parse_model`` over the yaml, ``_predict_once``, ``Detect`` with ``make_anchors``/``dist2bbox``, eval
output ``(y, x)``), with classes whose ``__module__`` is Ultralytics' (``ultralytics.nn.tasks.DetectionModel``,
``ultralytics.nn.modules.conv.Conv``, ...), registered in ``sys.modules`` only inside :func:`fake_ultralytics`
so pickle can name them. Attention layers are the common community ports (``SEAttention`` with bias-free
``Linear``s, a CBAM with ``ca.fc1/fc2`` and ``sa.conv1``, ``ECAAttention``, the official ``EMA``), so their
parameter names differ from attn-deploy's and the loader has to map them; ``CBAM`` is Ultralytics' own built-in
(``ultralytics.nn.modules.conv.CBAM``, a different computation the loader must refuse).

:func:`save_checkpoint` writes what the trainer writes (``torch.save`` of a dict: ``model`` or ``ema`` = the
pickled ``DetectionModel`` in FP16, ``epoch``, ``train_args``, ``optimizer``, ...): ``final=True`` as
``strip_optimizer`` leaves ``best.pt`` (``model`` set, ``ema`` None), ``final=False`` as ``last.pt`` mid-training.
The model this helper builds is also the independent reference forward pass of the tests.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

YOLOV8_YAML: dict[str, Any] = {
    "nc": 80,
    "scales": {
        "n": [0.33, 0.25, 1024],
        "s": [0.33, 0.50, 1024],
        "m": [0.67, 0.75, 768],
        "l": [1.00, 1.00, 512],
        "x": [1.00, 1.25, 512],
    },
    "backbone": [
        [-1, 1, "Conv", [64, 3, 2]],
        [-1, 1, "Conv", [128, 3, 2]],
        [-1, 3, "C2f", [128, True]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 6, "C2f", [256, True]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 6, "C2f", [512, True]],
        [-1, 1, "Conv", [1024, 3, 2]],
        [-1, 3, "C2f", [1024, True]],
        [-1, 1, "SPPF", [1024, 5]],
    ],
    "head": [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C2f", [512]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 3, "C2f", [256]],
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 12], 1, "Concat", [1]],
        [-1, 3, "C2f", [512]],
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 9], 1, "Concat", [1]],
        [-1, 3, "C2f", [1024]],
        [[15, 18, 21], 1, "Detect", ["nc"]],
    ],
}
"""``ultralytics/cfg/models/v8/yolov8.yaml`` as ``yaml.safe_load`` gives it."""

INSERT_AT = {"before_sppf": 9, "after_sppf": 10, "neck": 16}
"""Where tests insert an attention layer: before SPPF, right after it, after the P3 output (layer 15)."""


def yolov8_yaml(scale: str, nc: int, attention: dict[str, str] | None = None) -> dict[str, Any]:
    """The yaml dict a ``DetectionModel`` keeps, for ``yolov8{scale}.yaml`` with ``nc`` classes; ``attention`` maps
    places of :data:`INSERT_AT` to attention class names (below), each inserted as its own layer there: later
    layers that used the layer before it use the attention's output, as tutorials do."""
    cfg = copy.deepcopy(YOLOV8_YAML)
    cfg.update(nc=nc, scale=scale, yaml_file=f"yolov8{scale}.yaml", ch=3)
    layers = cfg["backbone"] + cfg["head"]
    backbone = len(cfg["backbone"])
    for where in sorted(attention or {}, key=lambda w: -INSERT_AT[w]):  # from the back: indices stay valid
        at = INSERT_AT[where]

        def shift(f: int, at: int = at) -> int:
            return f if f < 0 else f + 1 if f >= at else at if f == at - 1 else f

        for layer in layers[at:]:
            layer[0] = [shift(f) for f in layer[0]] if isinstance(layer[0], list) else shift(layer[0])
        layers.insert(at, [-1, 1, attention[where], [1024]])  # type: ignore[index]
        backbone += at <= 10
    cfg["backbone"], cfg["head"] = layers[:backbone], layers[backbone:]
    return cfg


# ----- ultralytics.nn.modules.conv / block / head: the layers, written as Ultralytics writes them


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    return k // 2 if p is None else p


class Conv(nn.Module):
    default_act = nn.SiLU()

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Bottleneck(nn.Module):
    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k: tuple = (3, 3), e: float = 0.5
    ):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        x = torch.arange(c1, dtype=torch.float)
        self.conv.weight.data[:] = nn.Parameter(x.view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(
    feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    anchor_points, stride_tensor = [], []
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, dtype=feats[i].dtype) + offset
        sy = torch.arange(end=h, dtype=feats[i].dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), float(stride), dtype=feats[i].dtype))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, dim: int = -1) -> torch.Tensor:
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchor_points - lt, anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


class Detect(nn.Module):
    def __init__(self, nc: int = 80, ch: tuple = ()):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), 16
        self.no = nc + self.reg_max * 4
        self.stride = torch.zeros(self.nl)
        c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, self.nc, 1)) for x in ch
        )
        self.dfl = DFL(self.reg_max)

    def forward(self, x: list[torch.Tensor]) -> Any:
        x = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        if self.training:
            return x
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1), x


# ----- community attention ports, as users paste them into ultralytics/nn/modules


class SEAttention(nn.Module):
    def __init__(self, channel: int = 512, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        return x * self.fc(y).view(b, c, 1, 1).expand_as(x)


class ChannelAttentionModule(nn.Module):
    def __init__(self, in_planes: int, ratio: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        return self.sigmoid(avg_out + max_out)


class SpatialAttentionModule(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return self.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class CBAMBlock(nn.Module):
    def __init__(self, c1: int, ratio: int = 16, kernel_size: int = 7):
        super().__init__()
        self.ca = ChannelAttentionModule(c1, ratio)
        self.sa = SpatialAttentionModule(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.ca(x)
        return x * self.sa(x)


class UltralyticsChannelAttention(nn.Module):
    """``ultralytics.nn.modules.conv.ChannelAttention``: one biased 1x1 conv on the average-pooled features."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.pool(x)))


class UltralyticsSpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.cv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.mean(x, 1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        return x * self.act(self.cv1(pooled))


class UltralyticsCBAM(nn.Module):
    """``ultralytics.nn.modules.conv.CBAM``: not the paper's (no max-pool branch, no reduction MLP)."""

    def __init__(self, c1: int, kernel_size: int = 7):
        super().__init__()
        self.channel_attention = UltralyticsChannelAttention(c1)
        self.spatial_attention = UltralyticsSpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_attention(self.channel_attention(x))


class ECAAttention(nn.Module):
    def __init__(self, c1: int, k_size: int = 3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


class EMA(nn.Module):
    def __init__(self, channels: int, factor: int = 32):
        super().__init__()
        self.groups = factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // self.groups, channels // self.groups)
        self.conv1x1 = nn.Conv2d(
            channels // self.groups, channels // self.groups, kernel_size=1, stride=1, padding=0
        )
        self.conv3x3 = nn.Conv2d(
            channels // self.groups, channels // self.groups, kernel_size=3, stride=1, padding=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


class h_sigmoid(nn.Module):  # the official CoordAtt code's names
    def __init__(self, inplace: bool = True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class h_swish(nn.Module):
    def __init__(self, inplace: bool = True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    """The official CoordAtt (Hou et al.), ``oup = inp``."""

    def __init__(self, inp: int, reduction: int = 32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, inp, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, inp, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        _, _, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return identity * a_w * a_h


class SimAM(nn.Module):
    """The official ``simam_module``."""

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.size()
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = (
            x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda))
            + 0.5
        )
        return x * self.activaton(y)


ATTENTION = {
    "SEAttention": SEAttention,
    "CBAMBlock": CBAMBlock,
    "CBAM": UltralyticsCBAM,
    "ECAAttention": ECAAttention,
    "EMA": EMA,
    "CoordAtt": CoordAtt,
    "SimAM": SimAM,
}
"""yaml spelling -> class; the options each test uses (SE/CBAM reduction 16, ECA k 3, EMA factor 8, CoordAtt
reduction 16, SimAM lambda 1e-3)."""
_ATTENTION_ARGS = {
    "SEAttention": {},
    "CBAMBlock": {},
    "CBAM": {},
    "ECAAttention": {"k_size": 3},
    "EMA": {"factor": 8},
    "CoordAtt": {"reduction": 16},
    "SimAM": {"e_lambda": 1e-3},
}


# ----- ultralytics.nn.tasks


def make_divisible(x: float, divisor: int) -> int:
    return math.ceil(x / divisor) * divisor


def parse_model(d: dict[str, Any], ch: int) -> tuple[nn.Sequential, list[int]]:
    """``ultralytics.nn.tasks.parse_model`` for the layers above (attention keeps its input's channels)."""
    nc, scales = d["nc"], d["scales"]
    depth, width, max_channels = scales[d["scale"]]
    chs: list[int] = []
    layers, save = [], []
    c2 = ch
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        args = [nc if a == "nc" else a for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        if m in ("Conv", "C2f", "SPPF"):
            c1, c2 = (chs[f] if chs else ch), args[0]
            c2 = make_divisible(min(c2, max_channels) * width, 8)
            args = [c1, c2, *args[1:]]
            if m == "C2f":
                args.insert(2, n)
                n = 1
            module: nn.Module = {"Conv": Conv, "C2f": C2f, "SPPF": SPPF}[m](*args)
        elif m == "nn.Upsample":
            module, c2 = nn.Upsample(*args), chs[f]
        elif m == "Concat":
            module, c2 = Concat(args[0]), sum(chs[x] for x in f)
        elif m == "Detect":
            module = Detect(nc, tuple(chs[x] for x in f))
        else:
            c2 = chs[f]
            module = ATTENTION[m](c2, **_ATTENTION_ARGS[m])
        module.i, module.f, module.type = i, f, m
        module.np = sum(p.numel() for p in module.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        chs.append(c2)
    return nn.Sequential(*layers), sorted(save)


class DetectionModel(nn.Module):
    def __init__(self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None):
        super().__init__()
        self.yaml = cfg
        self.model, self.save = parse_model(copy.deepcopy(cfg), ch)
        self.names = {i: f"{i}" for i in range(cfg["nc"])}
        self.inplace = True
        self.end2end = False
        for module in self.modules():  # ultralytics.utils.torch_utils.initialize_weights
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = 1e-3, 0.03
        m = self.model[-1]
        m.stride = torch.tensor([8.0, 16.0, 32.0])
        self.stride = m.stride

    def forward(self, x: torch.Tensor) -> Any:
        y: list[Any] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
        return x


class IterableSimpleNamespace(types.SimpleNamespace):
    """``ultralytics.utils.IterableSimpleNamespace``: the model's ``args`` after training."""


_MODULES = {
    "ultralytics.nn.tasks": (DetectionModel,),
    "ultralytics.nn.modules.conv": (
        Conv,
        Concat,
        UltralyticsChannelAttention,
        UltralyticsSpatialAttention,
        UltralyticsCBAM,
    ),
    "ultralytics.nn.modules.block": (Bottleneck, C2f, SPPF, DFL),
    "ultralytics.nn.modules.head": (Detect,),
    "ultralytics.nn.modules.attention": (
        SEAttention,
        CoordAtt,
        h_sigmoid,
        h_swish,
        SimAM,
        ChannelAttentionModule,
        SpatialAttentionModule,
        CBAMBlock,
        ECAAttention,
        EMA,
    ),
    "ultralytics.utils": (IterableSimpleNamespace,),
}
for _module, _classes in _MODULES.items():
    for _cls in _classes:
        _cls.__module__ = _module


@contextlib.contextmanager
def fake_ultralytics() -> Iterator[None]:
    """``ultralytics.*`` modules holding the classes above in ``sys.modules`` (removed on exit): what pickle needs
    to name them when saving, and ``torch.load(weights_only=False)`` to find them when loading."""
    added = []
    for dotted in ["ultralytics", "ultralytics.nn", "ultralytics.nn.modules", *_MODULES]:
        if dotted not in sys.modules:
            sys.modules[dotted] = types.ModuleType(dotted)
            added.append(dotted)
    for dotted, classes in _MODULES.items():
        for cls in classes:
            setattr(sys.modules[dotted], cls.__name__, cls)
    try:
        yield
    finally:
        for dotted in added:
            del sys.modules[dotted]


def build_model(
    scale: str, nc: int, attention: dict[str, str] | None = None, seed: int = 0
) -> DetectionModel:
    """A trained-looking ``DetectionModel`` (``attention``: see :func:`yolov8_yaml`): seeded weights, BatchNorm
    statistics and affine away from their init, class names set, eval mode, FP32."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weights: PyTorch's default (random) init, seeded
        model = DetectionModel(yolov8_yaml(scale, nc, attention))
    with torch.no_grad():
        for name, p in model.named_parameters():  # biases and BatchNorm affine away from their init too
            if p.dim() == 1 and "dfl" not in name:
                p.copy_(
                    torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if name.endswith("bn.weight") else 0.0)
                )
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    model.names = {i: f"class{i}" for i in range(nc)}
    model.nc = nc
    model.args = IterableSimpleNamespace(imgsz=640, epochs=3, data="mydata.yaml")
    return model.eval()


def save_checkpoint(model: DetectionModel, path: str | Path, final: bool = True, payload: Any = None) -> Path:
    """``torch.save`` the dict Ultralytics' trainer writes (FP16 model; ``final``: after ``strip_optimizer``).
    ``payload`` is stored under ``"train_args"["callback"]`` (e.g. an object whose ``__reduce__`` runs code)."""
    half = copy.deepcopy(model).half()
    optimizer = {
        "state": {0: {"momentum_buffer": torch.zeros(4, dtype=torch.float16)}},
        "param_groups": [{"lr": 0.01, "params": [0]}],
    }
    ckpt = {
        "date": "2026-12-01T06:00:00",
        "version": "8.3.40",
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1 if final else 3,
        "best_fitness": None if final else 0.5,
        "model": half if final else None,
        "ema": None if final else half,
        "updates": None if final else 120,
        "optimizer": None if final else optimizer,
        "train_args": {"model": "yolov8n.yaml", "imgsz": 640, "batch": 16, "callback": payload},
        "train_metrics": {"metrics/mAP50(B)": 0.5, "fitness": 0.4},
        "train_results": {"epoch": [1, 2, 3]},
    }
    with fake_ultralytics():
        torch.save(ckpt, path)
    return Path(path)


def reference_outputs(model: DetectionModel, x: torch.Tensor) -> torch.Tensor:
    """The independent forward pass on the weights as stored (FP16, run in FP32: ``model``'s own weights are
    rounded to FP16 in place); the ``y`` of ``(y, x)``."""
    with torch.inference_mode():
        return model.half().float().eval()(x)[0]
