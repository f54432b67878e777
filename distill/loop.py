"""The distillation run: initial images, the iterations (``distill.step``), checkpoints, exact
resume, snapshots, and the quick evaluation. It knows no method by name: a selection method's
set comes from ``distill.selection``, a matching method's from its statistics and loss.

Checkpoints (atomic; ``distill.files``) are written every ``checkpoint_every`` iterations, when
``checkpoint_minutes`` have passed since the last one, and when the run is interrupted (Ctrl-C or
SIGTERM): a resumed run then repeats no finished iteration and gives exactly the result of an
uninterrupted one (the generator state of the last finished iteration is saved with it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .config import to_dict
from .errors import UserError
from .files import atomic_save, read_plain
from .interrupts import deferred_interrupts
from .methods import MatchingMethod, get_method
from .multiformation import decode, decode_labels, mix
from .nets import has_batch_statistics
from .prepare import Prepared, check_ipc, class_labels, data_identity, make_set
from .runtime import keep_host_memory
from .selection import select, select_per_class, selection_embeddings
from .settings import SetConfig, describe, set_identity
from .step import bound, loss_and_grad, matching_net
from .synset import SyntheticSet
from .train import TrainRecipe, train_group

CHECKPOINT_KEYS = ("config", "iteration", "images", "optimizer", "generator", "losses")


@dataclass
class State:
    """Everything a run needs to continue exactly where it stopped."""

    iteration: int
    images: Tensor
    optimizer: dict[str, Any]
    generator: Tensor
    losses: list[float]

    def save(self, path: Path, cfg: SetConfig, data: dict[str, Any]) -> None:
        atomic_save({"iteration": self.iteration, "images": self.images.detach().cpu(),
                     "optimizer": self.optimizer, "generator": self.generator.cpu(),
                     "losses": self.losses, "config": to_dict(cfg), "data": data}, path)


def resume_key(config: SetConfig | dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must agree on: the set's identity without the run length."""
    d = set_identity(to_dict(config))
    d.pop("iterations", None)
    return d


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A distillation checkpoint, or one error line when the file is truncated, foreign or not a
    checkpoint at all (it is read with ``weights_only``: it never runs code)."""
    try:
        blob = read_plain(path, "distillation checkpoint")
    except UserError as exc:
        raise UserError(f"checkpoint {path} could not be read ({exc}); delete it to start again, or use a "
                        "fresh --out or --force") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise UserError(f"{path} is not a distillation checkpoint (missing {', '.join(missing)}); delete it "
                        "to start again, or use a fresh --out or --force")
    return blob


def load_state(path: Path, cfg: SetConfig, data_id: dict[str, Any]) -> State:
    """The checkpoint at ``path``, refused (one error line) when it belongs to another set,
    other data, or is already past ``cfg.iterations``."""
    blob = read_checkpoint(path)
    saved_key, want = resume_key(blob["config"]), resume_key(cfg)
    if saved_key != want:
        changed = sorted(k for k in set(saved_key) | set(want) if saved_key.get(k) != want.get(k))
        raise UserError(f"checkpoint {path} was written with a different config "
                        f"(differs in: {', '.join(changed)}); use a fresh --out or --force")
    saved_data = blob.get("data")
    if saved_data is not None and saved_data != data_id:
        changed = sorted(k for k in saved_data if saved_data[k] != data_id.get(k))
        raise UserError(f"checkpoint {path} was written for other data (differs in: {', '.join(changed)}: "
                        f"{', '.join(f'{k}={saved_data[k]!r}' for k in changed)}); use a fresh --out or --force")
    if blob["iteration"] > cfg.iterations:
        raise UserError(f"checkpoint {path} is at iteration {blob['iteration']}, beyond the {cfg.iterations} "
                        "asked for; ask for at least as many iterations, or use a fresh --out or --force")
    return State(blob["iteration"], blob["images"], blob["optimizer"], blob["generator"], list(blob["losses"]))


def initial_images(prep: Prepared, cfg: SetConfig, gen: torch.Generator, progress: bool = False) -> Tensor:
    """Stored synthetic images before the first iteration, class-major ``[K*ipc, C, H, W]``:
    real images of the class (``real``; at multi-formation factor f, IDC's mix of f^2 real
    images per stored image), Gaussian noise (``noise``), or greedy k-center picks
    (``kcenter``, mixed the same way)."""
    k, dev, f = prep.num_classes, prep.train_x.device, cfg.factor
    if cfg.init == "noise":
        return torch.randn((k * cfg.ipc, *prep.train_x.shape[1:]), generator=gen, device=dev)
    if cfg.init == "real":
        idx = prep.data.class_index().sample(cfg.ipc * f * f, gen).flatten()
    else:
        emb = selection_embeddings(prep, cfg, gen, progress)
        idx = select_per_class(prep.data.train_y, k, cfg.ipc * f * f, get_method("kcenter"), emb).to(dev)
    return mix(prep.train_x[idx], f).clone()


def distill(
    prep: Prepared,
    cfg: SetConfig,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_eval: Callable[[int, float], None] | None = None,
    shard: tuple[int, int] | None = None,
    on_snapshot: Callable[[int, SyntheticSet, State], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> SyntheticSet:
    """Run a method on a prepared dataset and return its SyntheticSet.

    ``cfg`` must be resolved (``distill.settings.resolve``). Matching methods checkpoint into
    ``checkpoint`` when given (see the module docstring); with ``resume`` an existing checkpoint
    is continued, giving exactly the result of an uninterrupted run. At every iteration of
    ``cfg.snapshots`` reached, ``on_snapshot(iteration, set, state)`` receives the set as it is
    then (equal to a run of that many iterations). With ``shard = (lo, hi)`` only classes
    ``lo..hi-1`` are optimised (the others keep their initial images): torchrun ranks each distil
    a shard and the rows are gathered (``pipelines/scaleout.py``). The final state is written to
    ``checkpoint`` too (a longer run of the same set may continue from it). ``extra_meta`` goes into the
    set's metadata (the data section it was made from, ...). An interruption re-raises with
    ``resume_from`` (the iteration a rerun continues from) set on the exception.
    """
    if not isinstance(get_method(cfg.method), MatchingMethod):
        return select(prep, cfg, progress).with_meta(**(extra_meta or {}))
    method, p = bound(cfg)
    check_ipc(prep.data, cfg.ipc, cfg.factor if cfg.init != "noise" else 1)
    dev = prep.train_x.device
    if dev.type == "cpu":
        keep_host_memory()  # freed feature maps are reused, not page-faulted in again (distill.runtime)
    k, size = prep.num_classes, prep.data.image_size
    net = matching_net(cfg, prep.data.channels, k, size, dev)
    if shard is not None and has_batch_statistics(net) and shard != (0, k):
        raise UserError("class sharding needs a network without batch statistics (batch norm couples the "
                        "classes of a forward pass); use net.norm=instancenorm or one process")
    index = prep.data.class_index()
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    ckpt = Path(checkpoint) if checkpoint else None
    data_id = data_identity(prep)
    state = load_state(ckpt, cfg, data_id) if resume and ckpt is not None and ckpt.exists() else None
    if state is not None:
        gen.set_state(state.generator)
    syn = (state.images.to(dev) if state else initial_images(prep, cfg, gen, progress)).clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    if state:
        opt.load_state_dict(state.optimizer)
    losses: list[float] = state.losses if state else []
    start = done = state.iteration if state else 0
    gen_done = gen.get_state()  # the generator after the last finished iteration
    t0 = time.perf_counter()
    pending: list[Tensor] = []

    def flush() -> None:
        """Move the losses still on the device into ``losses`` (one sync per call)."""
        if pending:
            losses.extend(torch.stack(pending).cpu().tolist())
            pending.clear()

    def current() -> State:
        flush()
        return State(done, syn.detach().clone(), opt.state_dict(), gen_done.clone(), list(losses))

    def finished_set(iterations: int) -> SyntheticSet:
        extra = {"iterations": iterations, "seconds": time.perf_counter() - t0, "losses": losses[-1000:],
                 "final_loss": losses[-1] if losses else math.nan, **(extra_meta or {})}
        return make_set(prep, syn, cfg, extra)

    from tqdm import tqdm

    snapshots = sorted({s for s in cfg.snapshots or [] if start <= s <= cfg.iterations})
    if on_snapshot and snapshots and snapshots[0] == start and start > 0:  # an interruption landed on one
        on_snapshot(start, finished_set(start), current())
    last_save = time.monotonic()
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
               desc=f"{cfg.method} ipc{cfg.ipc}", disable=not progress, dynamic_ncols=True)
    if 0 < start < cfg.iterations:
        bar.write(f"  {describe(cfg)}: continuing from its checkpoint at iteration {start} of {cfg.iterations}")
    try:
        for it in bar:
            opt.zero_grad(set_to_none=True)
            loss = loss_and_grad(net, prep.train_x, index, syn, cfg, method, p, gen, shard)
            with deferred_interrupts():  # a half-applied step would corrupt the saved state
                opt.step()
                pending.append(loss.detach())
                done, gen_done = it + 1, gen.get_state()
            if done % 10 == 0 or done == cfg.iterations:
                flush()
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
            due = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
            if ckpt is not None and (due or time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes):
                current().save(ckpt, cfg, data_id)
                last_save = time.monotonic()
            if on_snapshot and done in snapshots:
                on_snapshot(done, finished_set(done), current())
            if cfg.eval_every and done % cfg.eval_every == 0:
                acc = quick_eval(prep, syn.detach(), cfg)
                bar.write(f"iteration {done}: quick-eval accuracy {acc:.4f}")
                if on_eval:
                    on_eval(done, acc)
    except KeyboardInterrupt as exc:
        bar.close()
        if ckpt is not None and (done > start or state is None):
            current().save(ckpt, cfg, data_id)  # atomic: a second Ctrl-C here leaves the previous file whole
        exc.resume_from = done if ckpt is not None else 0  # type: ignore[attr-defined]
        raise
    if ckpt is not None:  # the final state: a longer run of the same set can continue from it
        current().save(ckpt, cfg, data_id)
    return finished_set(cfg.iterations)


def quick_eval(prep: Prepared, images: Tensor, cfg: SetConfig) -> float:
    """Train one ConvNet on the current (decoded) images with the evaluation recipe and test it."""
    gen = torch.Generator(device=images.device).manual_seed(cfg.seed + 1)
    recipe = TrainRecipe(epochs=cfg.eval_epochs, dsa=cfg.dsa or "none")
    labels = decode_labels(class_labels(prep.num_classes, cfg.ipc, images.device), cfg.factor)
    group = train_group(cfg.net.spec(), 1, decode(images, cfg.factor), labels, prep.num_classes, recipe, gen,
                        ensemble=False)
    return group.accuracies(prep.test_x, prep.data.test_y)[0]
