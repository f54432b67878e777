"""NAS report: the architecture each proxy picks, its whole-data test accuracy, and Spearman's
rank correlation between proxy-trained and whole-data-trained test accuracies over all
candidates and over the top-k candidates by whole-data accuracy (docs/protocols.md section 5)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.report import figure, save_figure


def ranks(values: list[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tie = v == value
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks, rho = cov(R_a, R_b) / (sd(R_a) sd(R_b)).
    NaN when either side is constant or has fewer than two values."""
    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((da ** 2).sum() * (db ** 2).sum())
    return float((da * db).sum() / denom) if denom > 0 else float("nan")


def top_k_spearman(proxy: dict[str, float], whole: dict[str, float], k: int) -> float:
    """Spearman over the ``k`` candidates with the highest whole-data accuracy (ties broken by
    name, for a stable choice)."""
    names = sorted(whole, key=lambda n: (-whole[n], n))[:k]
    names = [n for n in names if n in proxy]
    return spearman([proxy[n] for n in names], [whole[n] for n in names])


def best_pick(rows: dict[str, dict[str, Any]]) -> str:
    """The candidate a search picks: highest validation accuracy (ties: the name, for stability);
    imported results without validation accuracies are ranked by test accuracy."""
    vals = [rows[n].get("val_acc") for n in rows]
    key = "val_acc" if all(v is not None and not math.isnan(float(v)) for v in vals) else "test_acc"
    return min(rows, key=lambda n: (-float(rows[n][key]), n))


def summary_row(label: str, rows: dict[str, dict[str, Any]], whole: dict[str, dict[str, Any]],
                top_k: list[int]) -> dict[str, Any]:
    """One line of the NAS table for a proxy's results ``rows`` against ``whole``."""
    common = [n for n in rows if n in whole]
    pick = best_pick({n: rows[n] for n in common})
    p_acc = {n: rows[n]["test_acc"] for n in common}
    w_acc = {n: whole[n]["test_acc"] for n in common}
    row: dict[str, Any] = {
        "proxy": label, "candidates": len(common), "best": pick,
        "best_whole_test": 100 * whole[pick]["test_acc"],
        "spearman": spearman([p_acc[n] for n in common], [w_acc[n] for n in common]),
        "minutes": sum(float(rows[n].get("seconds", 0.0)) for n in common) / 60,
        "images": int(rows[common[0]].get("images", 0)) if common else 0,
    }
    for k in top_k:
        row[f"top{k}"] = top_k_spearman(p_acc, w_acc, k) if k <= len(common) else float("nan")
    return row


def scatter(curves: dict[str, dict[str, dict[str, Any]]], whole: dict[str, dict[str, Any]],
            path: str | Path, title: str) -> Path:
    """Proxy-trained vs whole-data-trained test accuracy, one colour per proxy."""
    fig, ax = figure((5.6, 5.2))
    for label, rows in curves.items():
        names = [n for n in rows if n in whole]
        xs = [100 * whole[n]["test_acc"] for n in names]
        ys = [100 * rows[n]["test_acc"] for n in names]
        rho = spearman(xs, ys)
        ax.scatter(xs, ys, s=10, alpha=0.6, label=f"{label} (rho {rho:.2f})")
    ax.set_xlabel("whole-data training: test accuracy (%)")
    ax.set_ylabel("proxy training: test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
