"""Result tables written three ways (markdown for people, csv for spreadsheets, json for code)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def pct(mean: float, std: float) -> str:
    """``0.5421, 0.0123 -> '54.21 +- 1.23'`` (percent)."""
    return f"{100 * mean:.2f} +- {100 * std:.2f}"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_tables(rows: list[dict[str, Any]], columns: list[str], out_dir: str | Path, stem: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``stem.md`` (the columns), ``stem.csv`` (the columns) and ``stem.json`` (every
    field of every row, plus ``extra``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    paths["md"].write_text(markdown_table(rows, columns) + "\n")
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    paths["json"].write_text(json.dumps({**(extra or {}), "rows": rows}, indent=2))
    return paths
