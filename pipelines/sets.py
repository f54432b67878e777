"""Synthetic sets made on demand and kept in the artifact cache (stage ``sets``).

A cached set is named by its dataset, method and IPC (``digits_atom_ipc20``; ``_f2`` at
multi-formation factor 2); its key covers the dataset identity (name, image size, ZCA, cut) and
the set's identity (``distill.settings.set_identity``: the method's own hyperparameters and the
shared settings it reads), so a job that needs ``datadam`` at IPC 20 distils it once and every
later run, step count or class order reuses the file.

A matching set keeps its final state (``state.pt``) beside it: a longer run of the same set
continues from the longest finished one, and every snapshot of a run (``distill.snapshots``)
becomes the set of that many iterations (it is exactly that: nothing in the loop depends on the
run's length), which is how learning curves cost one distillation.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from distill.config import to_dict
from distill.data import ImageData
from distill.loop import State, distill, resume_key
from distill.methods import get_method
from distill.prepare import Prepared, check_ipc, data_identity, prepare
from distill.settings import DistillSettings, SetConfig, resolve, set_identity
from distill.synset import SyntheticSet

from .cache import Artifact, Cache
from .common import DataConfig

STAGE = "sets"
STATE = "state.pt"  # a finished set's final state: a longer run of the same set continues from it


def set_key_config(data_id: dict[str, Any], cfg: SetConfig) -> dict[str, Any]:
    """What a cached set's key is made of: the data's identity and the set's."""
    return {"dataset": data_id, "distill": set_identity(to_dict(cfg))}


def is_matching(method: str) -> bool:
    return get_method(method).kind == "match"


class SetMaker:
    """Makes (or reuses) the sets of one dataset; the dataset is prepared once, on first need."""

    def __init__(self, data_cfg: DataConfig, data: ImageData, device: torch.device, cache: Cache,
                 progress: bool = True, subset: dict[str, Any] | None = None):
        """``subset``: how ``data`` was cut from the dataset, part of every key and recorded in
        every set's metadata (NAS proxies: ``{"holdout": [fraction, seed]}``, the training set
        without its validation split; ``dataset.per_class`` is in ``data_cfg``'s identity)."""
        self.data_cfg, self.data, self.device, self.subset = data_cfg, data, device, dict(subset or {})
        self.cache, self.progress = cache, progress
        self._prep: Prepared | None = None

    @property
    def prep(self) -> Prepared:
        if self._prep is None:
            self._prep = prepare(self.data, self.data_cfg.zca, self.device)
        return self._prep

    def resolve(self, method: str, ipc: int, settings: DistillSettings | None = None) -> SetConfig:
        """The resolved config of ``method`` at ``ipc`` with the job's distillation settings."""
        return resolve(SetConfig.of(method, ipc, settings), self.data.image_size[0], self.data.name)

    def artifact(self, cfg: SetConfig) -> Artifact:
        data_id = {**self.data_cfg.identity(self.data), **self.subset}
        factor = f"_f{cfg.factor}" if cfg.factor != 1 and is_matching(cfg.method) else ""
        return self.cache.artifact(STAGE, f"{self.data.name}_{cfg.method}_ipc{cfg.ipc}{factor}",
                                   set_key_config(data_id, cfg), "synset.pt")

    def get(self, cfg: SetConfig) -> tuple[SyntheticSet, Path, bool]:
        """``(set, path, reused)`` for a resolved config: the cached file, or a new distillation
        that checkpoints into the artifact folder (an interrupted one continues)."""
        check_ipc(self.data, cfg.ipc, cfg.factor if is_matching(cfg.method) and cfg.init != "noise" else 1)
        art = self.artifact(cfg)
        synset, reused = self.cache.get_or_make(art, lambda folder: self._make(art, cfg, folder), SyntheticSet.load)
        return synset, art.result_path, reused

    def _make(self, art: Artifact, cfg: SetConfig, folder: Path) -> SyntheticSet:
        ckpt = folder / "checkpoint.pt"
        shorter = self.shorter_state(cfg)
        if shorter is not None and not ckpt.exists():
            shutil.copyfile(shorter, ckpt)
            print(f"  {art.name}: continuing from the shorter run in {shorter.parent}", flush=True)
        meta = {"data_config": to_dict(self.data_cfg), **self.subset}  # subset: source_indices then index the split
        synset = distill(self.prep, cfg, checkpoint=ckpt, resume=True, progress=self.progress,
                         on_snapshot=lambda it, s, state: self.keep_snapshot(cfg, it, s, state),
                         extra_meta={**meta, "artifact_key": art.key})
        self.finish(art, synset, ckpt)
        return synset

    def get_curve(self, cfg: SetConfig, iterations: list[int]) -> dict[int, SyntheticSet]:
        """The sets of ``cfg`` after each of ``iterations``: one distillation to the longest,
        keeping the others as snapshots; any still missing afterwards (asked for below an
        earlier, longer run) is made on its own."""
        wanted = sorted(set(iterations))
        missing = [n for n in wanted if not self.artifact(replace(cfg, iterations=n)).complete]
        if missing:
            self.get(replace(cfg, iterations=missing[-1], snapshots=missing[:-1]))
        return {n: self.get(replace(cfg, iterations=n, snapshots=None))[0] for n in wanted}

    def keep_snapshot(self, cfg: SetConfig, iteration: int, synset: SyntheticSet, state: State) -> None:
        """A snapshot at ``iteration`` becomes the artifact of that run length (unless made)."""
        art = self.artifact(replace(cfg, iterations=iteration, snapshots=None))
        if art.complete:
            return
        with art.lock():
            if not art.complete:
                folder = art.open()
                state.save(folder / STATE, replace(cfg, iterations=iteration), data_identity(self.prep))
                self.finish(art, synset.with_meta(artifact_key=art.key), folder / STATE)

    @staticmethod
    def finish(art: Artifact, synset: SyntheticSet, state: Path) -> None:
        """Write a finished set into its artifact; its final state stays beside it (``state.pt``)
        so that a longer run of the same set can continue from it."""
        synset.save(art.result_path)
        synset.save_grid(art.path / "grid.png")
        if state.exists() and state.name != STATE:
            state.replace(art.path / STATE)

    def shorter_state(self, cfg: SetConfig) -> Path | None:
        """The final state of the longest finished run of the same set with fewer iterations."""
        art = self.artifact(cfg)
        if not is_matching(cfg.method) or self.cache.stale(art):
            return None
        want = resume_key(cfg)
        best: tuple[int, Path] | None = None
        for meta in (self.cache.root / STAGE).glob(f"{art.name}-*/config.yaml"):
            state = meta.parent / STATE
            try:
                recorded = yaml.safe_load(meta.read_text())["config"]
                its = recorded["distill"]["iterations"]
                same = recorded["dataset"] == art.config["dataset"] and resume_key(recorded["distill"]) == want
            except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
                continue
            if same and isinstance(its, int) and its < cfg.iterations and state.is_file() \
                    and (meta.parent / "synset.pt").is_file() and (best is None or its > best[0]):
                best = (its, state)
        return best[1] if best else None
