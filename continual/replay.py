"""Experience replay (docs/protocols.md section 4, ``continual.protocol: er``): the way most
continual-learning code uses a memory, on Avalanche's own strategy.

For every class order and every one of ``models`` networks: one network learns the steps in
turn with Avalanche's ``Naive`` strategy and ``ReplayPlugin``; at step ``t`` each mini-batch
joins ``batch`` images of the step's real training data with ``batch`` images of the memory
(Avalanche's ``ReplayDataLoader``), and after the step the storage policy is updated, so during
step ``t`` the memory holds the classes of steps ``0 .. t-1``. Training follows the evaluation
recipe (SGD, momentum, weight decay, batch, ``epochs`` per step, LR x0.1 at half of each step,
DSA on every mini-batch). After each step the network is tested on the real test images of the
classes seen so far, and on each earlier step's classes for the forgetting (Chaudhry et al.,
"Riemannian Walk for Incremental Learning", ECCV 2018): the mean over earlier steps ``j`` of the
best accuracy on ``j``'s classes after any step before ``t`` minus the accuracy after ``t``.

Memories: a SyntheticSet (:class:`~continual.memory.SyntheticMemory`, its hard labels), or a
real-exemplar storage policy of Avalanche at the same budget (:data:`REAL_POLICIES`).

Avalanche's data loaders shuffle with torch's global generator; it is seeded from ``(seed,
order, model)`` before each network's run, so a run's cells do not depend on which ran before.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, ExemplarsBuffer, ReservoirSamplingBuffer
from avalanche.training.supervised import Naive
from torch import Tensor

from distill.evaluate import parse_arch
from distill.nets import init_weights
from distill.synset import SyntheticSet
from distill.train import derived_seed, lr_at

from .benchmark import dm_class_order, make_benchmark, step_classes
from .config import ContinualConfig
from .memory import SyntheticMemory
from .protocol import CellResult
from .strategy import DSAPlugin

# real-exemplar memories: name -> (what it is, its policy for ipc images per class of K classes)
REAL_POLICIES: dict[str, tuple[str, Callable[[int, int], ExemplarsBuffer]]] = {
    "reservoir": ("reservoir sampling over the whole stream, ipc x K images in all",
                  lambda ipc, k: ReservoirSamplingBuffer(ipc * k)),
    "class_balanced": ("a reservoir per class, ipc images each",
                       lambda ipc, k: ClassBalancedBuffer(ipc * k, adaptive_size=False, total_num_classes=k)),
}


class RecipeLR(SupervisedPlugin):
    """The recipe's learning-rate schedule over each step's epochs (``distill.train.lr_at``)."""

    def __init__(self, lr: float, epochs: int, schedule: str):
        super().__init__()
        self.lr, self.epochs, self.schedule = lr, epochs, schedule

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        for g in strategy.optimizer.param_groups:
            g["lr"] = lr_at(strategy.clock.train_exp_epochs, self.epochs, self.lr, self.schedule)


class Replay(ReplayPlugin):
    """Avalanche's ``ReplayPlugin``, updating its storage policy through ``post_adapt``: the
    plugin of Avalanche 0.6 still calls the policies' deprecated ``update``, which only forwards
    to ``post_adapt`` and warns at every step."""

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.storage_policy.post_adapt(strategy, strategy.experience)


@contextmanager
def quiet_avalanche() -> Iterator[None]:
    """Avalanche announces an evaluator without loggers (this protocol measures the network
    itself); that warning alone is silenced, here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        yield


def forgetting(acc: list[list[float]], t: int) -> float:
    """Forgetting after step ``t`` from ``acc[l][j]`` (accuracy on step ``j``'s classes after
    step ``l``): mean over ``j < t`` of ``max_{j <= l < t} acc[l][j] - acc[t][j]``; 0 at step 0."""
    if t == 0:
        return 0.0
    return sum(max(acc[l][j] for l in range(j, t)) - acc[t][j] for j in range(t)) / t


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> float:
    model.eval()
    hits = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / max(len(y), 1)


def replay_strategy(model: torch.nn.Module, policy: ExemplarsBuffer, cfg: ContinualConfig,
                    device: torch.device, seed: int) -> Naive:
    """Avalanche's ``Naive`` with ``ReplayPlugin(storage_policy=policy)``, DSA and the recipe."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    epochs = int(cfg.epochs or 1000)
    return Naive(model=model, optimizer=opt, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=cfg.batch,
                 train_epochs=epochs, eval_mb_size=500, device=device,
                 plugins=[Replay(mem_size=policy.max_size, storage_policy=policy), DSAPlugin(cfg.dsa, seed),
                          RecipeLR(cfg.lr, epochs, cfg.schedule)],
                 evaluator=EvaluationPlugin(loggers=[]))


def run_replay(
    memory: SyntheticSet | Callable[[int], SyntheticSet] | str,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    cfg: ContinualConfig,
    device: torch.device | str = "cpu",
    done: dict[str, CellResult] | None = None,
    on_cell: Callable[[CellResult], None] | None = None,
    progress: Any = None,
) -> dict[str, CellResult]:
    """Experience replay with ``memory`` (a set, a function giving an order's set, or a name of
    :data:`REAL_POLICIES`) over every class order of ``cfg``; ``train_x`` / ``test_x`` are in the
    memory's input space. An order with all its cells in ``done`` is kept; an order is run
    whole (its steps depend on each other), each cell handed to ``on_cell`` as it finishes."""
    dev = torch.device(device)
    k = int(max(int(train_y.max()), int(test_y.max())) + 1)
    spec = parse_arch(cfg.archs[0])
    size = (train_x.shape[2], train_x.shape[3])
    results = dict(done or {})
    test_x, test_y = test_x.to(dev), test_y.to(dev)
    for order in cfg.orders or []:
        keys = [f"{order}/{s}" for s in range(cfg.steps)]
        if all(key in results for key in keys):
            continue
        class_order = dm_class_order(order, k)
        groups = step_classes(class_order, cfg.steps)
        bm = make_benchmark(train_x, train_y, test_x.cpu(), test_y.cpu(), class_order, cfg.steps)
        step_masks = [torch.isin(test_y, torch.tensor(g, device=dev)) for g in groups]  # each step's test images
        synset = memory(order) if callable(memory) else memory  # one set per order, whatever the models
        models = int(cfg.models or 1)
        accs = [[0.0] * models for _ in range(cfg.steps)]
        forgets = [[0.0] * models for _ in range(cfg.steps)]
        seconds = [0.0] * cfg.steps
        for m in range(models):
            seed = derived_seed(cfg.seed, order, m)
            gen = torch.Generator().manual_seed(seed)
            net = spec.build(train_x.shape[1], k, size)
            init_weights(net, cfg.init, gen)
            policy: ExemplarsBuffer = (REAL_POLICIES[synset][1](cfg.ipc, k) if isinstance(synset, str)
                                       else SyntheticMemory(synset, cfg.ipc))
            torch.manual_seed(seed)  # Avalanche's loaders draw from the global generator
            with quiet_avalanche():
                strategy = replay_strategy(net, policy, cfg, dev, seed)
            per_step: list[list[float]] = []
            seen = torch.zeros_like(test_y, dtype=torch.bool)
            for t, exp in enumerate(bm.train_stream):
                t0 = time.perf_counter()
                strategy.train(exp, num_workers=0)
                seen |= step_masks[t]
                accs[t][m] = accuracy(strategy.model, test_x[seen], test_y[seen])
                per_step.append([accuracy(strategy.model, test_x[mk], test_y[mk]) for mk in step_masks[: t + 1]])
                forgets[t][m] = forgetting(per_step, t)
                seconds[t] += time.perf_counter() - t0
        for t in range(cfg.steps):
            cell = CellResult(order, t, sum(len(g) for g in groups[: t + 1]), accs[t], seconds[t], forgets[t])
            results[cell.key()] = cell
            if on_cell:
                on_cell(cell)
            if progress is not None:
                progress.update(1)
    return results
