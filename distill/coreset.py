"""Coreset baselines: random, herding and k-center selection of real images, per class.

Herding and k-center work on embeddings of a ConvNet trained on the real training set
(the distillation ConvNet, ``embed_epochs`` epochs of the evaluation recipe without
augmentation; docs/protocols.md section 4). The selection functions are pure: embeddings in,
indices out; the methods that use them are ``distill.methods.coresets`` and the driver that
applies them per class is ``distill.selection``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def herding(emb: Tensor, k: int) -> Tensor:
    """iCaRL herding (Rebuffi et al. 2017, Alg. 4): step t picks the unused sample that keeps
    the mean of the selected embeddings closest to the class mean ``mu``:
    ``argmin_j || mu - (S_{t-1} + e_j) / t ||``, ``S`` the sum of the chosen embeddings."""
    n = emb.shape[0]
    k = min(k, n)
    emb = emb.double()
    mu = emb.mean(0)
    chosen = torch.zeros(n, dtype=torch.bool, device=emb.device)
    total = torch.zeros_like(mu)
    out = []
    for t in range(1, k + 1):
        dist = ((mu - (total + emb) / t) ** 2).sum(1)
        dist[chosen] = float("inf")
        j = int(torch.argmin(dist))
        out.append(j)
        chosen[j] = True
        total = total + emb[j]
    return torch.tensor(out, dtype=torch.long)


def kcenter(emb: Tensor, k: int) -> Tensor:
    """Greedy k-center (Sener & Savarese 2018): start from the sample nearest the class mean,
    then repeatedly add the sample farthest from its nearest chosen centre."""
    n = emb.shape[0]
    k = min(k, n)
    emb = emb.double()
    first = int(torch.argmin(((emb - emb.mean(0)) ** 2).sum(1)))
    out = [first]
    nearest = ((emb - emb[first]) ** 2).sum(1)
    for _ in range(1, k):
        j = int(torch.argmax(nearest))
        out.append(j)
        nearest = torch.minimum(nearest, ((emb - emb[j]) ** 2).sum(1))
    return torch.tensor(out, dtype=torch.long)


def random_subset(n: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``k`` distinct indices out of ``n``, uniformly (seeded)."""
    return torch.randperm(n, generator=generator)[: min(k, n)]
