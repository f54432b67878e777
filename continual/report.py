"""Continual-learning outputs: the per-step table (one row per memory, one column per number of
classes seen, and the final accuracy) and the accuracy-vs-classes plot with a std band
(the papers' Figure 7)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from distill.report import figure, pct, save_figure

from .protocol import StepStats


def step_rows(curves: dict[str, list[StepStats]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Wide rows ``{memory, "<classes>": "mean +- std", ..., final}`` (with experience replay
    also ``"forgetting@<classes>"`` after each step but the first, and ``forgetting``, the final
    one) and their column names."""
    first = next(iter(curves.values()))
    replay = first[-1].forgetting is not None
    # experience replay: the forgetting after every step but the first (0 by definition)
    forget_cols = [f"forgetting@{s.classes}" for s in first[1:]] if replay else []
    columns = ["memory"] + [str(s.classes) for s in first] + ["final"] + forget_cols
    rows = []
    for name, stats in curves.items():
        row: dict[str, Any] = {"memory": name}
        for s in stats:
            row[str(s.classes)] = pct(s.mean, s.std, s.n)
        row["final"] = pct(stats[-1].mean, stats[-1].std, stats[-1].n)
        row["final_mean"], row["final_std"] = stats[-1].mean, stats[-1].std
        if replay:
            row["forgetting"] = f"{100 * (stats[-1].forgetting or 0):.2f}"  # the final one
            for s in stats[1:]:
                row[f"forgetting@{s.classes}"] = f"{100 * (s.forgetting or 0):.2f}"
        row["steps"] = [{"classes": s.classes, "mean": s.mean, "std": s.std, "n": s.n,
                         **({"forgetting": s.forgetting} if s.forgetting is not None else {})} for s in stats]
        rows.append(row)
    return rows, columns


def plot_curves(curves: dict[str, list[StepStats]], path: str | Path, title: str) -> Path:
    """Accuracy (%) vs number of classes: one line per memory, shaded +- std band; with
    experience replay a second panel shows the forgetting."""
    replay = next(iter(curves.values()))[-1].forgetting is not None
    if replay:
        fig, (ax, fx) = figure((11.0, 4.4), ncols=2)
        for name, stats in curves.items():
            fx.plot([s.classes for s in stats], [100 * (s.forgetting or 0) for s in stats], marker="o", ms=3.5,
                    label=name)
        fx.set_xlabel("number of classes")
        fx.set_ylabel("forgetting (points)")
        fx.set_title("forgetting (first accuracy minus current)")
        fx.set_xticks([s.classes for s in next(iter(curves.values()))])
        fx.grid(alpha=0.3)
        fx.legend(fontsize=8)
    else:
        fig, ax = figure((6.4, 4.4))
    for name, stats in curves.items():
        xs = [s.classes for s in stats]
        m = [100 * s.mean for s in stats]
        sd = [100 * s.std for s in stats]
        (line,) = ax.plot(xs, m, marker="o", ms=3.5, label=f"{name} ({m[-1]:.1f})")
        ax.fill_between(xs, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                        color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("number of classes")
    ax.set_ylabel("test accuracy (%)")
    if replay:  # the long title over both panels
        fig.suptitle(textwrap.fill(title, 110), fontsize=10)
        ax.set_title("accuracy on the classes seen so far")
    else:
        ax.set_title(textwrap.fill(title, 65), fontsize=10)  # a long title would run off the figure
    ax.set_xticks([s.classes for s in next(iter(curves.values()))])
    ax.grid(alpha=0.3)
    ax.legend(title="memory (final acc.)", fontsize=8)
    return save_figure(fig, path)


def tensorboard_log(curves: dict[str, list[StepStats]], folder: str | Path) -> Path | None:
    """Per-step mean accuracies as TensorBoard scalars (``accuracy/<memory>`` vs classes)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed
        return None
    writer = SummaryWriter(str(folder))
    for name, stats in curves.items():
        for s in stats:
            writer.add_scalar(f"accuracy/{name}", s.mean, s.classes)
            writer.add_scalar(f"accuracy_std/{name}", s.std, s.classes)
    writer.close()
    return Path(folder)
