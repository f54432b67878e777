"""Training a single network on tensors already on the device (the evaluation recipe of
PROTOCOLS.md section 3: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, LR x0.1 at
half of the epochs, per-sample DSA on every batch)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import augment


def lr_at(epoch: int, epochs: int, lr: float) -> float:
    """Step schedule of the reference code: ``lr`` for the first half, ``lr / 10`` after."""
    return lr if epoch < epochs // 2 else lr * 0.1


def train_net(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    generator: torch.Generator | None = None,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch: int = 256,
    dsa_strategy: str | None = augment.DEFAULT_STRATEGY,
) -> nn.Module:
    """Train ``net`` in place on ``(x, y)`` (network-input space, same device as ``net``)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    net.train()
    n = len(x)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, epochs, lr)
        perm = torch.randperm(n, generator=generator, device=x.device)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb = x[idx]
            if dsa_strategy:
                xb = augment.per_sample(xb, generator, dsa_strategy)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    net.eval()
    return torch.cat([net(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> float:
    """Top-1 accuracy of ``net`` on ``(x, y)``."""
    return float((predict(net, x, batch) == y).float().mean()) if len(y) else float("nan")


@torch.no_grad()
def embed_all(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    """Final embeddings of ``x`` (eval mode)."""
    net.eval()
    return torch.cat([net.embed(x[i : i + batch]) for i in range(0, len(x), batch)])
