"""The distillation loop: all classes in one pass, checkpoints, exact resume.

One iteration (docs/protocols.md section 2):

1. re-initialise the frozen ConvNet from the run's generator;
2. draw ``batch_real`` real images of EVERY class (one indexing op on a padded class index);
3. siamese DSA: class k's real and synthetic images share one parameter draw;
4. one batched forward of all real images (no grad) and one of all synthetic images;
5. the matching loss summed over classes (``distill.matching``), one SGD step on all
   synthetic images.

There is no Python loop over classes: per-class statistics are reshapes of class-major
stacks. With a batch-norm network the statistics span all classes of a forward pass, as in
the DataDAM code (which also concatenates the classes).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from . import augment, coreset
from .config import to_dict
from .data import ClassIndex, ImageData
from .datasets import quick_defaults
from .errors import UserError, check_range, choice_error, reason
from .matching import ATTENTION_MAPS, MatchWeights, class_statistics, concat_statistics, statistics_loss
from .methods import METHODS, get_method
from .nets import INITS, NetSpec, has_batch_statistics, init_weights
from .preprocess import Preprocess
from .files import atomic_save
from .synset import SyntheticSet
from .train import COMPILE_MODES, TrainRecipe, compiled, embed_all, train_group, wants_compile

# Every preset's value for the fields left None (docs/protocols.md section 2): the papers'
# choices, and those of the public DataDAM code. ``net.*`` keys fill the NetConfig. One
# exception in ``paper``: the loss scale is the code's x100, chosen by measurement (the papers'
# x1 under lr 1 moves the images 100x less per step; docs/protocols.md section 2).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 8000, "batch_real": 128, "p_spatial": 4.0, "p_channel": 4.0,
              "loss_scale": 100.0, "net.norm": "instancenorm", "net.init": "he"},
    "reference_code": {"iterations": 20000, "batch_real": 64, "p_spatial": 1.0, "p_channel": 1.0,
                       "loss_scale": 100.0, "net.norm": "batchnorm", "net.init": "default"},
}


def size_defaults(ipc: int, image_size: int) -> dict[str, float]:
    """Defaults that follow the task, in every preset: the image learning rate (1 for IPC <= 50,
    10 above) and lambda (0.01 up to 32 px, 0.02 above)."""
    return {"lr_img": 1.0 if ipc <= 50 else 10.0, "lam": 0.01 if image_size <= 32 else 0.02}
# config values that change how the work is done, not its result (up to float rounding):
# reporting, checkpoint cadence, forward-pass chunking, compilation. The artifact cache key and
# the resume check both ignore them.
EXECUTION_KEYS = ("checkpoint_every", "eval_every", "eval_epochs", "chunk", "syn_chunk", "compile")


def result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config (``to_dict`` form) that a set depends on, for cache keys and
    the finished-output check: every key but ``EXECUTION_KEYS`` for a matching method; for a
    selection only ``method``, ``ipc``, ``seed`` and, where an embedding ConvNet is trained
    (herding, k-center; ``selection_embeddings``), ``net`` and ``embed_epochs``."""
    d = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    method = METHODS.get(str(d.get("method")))  # a damaged file's unknown method: keep everything
    if method is not None and method.kind == "select":
        keep = ("method", "ipc", "seed") + (() if d["method"] == "random" else ("net", "embed_epochs"))
        d = {k: d.get(k) for k in keep}
    return d


INITS_SYN = ("real", "noise", "kcenter")


@dataclass
class NetConfig:
    """The network used for matching (and for coreset embeddings)."""

    arch: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: 3 up to 32 px, 4 at 64 px, 5 at 128 px
    act: str = "relu"
    norm: str | None = None  # None: instancenorm (paper) / batchnorm (reference_code)
    pool: str = "avgpooling"
    init: str | None = None  # None: he (paper) / default (reference_code)

    def spec(self) -> NetSpec:
        return NetSpec(arch=self.arch, width=self.width, depth=self.depth, act=self.act,
                       norm=self.norm, pool=self.pool)


@dataclass
class DistillSettings:
    """How a set is distilled, whatever its method and IPC; ``None`` means "the preset's
    default". The ``distill`` section of the continual and NAS jobs, which pick method and IPC
    per memory or proxy."""

    preset: str = "paper"  # paper | reference_code (the public DataDAM code's choices)
    iterations: int | None = None  # None: 8000 (papers), 20000 (reference_code)
    lr_img: float | None = None  # None: 1.0 for IPC <= 50, 10.0 above
    momentum: float = 0.5
    batch_real: int | None = None  # None: 128 (ATOM supplementary), 64 (reference_code)
    p_spatial: float | None = None  # None: 4 (paper), 1 (reference_code)
    p_channel: float | None = None  # None: 4 (paper), 1 (reference_code)
    lam: float | None = None  # None: 0.01 at <= 32 px, 0.02 above
    loss_scale: float | None = None  # None: 100 (the DataDAM code; measured better than the papers' 1)
    layers: list[int] | None = None  # 1-based attention taps of the network (Net.taps); None: 1..L-1
    init: str = "real"  # real | noise | kcenter
    dsa: str = augment.DEFAULT_STRATEGY
    chunk: int | None = None  # real images per forward pass; None: 4096 on GPU, 128 on CPU
    syn_chunk: int | None = None  # synthetic images per forward+backward; None: 512 on GPU, 128 on CPU
    compile: str = "auto"  # torch.compile the matching network: auto (on CUDA) | on | off
    embed_epochs: int = 10  # ConvNet training epochs for herding / kcenter embeddings
    net: NetConfig = field(default_factory=NetConfig)
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 0  # >0: train a quick model on the current set every N iterations
    eval_epochs: int = 300


@dataclass
class DistillConfig(DistillSettings):
    """Hyperparameters of one distillation run: the settings plus the method and IPC."""

    method: str = "atom"  # dm | datadam | atom | atom_channel | random | herding | kcenter
    ipc: int = 10  # images per class

    @staticmethod
    def of(method: str, ipc: int, settings: DistillSettings | None = None) -> "DistillConfig":
        """``settings`` (default: all defaults) for one method and IPC."""
        s = settings or DistillSettings()
        return DistillConfig(method=method, ipc=ipc, **{f.name: getattr(s, f.name) for f in fields(DistillSettings)})


def resolve(cfg: DistillConfig, image_size: int, dataset: str | None = None) -> DistillConfig:
    """Fill every ``None``: first the dataset's quick defaults (``distill.datasets``; digits),
    then the method's own defaults (``Method.defaults``; DM), then the preset's table and the
    size rules; validate names and ranges."""
    quick = quick_defaults(dataset, "distill")
    cfg = replace(cfg, **{k: v for k, v in quick.items() if getattr(cfg, k) is None})
    method = get_method(cfg.method)
    if cfg.preset not in PRESETS:
        raise choice_error("preset", cfg.preset, PRESETS)
    if cfg.init not in INITS_SYN:
        raise choice_error("init", cfg.init, INITS_SYN)
    if cfg.ipc < 1:
        raise UserError(f"ipc must be at least 1, got {cfg.ipc}")
    augment.parse_strategy(cfg.dsa)
    defaults = {**PRESETS[cfg.preset], **size_defaults(cfg.ipc, image_size), **method.defaults}
    net = replace(cfg.net, **{k: defaults[f"net.{k}"] for k in ("norm", "init") if getattr(cfg.net, k) is None})
    if net.init not in INITS:
        raise choice_error("net.init", net.init, INITS)
    if cfg.compile not in COMPILE_MODES:
        raise choice_error("compile", cfg.compile, COMPILE_MODES)
    out = replace(cfg, method=method.name, net=net,
                  **{k: v for k, v in defaults.items() if "." not in k and getattr(cfg, k) is None})
    for name, low, low_open in (("iterations", 0, False), ("batch_real", 1, False), ("lr_img", 0, True),
                                 ("momentum", 0, False), ("lam", 0, False), ("loss_scale", 0, True),
                                 ("p_spatial", 0, True), ("p_channel", 0, True), ("chunk", 1, False),
                                 ("syn_chunk", 1, False), ("embed_epochs", 1, False), ("checkpoint_every", 0, False),
                                 ("eval_every", 0, False), ("eval_epochs", 1, False)):
        check_range(f"distill.{name}", getattr(out, name), low, low_open=low_open,
                    high=1 if name == "momentum" else None, high_open=name == "momentum")
    check_range("distill.net.width", out.net.width, 1)
    check_range("distill.net.depth", out.net.depth, 1)
    return out


def match_weights(cfg: DistillConfig, depth: int) -> MatchWeights:
    """The loss weights of a resolved config (see ``distill.matching``)."""
    m = get_method(cfg.method)
    layers = None
    if cfg.layers is not None:
        bad = [l for l in cfg.layers if not 1 <= l <= depth]
        if bad:
            raise UserError(f"layers {bad} out of range: the network has attention taps 1..{depth}")
        layers = tuple(l - 1 for l in cfg.layers)
    return MatchWeights(maps=tuple((name, getattr(cfg, ATTENTION_MAPS[name].power)) for name in m.maps),
                        last_weight=(cfg.lam if m.attention_weighted_last else 1.0) if m.last else 0.0,
                        scale=cfg.loss_scale, layers=layers)


# --------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A dataset mapped to network-input space, on the device."""

    data: ImageData
    preprocess: Preprocess
    train_x: Tensor  # float32 network-input space
    test_x: Tensor
    # the last selection embeddings computed for this data, by (network, embed_epochs, seed):
    # herding and k-center at several IPCs train the embedding ConvNet once
    embeddings: dict[tuple[str, int, int], Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


def prepare(data: ImageData, zca: bool | None = None, device: str | torch.device = "cpu") -> Prepared:
    """Move ``data`` to ``device``, fit the preprocessing (ZCA on the whole training set if
    enabled; ``None``: the dataset's default) and map both splits to network-input space."""
    data = data.to(device)
    pre = Preprocess.fit(data.train_x, data.mean, data.std, zca=data.whitened(zca))
    return Prepared(data=data, preprocess=pre, train_x=pre(data.train_x), test_x=pre(data.test_x))


def check_ipc(data: ImageData, ipc: int) -> None:
    counts = data.class_counts()
    small = int(counts.argmin())
    if ipc > int(counts[small]):
        raise UserError(f"ipc {ipc} is larger than class {small} ({data.classes[small]!r}), "
                        f"which has {int(counts[small])} training images; use ipc <= {int(counts.min())}")


def selection_embeddings(prep: Prepared, cfg: DistillConfig, generator: torch.Generator,
                         progress: bool = False) -> Tensor:
    """Embeddings of every training image from a ConvNet trained ``embed_epochs`` epochs on the
    real training set (evaluation recipe, no augmentation), for herding and k-center."""
    recipe = TrainRecipe(epochs=cfg.embed_epochs, dsa="none", init=cfg.net.init or "he")
    group = train_group(cfg.net.spec(), 1, prep.train_x, prep.data.train_y, prep.num_classes, recipe,
                        generator, ensemble=False, progress=progress, desc="embedding ConvNet")
    return embed_all(group.nets[0], prep.train_x)


def _labels(k: int, ipc: int, device: torch.device | str) -> Tensor:
    return torch.arange(k, device=device).repeat_interleave(ipc)


def make_set(prep: Prepared, images: Tensor, cfg: DistillConfig, extra: dict[str, Any]) -> SyntheticSet:
    """A SyntheticSet of class-major ``images`` (``cfg.ipc`` per class) with the run's metadata."""
    meta = {"dataset": prep.data.name, "method": cfg.method, "ipc": cfg.ipc, "seed": cfg.seed,
            "image_size": list(prep.data.image_size), "config": to_dict(cfg), **extra}
    return SyntheticSet(images=images.detach().cpu(), labels=_labels(prep.num_classes, cfg.ipc, "cpu"),
                        class_names=list(prep.data.classes), preprocess=prep.preprocess, meta=meta)


def select(prep: Prepared, cfg: DistillConfig, progress: bool = False) -> SyntheticSet:
    """Coreset baselines (random / herding / kcenter) as a SyntheticSet."""
    check_ipc(prep.data, cfg.ipc)
    gen = torch.Generator(device=prep.train_x.device).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    emb = None
    if cfg.method != "random":
        key = (json.dumps(to_dict(cfg.net), sort_keys=True), cfg.embed_epochs, cfg.seed)
        if key not in prep.embeddings:  # the generator is fresh here, so a reuse gives the same set
            prep.embeddings.clear()
            prep.embeddings[key] = selection_embeddings(prep, cfg, gen, progress)
        emb = prep.embeddings[key]
    cpu_gen = torch.Generator().manual_seed(cfg.seed)
    idx = coreset.select_per_class(prep.data.train_y, prep.num_classes, cfg.ipc, cfg.method, emb, cpu_gen)
    images = prep.train_x[idx.to(prep.train_x.device)]
    return make_set(prep, images, cfg, {"iterations": 0, "seconds": time.perf_counter() - t0,
                                         "source_indices": idx.tolist()})


def initial_images(prep: Prepared, cfg: DistillConfig, gen: torch.Generator, progress: bool = False) -> Tensor:
    """Synthetic initialisation, class-major ``[K*ipc, C, H, W]``."""
    k, dev = prep.num_classes, prep.train_x.device
    if cfg.init == "real":
        idx = prep.data.class_index().sample(cfg.ipc, gen)
        return prep.train_x[idx.flatten()].clone()
    if cfg.init == "noise":
        return torch.randn((k * cfg.ipc, *prep.train_x.shape[1:]), generator=gen, device=dev)
    emb = selection_embeddings(prep, cfg, gen, progress)
    idx = coreset.select_per_class(prep.data.train_y, k, cfg.ipc, "kcenter", emb)
    return prep.train_x[idx.to(dev)].clone()


def chunk_classes(images: int | None, net: torch.nn.Module, k: int, per_class: int, device: torch.device,
                  auto_gpu: int) -> int:
    """How many classes one forward pass holds: about ``images`` per pass (``None``:
    ``auto_gpu`` on a GPU, 128 on the CPU, where smaller feature maps stay in cache), rounded
    down to a divisor of ``k`` when one is at least half as large, so that every pass has the
    same shape (a compiled network then needs one graph per side, not one per remainder).
    Batch-norm networks see all classes at once, as in the DataDAM code, since chunks would
    change their statistics.

    GPU defaults (benchmarks/RESULTS.md, H100): real images 4096 per pass (no graph is kept, a
    pass only holds its own activations); synthetic images 512 per pass, because their graph
    lives until the chunk's backward: CIFAR-100 IPC 20 in 4 passes took 72 ms and 6.2 GB, in
    one pass 68-79 ms and 8.2 GB. Fewer, larger passes are faster because a step is bound by
    kernel launches at these sizes (256 per pass: 99 ms; 128: 180 ms)."""
    if has_batch_statistics(net):
        return k
    images = images or (auto_gpu if device.type == "cuda" else 128)
    most = max(1, min(k, images // max(per_class, 1)))
    even = max(d for d in range(1, most + 1) if k % d == 0)
    return even if 2 * even >= most else most


def matching_net(cfg: DistillConfig, channels: int, num_classes: int, size: tuple[int, int],
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


def _slice_stats(stats: dict[str, list[Tensor]], c0: int, c1: int) -> dict[str, list[Tensor]]:
    return {name: [t[c0:c1] for t in ts] for name, ts in stats.items()}


def loss_and_grad(net: torch.nn.Module, train_x: Tensor, index: ClassIndex, syn: Tensor,
                  cfg: DistillConfig, weights: MatchWeights, gen: torch.Generator,
                  classes: tuple[int, int] | None = None) -> Tensor:
    """One iteration: fresh network, real batch of every class, siamese DSA, the matching loss;
    accumulates its gradient into ``syn.grad`` and returns the (detached) loss.

    The loss is a sum over classes of distances between per-class means, so both sides run in
    class chunks: real statistics without grad, then each synthetic chunk's loss is
    back-propagated at once (its graph freed). The random draws do not depend on chunking.
    ``classes = (lo, hi)`` computes only those classes' terms (one rank's shard under
    torchrun); the draws are still made for all classes, so every shard sees the same ones.
    """
    k, dev = index.num_classes, syn.device
    ipc = len(syn) // k
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
            chunks.append(class_statistics(feats, emb, len(ids), weights))
    real = concat_statistics(chunks) if len(chunks) > 1 else chunks[0]
    total = torch.zeros((), device=dev)
    step = chunk_classes(cfg.syn_chunk, net, k, ipc, dev, auto_gpu=512)
    for c0 in range(lo, hi, step):
        c1 = min(hi, c0 + step)
        x_syn = augment.apply(syn[c0 * ipc : c1 * ipc], params.index(augment.group_ids(c0, c1, ipc, dev)))
        feats, emb = net.forward_features(x_syn)
        loss = statistics_loss(_slice_stats(real, c0 - lo, c1 - lo), class_statistics(feats, emb, c1 - c0, weights),
                               weights)[0]
        loss.backward()
        total = total + loss.detach()
    return total


@dataclass
class State:
    """Everything a run needs to continue exactly where it stopped."""

    iteration: int
    images: Tensor
    optimizer: dict[str, Any]
    generator: Tensor
    losses: list[float]

    def save(self, path: Path, cfg: DistillConfig, data: dict[str, Any]) -> None:
        atomic_save({"iteration": self.iteration, "images": self.images.detach().cpu(),
                     "optimizer": self.optimizer, "generator": self.generator.cpu(),
                     "losses": self.losses, "config": to_dict(cfg), "data": data}, path)


def data_identity(prep: Prepared) -> dict[str, Any]:
    """What a checkpoint's images depend on besides the config: the dataset, its image size and
    training-set size, and whether the images live in ZCA space."""
    return {"dataset": prep.data.name, "image_size": list(prep.data.image_size),
            "train_images": len(prep.data.train_y), "zca": prep.preprocess.uses_zca}


def _resume_key(cfg: DistillConfig | dict[str, Any]) -> dict[str, Any]:
    """The config values a checkpoint must agree on (run length and reporting may change)."""
    d = dict(to_dict(cfg))
    for k in ("iterations", *EXECUTION_KEYS):
        d.pop(k, None)
    return d


CHECKPOINT_KEYS = ("config", "iteration", "images", "optimizer", "generator", "losses")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A distillation checkpoint, or one error line when the file is truncated, foreign or not a
    checkpoint at all (it is read with ``weights_only``: it never runs code)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {path} could not be read ({reason(exc)}); delete it to start "
                        "again, or use a fresh --out or --force") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise UserError(f"{path} is not a distillation checkpoint (missing {', '.join(missing)}); delete it "
                        "to start again, or use a fresh --out or --force")
    return blob


def distill(
    prep: Prepared,
    cfg: DistillConfig,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_eval: Callable[[int, float], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> SyntheticSet:
    """Run a method on a prepared dataset and return its SyntheticSet.

    ``cfg`` must be resolved (:func:`resolve`). Matching methods write a checkpoint every
    ``checkpoint_every`` iterations when ``checkpoint`` is given; with ``resume`` an existing
    checkpoint is continued, giving exactly the result of an uninterrupted run. With ``shard =
    (lo, hi)`` only classes ``lo..hi-1`` are optimised (the others keep their initial images):
    torchrun ranks each distil a shard and the rows are gathered (``pipelines/run.py``).
    """
    method = get_method(cfg.method)
    if method.kind == "select":
        return select(prep, cfg, progress)
    check_ipc(prep.data, cfg.ipc)
    dev = prep.train_x.device
    k, size = prep.num_classes, prep.data.image_size
    net = matching_net(cfg, prep.data.channels, k, size, dev)
    weights = match_weights(cfg, len(net.taps))
    if shard is not None and has_batch_statistics(net) and shard != (0, k):
        raise UserError("class sharding needs a network without batch statistics (batch norm couples the "
                        "classes of a forward pass); use net.norm=instancenorm or one process")
    index = prep.data.class_index()
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)

    ckpt = Path(checkpoint) if checkpoint else None
    data_id = data_identity(prep)
    state = None
    if resume and ckpt is not None and ckpt.exists():
        blob = read_checkpoint(ckpt)
        saved_key, want = _resume_key(blob["config"]), _resume_key(cfg)
        if saved_key != want:
            changed = sorted(k2 for k2 in saved_key if saved_key[k2] != want.get(k2))
            raise UserError(f"checkpoint {ckpt} was written with a different config "
                            f"(differs in: {', '.join(changed)}); use a fresh --out or --force")
        saved_data = blob.get("data")
        if saved_data is not None and saved_data != data_id:
            changed = sorted(k2 for k2 in saved_data if saved_data[k2] != data_id.get(k2))
            raise UserError(f"checkpoint {ckpt} was written for other data (differs in: {', '.join(changed)}: "
                            f"{', '.join(f'{k2}={saved_data[k2]!r}' for k2 in changed)}); use a fresh --out or --force")
        if blob["iteration"] > cfg.iterations:
            raise UserError(f"checkpoint {ckpt} is at iteration {blob['iteration']}, beyond the {cfg.iterations} "
                            "asked for; ask for at least as many iterations, or use a fresh --out or --force")
        state = State(blob["iteration"], blob["images"].to(dev), blob["optimizer"],
                      blob["generator"], list(blob["losses"]))
        gen.set_state(state.generator)

    syn = (state.images if state else initial_images(prep, cfg, gen, progress)).clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    if state:
        opt.load_state_dict(state.optimizer)
    losses: list[float] = state.losses if state else []
    start = state.iteration if state else 0
    t0 = time.perf_counter()
    pending: list[Tensor] = []

    def flush() -> None:
        """Move the losses still on the device into ``losses`` (one sync per call)."""
        if pending:
            losses.extend(torch.stack(pending).cpu().tolist())
            pending.clear()

    from tqdm import tqdm

    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
               desc=f"{cfg.method} ipc{cfg.ipc}", disable=not progress, dynamic_ncols=True)
    for it in bar:
        opt.zero_grad(set_to_none=True)
        loss = loss_and_grad(net, prep.train_x, index, syn, cfg, weights, gen, shard)
        opt.step()
        pending.append(loss.detach())
        done = it + 1
        if done % 10 == 0 or done == cfg.iterations:
            flush()
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        if ckpt is not None and cfg.checkpoint_every and (done % cfg.checkpoint_every == 0):
            flush()
            State(done, syn, opt.state_dict(), gen.get_state(), losses).save(ckpt, cfg, data_id)
        if cfg.eval_every and done % cfg.eval_every == 0:
            acc = quick_eval(prep, syn.detach(), cfg)
            bar.write(f"iteration {done}: quick-eval accuracy {acc:.4f}")
            if on_eval:
                on_eval(done, acc)
    flush()
    seconds = time.perf_counter() - t0
    return make_set(prep, syn, cfg, {"iterations": cfg.iterations, "seconds": seconds,
                                      "losses": losses[-1000:], "final_loss": losses[-1] if losses else math.nan})


def quick_eval(prep: Prepared, images: Tensor, cfg: DistillConfig) -> float:
    """Train one ConvNet on the current images (evaluation recipe) and test it."""
    gen = torch.Generator(device=images.device).manual_seed(cfg.seed + 1)
    recipe = TrainRecipe(epochs=cfg.eval_epochs, dsa=cfg.dsa or "none")
    labels = _labels(prep.num_classes, cfg.ipc, images.device)
    group = train_group(cfg.net.spec(), 1, images, labels, prep.num_classes, recipe, gen, ensemble=False)
    return group.accuracies(prep.test_x, prep.data.test_y)[0]
