"""Result tables written three ways (markdown for people, csv for spreadsheets, json for code)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .files import atomic_text, atomic_write


def pct(mean: float, std: float, n: int) -> str:
    """``0.5421, 0.0123 -> '54.21 +- 1.23'`` (percent); over ``n = 1`` value there is no spread
    to state, so ``'54.21'``."""
    return f"{100 * mean:.2f}" if n == 1 else f"{100 * mean:.2f} +- {100 * std:.2f}"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_tables(rows: list[dict[str, Any]], columns: list[str], out_dir: str | Path, stem: str,
                 extra: dict[str, Any] | None = None, title: str | None = None) -> dict[str, Path]:
    """Write ``stem.md`` (``# title`` if given, then the columns), ``stem.csv`` (the columns)
    and ``stem.json`` (every field of every row, plus ``extra``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    atomic_text(paths["md"], (f"# {title}\n\n" if title else "") + markdown_table(rows, columns) + "\n")

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    atomic_write(paths["csv"], write_csv)
    atomic_text(paths["json"], json.dumps({**(extra or {}), "rows": rows}, indent=2))
    return paths


def figure(size: tuple[float, float], ncols: int = 1, dpi: int = 120) -> tuple[Any, Any]:
    """A matplotlib figure and its axes (a list of ``ncols`` when above 1), drawn off-screen
    (Agg), for the report plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=size, dpi=dpi, squeeze=False)
    return fig, (list(axes[0]) if ncols > 1 else axes[0][0])


def save_figure(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Lay out (``tight``: matplotlib's tight layout), write and close ``fig``; returns the path."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def publish(rows: list[dict[str, Any]], columns: list[str], out_dir: str | Path, stem: str,
            extra: dict[str, Any], notes: str = "") -> dict[str, Path]:
    """Write the tables (:func:`write_tables`), print the markdown table and where it went."""
    paths = write_tables(rows, columns, out_dir, stem, extra)
    print("\n" + markdown_table(rows, columns))
    print((f"\n  {notes}" if notes else "") + f"\n  tables: {paths['md']}, {paths['csv'].name}, "
          f"{paths['json'].name}")
    return paths
