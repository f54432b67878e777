"""DM's GDumb-like class-incremental protocol (docs/protocols.md section 4).

For every class order and every step ``t``: the memory is the synthetic buffers of the classes
seen so far (:class:`~continual.memory.SyntheticMemory`, filled from the Avalanche experience);
``models`` fresh ConvNets with a K-way head are trained from scratch on it with the evaluation
recipe (DSA, LR x0.1 at half) and tested on the real test images of the classes seen so far.

Each (order, step) cell has its own generator, seeded from ``(seed, order, step)``: a cell's
result does not depend on which cells ran before it, so an interrupted run continues cell by
cell, and the models of step ``t`` are exactly those a fresh training on step ``t``'s memory
gives (tested).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import Tensor

from distill.evaluate import parse_arch
from distill.synset import SyntheticSet
from distill.train import derived_seed, train_group, use_ensemble

from .benchmark import dm_class_order, make_benchmark
from .config import ContinualConfig
from .memory import SyntheticMemory


def cell_seed(seed: int, order: int, step: int) -> int:
    """The generator seed of one (order, step) cell: independent of every other cell."""
    return derived_seed(seed, order, step)


@dataclass
class CellResult:
    order: int  # class-order seed
    step: int  # 0-based
    classes: int  # classes seen after this step
    accuracies: list[float]  # one per model
    seconds: float
    forgetting: list[float] | None = None  # one per model (experience replay; continual.replay)

    def key(self) -> str:
        return f"{self.order}/{self.step}"


def run_memory(
    memory: SyntheticSet | Callable[[int], SyntheticSet],
    test_x: Tensor,
    test_y: Tensor,
    benchmarks: dict[int, Any],
    cfg: ContinualConfig,
    device: torch.device | str = "cpu",
    done: dict[str, CellResult] | None = None,
    on_cell: Callable[[CellResult], None] | None = None,
    progress: Any = None,
    only: set[str] | None = None,
) -> dict[str, CellResult]:
    """Run the protocol for one memory over every class order in ``benchmarks`` (order seed ->
    Avalanche benchmark), or only the cells ``only`` names (``"order/step"``). ``memory`` is
    one set for every order, or a function giving the set of an order (coreset memories built
    step by step, ``continual.baselines``), called only for orders with cells left to run.
    ``test_x`` is the whole real test set in the sets' input space. Cells in ``done`` are kept,
    not recomputed; ``on_cell`` sees each new cell."""
    dev = torch.device(device)
    spec = parse_arch(cfg.archs[0])
    test_x, test_y = test_x.to(dev), test_y.to(dev)
    set_for = memory if callable(memory) else (lambda _order: memory)
    results = dict(done or {})
    ens = None

    def wanted(key: str) -> bool:
        return key not in results and (only is None or key in only)

    for order in cfg.orders or []:
        stream = list(benchmarks[order].train_stream)
        if not any(wanted(f"{order}/{int(exp.current_experience)}") for exp in stream):
            continue
        synset = set_for(order)
        k, size = synset.num_classes, (synset.images.shape[2], synset.images.shape[3])
        if ens is None:
            ens = use_ensemble(replace(cfg, models=int(cfg.models or 1)), spec, synset.images.shape[1], k, size, dev)
        buffers = SyntheticMemory(synset, cfg.ipc, device=dev)
        for exp in stream:
            step = int(exp.current_experience)
            key = f"{order}/{step}"
            if not wanted(key):
                continue
            t0 = time.perf_counter()
            buffers.post_adapt(None, exp)
            x, y = buffers.tensors
            gen = torch.Generator(device=dev).manual_seed(cell_seed(cfg.seed, order, step))
            group = train_group(spec, int(cfg.models or 1), x, y if buffers.soft is None else buffers.soft, k, cfg,
                                gen, ens, temperature=synset.soft_temperature)
            seen = torch.tensor(buffers.classes, device=dev)
            mask = torch.isin(test_y, seen)
            accs = group.accuracies(test_x[mask], test_y[mask])
            cell = CellResult(order, step, len(buffers.classes), accs, time.perf_counter() - t0)
            results[key] = cell
            if on_cell:
                on_cell(cell)
            if progress is not None:
                progress.update(1)
    return results


def benchmarks_for(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                   num_classes: int, cfg: ContinualConfig) -> dict[int, Any]:
    """One Avalanche benchmark per class-order seed (DM's orders)."""
    return {o: make_benchmark(train_x, train_y, test_x, test_y, dm_class_order(o, num_classes), cfg.steps)
            for o in cfg.orders or []}


@dataclass
class StepStats:
    classes: int
    mean: float
    std: float
    n: int  # accuracies pooled (models x orders)
    forgetting: float | None = None  # mean over models and orders (experience replay)


def step_stats(cells: dict[str, CellResult], orders: list[int], steps: int) -> list[StepStats]:
    """Mean and (population) std per step over all models and class orders, as DM reports."""
    out = []
    for s in range(steps):
        accs = [a for o in orders for a in cells[f"{o}/{s}"].accuracies]
        m = sum(accs) / len(accs)
        sd = math.sqrt(sum((a - m) ** 2 for a in accs) / len(accs))
        fs = [f for o in orders for f in (cells[f"{o}/{s}"].forgetting or [])]
        out.append(StepStats(cells[f"{orders[0]}/{s}"].classes, m, sd, len(accs), sum(fs) / len(fs) if fs else None))
    return out


def cell_to_dict(c: CellResult) -> dict[str, Any]:
    out = {"order": c.order, "step": c.step, "classes": c.classes, "accuracies": c.accuracies, "seconds": c.seconds}
    if c.forgetting is not None:
        out["forgetting"] = c.forgetting
    return out


def cell_from_dict(d: dict[str, Any]) -> CellResult:
    return CellResult(int(d["order"]), int(d["step"]), int(d["classes"]),
                      [float(a) for a in d["accuracies"]], float(d["seconds"]),
                      [float(f) for f in d["forgetting"]] if d.get("forgetting") is not None else None)

