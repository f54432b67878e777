"""Evaluating a synthetic set: train N fresh networks on it, test them on the real test set.

The recipe (docs/protocols.md section 3): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256,
1000 epochs, LR x0.1 at half, per-sample DSA on every batch (one family per batch), no
augmentation at test time. The test images go through the set's OWN stored preprocessing
(normalisation and ZCA), never a refit.

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
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import augment
from .data import ImageData
from .errors import UserError, choice_error
from .nets import ARCHS, NORMS, NetSpec, has_batch_statistics, init_weights
from .synset import SyntheticSet
from .train import COMPILE_MODES, compiled, lr_at, wants_compile

ENSEMBLE_MODES = ("auto", "on", "off")
# "all": the papers' cross-architecture set, each with its norm variants
ALL_ARCHS = ("convnet", "convnet-batchnorm", "alexnet", "alexnet-batchnorm", "vgg11",
             "vgg11-batchnorm", "resnet18", "resnet18-batchnorm", "vit")
QUICK_EPOCHS = {"digits": 300}


@dataclass
class EvalConfig:
    """How a synthetic set is evaluated; ``epochs: null`` is 1000 (digits: 300)."""

    models: int = 5  # networks per architecture
    archs: list[str] = field(default_factory=lambda: ["convnet"])  # name or name-norm, or "all"
    epochs: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 256
    dsa: str = augment.DEFAULT_STRATEGY  # "none": no augmentation
    init: str = "he"  # he | default
    ensemble: str = "auto"  # auto (ensembled on GPU where possible) | on | off
    compile: str = "auto"  # torch.compile the ensembled forward: auto (on CUDA) | on | off
    seed: int = 0


def parse_arch(token: str) -> NetSpec:
    """``convnet``, ``resnet18-batchnorm``, ``alexnet-instancenorm``, ... -> NetSpec."""
    token = token.strip().lower()
    name, _, norm = token.partition("-")
    if name not in ARCHS:
        raise choice_error("architecture", token, [*ARCHS, "<arch>-<norm>", "all"])
    if norm and norm not in NORMS:
        raise choice_error(f"norm in {token!r}", norm, NORMS)
    if name == "vit" and norm:
        raise UserError("vit has no norm variants (it uses LayerNorm)")
    return NetSpec(arch=name, norm=norm or None)


def expand_archs(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        out.extend(ALL_ARCHS if t.strip().lower() == "all" else [t.strip().lower()])
    for t in out:
        parse_arch(t)
    return list(dict.fromkeys(out))


def eval_inputs(synset: SyntheticSet, data: ImageData) -> Tensor:
    """The real test images mapped through the set's own preprocessing, after checking that the
    set fits the dataset (classes, channels, image size)."""
    src = synset.meta.get("dataset")
    if src and src != data.name:
        raise UserError(f"the synthetic set was made from {src!r}, not {data.name!r}; evaluate it on "
                        f"--dataset {src}")
    if synset.num_classes != data.num_classes:
        raise UserError(f"the synthetic set has {synset.num_classes} classes, {data.name} has "
                        f"{data.num_classes}")
    want = (data.channels, *data.image_size)
    if tuple(synset.image_shape) != want:
        raise UserError(f"the synthetic set's images are {tuple(synset.image_shape)}, {data.name} "
                        f"images are {want} (channels, height, width)")
    return synset.preprocess(data.test_x)


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

    def _call(self, p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        from torch.func import functional_call

        return functional_call(self.base, (p, b), (x,))

    def forward_each(self, x: Tensor) -> Tensor:
        """``x`` ``[M, B, C, H, W]`` (model m gets ``x[m]``) -> logits ``[M, B, K]``."""
        if self.ensemble:
            return torch.vmap(self._call, in_dims=(0, 0, 0))(self.params, self.buffers, x)
        return torch.stack([net(x[m]) for m, net in enumerate(self.nets)])

    @torch.no_grad()
    def predict(self, x: Tensor, batch: int = 500) -> Tensor:
        """Predicted labels of every model: ``[M, N]`` (eval mode)."""
        outs = []
        if self.ensemble:
            self.base.eval()
            run = torch.vmap(self._call, in_dims=(0, 0, None))
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


@functools.lru_cache(maxsize=32)
def stacked_forward(spec: NetSpec, in_channels: int, num_classes: int, size: tuple[int, int],
                    compile_it: bool) -> Callable[[dict, dict, Tensor], Tensor]:
    """``(stacked params, stacked buffers, x [M, B, ...]) -> logits [M, B, K]`` for networks of
    ``spec`` (train mode), compiled when ``compile_it``: one fused graph for all models, the same
    values up to float rounding (on the H100 a 20-model training step took 33 instead of 89 ms,
    benchmarks/RESULTS.md).

    Made once per architecture and shape in a process: compilation guards on the module object,
    so a new function per training run would recompile every time (and, past the compiler's
    recompile limit, silently run eagerly)."""
    from torch.func import functional_call

    base = spec.build(in_channels, num_classes, size).to("meta")
    base.train()

    def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    return compiled(lambda p, b, xs: torch.vmap(one, in_dims=(0, 0, 0))(p, b, xs), compile_it)


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
    cfg: EvalConfig,
    generator: torch.Generator,
    ensemble: bool,
    progress: bool = False,
    desc: str = "",
    max_steps: int | None = None,
) -> ModelGroup:
    """Train ``n_models`` fresh networks of ``spec`` on ``(x, y)`` with the evaluation recipe;
    ``max_steps`` stops after that many SGD steps (early stopping; the LR schedule still spans
    ``cfg.epochs``)."""
    from tqdm import tqdm

    dev = x.device
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
    epochs = int(cfg.epochs or 1000)
    n = len(x)
    steps = 0
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch, epochs, cfg.lr)
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
                loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum") / idx.shape[1]
                opts[0].zero_grad(set_to_none=True)
                loss.backward()
                opts[0].step()
            else:
                for m, net in enumerate(nets):
                    loss = F.cross_entropy(net(xb[m]), yb[m])
                    opts[m].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[m].step()
    return group


def steps_per_epoch(n: int, batch: int) -> int:
    """SGD steps in one epoch over ``n`` images (the last batch may be smaller)."""
    return -(-n // batch)


@dataclass
class ArchResult:
    arch: str
    accuracies: list[float]
    seconds: float
    ensembled: bool

    @property
    def mean(self) -> float:
        return float(sum(self.accuracies) / len(self.accuracies))

    @property
    def std(self) -> float:
        m = self.mean
        return float(math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies)))

    def row(self) -> dict[str, Any]:
        return {"arch": self.arch, "models": len(self.accuracies), "mean": self.mean, "std": self.std,
                "seconds": self.seconds, "ensembled": self.ensembled, "accuracies": self.accuracies}


def resolve_eval(cfg: EvalConfig, dataset: str | None = None) -> EvalConfig:
    if cfg.ensemble not in ENSEMBLE_MODES:
        raise choice_error("ensemble", cfg.ensemble, ENSEMBLE_MODES)
    if cfg.compile not in COMPILE_MODES:
        raise choice_error("compile", cfg.compile, COMPILE_MODES)
    if cfg.models < 1:
        raise UserError(f"models must be at least 1, got {cfg.models}")
    augment.parse_strategy(cfg.dsa)
    epochs = cfg.epochs if cfg.epochs is not None else QUICK_EPOCHS.get(dataset or "", 1000)
    return replace(cfg, epochs=epochs, archs=expand_archs(cfg.archs))


def evaluate_set(
    synset: SyntheticSet,
    test_x: Tensor,
    test_y: Tensor,
    cfg: EvalConfig,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[ArchResult]:
    """Train ``cfg.models`` networks per architecture on ``synset`` and test on ``(test_x,
    test_y)`` (already in the set's input space, see :func:`eval_inputs`)."""
    dev = torch.device(device)
    x = synset.images.to(dev)
    y = synset.labels.to(dev)
    test_x, test_y = test_x.to(dev), test_y.to(dev)
    size = (x.shape[2], x.shape[3])
    results = []
    for i, token in enumerate(cfg.archs):
        spec = parse_arch(token)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + i)
        # auto: ensembled on a GPU; on the CPU vmap's grouped convolutions are slower than
        # training one model after another (benchmarks/RESULTS.md), with identical results
        wanted = cfg.ensemble == "on" or (cfg.ensemble == "auto" and cfg.models > 1 and dev.type == "cuda")
        ens = wanted and can_ensemble(spec, x.shape[1], synset.num_classes, size, dev)
        if cfg.ensemble == "on" and not ens:
            raise UserError(f"{token} cannot be ensembled (batch statistics or vmap limits); use ensemble: auto")
        t0 = time.perf_counter()
        group = train_group(spec, cfg.models, x, y, synset.num_classes, cfg, gen, ens, progress,
                            desc=f"{token} x{cfg.models}{' (ensembled)' if ens else ''}")
        accs = group.accuracies(test_x, test_y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        results.append(ArchResult(token, accs, time.perf_counter() - t0, ens))
    return results
