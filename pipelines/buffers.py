"""Synthetic sets (buffers) made on demand and kept in the artifact cache.

A buffer is named by its method and IPC (``atom`` + 20 on digits -> ``digits_atom_ipc20``);
its cache key covers the dataset identity (name, image size, ZCA) and every resolved
hyperparameter the set depends on (``distill.settings.set_identity``), so a pipeline that
needs ``datadam`` at IPC 20 distils it once and every later run, step count or class order
reuses the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.config import to_dict
from distill.data import ImageData
from distill.loop import distill
from distill.prepare import Prepared, check_ipc, prepare
from distill.settings import DistillSettings, SetConfig, resolve, set_identity
from distill.synset import SyntheticSet

from .artifacts import Artifact
from .common import DataConfig



def buffer_key_config(data_id: dict[str, Any], cfg: SetConfig) -> dict[str, Any]:
    return {"dataset": data_id, "distill": set_identity(to_dict(cfg))}


class BufferMaker:
    """Makes (or reuses) buffers of one dataset; the dataset is prepared once, on first need."""

    def __init__(self, data_cfg: DataConfig, data: ImageData, device: torch.device,
                 root: str | Path, force: bool = False, progress: bool = True,
                 subset: dict[str, Any] | None = None):
        """``subset``: how ``data`` was cut from the dataset, part of every key and recorded in
        every set's metadata (NAS proxies: ``{"holdout": [fraction, seed]}``, the training set
        without its validation split; ``dataset.per_class`` is in ``data_cfg``'s identity)."""
        self.data_cfg, self.data, self.device, self.subset = data_cfg, data, device, dict(subset or {})
        self.root, self.force, self.progress = Path(root), force, progress
        self._prep: Prepared | None = None
        self._made: set[str] = set()  # keys made in this run (--force recomputes each once)

    @property
    def prep(self) -> Prepared:
        if self._prep is None:
            self._prep = prepare(self.data, self.data_cfg.zca, self.device)
        return self._prep

    def resolve(self, method: str, ipc: int, settings: DistillSettings | None = None) -> SetConfig:
        """The resolved config of ``method`` at ``ipc`` with the job's distillation settings."""
        return resolve(SetConfig.of(method, ipc, settings), self.data.image_size[0], self.data.name)

    def artifact(self, cfg: SetConfig) -> Artifact:
        data_id = self.data_cfg.identity(self.data)
        data_id.update(self.subset)
        return Artifact(self.root, "buffers", f"{self.data.name}_{cfg.method}_ipc{cfg.ipc}",
                        buffer_key_config(data_id, cfg), "synset.pt")

    def get(self, cfg: SetConfig) -> tuple[SyntheticSet, Path, bool]:
        """``(set, path, reused)`` for a resolved config: the cached file, or a new distillation
        that checkpoints into the artifact folder (an interrupted one continues)."""
        art = self.artifact(cfg)
        force = self.force and art.key not in self._made
        if art.complete and not force:
            return SyntheticSet.load(art.result_path), art.result_path, True
        check_ipc(self.data, cfg.ipc)
        with art.lock():  # another run making the same buffer: wait for it, then reuse it
            if art.complete and not force:
                return SyntheticSet.load(art.result_path), art.result_path, True
            folder = art.open(force=force)
            self._made.add(art.key)
            ckpt = folder / "checkpoint.pt"
            # subset: e.g. source_indices then index the training set without the split
            synset = distill(self.prep, cfg, checkpoint=ckpt, resume=True, progress=self.progress,
                             extra_meta={"data_config": to_dict(self.data_cfg), "artifact_key": art.key,
                                         **self.subset})
            synset.save(art.result_path)
            synset.save_grid(folder / "grid.png")
            ckpt.unlink(missing_ok=True)
        return synset, art.result_path, False
