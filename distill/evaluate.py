"""Evaluating a synthetic set: train N fresh networks on it, test them on the real test set.

The recipe (docs/protocols.md section 3): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256,
1000 epochs, LR x0.1 at half, per-sample DSA on every batch (one family per batch), no
augmentation at test time. The test images go through the set's OWN stored preprocessing
(normalisation and ZCA), never a refit. The networks are trained by ``distill.train`` (the
one trainer: ensembled or sequential, the same networks either way).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .data import ImageData
from .datasets import quick_defaults
from .errors import UserError, choice_error
from .nets import ARCHS, NORMS, NetSpec
from .synset import SyntheticSet
from .train import TrainRecipe, check_recipe, train_group, use_ensemble

# "all": the papers' cross-architecture set, each with its norm variants
ALL_ARCHS = ("convnet", "convnet-batchnorm", "alexnet", "alexnet-batchnorm", "vgg11",
             "vgg11-batchnorm", "resnet18", "resnet18-batchnorm", "vit")


def parse_arch(token: str) -> NetSpec:
    """``convnet``, ``resnet18-batchnorm``, ``alexnet-instancenorm``, ... -> NetSpec."""
    token = token.strip().lower()
    name, _, norm = token.partition("-")
    if name not in ARCHS:
        raise choice_error("architecture", token, [*ARCHS, "<arch>-<norm>", "all"])
    if norm and norm not in NORMS:
        raise choice_error(f"norm in {token!r}", norm, NORMS)
    if name == "vit" and norm:
        raise UserError("vit has no norm variants (it uses LayerNorm)")
    return NetSpec(arch=name, norm=norm or None)


def expand_archs(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        out.extend(ALL_ARCHS if t.strip().lower() == "all" else [t.strip().lower()])
    for t in out:
        parse_arch(t)
    return list(dict.fromkeys(out))


def eval_inputs(synset: SyntheticSet, data: ImageData) -> Tensor:
    """The real test images mapped through the set's own preprocessing, after checking that the
    set fits the dataset (classes, channels, image size)."""
    src = synset.meta.get("dataset")
    if src and src != data.name:
        raise UserError(f"the synthetic set was made from {src!r}, not {data.name!r}: it fits only jobs on "
                        f"--dataset {src}")
    if synset.num_classes != data.num_classes:
        raise UserError(f"the synthetic set has {synset.num_classes} classes, {data.name} has "
                        f"{data.num_classes}")
    want = (data.channels, *data.image_size)
    if tuple(synset.image_shape) != want:
        raise UserError(f"the synthetic set's images are {tuple(synset.image_shape)}, {data.name} "
                        f"images are {want} (channels, height, width)")
    return synset.preprocess(data.test_x)


@dataclass
class ArchResult:
    """Test accuracies of every network of one architecture (over every set evaluated)."""

    arch: str
    accuracies: list[float]
    seconds: float
    ensembled: bool
    per_set: dict[str, float] = field(default_factory=dict)  # set label -> its networks' mean

    @property
    def mean(self) -> float:
        return float(sum(self.accuracies) / len(self.accuracies))

    @property
    def std(self) -> float:
        m = self.mean
        return float(math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies)))

    def row(self) -> dict[str, Any]:
        return {"arch": self.arch, "sets": max(1, len(self.per_set)), "models": len(self.accuracies),
                "mean": self.mean, "std": self.std, "seconds": self.seconds, "ensembled": self.ensembled,
                "accuracies": self.accuracies, "per_set": self.per_set}


def resolve_eval(cfg: TrainRecipe, dataset: str | None = None) -> TrainRecipe:
    """Validate the recipe, fill ``epochs`` (1000; the dataset's quick default, ``distill.datasets``) and
    expand ``archs`` (``all``)."""
    check_recipe(cfg)
    epochs = cfg.epochs if cfg.epochs is not None else quick_defaults(dataset, "eval").get("epochs", 1000)
    return replace(cfg, epochs=epochs, archs=expand_archs(cfg.archs))


def set_recipe(cfg: TrainRecipe, synset: SyntheticSet) -> TrainRecipe:
    """The recipe a set is evaluated with: ``cfg``, with the set's learned training rate where it
    has one (MTT's and DATM's evaluation trains with ``lr_best``)."""
    return cfg if synset.lr is None else replace(cfg, lr=float(synset.lr))


def labels_used(synset: SyntheticSet) -> str:
    """How networks are trained on the set, for reports: hard labels, or soft labels (the loss
    and temperature), and a learned rate."""
    text = "hard labels" if synset.soft_labels is None else \
        f"soft labels (T^2 KL at temperature {synset.soft_temperature:g})"
    return text + (f", learned lr {synset.lr:g}" if synset.lr is not None else "")


def evaluate_set(
    synset: SyntheticSet,
    test_x: Tensor,
    test_y: Tensor,
    cfg: TrainRecipe,
    device: torch.device | str = "cpu",
    progress: bool = False,
    set_index: int = 0,
) -> list[ArchResult]:
    """Train ``cfg.models`` networks per architecture on ``synset`` and test on ``(test_x,
    test_y)`` (already in the set's input space, see :func:`eval_inputs`). ``set_index``
    (the set's place in a multi-set evaluation) offsets the networks' seeds, so that every set
    gets its own networks; set 0 keeps the single-set seeds. A soft-label set trains on its soft
    labels, and a set with a learned rate (``synset.lr``) with that rate (:func:`set_recipe`)."""
    dev = torch.device(device)
    cfg = set_recipe(cfg, synset)
    x, y = synset.decoded()[0].to(dev), synset.targets().to(dev)
    test_x, test_y = test_x.to(dev), test_y.to(dev)
    size = (x.shape[2], x.shape[3])
    results = []
    for i, token in enumerate(cfg.archs):
        spec = parse_arch(token)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + i + 1_000_003 * set_index)
        ens = use_ensemble(cfg, spec, x.shape[1], synset.num_classes, size, dev, name=token)
        t0 = time.perf_counter()
        group = train_group(spec, cfg.models, x, y, synset.num_classes, cfg, gen, ens, progress,
                            desc=f"{token} x{cfg.models}{' (ensembled)' if ens else ''}",
                            temperature=synset.soft_temperature)
        accs = group.accuracies(test_x, test_y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        results.append(ArchResult(token, accs, time.perf_counter() - t0, ens))
    return results


def combine_sets(per_set: dict[str, list[ArchResult]]) -> list[ArchResult]:
    """The papers' protocol (docs/protocols.md section 3): several synthetic sets x N networks
    each, reported as one mean +- std over every network; each set's own mean is kept."""
    labels = list(per_set)
    out = []
    for j, first in enumerate(per_set[labels[0]]):
        rows = [per_set[lb][j] for lb in labels]
        out.append(ArchResult(first.arch, [a for r in rows for a in r.accuracies], sum(r.seconds for r in rows),
                              all(r.ensembled for r in rows), {lb: r.mean for lb, r in zip(labels, rows)}))
    return out
