"""The coreset driver: a selection method (``distill.methods``: random, herding, k-center) applied
per class, on the embeddings of a ConvNet trained on the real training set where the method
needs them (docs/protocols.md section 4)."""

from __future__ import annotations

import json
import time

import torch
from torch import Tensor

from .config import to_dict
from .methods import SelectionMethod, get_method
from .prepare import Prepared, check_ipc, make_set
from .settings import SetConfig
from .synset import SyntheticSet
from .train import TrainRecipe, embed_all, train_group


def embedding_recipe(cfg: SetConfig) -> TrainRecipe:
    """How the embedding ConvNet of herding and k-center is trained: ``embed_epochs`` of the
    evaluation recipe without augmentation, initialised as the matching network."""
    return TrainRecipe(epochs=cfg.embed_epochs, dsa="none", init=cfg.net.init or "he")


def selection_embeddings(prep: Prepared, cfg: SetConfig, generator: torch.Generator,
                         progress: bool = False) -> Tensor:
    """Embeddings of every training image from a ConvNet trained on the real training set."""
    group = train_group(cfg.net.spec(), 1, prep.train_x, prep.data.train_y, prep.num_classes, embedding_recipe(cfg),
                        generator, ensemble=False, progress=progress, desc="embedding ConvNet")
    return embed_all(group.nets[0], prep.train_x)


def select_per_class(labels: Tensor, num_classes: int, ipc: int, method: SelectionMethod,
                     emb: Tensor | None = None, generator: torch.Generator | None = None,
                     classes: list[int] | None = None) -> Tensor:
    """Dataset indices of ``ipc`` images per class picked by ``method``, class-major (over
    ``classes``, default every class ``0..num_classes-1``, in that order)."""
    labels = labels.cpu()
    picks = []
    for c in range(num_classes) if classes is None else classes:
        idx = torch.nonzero(labels == c).flatten()
        local = method.pick(None if emb is None else emb[idx.to(emb.device)], len(idx), ipc, generator)
        picks.append(idx[local.cpu()])
    return torch.cat(picks)


def select(prep: Prepared, cfg: SetConfig, progress: bool = False) -> SyntheticSet:
    """A selection method's set: the picked real images of every class."""
    method = get_method(cfg.method)
    assert isinstance(method, SelectionMethod), f"{cfg.method} is not a selection method"
    check_ipc(prep.data, cfg.ipc)
    gen = torch.Generator(device=prep.train_x.device).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    emb = None
    if method.needs_embeddings:
        key = (json.dumps(to_dict(cfg.net), sort_keys=True), cfg.embed_epochs, cfg.seed)
        if key not in prep.embeddings:  # the generator is fresh here, so a reuse gives the same set
            prep.embeddings.clear()
            prep.embeddings[key] = selection_embeddings(prep, cfg, gen, progress)
        emb = prep.embeddings[key]
    cpu_gen = torch.Generator().manual_seed(cfg.seed)
    idx = select_per_class(prep.data.train_y, prep.num_classes, cfg.ipc, method, emb, cpu_gen)
    images = prep.train_x[idx.to(prep.train_x.device)]
    return make_set(prep, images, cfg, {"iterations": 0, "seconds": time.perf_counter() - t0,
                                         "source_indices": idx.tolist()})
