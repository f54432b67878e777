"""``run.py reproduce``: a published table measured cell by cell (docs/protocols.md section 8).

Every cell of an implemented row runs through the same code as ``distill`` + ``evaluate``:
``sets`` synthetic sets (distillation seeds 0..sets-1, each a cached set, resumable from its
checkpoint) x ``models`` networks each, reported as one mean +- std over every network (the
papers' protocol). A finished cell is itself cached, so a killed run continues with the first
unfinished cell and a repeated run only redraws the table. With ``--curve`` every distilled row
is also evaluated at those iterations (one distillation per set, snapshots kept).
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distill.config import to_dict
from distill.errors import UserError
from distill.evaluate import combine_sets, eval_inputs, evaluate_set, resolve_eval
from distill.files import atomic_text
from distill.methods import METHODS
from distill.prepare import check_ipc
from distill.report import pct, write_tables
from distill.settings import DistillSettings, SetConfig, settings_for
from distill.train import TrainRecipe

from ..cache import load_json
from ..cli import csv_ints, csv_items
from ..common import DataConfig
from ..runner import CellPlan, check_storage, run_plan
from ..sets import SetMaker, is_matching
from ..tables import BUDGETS, Published, cell_configs, load_table, plot_curves, plot_table, select_cells, table_names
from . import Job, register_job


@dataclass
class ReproduceJobConfig:
    """``run.py reproduce``: the dataset (name from the table), the distillation settings every
    cell shares (method, IPC, seed and iterations come from the table and the budget) and the
    evaluation recipe (models and epochs come from the budget)."""

    dataset: DataConfig = field(default_factory=DataConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)
    eval: TrainRecipe = field(default_factory=TrainRecipe)


def signed(x: float | None) -> str | None:
    """A difference with its sign (``+0.7``, ``-1.9``), one decimal beyond the papers' own."""
    return None if x is None else f"{x:+.2f}"


def without_reuse(record: dict[str, Any]) -> dict[str, Any]:
    """A cell's record for the tables: what this run found cached is the log's, not the result's."""
    return {k: v for k, v in record.items() if k != "reused"}


class ReproduceJob(Job):
    name = "reproduce"
    help = "measure a published table (paper | ours | difference)"
    description = ("Run every implemented cell of a published table through distill + evaluate (the papers' "
                   "protocol: several synthetic sets x networks, one mean +- std) and write reproduce.{md,csv,json} "
                   "and reproduce.png (paper vs ours per IPC). With --curve N1,N2,... every distilled row is also "
                   "evaluated after those iterations: curve.{md,csv,json,png}.\n\n"
                   "Sets and cells are cached (--cache): a killed run continues with its first unfinished cell. "
                   "The default budget is full, the papers' protocol (hours to days on a CPU); cpu and smoke "
                   "scale it down, and every title says which was run.")
    Config = ReproduceJobConfig
    options = ("data_root", "seed", "cache", "force", "workers", "threads", "storage", *Job.options)
    option_help = {"seed": "first distillation seed (default 0)", "data_root": "data folder (default: data)",
                   "cache": "artifact cache for sets and cells (default: artifacts)",
                   "force": "replace the tables of another configuration in --out (cached sets and cells are kept "
                            "and reused)"}
    flags = {"data_root": ("dataset.root", None), "seed": ("distill.seed", None)}
    result = "reproduce.json"
    force_remakes = False  # --force replaces the tables only; the cached sets and cells are kept

    @classmethod
    def add_parser(cls, sub: Any) -> argparse.ArgumentParser:
        cls.examples = (*(textwrap.fill(f"budget {b.name:6s} {b.describe().split(': ', 1)[1]}", 96,
                                        subsequent_indent=" " * 16) for b in BUDGETS.values()),
                        "python pipelines/run.py reproduce --table fashionmnist --budget smoke "
                        "--data-root /usr/share/datasets/fashion-mnist",
                        "python pipelines/run.py reproduce --table fashionmnist --budget cpu --ipc 10 "
                        "--curve 100,250,500,1000 --data-root /usr/share/datasets/fashion-mnist")
        return super().add_parser(sub)

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--table", required=True, help="one of: " + ", ".join(table_names()))
        p.add_argument("--budget", choices=list(BUDGETS), default="full",
                       help="how much of the papers' protocol to run (default full: their iterations, 5 sets x 20 "
                            "networks x 1000 epochs per cell; cpu and smoke for CPUs, see below)")
        p.add_argument("--methods", help="comma-separated subset of the table's implemented rows")
        p.add_argument("--ipc", help="comma-separated subset of the table's IPCs, e.g. 1,10")
        p.add_argument("--curve", metavar="N1,N2,...", help="also evaluate every distilled row after these "
                                                          "iterations: curve.{md,csv,json,png}")
        p.add_argument("--sets", type=int, help="synthetic sets per cell (default: the budget's)")
        p.add_argument("--models", type=int, help="networks per set (default: the budget's)")

    @classmethod
    def bases(cls, args: argparse.Namespace, device: Any) -> list[tuple[dict[str, Any], str]]:
        table, budget = load_table(args.table), BUDGETS[args.budget]
        return [({"dataset": {"name": table.dataset}}, f"table {table.name}"),
                ({"eval": {"models": args.models or budget.models, "epochs": budget.epochs}},
                 f"budget {budget.name}" + (" and --models" if args.models else ""))]

    def resolve(self) -> None:
        args, job = self.args, self.config
        self.table = load_table(args.table)
        if args.sets is not None and args.sets < 1 or args.models is not None and args.models < 1:
            raise UserError("--sets and --models must be at least 1")
        budget = BUDGETS[args.budget]
        budget = replace(budget, sets=args.sets or budget.sets, models=args.models or budget.models)
        # one cut of the data: --set dataset.per_class, else the budget's (the title states it)
        self.budget = replace(budget, per_class=job.dataset.per_class or budget.per_class)
        job.dataset = replace(job.dataset, per_class=self.budget.per_class)
        if job.dataset.name != self.table.dataset:
            raise UserError(f"table {self.table.name} is measured on {self.table.dataset}, not {job.dataset.name}")
        self.curve = sorted(set(csv_ints("--curve")(args.curve) or []))
        if any(n < 1 for n in self.curve):
            raise UserError(f"--curve takes iteration counts of at least 1, got {args.curve!r}")
        self.cells = select_cells(self.table, csv_items(args.methods), csv_ints("--ipc")(args.ipc))
        self.recipe = resolve_eval(job.eval, job.dataset.name)
        settings_for([c.runs for c in self.cells], job.distill)
        self.plans = [(c, cell_configs(c, job.distill, self.budget, job.dataset, sources=self.sources))
                      for c in self.cells]  # config errors first
        self.data = job.dataset.load()
        for c, cfgs in self.plans:
            check_ipc(self.data, c.ipc, cfgs[0].factor if is_matching(c.runs) else 1)
        check_storage(self.env.storage)

    def record(self) -> dict[str, Any]:
        base = super().record()
        return {"table": self.table.name, "budget": to_dict(self.budget), "cells": [[c.label, c.ipc] for c in self.cells],
                "curve": self.curve, "dataset": to_dict(self.config.dataset), "distill": to_dict(self.config.distill),
                "sets": {f"{c.label}_ipc{c.ipc}": to_dict(cfgs[0]) for c, cfgs in self.plans},
                "eval": to_dict(self.recipe), **{k: base[k] for k in ("device", "cache", "versions")}}

    def run(self) -> int:
        out, _ = self.open_folder(f"reproduce-{self.table.name}-{self.budget.name}")
        curve = f" with curves at {self.curve} iterations" if self.curve else ""
        print(f"reproducing {self.table.name}: {len(self.cells)} cells{curve} on {self.env.device} "
              f"({self.budget.describe()}) -> {out}")
        from tqdm import tqdm

        plan = self.cell_plan()
        # one bar over the cells where workers compute them (in this process each cell shows its own)
        inline = self.env.workers == 1 and not self.env.storage
        bar = tqdm(total=len(plan.names), desc="reproduce cells", disable=self.env.quiet or inline, dynamic_ncols=True)
        try:
            results = run_plan(plan, self, lambda done, _total: bar.update(done - bar.n))
        finally:
            bar.close()
        measured = {(c.label, c.ipc): results[self.cell_name(c)]["record"] for c, _ in self.plans}
        points = [p for c, _ in self.plans for p in results[self.cell_name(c)]["points"]]
        self.tables(measured, points, out)
        return 0

    @staticmethod
    def cell_name(c: Published) -> str:
        return f"{c.label}_ipc{c.ipc}"

    def cell_plan(self) -> CellPlan:
        """One cell per table cell: its sets distilled (or reused) and evaluated, and its curve
        points with it (they share one distillation per set)."""
        self.maker = SetMaker(self.config.dataset, self.data, self.env.device, self.env.cache, self.env.progress)
        plans = {self.cell_name(c): (n, c, cfgs) for n, (c, cfgs) in enumerate(self.plans, 1)}

        def announce(name: str) -> None:
            n, c, cfgs = plans[name]
            work = f"{cfgs[0].iterations} iterations" if is_matching(c.runs) else "selection"
            print(f"\ncell {n}/{len(self.plans)}: {c.label} ipc {c.ipc} ({work} x {len(cfgs)} "
                  f"set{'s' if len(cfgs) > 1 else ''})")

        def report(name: str, result: dict[str, Any]) -> None:
            _n, c, _cfgs = plans[name]
            rec = result["record"]
            paper = "not published" if c.mean is None else f"paper {c.mean:.1f}"
            print(f"  {c.label} ipc {c.ipc}: {pct(rec['mean'], rec['std'], rec['networks'])} ({paper})"
                  + (" [cached]" if rec["reused"] else f" in {rec['wall_seconds']:.0f} s"))
            for point in result["points"]:
                if point["iterations"] is not None:
                    print(f"    {point['iterations']} iterations: {pct(point['mean'], point['std'], point['networks'])}"
                          + (" [cached]" if point["reused"] else ""))

        return CellPlan("reproduce", list(plans), lambda name: self.cell(*plans[name][1:]),
                        {"cells": {name: [self.maker.artifact(cfg).key for cfg in cfgs] for name, (_n, _c, cfgs)
                                   in plans.items()}, "eval": to_dict(self.recipe), "curve": self.curve},
                        announce, report)

    def cell(self, c: Published, cfgs: list[SetConfig]) -> dict[str, Any]:
        """One table cell's record and its curve points, from the cache where finished."""
        matching = is_matching(c.runs)
        if self.curve and matching:  # one distillation per set to the longest point, the others as snapshots
            for cfg in cfgs:
                self.maker.get_curve(cfg, sorted({*self.curve, cfg.iterations}))
        rec = self.measure(cfgs)
        points = []
        for its in (self.curve if matching else [0]) if self.curve else []:
            point = self.measure(cell_configs(c, self.config.distill, self.budget, self.config.dataset, its)) \
                if matching else rec
            points.append({"label": c.label, "method": c.runs, "ipc": c.ipc, "iterations": its if matching else None,
                           "mean": point["mean"], "std": point["std"], "networks": point["networks"],
                           "accuracies": point["accuracies"], "reused": point["reused"]})
        return {"record": rec, "points": points}

    def measure(self, cfgs: list[SetConfig]) -> dict[str, Any]:
        """Distil (or reuse) every set of a cell, evaluate them: the cell's record (cached)."""
        arts = [self.maker.artifact(c) for c in cfgs]
        art = self.env.cache.artifact("reproduce", arts[0].name,
                                      {"sets": [a.key for a in arts], "eval": to_dict(self.recipe)}, "cell.json")

        def make(folder: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            sets = [self.maker.get(c)[0] for c in cfgs]
            data, dev = self.maker.data, self.env.device
            results = combine_sets({f"seed{c.seed}": evaluate_set(s, eval_inputs(s, data), data.test_y, self.recipe, dev,
                                                                  progress=self.env.progress, set_index=i)
                                    for i, (c, s) in enumerate(zip(cfgs, sets))})[0]
            record = {"mean": results.mean, "std": results.std, "networks": len(results.accuracies),
                      "per_set": results.per_set, "accuracies": results.accuracies,
                      "iterations": cfgs[0].iterations if is_matching(cfgs[0].method) else None,
                      "distill_seconds": round(sum(float(s.meta.get("seconds", 0)) for s in sets), 1),
                      "eval_seconds": round(results.seconds, 1), "wall_seconds": round(time.perf_counter() - t0, 1),
                      "distill_config": to_dict(cfgs[0])}
            atomic_text(art.result_path, json.dumps(record, indent=1))
            return record

        record, reused = self.env.cache.get_or_make(art, make, load_json)
        return record | {"reused": reused}

    def tables(self, measured: dict[tuple[str, int], dict[str, Any]], points: list[dict[str, Any]], out: Path) -> None:
        title = f"{self.table.title}; {self.budget.describe()}"
        rows = []
        for r in self.table.rows:
            rec = measured.get((r.label, r.ipc))
            if rec is None and r.runs in METHODS:
                continue  # implemented but not selected
            ours = None if rec is None else round(100 * rec["mean"], 2)
            diff = None if ours is None or r.mean is None else round(ours - r.mean, 2)
            rows.append({"method": r.label, "ipc": r.ipc or "all",
                         "paper": "not published" if r.mean is None else
                         f"{r.mean:.1f}" + (f" +- {r.std:.1f}" if r.std is not None else ""),
                         "ours": "published only" if rec is None else pct(rec["mean"], rec["std"], rec["networks"]),
                         "difference": signed(diff), "difference_value": diff,
                         "networks": rec["networks"] if rec else None, "iterations": rec["iterations"] if rec else None,
                         "seconds": rec["wall_seconds"] if rec else None, "source": r.source,
                         "paper_mean": r.mean, "paper_std": r.std, "ours_mean": ours,
                         "ours_std": None if rec is None else round(100 * rec["std"], 2)})
        columns = ["method", "ipc", "paper", "ours", "difference", "networks", "iterations", "seconds", "source"]
        paths = write_tables(rows, columns, out, "reproduce", title=title, extra={
            "table": self.table.name, "title": title, "budget": to_dict(self.budget), "device": str(self.env.device),
            "distill": to_dict(self.config.distill), "eval": to_dict(self.recipe), "versions": self.record()["versions"],
            "cells": {f"{m}_ipc{i}": without_reuse(rec) for (m, i), rec in measured.items()}})
        chart = plot_table(rows, title, out / "reproduce.png") if measured else None
        print("\n" + paths["md"].read_text().rstrip())
        print(f"\n  tables: {paths['md']}, {paths['csv'].name}, {paths['json'].name}" + (f", chart {chart.name}" if chart else ""))
        if points:
            self.curve_tables(points, out)

    def curve_tables(self, points: list[dict[str, Any]], out: Path) -> None:
        published = {(r.label, r.ipc): r.mean for r in self.table.rows if r.mean is not None}
        b = self.budget
        title = f"{self.table.title}; each point {b.sets} set(s) x {b.models} ConvNet(s) x {b.epochs} epochs"
        points = [without_reuse(p) for p in points]
        rows = [{k: v for k, v in p.items() if k != "accuracies"} | {"accuracy": pct(p["mean"], p["std"], p["networks"])}
                for p in points]
        paths = write_tables(rows, ["label", "ipc", "iterations", "accuracy", "networks"], out, "curve", title=title,
                             extra={"title": title, "points": points, "curve": self.curve,
                                    "published": [{"label": k[0], "ipc": k[1], "mean": v} for k, v in published.items()]})
        plot = plot_curves(points, published, title, out / "curve.png")
        print(f"  curves: {paths['md']}, {paths['csv'].name}, {paths['json'].name}, {plot.name}")


register_job(ReproduceJob)
