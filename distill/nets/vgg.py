"""VGG-11 for cross-architecture evaluation."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from .base import ConvNormAct, StagedNet, register_arch


class VGG11(StagedNet):
    """VGG-11 (cfg 64,M,128,M,256,256,M,512,512,M,512,512,M) with a selectable norm
    (``instancenorm`` default, as in DC's VGG11; ``batchnorm`` for VGG11-BN). A max-pool whose
    input is already 1 px is skipped so small images (digits) fit."""

    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 norm: str = "instancenorm"):
        super().__init__()
        spatial, cin = tuple(image_size), in_channels
        stages: list[nn.Module] = []
        current: list[nn.Module] = []
        for i, v in enumerate(self.CFG):
            if v == "M":
                stage, spatial = self._stage(nn.Sequential(*current), spatial, pool=True)
                stages.append(stage)
                current = []
                continue
            pad = 3 if (i == 0 and in_channels == 1 and tuple(image_size) == (28, 28)) else 1
            layer = ConvNormAct(cin, int(v), 3, pad, norm, spatial)
            spatial = layer.out_spatial
            current.append(layer)
            cin = int(v)
        self._finish(stages, cin, spatial, num_classes)
        self.taps = tuple(f"conv{i + 1}" for i in range(sum(v != "M" for v in self.CFG)))

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Every convolution's ReLU output (8 maps), then the pooled, flattened embedding."""
        feats = []
        for stage in self.stages:
            for layer in stage["layer"]:
                x = layer(x)
                feats.append(x)
            x = stage["pool"](x)
        return feats, x.flatten(1)


register_arch("vgg11", lambda cin, k, size, s: VGG11(cin, k, size, norm=s.norm))
