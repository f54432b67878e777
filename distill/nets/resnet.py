"""ResNet-18 (CIFAR variant) for cross-architecture evaluation."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import Net, make_norm, register_arch


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, spatial: tuple[int, int]):
        super().__init__()
        out = ((spatial[0] - 1) // stride + 1, (spatial[1] - 1) // stride + 1)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, cout, out)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, cout, out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          make_norm(norm, cout, out))
        self.out_spatial = out

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(Net):
    """ResNet-18, CIFAR variant (3x3 stem, no stem pooling, stages 64/128/256/512 with strides
    1/2/2/2, global average pooling). ``instancenorm`` (DC's ResNet18) or ``batchnorm``."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 norm: str = "instancenorm"):
        super().__init__()
        spatial = tuple(image_size)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
                                  make_norm(norm, 64, spatial), nn.ReLU())
        cin, stages = 64, []
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            b1 = BasicBlock(cin, cout, stride, norm, spatial)
            b2 = BasicBlock(cout, cout, 1, norm, b1.out_spatial)
            spatial = b2.out_spatial
            stages.append(nn.Sequential(b1, b2))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.taps = tuple(f"stage{i + 1}" for i in range(len(stages)))
        self.embed_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats, F.adaptive_avg_pool2d(x, 1).flatten(1)


register_arch("resnet18", lambda cin, k, size, s: ResNet18(cin, k, size, norm=s.norm))
