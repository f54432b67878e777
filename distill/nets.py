"""Networks: the ConvNet family (every option of the 720-ConvNet NAS grid), AlexNet, VGG-11,
ResNet-18 (CIFAR variant) and a small ViT.

Every network has the same small interface (timm-style):

- ``forward_features(x) -> (blocks, embedding)``: ``blocks`` is the list of per-block feature
  maps (post-activation, pre-pooling), ``embedding`` the flattened input of the classifier.
  Matching losses read these directly: no forward hooks.
- ``forward_head(embedding) -> logits`` and ``forward(x) -> logits``.

``build_net(arch, in_channels, num_classes, image_size, ...)`` is the factory;
``init_weights(net, scheme, generator)`` re-initialises a network in place from an explicit
generator (``he``: He-normal as in the papers; ``default``: PyTorch's default scheme, as the
reference code gets it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError, choice_error

NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
ACTIVATIONS = ("sigmoid", "relu", "leakyrelu")
POOLINGS = ("none", "maxpooling", "avgpooling")
INITS = ("he", "default")
ARCHS = ("convnet", "alexnet", "vgg11", "resnet18", "vit")


def make_norm(norm: str, channels: int, spatial: tuple[int, int]) -> nn.Module:
    """The norm layers of docs/protocols.md section 1 (instancenorm = GroupNorm(C, C, affine))."""
    if norm == "none":
        return nn.Identity()
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":
        return nn.LayerNorm([channels, *spatial])
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    raise choice_error("norm", norm, NORMS)


def make_activation(act: str) -> nn.Module:
    if act == "relu":
        return nn.ReLU()
    if act == "leakyrelu":
        return nn.LeakyReLU(0.01)
    if act == "sigmoid":
        return nn.Sigmoid()
    raise choice_error("activation", act, ACTIVATIONS)


def make_pool(pool: str) -> nn.Module:
    if pool == "maxpooling":
        return nn.MaxPool2d(2, 2)
    if pool == "avgpooling":
        return nn.AvgPool2d(2, 2)
    if pool == "none":
        return nn.Identity()
    raise choice_error("pooling", pool, POOLINGS)


def default_depth(image_size: int) -> int:
    """ConvNet depth used by the papers: 3 up to 32 px, 4 at 64 px, 5 at 128 px."""
    return max(3, int(round(math.log2(image_size))) - 2)


class _Net(nn.Module):
    """Shared interface: features -> embedding -> head."""

    classifier: nn.Module

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:  # pragma: no cover
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]

    def forward_head(self, embedding: Tensor) -> Tensor:
        return self.classifier(embedding)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.embed(x))


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


class ConvNet(_Net):
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


class _ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, padding: int, norm: str,
                 spatial: tuple[int, int], stride: int = 1):
        out = ((spatial[0] + 2 * padding - k) // stride + 1, (spatial[1] + 2 * padding - k) // stride + 1)
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=padding),
                         make_norm(norm, cout, out), nn.ReLU())
        self.out_spatial = out


class _StagedNet(_Net):
    """Stages of convolutions, each followed by an optional 2x2 max-pool; a linear head on the
    flattened output. ``blocks`` are the stage outputs before pooling."""

    def _finish(self, stages: list[nn.Module], channels: int, spatial: tuple[int, int],
                num_classes: int) -> None:
        self.stages = nn.ModuleList(stages)
        self.embed_dim = channels * spatial[0] * spatial[1]
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    @staticmethod
    def _stage(layer: nn.Module, spatial: tuple[int, int], pool: bool) -> tuple[nn.Module, tuple[int, int]]:
        """A stage and its output size; a pool whose input is 1 px is skipped (small images)."""
        pool_layer: nn.Module = nn.Identity()
        if pool and min(spatial) >= 2:
            pool_layer = nn.MaxPool2d(2, 2)
            spatial = (spatial[0] // 2, spatial[1] // 2)
        return nn.ModuleDict({"layer": layer, "pool": pool_layer}), spatial

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        feats = []
        for stage in self.stages:
            x = stage["layer"](x)
            feats.append(x)
            x = stage["pool"](x)
        return feats, x.flatten(1)


class AlexNet(_StagedNet):
    """AlexNet as used for cross-architecture evaluation in DC/DM (conv 128/192/256/192/192,
    three 2x2 max-pools), with a selectable norm after each convolution (``none`` default)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 norm: str = "none"):
        super().__init__()
        spec = [(128, 5, 4 if in_channels == 1 else 2, True), (192, 5, 2, True),
                (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True)]
        spatial, cin, stages = tuple(image_size), in_channels, []
        for cout, k, pad, pool in spec:
            layer = _ConvNormAct(cin, cout, k, pad, norm, spatial)
            stage, spatial = self._stage(layer, layer.out_spatial, pool)
            stages.append(stage)
            cin = cout
        self._finish(stages, cin, spatial, num_classes)


class VGG11(_StagedNet):
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
            layer = _ConvNormAct(cin, int(v), 3, pad, norm, spatial)
            spatial = layer.out_spatial
            current.append(layer)
            cin = int(v)
        self._finish(stages, cin, spatial, num_classes)


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


class ResNet18(_Net):
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
        self.embed_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats, F.adaptive_avg_pool2d(x, 1).flatten(1)


class ViT(_Net):
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


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to build a network: the architecture and its options."""

    arch: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: default_depth(image size)
    act: str = "relu"
    norm: str | None = None  # None: the architecture's default
    pool: str = "avgpooling"

    def build(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> _Net:
        return build_net(self.arch, in_channels, num_classes, image_size, width=self.width,
                         depth=self.depth, act=self.act, norm=self.norm, pool=self.pool)


def build_net(arch: str, in_channels: int, num_classes: int, image_size: tuple[int, int],
              *, width: int = 128, depth: int | None = None, act: str = "relu",
              norm: str | None = None, pool: str = "avgpooling") -> _Net:
    """Build a network by name (``ARCHS``). ``norm=None`` picks the architecture's default
    (instancenorm for convnet/vgg11/resnet18, none for alexnet; the ViT uses LayerNorm)."""
    arch = arch.lower()
    if norm is not None and norm not in NORMS:
        raise choice_error("norm", norm, NORMS)
    size = (int(image_size[0]), int(image_size[1]))
    if arch == "convnet":
        return ConvNet(in_channels, num_classes, size, width=width,
                       depth=depth or default_depth(size[0]), act=act,
                       norm=norm or "instancenorm", pool=pool)
    if arch == "alexnet":
        return AlexNet(in_channels, num_classes, size, norm=norm or "none")
    if arch == "vgg11":
        return VGG11(in_channels, num_classes, size, norm=norm or "instancenorm")
    if arch == "resnet18":
        return ResNet18(in_channels, num_classes, size, norm=norm or "instancenorm")
    if arch == "vit":
        return ViT(in_channels, num_classes, size)
    raise choice_error("architecture", arch, ARCHS)


def has_batch_statistics(net: nn.Module) -> bool:
    """True if the network has layers whose output depends on the rest of the batch."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def init_weights(net: nn.Module, scheme: str = "he", generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise ``net`` in place, drawing every value from ``generator``.

    ``he``: He-normal (fan-in, ReLU gain) for conv and linear weights, zero biases (the
    papers' "normal initialization"). ``default``: PyTorch's own scheme (kaiming-uniform with
    a=sqrt(5), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), as the reference code gets it.
    Norm layers get weight 1, bias 0; transformer weights get N(0, 0.02) under ``he``.
    """
    if scheme not in INITS:
        raise choice_error("init", scheme, INITS)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            else:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.normal_(m.in_proj_weight, std=0.02, generator=generator)
            m.in_proj_bias.zero_()
    if isinstance(net, ViT):
        nn.init.normal_(net.pos, std=0.02, generator=generator)
        nn.init.normal_(net.cls_token, std=0.02, generator=generator)
    return net
