"""Networks: the ConvNet family (every option of the 720-ConvNet NAS grid), AlexNet, VGG-11,
ResNet-18 (CIFAR variant) and a small ViT, one module each, registered by name.

``build_net(arch, in_channels, num_classes, image_size, ...)`` / ``NetSpec.build`` make one;
``init_weights(net, scheme, generator)`` re-initialises a network in place from an explicit
generator (``he``: He-normal as in the papers; ``default``: PyTorch's default scheme, as the
reference code gets it). Every module of this package is imported with it and registers its
architecture (``register_arch``), so adding an architecture is one new file plus its test.
"""

from __future__ import annotations

from .base import (ACTIVATIONS, ARCHS, INITS, NORMS, POOLINGS, ArchDef, Net, NetSpec, build_net,
                   default_depth, has_batch_statistics, init_weights, register_arch)
from ..registry import import_modules

import_modules(__name__, __path__, first=("base", "convnet", "alexnet", "vgg", "resnet", "vit"))  # papers' order

from .convnet import ConvNet  # noqa: E402,F401  (the ConvNet is imported by name across the toolkit)

__all__ = ["ACTIVATIONS", "ARCHS", "INITS", "NORMS", "POOLINGS", "ArchDef", "ConvNet", "Net", "NetSpec", "build_net",
           "default_depth", "has_batch_statistics", "init_weights", "register_arch"]
