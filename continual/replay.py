"""Experience replay (docs/protocols.md section 4, ``continual.protocol: er``): the way most
continual-learning code uses a memory, on Avalanche's own strategy.

For every class order and every one of ``models`` networks: one network learns the steps in
turn with Avalanche's ``Naive`` strategy and ``ReplayPlugin``; at step ``t`` each mini-batch
joins ``batch`` images of the step's real training data with ``batch`` images of the memory
(Avalanche's ``ReplayDataLoader``), and after the step the storage policy is updated, so during
step ``t`` the memory holds the classes of steps ``0 .. t-1``. Training follows the evaluation
recipe (SGD, momentum, weight decay, batch, ``epochs`` per step, LR x0.1 at half of each step,
DSA on every mini-batch); the network and the optimiser's momentum carry over from step to
step. After each step Avalanche's evaluation plugin measures the network on the test stream of
the steps so far: its stream accuracy (on the test images of the classes seen so far) and its
stream forgetting, the mean over earlier steps ``j`` of the accuracy on ``j``'s test images
right after step ``j`` minus the accuracy after step ``t`` (0 at step 0). Each network saves its
state after every step (:mod:`continual.checkpoint`) and a rerun resumes at the next step.

Memories: a SyntheticSet (:class:`~continual.memory.SyntheticMemory`, its hard labels), or a
real-exemplar storage policy of Avalanche at the same budget (:data:`REAL_POLICIES`): reservoir,
class-balanced, and herding on the learner's own embedding.

Avalanche's data loaders shuffle with torch's global generator; it is seeded from ``(seed,
order, model)`` before each network's run, so a run's cells do not depend on which ran before.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import (ClassBalancedBuffer, ExemplarsBuffer, HerdingSelectionStrategy,
                                               ParametricBuffer, ReservoirSamplingBuffer)
from avalanche.training.supervised import Naive
from torch import Tensor

from distill.errors import UserError
from distill.evaluate import parse_arch
from distill.nets import init_weights
from distill.synset import SyntheticSet
from distill.train import derived_seed, lr_at

from .benchmark import dm_class_order, make_benchmark, step_classes
from .checkpoint import load_step, save_step
from .config import ContinualConfig
from .memory import SyntheticMemory
from .protocol import CellResult
from .strategy import DSAPlugin

class EmbeddingHerding(HerdingSelectionStrategy):
    """Avalanche's herding (iCaRL's greedy choice, ``HerdingSelectionStrategy``) on the
    learner's own embedding, ``model.embed`` (the classifier's input): Avalanche reads features
    from a named layer's output, and the flattened last block has no layer of its own."""

    def __init__(self, model: torch.nn.Module):
        self.feature_extractor = _Embedding(model)


class _Embedding(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.embed(x)


def class_herding(ipc: int, k: int, model: torch.nn.Module) -> ExemplarsBuffer:
    """``ParametricBuffer`` grouped by class with herding, a fixed ``ipc`` images per class (as
    ``ClassBalancedBuffer(adaptive_size=False)``): each class's exemplars are chosen after its
    step from that step's data, on the features of the network that has just learnt it."""
    buf = ParametricBuffer(ipc * k, groupby="class", selection_strategy=EmbeddingHerding(model))
    buf.adaptive_size, buf.total_num_groups = False, k
    return buf


# real-exemplar memories: name -> (what it is, its policy for ipc images per class of K classes)
REAL_POLICIES: dict[str, tuple[str, Callable[[int, int, torch.nn.Module], ExemplarsBuffer]]] = {
    "reservoir": ("reservoir sampling over the whole stream, ipc x K images in all",
                  lambda ipc, k, model: ReservoirSamplingBuffer(ipc * k)),
    "class_balanced": ("a reservoir per class, ipc images each",
                       lambda ipc, k, model: ClassBalancedBuffer(ipc * k, adaptive_size=False, total_num_classes=k)),
    "herding_buffer": ("ipc images per class chosen by herding on the learner's embedding after the class's step",
                       class_herding),
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


ACCURACY = "Top1_Acc_Stream/eval_phase/test_stream"  # Avalanche's names of the stream metrics
FORGETTING = "StreamForgetting/eval_phase/test_stream"


def replay_strategy(model: torch.nn.Module, policy: ExemplarsBuffer, cfg: ContinualConfig,
                    device: torch.device, seed: int) -> Naive:
    """Avalanche's ``Naive`` with ``ReplayPlugin(storage_policy=policy)``, DSA, the recipe, and
    an evaluation plugin with Avalanche's stream accuracy and stream forgetting."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    epochs = int(cfg.epochs or 1000)
    return Naive(model=model, optimizer=opt, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=cfg.batch,
                 train_epochs=epochs, eval_mb_size=500, device=device,
                 plugins=[Replay(mem_size=policy.max_size, storage_policy=policy), DSAPlugin(cfg.dsa, seed),
                          RecipeLR(cfg.lr, epochs, cfg.schedule)],
                 evaluator=EvaluationPlugin(accuracy_metrics(stream=True), forgetting_metrics(stream=True),
                                            loggers=[]))


def stream_metrics(strategy: Naive) -> tuple[list[float], list[float]]:
    """The evaluation plugin's history: per step, the accuracy on the test images of the classes
    seen so far and the forgetting."""
    history = strategy.evaluator.get_all_metrics()
    return list(history[ACCURACY][1]), list(history[FORGETTING][1])


def learn_steps(memory: SyntheticSet | str, bm: Any, cfg: ContinualConfig, net: torch.nn.Module, k: int,
                device: torch.device, seed: int, checkpoint: Path | None = None,
                after_step: Callable[[int], None] | None = None) -> tuple[list[float], list[float], list[float]]:
    """One network learning every step of ``bm`` with ``memory`` replayed; after each step it is
    evaluated on ``bm.test_stream[: t + 1]`` and, with ``checkpoint``, its whole state saved
    there (``continual.checkpoint``), from which a later call resumes at the next step. Returns
    the accuracy, forgetting and seconds of every step."""
    initial = {name: v.clone() for name, v in net.state_dict().items()}

    def fresh() -> Naive:
        net.load_state_dict(initial)
        policy: ExemplarsBuffer = (REAL_POLICIES[memory][1](cfg.ipc, k, net) if isinstance(memory, str)
                                   else SyntheticMemory(memory, cfg.ipc))
        torch.manual_seed(seed)  # Avalanche's loaders draw from the global generator
        with quiet_avalanche():
            return replay_strategy(net, policy, cfg, device, seed)

    strategy = fresh()
    start, seconds = 0, []
    if checkpoint is not None and checkpoint.exists():
        try:
            start, seconds = load_step(strategy, checkpoint)
        except UserError as exc:  # a cache file, not the user's: say so and learn again from the start
            print(f"  {exc}; this network learns again from the first step")
            checkpoint.unlink(missing_ok=True)
            strategy = fresh()
    for t in range(start, cfg.steps):
        t0 = time.perf_counter()
        strategy.train(bm.train_stream[t], num_workers=0)
        strategy.eval(bm.test_stream[: t + 1], num_workers=0)
        seconds.append(time.perf_counter() - t0)
        if checkpoint is not None:
            save_step(strategy, checkpoint, t + 1, seconds)
        if after_step is not None:
            after_step(t)
    accs, forgets = stream_metrics(strategy)
    return accs, forgets, seconds


def checkpoint_path(folder: Path, order: int, model: int) -> Path:
    """Where network ``model`` of class order ``order`` keeps its step checkpoint."""
    return folder / f"er-order{order}-model{model}.pt"


def drop_checkpoints(folder: Path, order: int) -> None:
    """Remove an order's step checkpoints once its cells are stored."""
    for path in folder.glob(f"er-order{order}-model*.pt"):
        path.unlink(missing_ok=True)


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
    checkpoints: Path | None = None,
    after_step: Callable[[int, int, int], None] | None = None,
) -> dict[str, CellResult]:
    """Experience replay with ``memory`` (a set, a function giving an order's set, or a name of
    :data:`REAL_POLICIES`) over every class order of ``cfg``; ``train_x`` / ``test_x`` are in the
    memory's input space. An order with all its cells in ``done`` is kept. With ``checkpoints``
    (a folder) every network saves its state after each step and a rerun resumes there;
    ``after_step(order, model, step)`` is called after each step's checkpoint. Each order's cells
    are handed to ``on_cell`` when all its networks have finished."""
    dev = torch.device(device)
    k = int(max(int(train_y.max()), int(test_y.max())) + 1)
    spec = parse_arch(cfg.archs[0])
    size = (train_x.shape[2], train_x.shape[3])
    results = dict(done or {})
    for order in cfg.orders or []:
        keys = [f"{order}/{s}" for s in range(cfg.steps)]
        if all(key in results for key in keys):
            continue
        class_order = dm_class_order(order, k)
        groups = step_classes(class_order, cfg.steps)
        bm = make_benchmark(train_x, train_y, test_x, test_y, class_order, cfg.steps)
        synset = memory(order) if callable(memory) else memory  # one set per order, whatever the models
        models = int(cfg.models or 1)
        accs = [[0.0] * models for _ in range(cfg.steps)]
        forgets = [[0.0] * models for _ in range(cfg.steps)]
        seconds = [0.0] * cfg.steps
        for m in range(models):
            seed = derived_seed(cfg.seed, order, m)
            net = spec.build(train_x.shape[1], k, size)
            init_weights(net, cfg.init, torch.Generator().manual_seed(seed))
            ckpt = checkpoint_path(checkpoints, order, m) if checkpoints is not None else None
            hook = (lambda t, m=m: after_step(order, m, t)) if after_step is not None else None
            a, f, sec = learn_steps(synset, bm, cfg, net, k, dev, seed, ckpt, hook)
            for t in range(cfg.steps):
                accs[t][m], forgets[t][m] = a[t], f[t]
                seconds[t] += sec[t]
        for t in range(cfg.steps):
            cell = CellResult(order, t, sum(len(g) for g in groups[: t + 1]), accs[t], seconds[t], forgets[t])
            results[cell.key()] = cell
            if on_cell:
                on_cell(cell)
            if progress is not None:
                progress.update(1)
    return results
