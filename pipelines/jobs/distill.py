"""``run.py distill``: one synthetic set from a dataset, into ``--out`` (``synset.pt``,
``grid.png``, ``config.yaml``), resumable from its checkpoint; a named set goes through the
artifact cache; under torchrun every rank distils a shard of the classes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import torch

from distill.config import execution_free, to_dict
from distill.data import ImageData
from distill.datasets import DATASETS
from distill.errors import UserError
from distill.loop import distill
from distill.methods import METHODS
from distill.prepare import check_ipc, prepare
from distill.settings import SetConfig, resolve, set_identity, settings_for
from distill.synset import SyntheticSet, library_versions

from .. import scaleout
from ..common import DataConfig
from ..named_sets import SETS_FILE, dataset_base, lookup
from ..sets import SetMaker, is_matching
from . import Job, register_job


@dataclass
class DistillJobConfig:
    """``run.py distill``: dataset + distillation hyperparameters."""

    dataset: DataConfig = field(default_factory=DataConfig)
    distill: SetConfig = field(default_factory=SetConfig)


class DistillJob(Job):
    name = "distill"
    help = "condense a dataset into a synthetic set (or select a coreset)"
    description = (f"Distil a dataset with a matching method ({', '.join(m for m, v in METHODS.items() if v.kind == 'match')}) "
                   f"or select a coreset ({', '.join(m for m, v in METHODS.items() if v.kind == 'select')}). Writes "
                   "synset.pt, grid.png and the resolved config.yaml (every value with its source) to --out.\n\n"
                   "A checkpoint is written every distill.checkpoint_every iterations, every "
                   "distill.checkpoint_minutes, and on Ctrl-C or SIGTERM: the same command with the same --out "
                   "continues from it with exactly the result of an uninterrupted run.")
    examples = ("python pipelines/run.py distill --dataset digits --method atom --ipc 10 --out runs/atom10",
                "python pipelines/run.py distill --named-set datadam_ipc20_cifar100",
                "python pipelines/run.py distill --dataset digits --method dm --set distill.factor=2 --explain")
    Config = DistillJobConfig
    options = ("cache", "force", "seed", "dataset", "data_root", *Job.options)
    option_help = {"dataset": f"one of: {', '.join(DATASETS)} (default cifar10)",
                   "data_root": "data folder (default: data)",
                   "force": "start over: ignore a checkpoint or finished set in --out (a named set: make it again)",
                   "cache": "artifact cache for named sets (default: artifacts)"}
    flags = {"dataset": ("dataset.name", None), "data_root": ("dataset.root", None), "method": ("distill.method", None),
             "ipc": ("distill.ipc", None), "iterations": ("distill.iterations", None), "seed": ("distill.seed", None)}
    result = "synset.pt"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--named-set", "--buffer", dest="named_set", metavar="NAME",
                       help=f"a named set ({SETS_FILE.name}, e.g. atom_ipc50; or <method>_ipc<N>[_<dataset>]): its "
                            "dataset, method and IPC, made once in the artifact cache; other flags still override")
        p.add_argument("--method", help=f"one of: {', '.join(METHODS)} (default atom)")
        p.add_argument("--ipc", type=int, help="images per class (default 10)")
        p.add_argument("--iterations", type=int,
                       help="optimisation steps (default: the method's as its paper gives them, DataDAM/ATOM 8000, "
                            "DM 20000; digits 300); see benchmarks/RESULTS.md for the seconds per iteration")

    @classmethod
    def bases(cls, args: argparse.Namespace, device: torch.device) -> list[tuple[dict[str, Any], str]]:
        if not args.named_set:
            return []
        named = lookup(args.named_set)
        if named is None:
            raise UserError(f"--named-set takes a set name (e.g. atom_ipc50), not a file: {args.named_set}")
        return [({"dataset": dataset_base([named]), "distill": dict(named.distill)},
                 f"named set {args.named_set} ({SETS_FILE.name})")]

    @staticmethod
    def identity(record: Any) -> Any:
        """The data and the set's own identity: a checkpoint cadence, a chunk size or a
        hyperparameter the method does not read is the same work."""
        if not isinstance(record, dict) or not isinstance(record.get("distill"), dict):
            return record
        return {"dataset": execution_free(record.get("dataset")), "distill": set_identity(record["distill"])}

    def resolve(self) -> None:
        settings_for([self.config.distill.method], self.config.distill)  # a typo, or a key it ignores
        self.dist = scaleout.from_env()
        if self.dist.active and self.env.device.type == "cuda":
            self.env.device = torch.device("cuda", self.dist.local_rank)
        if self.dist.active and not self.env.out:
            raise UserError("under torchrun give --out DIR, the folder every rank writes to")
        self.data: ImageData = self.config.dataset.load()
        self.cfg = resolve(self.config.distill, self.data.image_size[0], self.data.name, self.sources)
        check_ipc(self.data, self.cfg.ipc, self.cfg.factor if is_matching(self.cfg.method) and self.cfg.init != "noise" else 1)
        late = [n for n in self.cfg.snapshots or [] if n > self.cfg.iterations]
        if late:
            raise UserError(f"distill.snapshots {late} lie beyond distill.iterations ({self.cfg.iterations})")
        if self.cfg.snapshots and (self.dist.active or self.args.named_set):
            raise UserError("distill.snapshots are kept by a plain distill run (not under torchrun, not for a named "
                            "set: reproduce --curve keeps those)")

    def record(self) -> dict[str, Any]:
        return {"dataset": to_dict(self.config.dataset), "distill": to_dict(self.cfg), "device": str(self.env.device),
                "processes": self.dist.world, "versions": library_versions()}

    def run(self) -> int:
        lead, cfg, data = self.dist.rank == 0, self.cfg, self.data
        if lead:
            out, finished = self.open_folder(f"distill-{data.name}-{cfg.method}-ipc{cfg.ipc}")
            if finished:
                print(f"{out / 'synset.pt'} is already finished with this config; nothing to do (--force distils it again)")
                return 0
        else:
            out = self.env.run.folder_for(self.env.out, "", record=False)
        if lead:
            shards = f" x {self.dist.world} processes (class shards)" if self.dist.active else ""
            print(f"distilling {data.name} ({data.num_classes} classes, {len(data.train_y)} train images) with "
                  f"{cfg.method}, ipc {cfg.ipc}{f', factor {cfg.factor}' if cfg.factor != 1 else ''}, on "
                  f"{self.env.device}{shards} -> {out}")
        if self.args.named_set and not self.dist.active:
            return self.from_cache(out)
        return self.distill_here(out, lead)

    def from_cache(self, out: Any) -> int:
        """A named set is a cached artifact: made once per resolved config, reused after (the cache
        continual and nas use); ``--out`` receives a copy."""
        maker = SetMaker(self.config.dataset, self.data, self.env.device, self.env.cache, self.env.progress)
        synset, cached, reused = maker.get(self.cfg)
        made = f"reused from the cache ({cached})" if reused else f"made in {synset.meta.get('seconds', 0):.1f} s, cached at {cached}"
        self.summary(synset, out, made)
        return 0

    def distill_here(self, out: Any, lead: bool) -> int:
        d, cfg = self.dist, self.cfg
        shard = None
        if d.active and is_matching(cfg.method):
            scaleout.start(d, self.env.device)
            shard = scaleout.shard_of(self.data.num_classes, d.rank, d.world)
        ckpt = out / (f"checkpoint.rank{d.rank}.pt" if d.active else "checkpoint.pt")
        if self.env.cache.force and ckpt.exists():
            ckpt.unlink()
        extra = {"data_config": to_dict(self.config.dataset), **({"processes": d.world} if shard is not None else {})}
        synset = distill(prepare(self.data, self.config.dataset.zca, self.env.device), cfg, checkpoint=ckpt,
                         resume=not self.env.cache.force, progress=self.env.progress and lead, shard=shard,
                         extra_meta=extra, on_snapshot=lambda it, s, _state: self.snapshot(out, it, s))
        if shard is not None:
            synset = synset.with_images(scaleout.gather_shards(synset.images, self.data.num_classes, cfg.ipc, d,
                                                               self.env.device))
            scaleout.stop(d)
        if lead:
            self.summary(synset, out, f"in {synset.meta.get('seconds', 0):.1f} s")
        ckpt.unlink(missing_ok=True)
        return 0

    @staticmethod
    def snapshot(out: Any, iteration: int, synset: SyntheticSet) -> None:
        """``distill.snapshots``: the set after ``iteration`` iterations in
        ``snapshots/<iteration>/`` (synset.pt and grid.png), for learning curves."""
        folder = out / "snapshots" / str(iteration)
        folder.mkdir(parents=True, exist_ok=True)
        synset.save(folder / "synset.pt")
        synset.save_grid(folder / "grid.png")

    def summary(self, synset: SyntheticSet, out: Any, how: str) -> None:
        path, grid = synset.save(out / "synset.pt"), synset.save_grid(out / "grid.png")
        print(f"\n{self.cfg.method} ipc {self.cfg.ipc} on {self.data.name}: {len(synset.labels)} images "
              f"{tuple(synset.image_shape)}, {how}")
        print(f"  synthetic set: {path}\n  image grid:    {grid}\n  config:        {out / 'config.yaml'}")


register_job(DistillJob)
