"""ResNet-18/50 with torchvision's exact structure and state_dict keys, plus attention in every block.

The layout (``conv1, bn1, layer1.0.conv1, ..., layerN.0.downsample.0/1, fc``), the initialisation
and the parameter counts (11,689,512 / 25,557,032) are torchvision's, written here without
importing torchvision, so a torchvision checkpoint loads unchanged.

Attention (placement ``"block"``, the only one): each residual block applies its ``attn``
submodule to the residual branch's output, after the last BatchNorm and just before the identity
is added, as SE-ResNet (Hu et al., 2018) and CBAM (Woo et al., 2018) do. For ``"none"`` ``attn``
is ``nn.Identity``, which has no state, so the state_dict keys are exactly torchvision's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attn_deploy.attention import create_attention
from attn_deploy.models.registry import Family, is_attention_key, register_model

RESNET = Family(
    task="classify",
    input_size=(224, 224),
    num_classes=1000,
    output_names=("logits",),
    preprocess="resize_crop",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    placements=("block",),
    size_divisor=1,
    classes_key=r"fc\.weight",
)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34); attention on the branch output before the residual add."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, downsample: nn.Module | None, attn: nn.Module):
        super().__init__()
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = attn
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with the stride on the 3x3 (torchvision's "ResNet v1.5"); attention as above."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, downsample: nn.Module | None, attn: nn.Module):
        super().__init__()
        self.conv1 = _conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attn
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet; ``attention`` (a registry name) goes into every residual block."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        attention: str = "none",
        num_classes: int = 1000,
        **attn_kwargs: Any,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        e = block.expansion
        self.layer1 = _stage(block, 64, 64, layers[0], 1, attention, attn_kwargs)
        self.layer2 = _stage(block, 64 * e, 128, layers[1], 2, attention, attn_kwargs)
        self.layer3 = _stage(block, 128 * e, 256, layers[2], 2, attention, attn_kwargs)
        self.layer4 = _stage(block, 256 * e, 512, layers[3], 2, attention, attn_kwargs)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * e, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's init for the ResNet's own layers; attention modules keep their own init."""
        for name, module in self.named_modules():
            if is_attention_key(name):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stage(
    block: type[BasicBlock | Bottleneck],
    c_in: int,
    planes: int,
    blocks: int,
    stride: int,
    attention: str,
    attn_kwargs: dict[str, Any],
) -> nn.Sequential:
    """One ResNet stage (torchvision's ``_make_layer``): the first block strides and projects."""
    c_out = planes * block.expansion
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(_conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
    stage = []
    for i in range(blocks):
        attn = create_attention(attention, c_out, **attn_kwargs)
        stage.append(block(c_in if i == 0 else c_out, planes, stride if i == 0 else 1, downsample, attn))
        downsample = None
    return nn.Sequential(*stage)


@register_model("resnet18", RESNET)
def resnet18(attention: str, *, num_classes: int, placement: str, **attn_kwargs: Any) -> ResNet:
    """ResNet-18 (He et al., 2016): BasicBlock x (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), attention, num_classes, **attn_kwargs)


@register_model("resnet50", RESNET)
def resnet50(attention: str, *, num_classes: int, placement: str, **attn_kwargs: Any) -> ResNet:
    """ResNet-50 (He et al., 2016; torchvision's v1.5, stride on the 3x3): Bottleneck x (3, 4, 6, 3)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), attention, num_classes, **attn_kwargs)
