"""Synthetic memories inside ordinary Avalanche code: a GDumb-style ``Naive`` strategy whose
storage policy is a :class:`~continual.memory.SyntheticMemory`, plus a DSA plugin.

The toolkit's own protocol (:mod:`continual.protocol`) trains several models at once on the
device; this is the route for users who want the memory in their Avalanche experiments::

    bm = make_benchmark(train_x, train_y, test_x, test_y, dm_class_order(0, 100), steps=10)
    strategy = gdumb_strategy(model, synset, ipc=20, recipe=TrainRecipe(epochs=1000), device="cuda")
    for exp in bm.train_stream:
        strategy.train(exp)
        strategy.eval(bm.test_stream[: exp.current_experience + 1])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin, GDumbPlugin
from avalanche.training.supervised import Naive

from distill import augment
from distill.synset import SyntheticSet
from distill.train import TrainRecipe

from .memory import SyntheticMemory


class DSAPlugin(SupervisedPlugin):
    """Per-sample differentiable siamese augmentation of every training mini-batch."""

    def __init__(self, strategy: str = augment.DEFAULT_STRATEGY, seed: int = 0):
        super().__init__()
        self.dsa = strategy
        self.seed = seed
        self.generator: torch.Generator | None = None

    def before_forward(self, strategy: Any, **kwargs: Any) -> None:
        if not strategy.is_training or self.dsa == "none":
            return
        x = strategy.mbatch[0]
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        strategy.mbatch[0] = augment.per_sample(x, self.generator, self.dsa)


def gdumb_strategy(model: nn.Module, synset: SyntheticSet, ipc: int = 20, recipe: TrainRecipe | None = None,
                   device: str | torch.device = "cpu", evaluator: EvaluationPlugin | None = None,
                   plugins: list[SupervisedPlugin] | None = None) -> Naive:
    """A ``Naive`` strategy that, at every experience, restarts ``model`` from its initial
    weights (GDumb) and trains it only on the synthetic memory of the classes seen so far, with
    the training recipe (default ``TrainRecipe()``: SGD lr 0.01, momentum 0.9, weight decay
    5e-4, batch 256, DSA; ``epochs: null`` is 1000). Its LR schedule is Avalanche's (constant):
    the fast protocol (``continual.protocol``) applies the recipe's x0.1 at half. Evaluation
    reports Avalanche's accuracy metrics unless another ``evaluator`` is given; ``plugins`` are
    added after GDumb and DSA."""
    r = recipe or TrainRecipe()
    memory = SyntheticMemory(synset, ipc)
    gdumb = GDumbPlugin(mem_size=memory.max_size)
    gdumb.storage_policy = memory
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    evaluator = evaluator or EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])
    return Naive(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=r.batch,
                 train_epochs=int(r.epochs or 1000), eval_mb_size=500, device=device,
                 plugins=[gdumb, DSAPlugin(r.dsa, r.seed), *(plugins or [])], evaluator=evaluator)
