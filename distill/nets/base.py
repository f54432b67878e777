"""What every network shares: the layer choices (norm, activation, pooling), the ``Net``
interface, :class:`NetSpec`, the architecture registry and ``build_net``, weight initialisation.

Every network has the same small interface (timm-style):

- ``forward_features(x) -> (blocks, embedding)``: ``blocks`` is the list of per-block feature
  maps (post-activation, pre-pooling), ``embedding`` the flattened input of the classifier.
  Matching losses read these directly: no forward hooks.
- ``forward_head(embedding) -> logits`` and ``forward(x) -> logits``.
- ``taps``: the names of the feature maps ``forward_features`` returns, in order: the layers
  attention can be matched at (``distill.layers`` counts them from 1). ConvNet: every block;
  AlexNet: every convolution; VGG-11: every convolution's ReLU (8, as the DataDAM code hooks
  them); ResNet-18: every stage; ViT: every encoder layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import choice_error
from ..registry import add, find

NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
ACTIVATIONS = ("sigmoid", "relu", "leakyrelu")
POOLINGS = ("none", "maxpooling", "avgpooling")
INITS = ("he", "default")


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


class Net(nn.Module):
    """Shared interface: features -> embedding -> head."""

    classifier: nn.Module
    taps: tuple[str, ...] = ()

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:  # pragma: no cover
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]

    def forward_head(self, embedding: Tensor) -> Tensor:
        return self.classifier(embedding)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.embed(x))


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, padding: int, norm: str,
                 spatial: tuple[int, int], stride: int = 1):
        out = ((spatial[0] + 2 * padding - k) // stride + 1, (spatial[1] + 2 * padding - k) // stride + 1)
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=padding),
                         make_norm(norm, cout, out), nn.ReLU())
        self.out_spatial = out


class StagedNet(Net):
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


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to build a network: the architecture and its options."""

    arch: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: default_depth(image size)
    act: str = "relu"
    norm: str | None = None  # None: the architecture's default
    pool: str = "avgpooling"

    def build(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> Net:
        return build_net(self.arch, in_channels, num_classes, image_size, width=self.width,
                         depth=self.depth, act=self.act, norm=self.norm, pool=self.pool)


@dataclass(frozen=True)
class ArchDef:
    """A registered architecture: ``build(in_channels, num_classes, image_size, spec)`` makes it
    from a :class:`NetSpec` whose ``norm`` and ``depth`` are already filled (``None``: the
    architecture ignores them or picks them itself); ``default_norm`` fills ``norm=None``."""

    name: str
    build: Callable[[int, int, tuple[int, int], "NetSpec"], Net]
    default_norm: str | None = "instancenorm"


ARCHS: dict[str, ArchDef] = {}


def register_arch(name: str, build: Callable[[int, int, tuple[int, int], "NetSpec"], Net],
                  default_norm: str | None = "instancenorm") -> ArchDef:
    """Add an architecture (each module of ``distill.nets`` calls this for its own)."""
    return add(ARCHS, name, ArchDef(name, build, default_norm), "architecture")


def build_net(arch: str, in_channels: int, num_classes: int, image_size: tuple[int, int],
              *, width: int = 128, depth: int | None = None, act: str = "relu",
              norm: str | None = None, pool: str = "avgpooling") -> Net:
    """Build a registered network (``ARCHS``). ``norm=None`` picks the architecture's default
    (instancenorm for convnet/vgg11/resnet18, none for alexnet; the ViT uses LayerNorm)."""
    if norm is not None and norm not in NORMS:
        raise choice_error("norm", norm, NORMS)
    entry = find(ARCHS, arch, "architecture")
    size = (int(image_size[0]), int(image_size[1]))
    spec = NetSpec(arch=entry.name, width=width, depth=depth, act=act, norm=norm or entry.default_norm, pool=pool)
    return entry.build(in_channels, num_classes, size, spec)


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
    extra = getattr(net, "init_extra", None)  # parameters outside conv/linear/norm layers (ViT)
    if extra is not None:
        extra(generator)
    return net
