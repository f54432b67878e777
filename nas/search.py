"""The search protocol (docs/protocols.md section 5), independent of the CLI and its cache.

- :func:`check_space_fits`: every candidate of a space must fit the image size.
- :func:`holdout`: the validation split; :func:`without_validation`: the data proxies are
  distilled from; :func:`whole_condition`, :func:`proxy_condition` and
  :func:`early_condition`: the three training conditions.
- :func:`train_all`: every candidate trained under one condition in an Optuna study, by
  this process or by ``workers`` spawned processes, waiting for other machines that share an
  RDB study; an interrupted study resumes.
- :func:`load_whole_results`: whole-data results made elsewhere.

Optuna is imported only when a study runs.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.data import ImageData
from distill.prepare import Prepared
from distill.errors import UserError, reason
from distill.synset import SyntheticSet
from distill.train import steps_per_epoch

from .config import NASConfig
from .space import KEYS, candidate_name, candidate_spec
from .train import Condition, early_epochs, val_split


def check_space_fits(space: dict[str, list[Any]], data: ImageData) -> None:
    """Every candidate's feature maps must survive its pooling at this image size."""
    for pool in space["pool"]:
        params = {"depth": max(space["depth"]), "width": 4, "act": "relu", "norm": "none", "pool": pool}
        try:
            candidate_spec(params).build(data.channels, data.num_classes, data.image_size)
        except UserError as exc:
            raise UserError(f"search space does not fit {data.image_size[0]}x{data.image_size[1]} "
                            f"images: {exc}") from None


def load_whole_results(path: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """Whole-data results made elsewhere: csv or json rows with the five space keys (or a
    ``candidate`` name) and ``test_acc`` (``val_acc`` optional)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"nas.whole_results {p} is a folder; give a csv or json file")
    if not p.is_file():
        raise UserError(f"nas.whole_results file {p} does not exist")
    try:
        if p.suffix == ".json":
            blob = json.loads(p.read_text())
            rows = blob.get("rows") if isinstance(blob, dict) else blob
        else:
            with open(p, newline="") as fh:
                rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise UserError(f"{p} is not a {'json' if p.suffix == '.json' else 'csv'} results file ({reason(exc)})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{p}: expected a list of rows (or {{\"rows\": [...]}}) with test_acc and candidate "
                        f"or {', '.join(KEYS)}")
    out: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(rows, 1):
        if "test_acc" not in r or not (r.get("candidate") or all(k in r for k in KEYS)):
            raise UserError(f"{p}: row {i} needs test_acc and candidate (or {', '.join(KEYS)})")
        name = r.get("candidate") or candidate_name({k: r[k] for k in KEYS})

        def number(col: str, value: Any, row: int = i) -> float:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise UserError(f"{p}: row {row}: {col} {value!r} is not a number") from None

        test_acc, val_acc = number("test_acc", r["test_acc"]), number("val_acc", r.get("val_acc") or "nan")
        if not math.isfinite(test_acc):
            raise UserError(f"{p}: row {i}: test_acc must be a finite number, got {r['test_acc']!r}")
        out[str(name)] = {"test_acc": test_acc, "val_acc": val_acc}
    missing = [n for n in names if n not in out]
    if missing:
        raise UserError(f"{p} lacks {len(missing)} candidates of the space, e.g. {missing[0]}")
    return out


def holdout(data: ImageData, cfg: NASConfig) -> tuple[Tensor, Tensor]:
    """``(train_idx, val_idx)``: the per-class validation split every condition ranks on."""
    return val_split(data.train_y, data.num_classes, cfg.val_fraction, cfg.val_seed)


def without_validation(data: ImageData, train_idx: Tensor) -> ImageData:
    """The training set without the validation images: what proxies are distilled from, so that
    no image that ranks the candidates has shaped the proxy (docs/protocols.md section 5)."""
    return replace(data, train_x=data.train_x[train_idx], train_y=data.train_y[train_idx])


def whole_condition(prep: Prepared, cfg: NASConfig, train_idx: Tensor, val_idx: Tensor) -> Condition:
    """The whole-data condition: the training set minus the validation split."""
    data = prep.data
    return Condition("whole", prep.train_x[train_idx], data.train_y[train_idx], prep.train_x[val_idx],
                     data.train_y[val_idx], prep.test_x, data.test_y, data.num_classes, int(cfg.whole_epochs or 100))


def proxy_condition(synset: SyntheticSet, test_x: Tensor, data: ImageData, val_idx: Tensor,
                    cfg: NASConfig) -> Condition:
    """Training on a synthetic set (its decoded training images, and its soft labels where it has
    them); validation and test images in the set's own input space."""
    return Condition("proxy", synset.decoded()[0], synset.targets(), synset.preprocess(data.train_x[val_idx]),
                     data.train_y[val_idx], test_x, data.test_y, data.num_classes, int(cfg.proxy_epochs or 200),
                     temperature=synset.soft_temperature)


def early_condition(whole: Condition, proxy_images: int, cfg: NASConfig) -> tuple[int, Condition]:
    """The whole data for as many SGD steps as training on ``proxy_images`` images takes."""
    steps = int(cfg.proxy_epochs or 200) * steps_per_epoch(proxy_images, cfg.batch)
    return steps, Condition("early", whole.x, whole.y, whole.val_x, whole.val_y, whole.test_x, whole.test_y,
                            whole.num_classes, early_epochs(steps, len(whole.x), cfg.batch), max_steps=steps)


def train_all(name: str, journal: Path, cond: Condition, cfg: NASConfig, device: torch.device,
              progress: Callable[[int, int], None] = lambda done, total: None,
              threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Train every candidate of ``cfg.space`` under ``cond`` in study ``name`` (a journal file,
    or ``cfg.storage``); return ``candidate -> result row`` once all are done (``threads``:
    each spawned worker's CPU threads, ``workers.pool.worker_devices``)."""
    from workers.claims import finished, open_storage, open_study, reap, results_table, run_worker
    from workers.pool import run_pool

    from .space import get_space, space_cells
    from .train import train_candidate
    from .worker import to_device, worker_main

    cells = space_cells(get_space(cfg.space))
    study = open_study(name, open_storage(cfg.storage, journal, cfg.heartbeat))
    dead = reap(study)
    if dead:
        print(f"  {name}: resuming; {dead} trial(s) of stopped workers failed, their candidates are trained again")
    total = len(cells.params)
    if cfg.workers == 1:
        dev_cond = to_device(cond, device)
        run_worker(study, cells, lambda p, i: train_candidate(p, i, dev_cond, cfg, device), progress)
    else:
        run_pool(worker_main, (cfg.storage, str(journal), name, cond, cfg), cfg.workers, device,
                 lambda: len(finished(study)), total, name, progress, threads)
    rows = results_table(study)
    progress(len(rows), total)
    if len(rows) < total:
        raise UserError(f"study {name} finished only {len(rows)} of {total} candidates; run the command "
                        "again to resume it")
    return rows
