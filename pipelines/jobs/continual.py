"""``run.py continual``: class-incremental learning with synthetic replay memories.

Loads the dataset, makes (or reuses from the artifact cache) every memory it compares, runs the
protocol over the Avalanche benchmark for each, and writes the per-step table (md/csv/json), the
accuracy-vs-classes plot and, optionally, TensorBoard scalars. Each memory's (order, step)
cells are cached as they finish: an interrupted run continues where it stopped, and a repeated
run only redraws the outputs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from continual.config import ER_REVISION, PROTOCOLS, REAL_MEMORIES, ContinualConfig, resolve_continual
from distill.config import execution_free, to_dict
from distill.datasets import quick_defaults
from distill.methods import METHODS, get_method
from distill.report import publish
from distill.settings import DistillSettings, SetConfig, settings_for
from distill.synset import SyntheticSet

from ..cache import CellStore, config_key, file_digest, file_lock
from ..cli import csv_ints, csv_items
from ..common import DataConfig
from ..named_sets import is_path, report_labels
from ..runner import CellPlan, check_storage, run_plan
from ..sets import SetMaker, set_key_config
from . import Job, register_job

if TYPE_CHECKING:
    from continual.protocol import CellResult

CELL_SELECTION = ("memories", "orders")  # which cells a run wants, not what one cell computes


@dataclass
class ContinualJobConfig:
    """``run.py continual``: dataset, protocol, and how memories are distilled when needed."""

    dataset: DataConfig = field(default_factory=lambda: DataConfig(name="cifar100"))
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)  # for memories made here (method, IPC: continual)


@dataclass
class Memory:
    """One compared memory: a set for every class order, or a function giving an order's set
    (selections built step by step), and the identity its cells are cached under."""

    label: str
    source: SyntheticSet | Callable[[int], SyntheticSet]
    identity: str


class ContinualJob(Job):
    name = "continual"
    help = "class-incremental learning with distilled replay memories"
    description = ("Class-incremental learning on Avalanche, two protocols. gdumb (DM's, the default): at every "
                   "step, fresh ConvNets are trained from scratch on the synthetic memories (ipc images per class) of "
                   "all classes seen so far and tested on those classes' real test images. er (experience replay, "
                   "as most continual-learning code uses a buffer): one ConvNet per order learns the steps in turn "
                   "with Avalanche's Naive + ReplayPlugin, each step on its real training images plus the memory of "
                   "the earlier classes, and Avalanche's forgetting is reported too; each network resumes at the "
                   "step after the last one it finished. The real-exemplar memories reservoir, class_balanced and "
                   "herding_buffer (Avalanche's storage policies, the same budget) serve as baselines. Mean +- "
                   "std over models and class orders.\n\n"
                   "Memories named by method are distilled once and cached (--cache); selection methods (random, "
                   "herding, kcenter, ...) are chosen per class order and step from that step's data only; "
                   "synset.pt paths are used as given. Writes continual.{md,csv,json,png}.")
    examples = ("python pipelines/run.py continual --steps 10                  # CIFAR-100, the papers' defaults",
                "python pipelines/run.py continual --steps 5 --dataset digits  # offline, CPU minutes",
                "python pipelines/run.py continual --memories random,runs/x/synset.pt --orders 0,1",
                "python pipelines/run.py continual --protocol er --memories reservoir,herding_buffer,herding,dm,atom")
    Config = ContinualJobConfig
    options = ("dataset", "data_root", "seed", "cache", "force", "workers", "threads", "storage", *Job.options)
    option_help = {"dataset": "dataset (default cifar100)", "data_root": "data folder (default: data)",
                   "seed": "training seed (default 0)", "force": "recompute cached memories and results"}
    flags = {"dataset": ("dataset.name", None), "data_root": ("dataset.root", None), "steps": ("continual.steps", None),
             "protocol": ("continual.protocol", None),
             "ipc": ("continual.ipc", None), "models": ("continual.models", None),
             "epochs": ("continual.epochs", None), "seed": ("continual.seed", None),
             "orders": ("continual.orders", csv_ints("--orders")), "memories": ("continual.memories", csv_items)}
    result = "continual.json"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=int, help="number of experiences (default 10; CIFAR-100 papers: 5 or 10)")
        p.add_argument("--protocol", choices=PROTOCOLS, help="gdumb (default; DM's: fresh networks on the memory "
                                                             "alone) or er (experience replay on Avalanche)")
        p.add_argument("--memories", help=f"comma-separated methods ({', '.join(METHODS)}), synset.pt paths or, "
                                          f"with --protocol er, {' / '.join(REAL_MEMORIES)} (default random,herding,"
                                          "dm,datadam,atom; digits: random,herding,dm,datadam)")
        p.add_argument("--ipc", type=int, help="memory images per class (default 20)")
        p.add_argument("--models", type=int, help="models per step and order (default 3; digits 1)")
        p.add_argument("--orders", help="comma-separated class-order seeds (default 0,1,2,3,4; digits 0,1,2)")
        p.add_argument("--epochs", type=int, help="training epochs per model (default 1000; digits 150)")

    def resolve(self) -> None:
        job = self.config
        self.data = job.dataset.load(quick_defaults(job.dataset.name, "continual").get("resolution"))
        self.cfg = resolve_continual(job.continual, self.data.name, self.data.num_classes)
        self.specs = [m.strip() for m in self.cfg.memories or [] if m.strip()]
        self.labels = report_labels(self.specs, "--memories")
        self.files = [s for s in self.specs if is_path(s)]
        self.policies = [s for s in self.specs if s in REAL_MEMORIES]
        methods = [s for s in self.specs if s not in self.files and s not in self.policies]
        for spec in methods:  # every typo before any long work
            get_method(spec)
        settings_for(methods, job.distill)
        self.set_cfgs = self.resolve_sets({s: SetConfig.of(s, self.cfg.ipc, job.distill) for s in methods},
                                          self.data.image_size[0], self.data.name)
        check_storage(self.env.storage)

    def record(self) -> dict[str, Any]:
        return {"dataset": to_dict(self.config.dataset), "continual": to_dict(self.cfg),
                "distill": to_dict(self.config.distill), "sets": {k: to_dict(v) for k, v in self.set_cfgs.items()},
                **{k: v for k, v in super().record().items() if k in ("device", "cache", "versions")}}

    def run(self) -> int:
        cfg, data = self.cfg, self.data
        out, _ = self.open_folder(f"continual-{data.name}-{cfg.steps}steps")
        print(f"continual learning ({cfg.protocol}) on {self.config.dataset.describe(data)}: {cfg.steps} steps, ipc {cfg.ipc}, "
              f"{cfg.models} model(s) x {len(cfg.orders or [])} class orders, {cfg.epochs} epochs, memories "
              f"{', '.join(self.specs)}, on {self.env.device} -> {out}")
        self.tables(self.run_cells(), out)
        return 0

    def memories(self) -> list[Memory]:
        """Files first (cheap checks), then selections built per class order and step (no image
        of a later step is used), then cached or new distilled sets; in the order given."""
        from continual.baselines import is_stepwise, stepwise_coreset
        from continual.memory import check_memory

        cfg, data, job = self.cfg, self.data, self.config
        shape, k = (data.channels, *data.image_size), data.num_classes
        made: dict[str, Memory] = {}
        for spec in self.files:
            synset = SyntheticSet.load(spec)
            check_memory(synset, data.name, k, shape, cfg.ipc, f"memory {spec}")
            made[spec] = Memory(self.labels[spec], synset, "file:" + file_digest(spec))
        self.maker = SetMaker(job.dataset, data, self.env.device, self.env.cache, self.env.progress)
        for spec in self.policies:
            made[spec] = Memory(spec, spec, "policy:" + spec)
        for spec in [s for s in self.specs if s not in self.files and s not in self.policies]:
            dcfg = self.set_cfgs[spec]
            if is_stepwise(spec):
                def per_order(order: int, method: str = spec, dcfg: Any = dcfg) -> SyntheticSet:
                    synset = stepwise_coreset(self.maker.prep, method, order, cfg.steps, dcfg)
                    check_memory(synset, data.name, k, shape, cfg.ipc, f"memory {method}")
                    return synset

                key = config_key({**set_key_config(job.dataset.identity(data), dcfg), "steps": cfg.steps})
                print(f"  memory {spec}: chosen per class order and step (no later data), key {key}")
                made[spec] = Memory(spec, per_order, "stepwise:" + key)
            else:
                synset, path, reused = self.maker.get(dcfg)
                print(f"  memory {spec}: {'reused' if reused else 'made'} {path}")
                check_memory(synset, data.name, k, shape, cfg.ipc, f"memory {spec}")
                made[spec] = Memory(spec, synset, "buffer:" + self.maker.artifact(dcfg).key)
        return [made[s] for s in self.specs]

    def cell_plan(self) -> CellPlan:
        """The cells: (memory, order, step) under gdumb, (memory, order) under experience replay
        (its steps build on each other), each cached in its memory's artifact as it finishes."""
        from continual.protocol import benchmarks_for, cell_to_dict, run_memory

        cfg, data = self.cfg, self.data
        memories = {m.label: m for m in self.memories()}
        benchmarks = {} if cfg.protocol == "er" else benchmarks_for(data.train_x, data.train_y, data.test_x,
                                                                    data.test_y, data.num_classes, cfg)
        proto = {key: v for key, v in execution_free(to_dict(cfg)).items() if key not in CELL_SELECTION}
        if cfg.protocol == "er":
            proto["revision"] = ER_REVISION  # experience replay's cells of earlier revisions are not reused
        orders, steps = cfg.orders or [], range(cfg.steps)
        wanted = {f"{o}/{s}" for o in orders for s in steps}
        arts = {}
        for m in memories.values():
            art = self.env.cache.artifact("continual", f"{data.name}_{m.label}_{cfg.steps}steps",
                                          {"memory": m.identity, "dataset": self.config.dataset.identity(data),
                                           "protocol": proto}, "cells.json")
            with art.lock():  # its folder, emptied once under --force
                self.env.cache.open(art)
            arts[m.label] = art
        if cfg.protocol == "er":
            from tqdm import tqdm

            from continual.replay import drop_checkpoints, run_replay

            def said(label: str, o: int, model: int, t: int) -> None:  # an order can take hours: a line per step
                tqdm.write(f"  {label} order {o} network {model}: step {t + 1}/{cfg.steps} learnt")

        inputs: dict[tuple[str, str], Any] = {}  # (memory, split) -> images in its input space, made once
        order_sets: dict[tuple[str, int], Any] = {}  # a selection's set of one order, chosen once

        def images(m: Memory, split: str) -> Any:
            if (m.label, split) not in inputs:
                pre = m.source.preprocess if isinstance(m.source, SyntheticSet) else self.maker.prep.preprocess
                inputs[(m.label, split)] = pre(data.train_x if split == "train" else data.test_x)
            return inputs[(m.label, split)]

        def source(m: Memory) -> Any:
            if isinstance(m.source, SyntheticSet) or not callable(m.source):
                return m.source

            def per_order(order: int) -> Any:
                if (m.label, order) not in order_sets:
                    order_sets[(m.label, order)] = m.source(order)
                return order_sets[(m.label, order)]

            return per_order

        def compute(name: str) -> Any:
            label, key = name.rsplit("|", 1)
            m, art = memories[label], arts[label]
            order = int(key.split("/")[0])
            keys = [f"{order}/{s}" for s in steps] if cfg.protocol == "er" else [key]
            with file_lock(art.path / f".cell-{key.replace('/', '-')}.lock"):  # one process computes a cell
                have = CellStore(art, wanted).cells
                if not all(k in have for k in keys):
                    one = replace(cfg, orders=[order])
                    if cfg.protocol == "er":
                        new = run_replay(source(m), images(m, "train"), data.train_y, images(m, "test"), data.test_y,
                                         one, self.env.device, checkpoints=art.path / "steps",
                                         after_step=None if self.env.quiet else partial(said, label))
                    else:
                        new = run_memory(source(m), images(m, "test"), data.test_y, {order: benchmarks[order]}, one,
                                         self.env.device, only={key})
                    have = CellStore.add(art, wanted, {k: cell_to_dict(new[k]) for k in keys}).cells
                    if cfg.protocol == "er":
                        drop_checkpoints(art.path / "steps", order)  # stored: its step files are done with
            return [have[k] for k in keys]

        per_memory = [f"{o}" for o in orders] if cfg.protocol == "er" else [f"{o}/{s}" for o in orders for s in steps]
        return CellPlan("continual", [f"{label}|{k}" for label in memories for k in per_memory], compute,
                        {"cells": {label: art.key for label, art in arts.items()}})

    def run_cells(self) -> dict[str, dict[str, CellResult]]:
        """Every memory's (order, step) cells: from the cache where finished, else computed here
        or by the workers (``pipelines.runner``)."""
        from tqdm import tqdm

        from continual.protocol import cell_from_dict

        plan = self.cell_plan()
        bar = tqdm(total=len(plan.names), desc="continual", disable=self.env.quiet, dynamic_ncols=True)
        try:
            results = run_plan(plan, self, lambda done, _total: bar.update(done - bar.n))
        finally:
            bar.close()
        out: dict[str, dict[str, Any]] = {}
        for name, cells in results.items():
            label = name.rsplit("|", 1)[0]
            out.setdefault(label, {}).update({f"{c['order']}/{c['step']}": cell_from_dict(c) for c in cells})
        return out

    def tables(self, all_cells: dict[str, dict[str, CellResult]], out: Any) -> None:
        from continual.protocol import cell_to_dict, step_stats
        from continual.report import plot_curves, step_rows, tensorboard_log

        cfg, data = self.cfg, self.data
        curves = {name: step_stats(cells, cfg.orders or [], cfg.steps) for name, cells in all_cells.items()}
        rows, columns = step_rows(curves)
        for row in rows:
            row["cells"] = {key: cell_to_dict(c) for key, c in all_cells[row["memory"]].items()}
        plot = plot_curves(curves, out / "continual.png",
                           f"{self.config.dataset.describe(data)}, {cfg.protocol}: {cfg.steps} steps, {cfg.ipc} images/class, "
                           f"{cfg.models} model(s) x {len(cfg.orders or [])} orders")
        tb = tensorboard_log(curves, out / "tensorboard") if cfg.tensorboard else None
        publish(rows, columns, out, "continual", {"dataset": data.name, "device": str(self.env.device),
                                                  "config": to_dict(cfg), "versions": self.record()["versions"]})
        print(f"  plot:   {plot}" + (f"\n  tensorboard: {tb}" if tb else ""))


register_job(ContinualJob)
