"""Published tables and budgets for ``run.py reproduce`` (docs/protocols.md section 8).

A table (``pipelines/configs/tables/<name>.yaml``) lists, per row, the published mean accuracy at
each IPC and its source; a row runs the method of its name, or ``method:`` with the
distillation keys of ``set:`` (``atom_f2``: ATOM at multi-formation factor 2). Methods the
toolkit does not implement (DC, DSA) and the whole-dataset row are published-only. A budget
scales the papers' protocol for smaller machines; every table title states it. The pictures:
paper vs ours per IPC, and accuracy against distillation iterations (learning curves).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from distill.config import Sources, from_dict, to_dict
from distill.datasets import get_dataset
from distill.errors import UserError, choice_error
from distill.methods import METHODS
from distill.report import figure, save_figure
from distill.settings import DistillSettings, SetConfig, resolve

from .common import DataConfig

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
                 iterations: int | None = None, sources: Sources | None = None) -> list[SetConfig]:
    """The resolved distillation config of every set of a cell: seed ``s`` for set ``s``, the
    row's own settings, and the method's own iterations scaled by the budget (at least 1), or
    ``iterations`` exactly (a point of a learning curve). ``sources`` records where the first
    set's values come from, under ``sets.<row>_ipc<N>``."""
    size = data.resolution or get_dataset(data.name).resolution
    row = from_dict(SetConfig, {**to_dict(SetConfig.of(cell.runs, cell.ipc, settings)), **dict(cell.settings)},
                    f"table row {cell.label}")
    prefix = f"sets.{cell.label}_ipc{cell.ipc}"
    if sources is not None:
        sources.alias(prefix, "distill")
        for key, _ in cell.settings:
            sources.set(f"{prefix}.{key}", f"table row {cell.label}")
    base = resolve(row, size, data.name, sources, prefix)
    n = iterations if iterations is not None else max(1, round(base.iterations * budget.iterations))
    if sources is not None:
        sources.set(f"{prefix}.iterations", f"{budget.describe().split(':')[0]} ({n} of {base.iterations})")
        sources.set(f"{prefix}.embed_epochs", budget.describe().split(":")[0])
    return [replace(base, seed=settings.seed + s, iterations=n, embed_epochs=budget.embed_epochs)
            for s in range(budget.sets)]


def plot_table(rows: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Paper vs ours, one panel per IPC: a bar for ours (error bar where the networks spread) beside
    a bar for the paper's number; a published-only row (DC, DSA) as a marker; the whole-dataset
    accuracy as a dashed line across every panel."""
    import textwrap

    cells = [r for r in rows if isinstance(r["ipc"], int)]
    ipcs = sorted({r["ipc"] for r in cells if r["ours_mean"] is not None})
    whole = next((r["paper_mean"] for r in rows if r["ipc"] == "all" and r["paper_mean"] is not None), None)
    widths = [max(3.0, 0.75 * len({r["method"] for r in cells if r["ipc"] == i}) + 1.2) for i in ipcs]
    fig, axes = figure((sum(widths) + 0.6, 4.6), ncols=max(1, len(ipcs)))
    axes = axes if len(ipcs) > 1 else [axes]
    for ax, ipc in zip(axes, ipcs):
        here = [r for r in cells if r["ipc"] == ipc]
        for x, r in enumerate(here):
            if r["ours_mean"] is not None:
                spread = r["ours_std"] if (r["networks"] or 0) > 1 and r["ours_std"] else None
                ax.bar(x - 0.2, r["ours_mean"], 0.4, color="C0", yerr=spread, capsize=3,
                       label="ours" if x == 0 or "ours" not in ax.get_legend_handles_labels()[1] else None)
            if r["paper_mean"] is not None and r["ours_mean"] is not None:
                ax.bar(x + 0.2, r["paper_mean"], 0.4, color="C1",
                       label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None)
            elif r["paper_mean"] is not None:
                ax.plot(x, r["paper_mean"], "D", color="black", ms=6,
                        label="published only" if "published only" not in ax.get_legend_handles_labels()[1] else None)
        if whole is not None:
            ax.axhline(whole, color="grey", ls="--", lw=1, label=f"whole dataset ({whole:g})")
        ax.set_xticks(range(len(here)), [textwrap.fill(r["method"], 9) for r in here], fontsize=8)
        ax.set_title(f"IPC {ipc}")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes:  # one legend for every panel, below them (never over a bar)
        for h, lb in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lb, h)
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return save_figure(fig, path, tight=False)


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


