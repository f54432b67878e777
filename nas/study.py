"""Optuna studies over the search space: one study per (proxy, condition), a ``GridSampler``
so any number of workers share one grid, storage in a journal file (one host) or an RDB
(several machines), and the bookkeeping that makes a study exact:

- a candidate counts once: its first finished trial. A later trial of the same candidate (a
  re-run Optuna's grid sampler makes under concurrency) is pruned before training, marked
  ``duplicate_of``, and never enters a report;
- an interrupted study resumes: trials left RUNNING by a killed process are failed (journal
  storage; RDB storage uses Optuna's heartbeat) and their candidates queued again, so only
  unfinished candidates are trained;
- a worker stops when every candidate is finished or being trained by another worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from distill.errors import UserError

from .space import KEYS, candidate_name, grid

Objective = Callable[[dict[str, Any], int], dict[str, Any]]


def open_storage(url: str | None, journal: Path) -> Any:
    """A journal file at ``journal`` (``url`` None), or an RDB storage for ``url``
    (``postgresql+psycopg2://`` with the ``postgres`` extra, ``mysql://``, ``sqlite:///``),
    checked by connecting to it."""
    if not url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    if not url.split("://", 1)[0].split("+")[0] in ("postgresql", "mysql", "sqlite"):
        raise UserError(f"storage URL {url!r} is not an RDB URL; use postgresql://user:pass@host/db, "
                        "mysql://..., sqlite:///path.db, or leave --storage out for a local journal file")
    import warnings

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a worker that dies stops its heartbeat; its trial is failed and re-queued
            return RDBStorage(url, heartbeat_interval=60, grace_period=300,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except ModuleNotFoundError as exc:  # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3
        raise UserError(f"cannot open the study storage {url!r}: its database driver {exc.name!r} is not installed; "
                        "use postgresql+psycopg2://user:pass@host/db with pip install -e '.[postgres]' "
                        "(psycopg2-binary)") from exc
    except Exception as exc:  # host unreachable, bad credentials
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"cannot open the study storage {url!r}: {reason}. Check that the database "
                        "server is reachable (URL form: postgresql+psycopg2://user:pass@host/db)") from exc


def open_study(name: str, storage: Any, space: dict[str, list[Any]]) -> optuna.Study:
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                               sampler=optuna.samplers.GridSampler(space, seed=0), load_if_exists=True)


def finished(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Candidate name -> its first complete, non-duplicate trial."""
    out: dict[str, optuna.trial.FrozenTrial] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        name = t.user_attrs.get("candidate")
        if name and "duplicate_of" not in t.user_attrs and name not in out:
            out[name] = t
    return out


def running(study: optuna.Study, before: int | None = None) -> dict[str, int]:
    """Candidate name -> the lowest number of a RUNNING trial on it (numbered below ``before``)."""
    out: dict[str, int] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), key=lambda t: t.number):
        name = t.user_attrs.get("candidate")
        if name and (before is None or t.number < before):
            out.setdefault(name, t.number)
    return out


def recover(study: optuna.Study, space: dict[str, list[Any]]) -> int:
    """Fail trials a killed process left RUNNING and queue their candidates again; returns how
    many were queued. Only for storages no live worker shares (the local journal)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    done = finished(study)
    waiting = {candidate_name(t.params) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if set(t.params) >= set(KEYS)}
    tried = {t.user_attrs.get("candidate") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    queued = 0
    for params in grid(space):
        name = candidate_name(params)
        if name in tried and name not in done and name not in waiting:
            study.enqueue_trial(params, skip_if_exists=False)
            queued += 1
    return queued


def make_objective(study: optuna.Study, space: dict[str, list[Any]], train: Objective) -> Callable:
    index = {candidate_name(p): i for i, p in enumerate(grid(space))}

    def objective(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_categorical(k, space[k]) for k in KEYS}
        name = candidate_name(params)
        trial.set_user_attr("candidate", name)
        earlier = running(study, before=trial.number).get(name)
        first = finished(study).get(name)
        if first is not None or earlier is not None:
            number = first.number if first is not None else earlier
            trial.set_user_attr("duplicate_of", number)
            raise optuna.TrialPruned(f"{name} already trained by trial {number}")
        result = train(params, index[name])
        for key, value in result.items():
            trial.set_user_attr(key, value)
        return float(result["val_acc"])

    return objective


def run_worker(study: optuna.Study, space: dict[str, list[Any]], train: Objective,
               on_trial: Callable[[int, int], None] | None = None) -> None:
    """Train candidates until every one is finished (or being trained by another worker)."""
    names = [candidate_name(p) for p in grid(space)]
    objective = make_objective(study, space, train)
    while True:
        done = finished(study)
        left = [n for n in names if n not in done]
        if on_trial:
            on_trial(len(names) - len(left), len(names))
        if not left or set(left) <= set(running(study)):
            return
        study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)


def results_table(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Candidate name -> its params and results (one row per candidate, duplicates dropped)."""
    return {name: {**t.params, **{k: v for k, v in t.user_attrs.items() if k != "candidate"}, "trial": t.number}
            for name, t in finished(study).items()}
