"""The class-incremental benchmark (docs/protocols.md section 4): DM's class orders and an
Avalanche 0.6 scenario with ``S`` experiences of ``K / S`` new classes each."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from distill.errors import UserError


def dm_class_order(seed: int, num_classes: int) -> list[int]:
    """DM's class order for ``seed``: ``np.random.seed(seed); np.random.permutation(K)``.

    A ``RandomState(seed)`` draws the same stream as the global generator after
    ``np.random.seed(seed)``, without touching global state."""
    return [int(c) for c in np.random.RandomState(seed).permutation(num_classes)]


def step_classes(order: list[int], steps: int) -> list[list[int]]:
    """Split a class order into ``steps`` equal groups (the new classes of each step)."""
    k = len(order)
    if steps < 1 or k % steps:
        divisors = [d for d in range(1, k + 1) if k % d == 0]
        raise UserError(f"{k} classes cannot be split into {steps} equal steps; use one of "
                        f"{', '.join(map(str, divisors))}")
    per = k // steps
    return [list(order[i * per : (i + 1) * per]) for i in range(steps)]


def task_dataset(x: Tensor, y: Tensor) -> Any:
    """Tensors -> ``(x, y, task label 0)`` samples. The benchmark's experiences and the synthetic
    memories both take this form: Avalanche's class-balanced buffer gives its exemplars a task
    label, and replay concatenates memory and experience samples, which must then agree."""
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    return _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y.tolist())


def make_benchmark(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                   order: list[int], steps: int) -> Any:
    """Avalanche's ``class_incremental_benchmark`` over the given tensors, experiences
    following ``order`` (labels keep their original ids, so heads stay K-way)."""
    from avalanche.benchmarks.scenarios import class_incremental_benchmark

    step_classes(order, steps)  # a clear error for an uneven split
    return class_incremental_benchmark(
        {"train": task_dataset(train_x, train_y), "test": task_dataset(test_x, test_y)},
        class_order=list(order), num_experiences=steps)
