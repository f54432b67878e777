"""One distillation iteration of a matching method (docs/protocols.md section 2):

1. the frozen network is re-initialised in place from the run's generator;
2. ``batch_real`` real images of every class are drawn at once (``ClassIndex.sample``);
3. DSA parameters are drawn once per class (siamese: the class's real and synthetic images
   share them);
4. the real images go through the network in class chunks without grad (only per-class
   statistics are kept); the synthetic images, decoded from their stored form
   (``distill.multiformation``), in class chunks whose loss is back-propagated at once;
5. the gradient lands in the stored synthetic images.

The method (``distill.methods``) supplies the statistics and the loss; the loss is a sum over
classes, so the chunking changes nothing but speed and memory (tested). A Python loop over
classes runs only where a chunk holds a single class (the CPU default, where small feature maps
stay in cache). With a batch-norm network the statistics span all classes of a pass, as in the
DataDAM code, so such networks see every class in one pass.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from . import augment
from .data import ClassIndex
from .errors import UserError
from .matching import concat_statistics
from .methods import MatchingMethod, Stats, get_method
from .multiformation import decode
from .nets import NetSpec, has_batch_statistics, init_weights
from .settings import SetConfig
from .runtime import compiled, wants_compile


def chunk_classes(images: int | None, net: torch.nn.Module, k: int, per_class: int, device: torch.device,
                  auto_gpu: int) -> int:
    """How many classes one forward pass holds: about ``images`` per pass (``None``:
    ``auto_gpu`` on a GPU, 128 on the CPU, where smaller feature maps stay in cache), rounded
    down to a divisor of ``k`` when one is at least half as large, so that every pass has the
    same shape (a compiled network then needs one graph per side, not one per remainder).
    Batch-norm networks see all classes at once, as in the DataDAM code, since chunks would
    change their statistics. The GPU defaults (4096 real images per pass, no graph kept; 512
    synthetic ones, whose graph lives until the chunk's backward) are measured in
    benchmarks/RESULTS.md."""
    if has_batch_statistics(net):
        return k
    images = images or (auto_gpu if device.type == "cuda" else 128)
    most = max(1, min(k, images // max(per_class, 1)))
    even = max(d for d in range(1, most + 1) if k % d == 0)
    return even if 2 * even >= most else most


def matching_net(cfg: SetConfig, channels: int, num_classes: int, size: tuple[int, int],
                 device: torch.device) -> torch.nn.Module:
    """The frozen network whose features are matched; its ``forward_features`` is compiled where
    ``cfg.compile`` asks. :func:`loss_and_grad` re-initialises every weight (and resets running
    statistics) from the run's generator at every iteration, so no state survives between
    iterations or runs: one network per architecture, shape and device serves every run of a
    process, and is compiled once (compilation guards on the module object; a new network per
    run would recompile every time)."""
    dev = torch.device(device)
    return _matching_net(cfg.net.spec(), channels, num_classes, tuple(size), str(dev),
                         wants_compile(cfg.compile, dev))


@functools.lru_cache(maxsize=16)
def _matching_net(spec: NetSpec, channels: int, num_classes: int, size: tuple[int, int], device: str,
                  compile_it: bool) -> torch.nn.Module:
    net = spec.build(channels, num_classes, size).to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    # an instance attribute: loss_and_grad calls net.forward_features, compiled or not
    net.forward_features = compiled(net.forward_features, compile_it, dynamic=False)  # two shapes per run
    return net


def attention_layers(cfg: SetConfig, taps: int) -> tuple[int, ...] | None:
    """The 0-based taps of ``cfg.layers`` (1-based; None: the method's default, 1..L-1),
    checked against the network's ``taps``."""
    if cfg.layers is None:
        return None
    bad = [layer for layer in cfg.layers if not 1 <= layer <= taps]
    if bad:
        raise UserError(f"layers {bad} out of range: the network has attention taps 1..{taps}")
    return tuple(layer - 1 for layer in cfg.layers)


def bound(cfg: SetConfig) -> tuple[MatchingMethod, Any]:
    """The matching method of a resolved config and its typed hyperparameters."""
    method = get_method(cfg.method)
    if not isinstance(method, MatchingMethod):
        raise UserError(f"{cfg.method} is a selection method: it has no distillation step")
    return method, method.typed(cfg.params)


def _slice(stats: Stats, c0: int, c1: int) -> Stats:
    return {name: [t[c0:c1] for t in ts] for name, ts in stats.items()}


def loss_and_grad(net: torch.nn.Module, train_x: Tensor, index: ClassIndex, syn: Tensor, cfg: SetConfig,
                  method: MatchingMethod, p: Any, gen: torch.Generator,
                  classes: tuple[int, int] | None = None) -> Tensor:
    """One iteration: accumulates the loss's gradient into ``syn.grad`` (``syn``: the stored
    images, class-major, ``cfg.ipc`` per class) and returns the detached loss.

    ``p`` is the method's typed parameters (``method.typed``). The random draws do not depend
    on the chunking. ``classes = (lo, hi)`` computes only those classes' terms (one rank's shard
    under torchrun); the draws are still made for all classes, so every shard sees the same ones.
    """
    k, dev = index.num_classes, syn.device
    per_syn = (len(syn) // k) * cfg.factor * cfg.factor  # decoded synthetic images per class
    layers = attention_layers(cfg, len(net.taps))
    init_weights(net, cfg.net.init or "he", gen)
    net.train()
    idx = index.sample(cfg.batch_real, gen)  # [K, B]
    params = augment.sample_params(k, tuple(syn.shape[2:]), gen, cfg.dsa, dev)
    lo, hi = classes if classes is not None else (0, k)
    step = chunk_classes(cfg.chunk, net, k, cfg.batch_real, dev, auto_gpu=4096)
    chunks = []
    with torch.no_grad():
        for c0 in range(lo, hi, step):
            ids = idx[c0 : min(hi, c0 + step)]
            groups = augment.group_ids(c0, c0 + len(ids), cfg.batch_real, dev)
            feats, emb = net.forward_features(augment.apply(train_x[ids.flatten()], params.index(groups)))
            chunks.append(method.statistics(p, feats, emb, len(ids), layers))
    real = concat_statistics(chunks) if len(chunks) > 1 else chunks[0]
    total = torch.zeros((), device=dev)
    ipc = len(syn) // k
    step = chunk_classes(cfg.syn_chunk, net, k, per_syn, dev, auto_gpu=512)
    for c0 in range(lo, hi, step):
        c1 = min(hi, c0 + step)
        x_syn = decode(syn[c0 * ipc : c1 * ipc], cfg.factor)
        x_syn = augment.apply(x_syn, params.index(augment.group_ids(c0, c1, per_syn, dev)))
        feats, emb = net.forward_features(x_syn)
        loss = method.loss(p, _slice(real, c0 - lo, c1 - lo), method.statistics(p, feats, emb, c1 - c0, layers))
        loss.backward()
        total = total + loss.detach()
    return total
