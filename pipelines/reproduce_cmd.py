"""``run.py reproduce``: a published table measured cell by cell (docs/protocols.md section 8).

A table (``pipelines/configs/tables/<name>.yaml``) lists, per method, the published mean
accuracy at each IPC and its source. Every cell of an implemented method runs through the same
code as ``distill`` + ``evaluate``: ``sets`` synthetic sets (distillation seeds 0..sets-1, each
an artifact-cache buffer, resumable from its checkpoint) x ``models`` networks each, reported
as one mean +- std over every network (the papers' protocol). A finished cell is itself cached,
so a killed run continues with the first unfinished cell and a repeated run only redraws the
table. Methods the toolkit does not implement (DC, DSA) and the whole-dataset row appear as
published-only rows.

A budget scales the work for machines smaller than the papers' GPUs; the table's title states it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from distill.config import from_dict, to_dict
from distill.datasets import get_dataset
from distill.prepare import check_ipc
from distill.settings import DistillSettings, SetConfig, resolve, settings_for
from distill.errors import UserError, choice_error
from distill.evaluate import combine_sets, eval_inputs, evaluate_set, resolve_eval
from distill.files import atomic_text
from distill.methods import METHODS, get_method
from distill.report import figure, pct, save_figure, write_tables
from distill.synset import library_versions
from distill.train import TrainRecipe

from .artifacts import Artifact
from .buffers import BufferMaker, is_matching
from .common import DataConfig, RunContext, build_config, pick_device, write_job_config

TABLES_DIR = Path(__file__).resolve().parent / "configs" / "tables"


@dataclass(frozen=True)
class Budget:
    """How much of the papers' protocol a run does (docs/protocols.md section 8)."""

    name: str
    iterations: float  # fraction of each method's own iterations (DataDAM/ATOM 8,000; DM 20,000)
    epochs: int  # evaluation epochs per network (papers: 1000)
    sets: int  # synthetic sets per cell (distillation seeds; papers: 5)
    models: int  # networks per set (papers: 20)
    embed_epochs: int  # training epochs of herding's / k-center's embedding network
    per_class: int | None = None  # real training and test images kept per class (None: all)

    def describe(self) -> str:
        frac = "the papers' iterations" if self.iterations == 1 else f"1/{round(1 / self.iterations)} of the papers' iterations"
        data = f", {self.per_class} training and {self.per_class} test images per class" if self.per_class else ""
        return (f"budget {self.name}: {frac}, {self.sets} set{'s' if self.sets > 1 else ''} x {self.models} "
                f"ConvNet{'s' if self.models > 1 else ''} x {self.epochs} epochs{data}")


BUDGETS = {
    "full": Budget("full", 1.0, 1000, 5, 20, 10),
    "cpu": Budget("cpu", 1 / 80, 300, 1, 3, 2),
    "smoke": Budget("smoke", 1 / 4000, 10, 1, 1, 1, per_class=100),
}


@dataclass(frozen=True)
class Published:
    """One published number: a row's method at one IPC (``ipc`` 0: the whole-dataset row). A
    row is named by its ``label``; it runs ``method`` (the label unless the table names one)
    with the distillation keys of ``settings`` (e.g. ``{"factor": 2}``: multi-formation)."""

    label: str
    ipc: int
    mean: float | None  # None: not published for this dataset (measured only)
    std: float | None
    source: str
    method: str = ""
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def runs(self) -> str:
        return self.method or self.label


@dataclass(frozen=True)
class Table:
    name: str
    dataset: str
    title: str
    rows: tuple[Published, ...]


def table_names() -> list[str]:
    return sorted(p.stem for p in TABLES_DIR.glob("*.yaml"))


def load_table(name: str) -> Table:
    """Read ``configs/tables/<name>.yaml`` (format in the file's header comment)."""
    path = TABLES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise choice_error("table", name, table_names())
    raw = yaml.safe_load(path.read_text())
    rows = []
    for label, r in raw["rows"].items():
        stds = r.get("std") or [None] * len(r["ipc"])
        settings = tuple(sorted((r.get("set") or {}).items()))
        rows += [Published(label, int(i), None if m is None else float(m), s, r["source"], r.get("method", ""), settings)
                 for i, m, s in zip(r["ipc"], r["mean"], stds)]
    if "whole" in raw:
        rows.append(Published("whole dataset", 0, float(raw["whole"]["mean"]), raw["whole"].get("std"),
                              raw["whole"]["source"]))
    return Table(name, raw["dataset"], raw["title"], tuple(rows))


@dataclass
class ReproduceJob:
    """``run.py reproduce``: the dataset (name from the table), the distillation settings every
    cell shares (method, IPC, seed and iterations come from the table and the budget) and the
    evaluation recipe (models and epochs come from the budget)."""

    dataset: DataConfig = field(default_factory=DataConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)
    eval: TrainRecipe = field(default_factory=TrainRecipe)


def _csv_ints(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None


def select_cells(table: Table, methods: list[str] | None, ipcs: list[int] | None) -> list[Published]:
    """The implemented cells to measure, in table order; an unknown selection is an error."""
    implemented = [r for r in table.rows if r.runs in METHODS]
    for m in methods or []:
        if m not in {r.label for r in implemented}:
            raise choice_error(f"method for table {table.name}", m, sorted({r.label for r in implemented}))
    for i in ipcs or []:
        if i not in {r.ipc for r in implemented}:
            raise UserError(f"table {table.name} has no IPC {i}; it has {sorted({r.ipc for r in implemented})}")
    return [r for r in implemented if (not methods or r.label in methods) and (not ipcs or r.ipc in ipcs)]


def cell_configs(cell: Published, settings: DistillSettings, budget: Budget, data: DataConfig,
                 iterations: int | None = None) -> list[SetConfig]:
    """The resolved distillation config of every set of a cell: seed ``s`` for set ``s``, the
    row's own settings, and the method's own iterations scaled by the budget (at least 1), or
    ``iterations`` exactly (a point of a learning curve)."""
    size = data.resolution or get_dataset(data.name).resolution
    row = from_dict(SetConfig, {**to_dict(SetConfig.of(cell.runs, cell.ipc, settings)), **dict(cell.settings)},
                    f"table row {cell.label}")
    base = resolve(row, size, data.name)
    n = iterations if iterations is not None else max(1, round(base.iterations * budget.iterations))
    return [replace(base, seed=settings.seed + s, iterations=n, embed_epochs=budget.embed_epochs)
            for s in range(budget.sets)]


def run_cell(maker: BufferMaker, cfgs: list[SetConfig], recipe: TrainRecipe, root: Path, device: Any,
             progress: bool) -> dict[str, Any]:
    """Distil (or reuse) every set of a cell, evaluate them, return the cell's record (cached)."""
    arts = [maker.artifact(c) for c in cfgs]
    cell = Artifact(root, "reproduce", arts[0].name, {"buffers": [a.key for a in arts], "eval": to_dict(recipe)},
                    "cell.json")
    if cell.complete:
        return json.loads(cell.result_path.read_text()) | {"reused": True}
    with cell.lock():  # another run on the same cell: wait, then reuse its result
        if cell.complete:
            return json.loads(cell.result_path.read_text()) | {"reused": True}
        t0 = time.perf_counter()
        sets = [maker.get(c)[0] for c in cfgs]
        results = combine_sets({f"seed{c.seed}": evaluate_set(s, eval_inputs(s, maker.data), maker.data.test_y, recipe,
                                                              device, progress=progress, set_index=i)
                                for i, (c, s) in enumerate(zip(cfgs, sets))})[0]
        record = {"mean": results.mean, "std": results.std, "networks": len(results.accuracies),
                  "per_set": results.per_set, "accuracies": results.accuracies, "iterations": cfgs[0].iterations,
                  "distill_seconds": round(sum(float(s.meta.get("seconds", 0)) for s in sets), 1),
                  "eval_seconds": round(results.seconds, 1), "wall_seconds": round(time.perf_counter() - t0, 1),
                  "distill_config": to_dict(cfgs[0])}
        cell.open()
        atomic_text(cell.result_path, json.dumps(record, indent=1))
    return record | {"reused": False}


def plot_table(rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Paper vs ours per measured cell (grouped bars)."""
    measured = [r for r in rows if r["ours_mean"] is not None]
    fig, ax = figure((max(5.0, 0.9 * len(measured) + 2), 3.6))
    xs = range(len(measured))
    ax.bar([x - 0.2 for x in xs], [r["paper_mean"] or 0.0 for r in measured], 0.4, label="paper (0: not published)")
    ax.bar([x + 0.2 for x in xs], [r["ours_mean"] for r in measured], 0.4, yerr=[r["ours_std"] for r in measured],
           label="ours", capsize=2)
    ax.set_xticks(list(xs), [f"{r['method']}\nIPC {r['ipc']}" for r in measured], fontsize=7)
    ax.set_ylabel("test accuracy %")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_curves(points: list[dict[str, Any]], published: dict[tuple[str, int], float], title: str,
                path: Path) -> Path:
    """Accuracy against distillation iterations, one panel per IPC: a line per row with its
    spread over networks (band), selections as flat dashed lines, a published number as a
    dotted line in its row's colour, labelled at the right edge. A row has one colour in every
    panel."""
    ipcs = sorted({p["ipc"] for p in points})
    labels = list(dict.fromkeys(p["label"] for p in points))
    colours = {lb: f"C{i % 10}" for i, lb in enumerate(labels)}
    fig, axes = figure((5.4 * len(ipcs), 4.6), ncols=len(ipcs))
    axes = axes if len(ipcs) > 1 else [axes]
    its_all = sorted({p["iterations"] for p in points if p["iterations"]})
    for ax, ipc in zip(axes, ipcs):
        for label in labels:
            pts = sorted((p for p in points if p["ipc"] == ipc and p["label"] == label), key=lambda p: p["iterations"] or 0)
            if not pts:
                continue
            m, sd, c = [100 * p["mean"] for p in pts], [100 * p["std"] for p in pts], colours[label]
            if not pts[0]["iterations"]:  # a selection: no iterations
                ax.axhline(m[0], color=c, ls="--", lw=1.2, label=f"{label} ({m[0]:.1f})")
            else:
                xs = [p["iterations"] for p in pts]
                ax.plot(xs, m, color=c, marker="o", ms=3.5, label=f"{label} ({m[-1]:.1f})")
                if any(p["networks"] > 1 for p in pts):
                    ax.fill_between(xs, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                                    color=c, alpha=0.15, linewidth=0)
            if (label, ipc) in published:
                y = published[(label, ipc)]
                ax.axhline(y, color=c, ls=":", lw=1.2)
                ax.annotate(f"paper {label} {y:.1f}", (1.0, y), xycoords=("axes fraction", "data"), fontsize=7,
                            color=c, ha="right", va="bottom")
        if its_all:
            ax.set_xscale("log")
            ax.set_xticks(its_all, [str(i) for i in its_all])
            ax.minorticks_off()
        ax.set_xlabel("distillation iterations")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"IPC {ipc}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="row (last point); dashed: selection", title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def cmd_reproduce(args: argparse.Namespace, run: RunContext) -> int:
    table = load_table(args.table)
    budget = BUDGETS[args.budget]
    budget = replace(budget, sets=args.sets or budget.sets, models=args.models or budget.models)
    job: ReproduceJob = build_config(ReproduceJob, args, {
        "dataset.name": table.dataset, "dataset.root": args.data_root, "distill.seed": args.seed,
        "eval.models": budget.models, "eval.epochs": budget.epochs,
    })
    # one cut of the data: --set dataset.per_class, else the budget's (the title states it)
    budget = replace(budget, per_class=job.dataset.per_class or budget.per_class)
    job.dataset = replace(job.dataset, per_class=budget.per_class)
    if job.dataset.name != table.dataset:
        raise UserError(f"table {table.name} is measured on {table.dataset}, not {job.dataset.name}")
    if args.sets is not None and args.sets < 1 or args.models is not None and args.models < 1:
        raise UserError("--sets and --models must be at least 1")
    curve = sorted(set(_csv_ints(args.curve, "--curve") or []))
    if any(n < 1 for n in curve):
        raise UserError(f"--curve takes iteration counts of at least 1, got {args.curve!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    cells = select_cells(table, methods, _csv_ints(args.ipc, "--ipc"))
    recipe = resolve_eval(job.eval, job.dataset.name)
    settings_for([c.runs for c in cells], job.distill)
    plans = [(c, cell_configs(c, job.distill, budget, job.dataset)) for c in cells]  # config errors first
    device = pick_device(args.device)
    data = job.dataset.load()
    for c, cfgs in plans:
        check_ipc(data, c.ipc, cfgs[0].factor if is_matching(c.runs) else 1)
    maker = BufferMaker(job.dataset, data, device, args.cache, progress=not args.quiet)
    out = run.folder_for(args.out, f"reproduce-{table.name}-{budget.name}")
    write_job_config(out, {"table": table.name, "budget": to_dict(budget), "cells": [[c.label, c.ipc] for c in cells],
                           "curve": curve, "dataset": to_dict(job.dataset), "distill": to_dict(job.distill),
                           "eval": to_dict(recipe), "device": str(device), "cache": str(args.cache),
                           "versions": library_versions()},
                     "reproduce.json", args.force)
    title = f"{table.title}; {budget.describe()}"
    print(f"reproducing {table.name}: {len(cells)} cells{f' with curves at {curve} iterations' if curve else ''} "
          f"on {device} ({budget.describe()}) -> {out}")
    measured: dict[tuple[str, int], dict[str, Any]] = {}
    points: list[dict[str, Any]] = []
    for n, (c, cfgs) in enumerate(plans, 1):
        matching = is_matching(c.runs)
        work = f"{cfgs[0].iterations} iterations" if matching else "selection"
        print(f"\ncell {n}/{len(plans)}: {c.label} ipc {c.ipc} ({work} x {len(cfgs)} set{'s' if len(cfgs) > 1 else ''})")
        if curve and matching:  # one distillation per set to the longest point, the others as snapshots
            for cfg in cfgs:
                maker.get_curve(cfg, sorted({*curve, cfg.iterations}))
        rec = run_cell(maker, cfgs, recipe, Path(args.cache), device, not args.quiet)
        measured[(c.label, c.ipc)] = rec
        paper = "not published" if c.mean is None else f"paper {c.mean:.1f}"
        print(f"  {c.label} ipc {c.ipc}: {pct(rec['mean'], rec['std'], rec['networks'])} ({paper})"
              + (" [cached]" if rec["reused"] else f" in {rec['wall_seconds']:.0f} s"))
        for its in (curve if matching else [0]) if curve else []:
            point = rec if not matching else run_cell(maker, cell_configs(c, job.distill, budget, job.dataset, its),
                                                      recipe, Path(args.cache), device, not args.quiet)
            points.append({"label": c.label, "method": c.runs, "ipc": c.ipc, "iterations": its if matching else None,
                           "mean": point["mean"], "std": point["std"], "networks": point["networks"],
                           "accuracies": point["accuracies"]})
            if matching:
                print(f"    {its} iterations: {pct(point['mean'], point['std'], point['networks'])}"
                      + (" [cached]" if point["reused"] else ""))
    rows = []
    for r in table.rows:
        rec = measured.get((r.label, r.ipc))
        if rec is None and r.runs in METHODS:
            continue  # implemented but not selected
        ours = None if rec is None else round(100 * rec["mean"], 2)
        rows.append({"method": r.label, "ipc": r.ipc or "all",
                     "paper": "not published" if r.mean is None else
                     f"{r.mean:.1f}" + (f" +- {r.std:.1f}" if r.std is not None else ""),
                     "ours": "published only" if rec is None else pct(rec["mean"], rec["std"], rec["networks"]),
                     "difference": None if ours is None or r.mean is None else round(ours - r.mean, 2),
                     "networks": rec["networks"] if rec else None, "iterations": rec["iterations"] if rec else None,
                     "seconds": rec["wall_seconds"] if rec else None, "source": r.source,
                     "paper_mean": r.mean, "paper_std": r.std, "ours_mean": ours,
                     "ours_std": None if rec is None else round(100 * rec["std"], 2)})
    columns = ["method", "ipc", "paper", "ours", "difference", "networks", "iterations", "seconds", "source"]
    paths = write_tables(rows, columns, out, "reproduce", title=title, extra={
        "table": table.name, "title": title, "budget": to_dict(budget), "device": str(device),
        "distill": to_dict(job.distill), "eval": to_dict(recipe), "versions": library_versions(),
        "cells": {f"{m}_ipc{i}": rec for (m, i), rec in measured.items()}})
    chart = plot_table(rows, title, out / "reproduce.png") if measured else None
    print("\n" + paths["md"].read_text().rstrip())
    print(f"\n  tables: {paths['md']}, {paths['csv'].name}, {paths['json'].name}" + (f", chart {chart.name}" if chart else ""))
    if points:
        published = {(r.label, r.ipc): r.mean for r in table.rows if r.mean is not None}
        ctitle = f"{table.title}; each point {budget.sets} set(s) x {budget.models} ConvNet(s) x {budget.epochs} epochs"
        cpaths = write_tables([{k: v for k, v in p.items() if k != "accuracies"} | {"accuracy": pct(p["mean"], p["std"], p["networks"])}
                               for p in points], ["label", "ipc", "iterations", "accuracy", "networks"], out, "curve",
                              title=ctitle, extra={"title": ctitle, "points": points, "curve": curve,
                                                   "published": [{"label": k[0], "ipc": k[1], "mean": v}
                                                                 for k, v in published.items()]})
        cplot = plot_curves(points, published, ctitle, out / "curve.png")
        print(f"  curves: {cpaths['md']}, {cpaths['csv'].name}, {cpaths['json'].name}, {cplot.name}")
    return 0


def add_parser(sub: Any, common: Any) -> None:
    r = sub.add_parser(
        "reproduce", help="measure a published table (paper | ours | difference)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every implemented cell of a published table through distill + evaluate (the "
                    "papers' protocol: several synthetic sets x networks, one mean +- std) and write "
                    "reproduce.{md,csv,json} and reproduce.png. Cells are cached (--cache): a killed run "
                    "continues with its first unfinished cell.",
        epilog="budgets (distillation iterations are a fraction of each method's own: DataDAM/ATOM 8000, DM 20000):\n"
               + "\n".join(f"  {b.name:6s} {b.describe().split(': ', 1)[1]}" for b in BUDGETS.values())
               + "\n\nexample (offline, Debian's dataset-fashion-mnist):\n"
                 "  python pipelines/run.py reproduce --table fashionmnist --budget smoke \\\n"
                 "      --data-root /usr/share/datasets/fashion-mnist")
    r.add_argument("--table", required=True, help="one of: " + ", ".join(table_names()))
    r.add_argument("--budget", choices=list(BUDGETS), default="full", help="how much of the protocol to run (default full)")
    r.add_argument("--methods", help="comma-separated subset of the table's implemented methods")
    r.add_argument("--ipc", help="comma-separated subset of the table's IPCs, e.g. 1,10")
    r.add_argument("--curve", metavar="N1,N2,...", help="also evaluate every distilled row at these iterations "
                                                      "(one distillation per set, snapshots kept): curve.{md,csv,json,png}")
    r.add_argument("--sets", type=int, help="synthetic sets per cell (default: the budget's)")
    r.add_argument("--models", type=int, help="networks per set (default: the budget's)")
    r.add_argument("--seed", type=int, help="first distillation seed (default 0)")
    r.add_argument("--data-root", help="data folder (default: data)")
    r.add_argument("--cache", default="artifacts", help="artifact cache for sets and cells (default: artifacts)")
    r.add_argument("--force", action="store_true", help="replace the tables of another configuration in --out "
                                                        "(cached sets and cells are kept and reused)")
    common(r)
    r.set_defaults(func=cmd_reproduce)
