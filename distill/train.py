"""The trainer: N fresh networks trained on a set of images with one recipe
(docs/protocols.md section 3), used by evaluation, continual learning, NAS and the coreset
embedding network; plus the LR schedule, embeddings, seeds and optional compilation.

N networks of one architecture train together. Every epoch draws one batch order per model
and every batch one DSA draw for all models' images (one family per model), so the two
execution paths see identical data and randomness:

- **ensembled** (networks without running statistics, e.g. the instance-norm ConvNet): the N
  models' parameters are stacked (``torch.func.stack_module_state``) and one ``vmap`` of
  ``functional_call`` runs all of them per batch; one SGD over the stacked tensors is N
  independent SGDs (momentum and weight decay are elementwise);
- **sequential** (batch norm, or anything ``vmap`` cannot run): the same batches, model by
  model.

The two paths agree up to floating-point error (tested).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import augment
from .errors import UserError, check_range, choice_error
from .nets import NetSpec, has_batch_statistics, init_weights
from .runtime import COMPILE_MODES, compiled, keep_host_memory, wants_compile


SCHEDULES = ("half", "constant", "step15")


def lr_at(epoch: int, epochs: int, lr: float, schedule: str = "half") -> float:
    """The learning rate of an epoch (docs/protocols.md section 3). ``half``: ``lr`` for the
    first half, ``lr / 10`` after (the DC / DM / DataDAM code; the default); ``constant``: ``lr``
    throughout (the ATOM paper's text); ``step15``: halved every 15 epochs (StepLR(15, 0.5), the
    ATOM paper's hyperparameter table)."""
    if schedule == "half":
        return lr if epoch < epochs // 2 else lr * 0.1
    if schedule == "constant":
        return lr
    if schedule == "step15":
        return lr * 0.5 ** (epoch // 15)
    raise choice_error("schedule", schedule, SCHEDULES)


@torch.no_grad()
def embed_all(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    """Final embeddings of ``x`` (eval mode)."""
    net.eval()
    return torch.cat([net.embed(x[i : i + batch]) for i in range(0, len(x), batch)])


def derived_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (e.g. run seed, class order, step) with numpy's
    ``SeedSequence``: distinct tuples give independent streams, none depends on another."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass
class TrainRecipe:
    """How N fresh networks are trained on a set of images; ``epochs: null`` is 1000 (digits: 300).

    The one recipe (docs/protocols.md section 3) of evaluation, continual learning (its step
    models), NAS candidates and the coreset embedding network."""

    models: int = 5  # networks per architecture
    archs: list[str] = field(default_factory=lambda: ["convnet"])  # name or name-norm, or "all"
    epochs: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 256
    dsa: str = augment.DEFAULT_STRATEGY  # "none": no augmentation
    init: str = "default"  # default (PyTorch's; measured better, benchmarks/RESULTS.md) | he
    schedule: str = "half"  # half (x0.1 at half; DC/DM/DataDAM code) | constant | step15 (ATOM's table)
    ensemble: str = "auto"  # auto (ensembled on GPU where possible) | on | off
    compile: str = "auto"  # torch.compile the ensembled forward: auto (on CUDA) | on | off
    seed: int = 0


ENSEMBLE_MODES = ("auto", "on", "off")


def check_recipe(cfg: TrainRecipe) -> None:
    """Reject recipe values no training can use (one clear error each)."""
    if cfg.ensemble not in ENSEMBLE_MODES:
        raise choice_error("ensemble", cfg.ensemble, ENSEMBLE_MODES)
    if cfg.compile not in COMPILE_MODES:
        raise choice_error("compile", cfg.compile, COMPILE_MODES)
    if cfg.models < 1:
        raise UserError(f"models must be at least 1, got {cfg.models}")
    if cfg.schedule not in SCHEDULES:
        raise choice_error("schedule", cfg.schedule, SCHEDULES)
    check_range("epochs", cfg.epochs, 1)
    check_range("lr", cfg.lr, 0, low_open=True)
    check_range("momentum", cfg.momentum, 0, 1, high_open=True)
    check_range("weight_decay", cfg.weight_decay, 0)
    check_range("batch", cfg.batch, 1)
    augment.parse_strategy(cfg.dsa)


# --------------------------------------------------------------------------------------


class ModelGroup:
    """N trained networks of one architecture, ensembled (stacked) or as a list."""

    def __init__(self, nets: list[nn.Module], ensemble: bool):
        self.ensemble = ensemble
        self.nets = nets
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        if ensemble:
            from torch.func import stack_module_state

            self.params, self.buffers = stack_module_state(nets)
            self.base = copy.deepcopy(nets[0]).to("meta")

    def __len__(self) -> int:
        return len(self.nets)

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def forward_each(self, x: Tensor) -> Tensor:
        """``x`` ``[M, B, C, H, W]`` (model m gets ``x[m]``) -> logits ``[M, B, K]``."""
        if self.ensemble:
            return stacked_call(self.base)(self.params, self.buffers, x)
        return torch.stack([net(x[m]) for m, net in enumerate(self.nets)])

    @torch.no_grad()
    def predict(self, x: Tensor, batch: int = 500) -> Tensor:
        """Predicted labels of every model: ``[M, N]`` (eval mode)."""
        outs = []
        if self.ensemble:
            self.base.eval()
            run = stacked_call(self.base, x_dim=None)  # every model sees the same images
            for i in range(0, len(x), batch):
                outs.append(run(self.params, self.buffers, x[i : i + batch]).argmax(-1))
        else:
            for net in self.nets:
                net.eval()
            for i in range(0, len(x), batch):
                outs.append(torch.stack([net(x[i : i + batch]).argmax(-1) for net in self.nets]))
        return torch.cat(outs, dim=1)

    def accuracies(self, x: Tensor, y: Tensor) -> list[float]:
        return (self.predict(x) == y.unsqueeze(0)).float().mean(dim=1).tolist()


def stacked_call(base: nn.Module, x_dim: int | None = 0) -> Callable[[dict, dict, Tensor], Tensor]:
    """``(stacked params, stacked buffers, x) -> logits [M, B, K]``: one ``vmap`` of
    ``functional_call`` on ``base`` (a parameter-free template, e.g. on the meta device) runs
    all M models at once. ``x_dim=0``: ``x`` is ``[M, B, ...]``, model m gets ``x[m]``;
    ``None``: every model gets the same ``x`` ``[B, ...]``. ``vmap`` is applied inside the
    returned function, so compiling it traces the whole stacked forward."""
    from torch.func import functional_call

    def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    def run(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.vmap(one, in_dims=(0, 0, x_dim))(p, b, x)

    return run


@functools.lru_cache(maxsize=32)
def stacked_forward(spec: NetSpec, in_channels: int, num_classes: int, size: tuple[int, int],
                    compile_it: bool) -> Callable[[dict, dict, Tensor], Tensor]:
    """``(stacked params, stacked buffers, x [M, B, ...]) -> logits [M, B, K]`` for networks of
    ``spec`` (train mode), compiled when ``compile_it``: one fused graph for all models, the same
    values up to float rounding (the speed-up is measured in benchmarks/RESULTS.md).

    Made once per architecture and shape in a process: compilation guards on the module object,
    so a new function per training run would recompile every time (and, past the compiler's
    recompile limit, silently run eagerly)."""
    base = spec.build(in_channels, num_classes, size).to("meta")
    base.train()
    return compiled(stacked_call(base), compile_it)


def use_ensemble(cfg: TrainRecipe, spec: NetSpec, in_channels: int, num_classes: int,
                 size: tuple[int, int], device: torch.device | str, name: str | None = None) -> bool:
    """The one decision whether ``cfg.models`` networks train as one ensemble: ``on`` (an error
    where impossible), ``off``, or ``auto``: on a GPU with more than one model, where
    :func:`can_ensemble` allows (on the CPU ``vmap``'s grouped convolutions were slower than one
    model after another, benchmarks/RESULTS.md; both paths give the same networks)."""
    dev = torch.device(device)
    if cfg.ensemble == "off":
        return False
    wanted = cfg.ensemble == "on" or (cfg.models > 1 and dev.type == "cuda")
    ok = wanted and can_ensemble(spec, in_channels, num_classes, size, dev)
    if cfg.ensemble == "on" and not ok:
        raise UserError(f"{name or spec.arch} cannot be ensembled (batch statistics or vmap limits); use ensemble: auto")
    return ok


def can_ensemble(spec: NetSpec, in_channels: int, num_classes: int, size: tuple[int, int],
                 device: torch.device) -> bool:
    """True when ``vmap`` can train this architecture (no running statistics, and a trial
    forward/backward of two stacked models succeeds)."""
    net = spec.build(in_channels, num_classes, size).to(device)
    if has_batch_statistics(net):
        return False
    try:
        group = ModelGroup([net, copy.deepcopy(net)], ensemble=True)
        out = group.forward_each(torch.zeros(2, 2, in_channels, *size, device=device))
        out.sum().backward()
        return True
    except Exception:  # noqa: BLE001 - any vmap limitation means: train one by one
        return False


def train_group(
    spec: NetSpec,
    n_models: int,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    cfg: TrainRecipe,
    generator: torch.Generator,
    ensemble: bool,
    progress: bool = False,
    desc: str = "",
    max_steps: int | None = None,
    temperature: float = 1.0,
) -> ModelGroup:
    """Train ``n_models`` fresh networks of ``spec`` on ``(x, y)`` with the evaluation recipe;
    ``max_steps`` stops after that many SGD steps (early stopping; the LR schedule still spans
    ``cfg.epochs``). ``y`` holds class ids ``[N]`` (cross-entropy) or soft labels ``[N, K]``
    (:func:`soft_loss` at ``temperature``; docs/protocols.md section 3)."""
    from tqdm import tqdm

    dev = x.device
    if dev.type == "cpu":
        keep_host_memory()  # freed activations are reused, not page-faulted in again (distill.runtime)
    size = (x.shape[2], x.shape[3])
    nets = [spec.build(x.shape[1], num_classes, size).to(dev) for _ in range(n_models)]
    for net in nets:
        init_weights(net, cfg.init, generator)
        net.train()
    group = ModelGroup(nets, ensemble)
    stacked = (stacked_forward(spec, x.shape[1], num_classes, size, wants_compile(cfg.compile, dev))
               if ensemble else None)
    params = group.parameters() if ensemble else None
    opts = ([torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)]
            if ensemble else
            [torch.optim.SGD(n.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
             for n in nets])
    epochs = int(cfg.epochs if cfg.epochs is not None else 1000)
    n = len(x)
    soft = y.is_floating_point()
    steps = 0
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch, epochs, cfg.lr, cfg.schedule)
        order = torch.rand((n_models, n), generator=generator, device=dev).argsort(dim=1)
        for i in range(0, n, cfg.batch):
            if max_steps is not None and steps >= max_steps:
                return group
            steps += 1
            idx = order[:, i : i + cfg.batch]  # [M, B]
            xb, yb = x[idx], y[idx]
            if cfg.dsa and cfg.dsa != "none":
                flat = augment.per_sample(xb.flatten(0, 1), generator, cfg.dsa, family_groups=n_models)
                xb = flat.view_as(xb)
            if ensemble:
                logits = stacked(group.params, group.buffers, xb)
                # sum of the models' mean losses: each model gets exactly its own gradient
                loss = (soft_loss(logits.flatten(0, 1), yb.flatten(0, 1), temperature, "sum") if soft else
                        F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum")) / idx.shape[1]
                opts[0].zero_grad(set_to_none=True)
                loss.backward()
                opts[0].step()
            else:
                for m, net in enumerate(nets):
                    loss = soft_loss(net(xb[m]), yb[m], temperature) if soft else F.cross_entropy(net(xb[m]), yb[m])
                    opts[m].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[m].step()
    return group


def soft_loss(logits: Tensor, targets: Tensor, temperature: float = 1.0, reduction: str = "mean") -> Tensor:
    """Training on soft labels (docs/protocols.md section 3): ``T^2 * KL(q || softmax(z / T))``
    for target distributions ``q`` ``[B, K]`` and logits ``z``, the knowledge-distillation form
    (Hinton et al. 2015) that SRe2L-style releases evaluate with; it differs from the soft
    cross-entropy ``-sum q log softmax(z / T)`` only by the targets' entropy, a constant, so the
    gradients (and the trained networks) are the same: DD-Ranking's ``kl`` and ``sce`` criteria
    train alike at ``T = 1``."""
    t = float(temperature)
    log_p = F.log_softmax(logits / t, dim=1)
    per = (torch.xlogy(targets, targets) - targets * log_p).sum(1) * (t * t)
    return per.sum() if reduction == "sum" else per.mean()


def steps_per_epoch(n: int, batch: int) -> int:
    """SGD steps in one epoch over ``n`` images (the last batch may be smaller)."""
    return -(-n // batch)
