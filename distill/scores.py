"""DD-Ranking's scores (Li et al., "DD-Ranking: Rethinking the Evaluation of Dataset
Distillation", 2025; the ``ddranking`` package 0.2.0; docs/protocols.md section 8). Accuracies
are fractions in [0, 1]:

- improvement over random, ``IOR = acc(set) - acc(random real images at the same IPC)``, both
  trained with the same recipe and labels;
- hard-label recovery, ``HLR = acc(whole training set, hard labels) - acc(set, hard labels)``;
- label-robust score, ``alpha = w * IOR - (1 - w) * HLR`` (``w = 0.5`` by default),
  ``LRS = (exp(alpha) - exp(-1)) / (e - exp(-1))``, which maps ``alpha`` in [-1, 1] to [0, 1].
"""

from __future__ import annotations

import math

LRS_WEIGHT = 0.5


def improvement_over_random(acc_set: float, acc_random: float) -> float:
    """``IOR``: how much the set beats random real images of the same budget."""
    return acc_set - acc_random


def hard_label_recovery(acc_whole: float, acc_set_hard: float) -> float:
    """``HLR``: how much of the whole data's accuracy the set's images with hard labels miss."""
    return acc_whole - acc_set_hard


def label_robust_score(ior: float, hlr: float, weight: float = LRS_WEIGHT) -> float:
    """``LRS`` from ``IOR`` and ``HLR`` (fractions)."""
    alpha = weight * ior - (1 - weight) * hlr
    return (math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1))
