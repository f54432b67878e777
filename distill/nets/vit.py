"""A small Vision Transformer for cross-architecture evaluation."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .base import Net, register_arch


class ViT(Net):
    """A small Vision Transformer for cross-architecture evaluation: patches of
    ``image_size / 8`` px (4 px at 32x32), width 192, 6 pre-norm encoder layers of 3 heads,
    MLP 384, a class token and learned position embeddings. ``blocks`` are the token maps
    after each encoder layer reshaped to ``[B, dim, h, w]`` (class token dropped)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp: int = 384):
        super().__init__()
        patch = max(1, image_size[0] // 8)
        self.grid = (image_size[0] // patch, image_size[1] // patch)
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.taps = tuple(f"encoder{i + 1}" for i in range(depth))
        self.embed_dim = dim
        self.classifier = nn.Linear(dim, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1) + self.pos
        feats = []
        for layer in self.layers:
            t = layer(t)
            feats.append(t[:, 1:].transpose(1, 2).reshape(len(t), -1, *self.grid))
        return feats, self.norm(t[:, 0])

    @torch.no_grad()
    def init_extra(self, generator: torch.Generator | None) -> None:
        """Position embedding and class token: N(0, 0.02) under either init scheme."""
        nn.init.normal_(self.pos, std=0.02, generator=generator)
        nn.init.normal_(self.cls_token, std=0.02, generator=generator)


register_arch("vit", lambda cin, k, size, _s: ViT(cin, k, size), default_norm=None)
