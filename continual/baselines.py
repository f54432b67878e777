"""Coreset memories without leaks (docs/protocols.md section 4).

In a class-incremental protocol the memory of a step may use only the data available at that
step. So for every class order, the memories of every selection method (``kind == "select"``:
random, herding, k-center, or one a new method file registers) are built step by step: the ``ipc`` images of each new class are chosen when its step arrives, and a method that
needs embeddings (herding, k-center) selects on the L2-normalised embeddings (iCaRL) of a
ConvNet trained on that step's real images only, never on classes still to come. Random draws are made per class order.

Distilled memories (DM, DataDAM, ATOM) need no such care: a class's synthetic images depend
only on that class's own real images and on randomly initialised networks, so one set per IPC
is what any step of any order would have distilled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.methods import SelectionMethod, get_method
from distill.prepare import Prepared, check_ipc, make_set
from distill.selection import embedding_recipe, select_per_class
from distill.settings import SetConfig
from distill.synset import SyntheticSet
from distill.train import derived_seed, embed_all, train_group

from .benchmark import dm_class_order, step_classes



def is_stepwise(method: str) -> bool:
    """Whether a memory of ``method`` must be built per class order and step: every selection
    method picks real images, which would otherwise come from later steps' classes too."""
    return get_method(method).kind == "select"


def stepwise_coreset(prep: Prepared, method: str, order: int, steps: int, cfg: SetConfig) -> SyntheticSet:
    """The memory of class order ``order`` (DM's order seed) for a selection ``method``, built
    step by step from each step's real data only; ``cfg`` gives ``ipc``, ``seed``,
    ``embed_epochs`` and the embedding network (``net``)."""
    chooser = get_method(method)
    assert isinstance(chooser, SelectionMethod), f"{method} is not a selection method"
    check_ipc(prep.data, cfg.ipc)
    x, y, k = prep.train_x, prep.data.train_y, prep.num_classes
    dev = x.device
    gen = torch.Generator(device=dev).manual_seed(derived_seed(cfg.seed, order))
    cpu_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, order))
    recipe = embedding_recipe(cfg)
    chosen = torch.empty(k, cfg.ipc, dtype=torch.long)
    for classes in step_classes(dm_class_order(order, k), steps):
        available = torch.nonzero(torch.isin(y, torch.tensor(classes, device=y.device))).flatten()
        emb = None
        if chooser.needs_embeddings:
            group = train_group(cfg.net.spec(), 1, x[available], y[available], k, recipe, gen, ensemble=False)
            emb = F.normalize(embed_all(group.nets[0], x[available]), dim=1)
        local = select_per_class(y[available], k, cfg.ipc, chooser, emb, cpu_gen, classes=classes)
        chosen[classes] = available.cpu()[local].view(len(classes), cfg.ipc)
    idx = chosen.flatten()
    return make_set(prep, x[idx.to(dev)], cfg, {"iterations": 0, "source_indices": idx.tolist(),
                                                "class_order": order, "steps": steps, "stepwise": True})
