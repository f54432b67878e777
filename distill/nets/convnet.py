"""The ConvNet family (docs/protocols.md section 1): every option of the 720-ConvNet NAS grid."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from ..errors import UserError
from .base import Net, default_depth, make_activation, make_norm, make_pool, register_arch


class ConvBlock(nn.Module):
    """Conv3x3 -> norm -> activation, then pooling (kept apart so features are pre-pooling)."""

    def __init__(self, cin: int, cout: int, norm: str, act: str, pool: str,
                 spatial: tuple[int, int], padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=padding)
        out_hw = (spatial[0] + 2 * padding - 2, spatial[1] + 2 * padding - 2)
        self.norm = make_norm(norm, cout, out_hw)
        self.act = make_activation(act)
        self.pool = make_pool(pool)
        self.out_spatial = out_hw if pool == "none" else (out_hw[0] // 2, out_hw[1] // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvNet(Net):
    """The ConvNet of DC/DSA/DM/DataDAM/ATOM (docs/protocols.md section 1).

    ``depth`` blocks of Conv3x3(width) -> norm -> activation -> 2x2 pooling, then a linear
    classifier on the flattened last block. 1-channel 28x28 input gets padding 3 in the first
    convolution (so MNIST behaves like 32x32), as in the reference code.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 width: int = 128, depth: int = 3, act: str = "relu",
                 norm: str = "instancenorm", pool: str = "avgpooling"):
        super().__init__()
        self.config = dict(width=width, depth=depth, act=act, norm=norm, pool=pool)
        blocks = []
        spatial = tuple(image_size)
        cin = in_channels
        for d in range(depth):
            padding = 3 if (d == 0 and in_channels == 1 and tuple(image_size) == (28, 28)) else 1
            block = ConvBlock(cin, width, norm, act, pool, spatial, padding)
            if min(block.out_spatial) < 1:
                raise UserError(
                    f"ConvNet depth {depth} with {pool} does not fit {image_size[0]}x{image_size[1]} "
                    f"images (the feature map vanishes at block {d + 1}); use fewer blocks or larger images"
                )
            blocks.append(block)
            spatial = block.out_spatial
            cin = width
        self.blocks = nn.ModuleList(blocks)
        self.taps = tuple(f"block{d + 1}" for d in range(depth))
        self.embed_dim = width * spatial[0] * spatial[1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
            x = block.pool(x)
        return feats, x.flatten(1)

    def embed(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block.pool(block(x))
        return x.flatten(1)


register_arch("convnet", lambda cin, k, size, s: ConvNet(cin, k, size, width=s.width, depth=s.depth or default_depth(size[0]),
                                                         act=s.act, norm=s.norm, pool=s.pool))
