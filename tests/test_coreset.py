"""Herding and k-center against brute-force transcriptions on small inputs."""

import itertools

import torch

from distill.coreset import herding, kcenter, random_subset
from distill.methods import get_method
from distill.selection import select_per_class


def brute_herding(emb, k):
    mu = emb.mean(0)
    chosen = []
    for t in range(1, k + 1):
        best, best_d = None, None
        for j in range(len(emb)):
            if j in chosen:
                continue
            m = (sum((emb[c] for c in chosen), torch.zeros_like(mu)) + emb[j]) / t
            d = float(((mu - m) ** 2).sum())
            if best_d is None or d < best_d:
                best, best_d = j, d
        chosen.append(best)
    return chosen


def brute_kcenter(emb, k):
    mu = emb.mean(0)
    chosen = [min(range(len(emb)), key=lambda j: float(((emb[j] - mu) ** 2).sum()))]
    while len(chosen) < k:
        def gap(j):
            return min(float(((emb[j] - emb[c]) ** 2).sum()) for c in chosen)
        chosen.append(max((j for j in range(len(emb)) if j not in chosen), key=gap))
    return chosen


def test_herding_matches_brute_force():
    for seed in range(5):
        emb = torch.randn(12, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert herding(emb, 6).tolist() == brute_herding(emb, 6)


def test_kcenter_matches_brute_force():
    for seed in range(5):
        emb = torch.randn(15, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert kcenter(emb, 5).tolist() == brute_kcenter(emb, 5)


def test_kcenter_is_greedy_2_approximation():
    emb = torch.randn(10, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    k = 3
    chosen = kcenter(emb, k).tolist()
    radius = lambda c: max(min(float(((e - emb[j]) ** 2).sum()) ** 0.5 for j in c) for e in emb)  # noqa: E731
    best = min(radius(c) for c in itertools.combinations(range(10), k))
    assert radius(chosen) <= 2 * best + 1e-9


def test_select_per_class_and_random():
    labels = torch.tensor([0, 1] * 10)
    emb = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    for method in ("random", "herding", "kcenter"):
        idx = select_per_class(labels, 2, 3, get_method(method), emb, torch.Generator().manual_seed(0))
        assert labels[idx].tolist() == [0, 0, 0, 1, 1, 1]
        assert len(set(idx.tolist())) == 6
    a = random_subset(10, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, random_subset(10, 4, torch.Generator().manual_seed(1)))
