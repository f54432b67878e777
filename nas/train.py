"""Training one candidate under one condition (docs/protocols.md section 5):

- ``proxy``: on a SyntheticSet for ``proxy_epochs`` (200);
- ``whole``: on the real training set minus the validation split for ``whole_epochs`` (100),
  the ground truth;
- ``early``: the same data as ``whole`` but stopped after as many SGD steps as the proxy
  training takes (``proxy_epochs x ceil(proxy images / batch)``).

Candidates are ranked by accuracy on a validation split held out of the real training set
(``val_fraction`` of every class, drawn with ``val_seed``); test accuracy is reported. All data
live on the device and DSA runs there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distill.train import steps_per_epoch, train_group
from distill.train import derived_seed

from .config import NASConfig, recipe
from .space import candidate_spec

CONDITIONS = ("proxy", "whole", "early")


def val_split(train_y: Tensor, num_classes: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``: ``round(fraction x n_k)`` images of every class k (at least one)
    drawn with ``seed`` go to validation; the rest stay for training."""
    g = torch.Generator().manual_seed(seed)
    y = train_y.cpu()
    val = []
    for k in range(num_classes):
        idx = (y == k).nonzero().flatten()
        n = max(1, round(fraction * len(idx)))
        val.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    val_idx = torch.cat(val).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[val_idx] = False
    return mask.nonzero().flatten(), val_idx


@dataclass
class Condition:
    """What a candidate is trained on, how long, and where it is validated and tested."""

    name: str  # proxy | whole | early
    x: Tensor
    y: Tensor  # class ids [N], or a proxy's soft labels [N, K]
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    epochs: int
    max_steps: int | None = None
    temperature: float = 1.0  # of the soft labels (distill.train.soft_loss)


def early_epochs(proxy_steps: int, whole_images: int, batch: int) -> int:
    """Epochs of the whole set that cover ``proxy_steps`` SGD steps (the LR schedule spans them)."""
    return max(1, math.ceil(proxy_steps / steps_per_epoch(whole_images, batch)))


def candidate_seed(seed: int, index: int) -> int:
    """The initialisation seed of grid point ``index``: the same in every condition."""
    return derived_seed(seed, index)


def train_candidate(params: dict[str, Any], index: int, cond: Condition, cfg: NASConfig,
                    device: torch.device) -> dict[str, Any]:
    """Train grid point ``index`` under ``cond``; return validation/test accuracy, time, steps."""
    t0 = time.perf_counter()
    rec = recipe(cfg, cond.epochs)
    gen = torch.Generator(device=device).manual_seed(candidate_seed(cfg.seed, index))
    group = train_group(candidate_spec(params), 1, cond.x, cond.y, cond.num_classes, rec, gen,
                        ensemble=False, max_steps=cond.max_steps, temperature=cond.temperature)
    val = group.accuracies(cond.val_x, cond.val_y)[0]
    test = group.accuracies(cond.test_x, cond.test_y)[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    steps = cond.epochs * steps_per_epoch(len(cond.x), cfg.batch)
    if cond.max_steps is not None:
        steps = min(steps, cond.max_steps)
    return {"val_acc": float(val), "test_acc": float(test), "seconds": time.perf_counter() - t0,
            "steps": int(steps), "images": len(cond.x)}
