"""The cell runner of the jobs whose work is many independent cells (docs/protocols.md section
10): ``continual`` (a memory's (order, step) cells, or its orders under experience replay) and
``reproduce`` (a table's cells with their curve points); NAS's candidates go through the same
claim machinery (``workers.claims``) in ``nas.search.train_all``.

A job describes its cells as a :class:`CellPlan`: their names, and ``compute`` giving one
cell's JSON result (from the job's artifact cache where finished, else computed and cached).
:func:`run_plan` runs it

- in this process, one cell after another (``--workers 1``, no ``--storage``: no study at all);
- or through an Optuna study named after the cells and everything their results depend on:
  ``--workers N`` local processes (:func:`cell_worker`, each rebuilding the job from the same
  command line, one per GPU round-robin or with the CPU threads split), sharing a journal file
  in the cache, or an RDB with ``--storage URL`` that processes on other machines running the
  same command join. Each cell is computed once however workers start, join late or die; a
  dead worker's cell is claimed again by a survivor, and the results are the study's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cache import config_key

HEARTBEAT = 60  # RDB storage: seconds between a cell's heartbeats; three missed ones = a dead worker


@dataclass
class CellPlan:
    """A job's cells: ``names`` (unique, in order), ``compute(name)`` (the cell's JSON result),
    ``identity`` (what the results depend on: the study's name holds its key), and optional
    ``announce(name)`` / ``report(name, result)`` for the job's log lines."""

    label: str
    names: list[str]
    compute: Callable[[str], Any]
    identity: Any
    announce: Callable[[str], None] | None = None
    report: Callable[[str, Any], None] | None = None

    @property
    def study(self) -> str:
        return f"{self.label}-{config_key({'cells': self.names, 'identity': self.identity})}"


def journal_path(cache_root: Path, study: str) -> Path:
    return Path(cache_root) / "cells" / f"{study}.journal"


def check_storage(url: str | None) -> None:
    """Connect to ``--storage`` before any long work (one ``error:`` line when it fails)."""
    if url:
        from workers.claims import open_storage

        open_storage(url, Path(os.devnull), HEARTBEAT)


def run_plan(plan: CellPlan, job: Any, progress: Callable[[int, int], None] = lambda done, total: None
             ) -> dict[str, Any]:
    """Every cell's result (name -> JSON), computed here or by workers (see the module doc)."""
    env = job.env
    total = len(plan.names)
    if env.workers == 1 and not env.storage:
        out: dict[str, Any] = {}
        for i, name in enumerate(plan.names):
            if plan.announce:
                plan.announce(name)
            out[name] = plan.compute(name)
            progress(i + 1, total)
            if plan.report:
                plan.report(name, out[name])
        return out

    import optuna

    from distill.errors import UserError
    from workers import Cells
    from workers.claims import finished, open_storage, open_study, reap, results_table, run_worker
    from workers.pool import run_pool

    journal = journal_path(env.cache.root, plan.study)
    storage = open_storage(env.storage, journal, HEARTBEAT)
    if env.cache.force and plan.study in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=plan.study, storage=storage)  # --force: every cell again
    study = open_study(plan.study, storage)
    dead = reap(study)
    if dead:
        print(f"  {plan.label}: resuming; {dead} cell(s) of stopped workers are computed again")
    where = f"database {env.storage.split('@')[-1]}" if env.storage else str(journal)
    print(f"  {total} cells on {env.workers} worker(s), shared through {where}")
    cells = Cells.named(plan.names)
    if env.workers == 1:
        run_worker(study, cells, lambda params, index: {"result": plan.compute(params["cell"])}, progress)
    else:
        run_pool(cell_worker, (job.name, job.args, plan.study, env.storage, str(journal)), env.workers,
                 env.device, lambda: len(finished(study)), total, plan.label, progress, env.threads)
    rows = results_table(study)
    missing = [n for n in plan.names if n not in rows]
    if missing:
        raise UserError(f"{len(missing)} of {total} cells are not finished (first: {missing[0]}); run the same "
                        "command again to resume")
    out = {n: rows[n]["result"] for n in plan.names}
    if plan.report:
        for name in plan.names:
            plan.report(name, out[name])
    return out


def cell_worker(job_name: str, args: Any, study: str, storage_url: str | None, journal: str,
                device: str, threads: int) -> None:
    """A spawned worker (``--workers N``): rebuild the job from its command line on ``device``,
    quiet (its log is the parent's), and compute cells of ``study`` until none is left. The
    parent has made every shared input (memories, sets) already, so the worker reuses them
    from the cache, and ``--force`` is the parent's alone."""
    from workers import Cells
    from workers.claims import open_storage, open_study, run_worker

    from .jobs import get_job
    from .outputs import RunContext

    torch.set_num_threads(max(1, threads))
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        job = get_job(job_name).from_args(args, RunContext([]))
        job.env.device, job.env.quiet, job.env.cache.force = torch.device(device), True, False
        job.resolve()
        plan = job.cell_plan()
        if plan.study != study:
            raise RuntimeError(f"worker planned study {plan.study}, its parent {study}")
        run_worker(open_study(study, open_storage(storage_url, Path(journal), HEARTBEAT)), Cells.named(plan.names),
                   lambda params, index: {"result": plan.compute(params["cell"])})
