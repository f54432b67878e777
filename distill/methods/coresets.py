"""Coreset baselines: real images chosen per class (the pure selections of ``distill.coreset``).
Herding and k-center select on the embeddings of the distillation ConvNet trained
``embed_epochs`` epochs on the real training set (docs/protocols.md section 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import coreset
from . import SelectionMethod, register_method


class Random(SelectionMethod):
    name = "random"
    paper = "random real images per class"

    def pick(self, embeddings: Tensor | None, count: int, k: int, generator: torch.Generator) -> Tensor:
        return coreset.random_subset(count, k, generator)


class Herding(SelectionMethod):
    name = "herding"
    paper = "Welling 2009 / iCaRL herding on ConvNet embeddings"
    needs_embeddings = True
    reads = ("seed", "net", "embed_epochs")

    def pick(self, embeddings: Tensor | None, count: int, k: int, generator: torch.Generator) -> Tensor:
        return coreset.herding(embeddings, k)


class KCenter(SelectionMethod):
    name = "kcenter"
    paper = "Sener & Savarese 2018 greedy k-center on embeddings"
    needs_embeddings = True
    reads = ("seed", "net", "embed_epochs")

    def pick(self, embeddings: Tensor | None, count: int, k: int, generator: torch.Generator) -> Tensor:
        return coreset.kcenter(embeddings, k)


register_method(Random())
register_method(Herding())
register_method(KCenter())
