"""Small helpers around single networks: the LR schedule of the evaluation recipe (PROTOCOLS.md
section 3) and embeddings. Training itself lives in
``distill.evaluate.train_group``."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


def lr_at(epoch: int, epochs: int, lr: float) -> float:
    """Step schedule of the reference code: ``lr`` for the first half, ``lr / 10`` after."""
    return lr if epoch < epochs // 2 else lr * 0.1


@torch.no_grad()
def embed_all(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    """Final embeddings of ``x`` (eval mode)."""
    net.eval()
    return torch.cat([net.embed(x[i : i + batch]) for i in range(0, len(x), batch)])


def derived_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (e.g. run seed, class order, step) with numpy's
    ``SeedSequence``: distinct tuples give independent streams, none depends on another."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])
