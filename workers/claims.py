"""Work shared by any number of workers through an Optuna study: a fixed set of independent
cells (:class:`workers.Cells`: NAS candidates, continual cells, reproduce cells), each computed
once, by worker processes here or on machines sharing an RDB, with storage in a journal file
(one host) or an RDB (several machines). The bookkeeping that makes a study exact
(docs/protocols.md section 10); "candidate" below is any cell:

- **claims.** A worker picks a candidate that no trial holds yet and enqueues a trial for it
  (the candidate is fixed in the same storage write that numbers the trial). Trials without a
  claimed candidate are pruned by :class:`ClaimedOnly` and never train;
- **each candidate once.** A trial trains only when no lower-numbered trial holds its
  candidate (waiting, running or complete); otherwise it is pruned before training and marked
  ``duplicate_of``. Two workers that claim one candidate at the same moment are thus resolved
  by trial number, and only the first complete trial of a candidate enters a report;
- **dead workers.** Every trial records its worker (host, process id and start time). A trial
  left RUNNING by a process that no longer exists on this host (journal storage), or whose
  Optuna heartbeat stopped (RDB storage), is failed by the next worker that looks, and its
  candidate is claimed again, so the surviving workers finish it. A study interrupted by
  Ctrl-C or a kill resumes the same way;
- **stopping.** A worker returns only when every candidate has a complete trial; while the
  rest are held by other workers it waits for them (and takes over any whose worker dies).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from distill.errors import UserError, reason

from . import Cells

Objective = Callable[[dict[str, Any], int], dict[str, Any]]  # (cell params, cell index) -> its results

ORPHAN_SECONDS = 300.0  # a RUNNING trial no worker has signed for this long lost its worker before it began


def open_storage(url: str | None, journal: Path, heartbeat: int = 60) -> Any:
    """A journal file at ``journal`` (``url`` None), or an RDB storage for ``url``
    (``postgresql+psycopg2://`` with the ``postgres`` extra, ``mysql://``, ``sqlite:///``),
    checked by connecting to it. RDB trials send a heartbeat every ``heartbeat`` seconds and
    count as dead after three missed ones."""
    if not url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    if not url.split("://", 1)[0].split("+")[0] in ("postgresql", "mysql", "sqlite"):
        raise UserError(f"storage URL {url!r} is not an RDB URL; use postgresql+psycopg2://user:pass@host/db, "
                        "mysql://..., sqlite:///path.db, or leave --storage out for a local journal file")
    try:
        return rdb_storage(url, heartbeat)
    except ModuleNotFoundError as exc:  # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3
        raise UserError(f"cannot open the study storage {url!r}: its database driver {exc.name!r} is not installed; "
                        "use postgresql+psycopg2://user:pass@host/db with pip install -e '.[postgres]' "
                        "(psycopg2-binary)") from exc
    except Exception as exc:  # host unreachable, bad credentials
        raise UserError(f"cannot open the study storage {url!r}: {reason(exc)}. Check that the database "
                        "server is reachable (URL form: postgresql+psycopg2://user:pass@host/db)") from exc


SCHEMA_LOCK = 0x6E61735F736368  # the PostgreSQL advisory lock that serialises schema creation ("nas_sch")
SCHEMA_TRIES = 5


def rdb_storage(url: str, heartbeat: int) -> Any:
    """Optuna's RDB storage for ``url``, safe for workers that start together on an empty
    database. Creating the storage creates Optuna's tables; two processes doing it at once
    collide in PostgreSQL's catalogue (a duplicate key in ``pg_type``). On PostgreSQL the
    creation runs under a session advisory lock, so one process creates the schema and the
    others, waiting for the lock, find it made; on other databases a collision is retried."""
    import sqlalchemy
    from optuna.storages import RDBStorage

    def make() -> Any:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a worker that dies stops its heartbeat; its trial is failed and its candidate claimed again
            return RDBStorage(url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat)

    if url.startswith("postgresql"):
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK})
                try:
                    return make()
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK})
        finally:
            engine.dispose()
    for attempt in range(SCHEMA_TRIES):
        try:
            return make()
        except sqlalchemy.exc.IntegrityError:  # another process created the same table first
            if attempt == SCHEMA_TRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class ClaimedOnly(optuna.samplers.BaseSampler):
    """The study's sampler: every trial that trains was enqueued with its candidate's parameters
    (a claim), so sampling is never needed; a trial created without one (another worker took
    the waiting trial first) is pruned."""

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        raise optuna.TrialPruned("no candidate was claimed for this trial")


def open_study(name: str, storage: Any) -> optuna.Study:
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                               sampler=ClaimedOnly(), load_if_exists=True)


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux; None elsewhere or when
    the process does not exist): ``[0]`` its state, ``[19]`` its start time in clock ticks since
    boot, which with the pid identifies a process even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    """This process as ``host:pid:start``."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return f"{socket.gethostname()}:{pid}:{stat[19] if stat else '?'}"


def worker_alive(worker: str) -> bool:
    """False only for a worker of this host whose process is gone (a zombie included, or its pid
    now belongs to another process); a worker of another host counts as alive (RDB heartbeats
    judge it)."""
    host, pid_text, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    stat = _proc_stat(pid)
    if stat is None:
        return start == "?"  # no /proc: the pid exists, trust it
    return stat[0] != "Z" and (start == "?" or stat[19] == start)


def candidate_of(t: FrozenTrial, cells: Cells) -> str | None:
    """The cell a trial holds: recorded, trained, or claimed when it was enqueued."""
    if "candidate" in t.user_attrs:
        return t.user_attrs["candidate"]
    keys = set(cells.keys)
    params = t.params if set(t.params) >= keys else t.system_attrs.get("fixed_params", {})
    return cells.name_of(params) if set(params) >= keys else None


def finished(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Candidate name -> its first complete, non-duplicate trial."""
    out: dict[str, FrozenTrial] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        name = t.user_attrs.get("candidate")
        if name and "duplicate_of" not in t.user_attrs and name not in out:
            out[name] = t
    return out


def held(study: optuna.Study, cells: Cells, before: int | None = None) -> dict[str, int]:
    """Cell name -> the lowest number of a waiting or running trial holding it (numbered below
    ``before``)."""
    out: dict[str, int] = {}
    live = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    for t in sorted(live, key=lambda t: t.number):
        name = candidate_of(t, cells)
        if name and (before is None or t.number < before):
            out.setdefault(name, t.number)
    return out


def reap(study: optuna.Study, now: datetime | None = None) -> int:
    """Fail the trials whose worker is dead (see the module docstring); returns how many.
    Their candidates become free to claim again."""
    def failed() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))

    before = failed()
    with warnings.catch_warnings():  # "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB: stopped heartbeats; a no-op for the journal
    now = now or datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        unsigned = worker is None and t.datetime_start is not None and \
            (now - t.datetime_start).total_seconds() > ORPHAN_SECONDS
        if unsigned or (worker is not None and not worker_alive(worker)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return failed() - before


def make_objective(study: optuna.Study, cells: Cells, train: Objective) -> Callable:
    index = {name: i for i, name in enumerate(cells.names)}
    me = worker_id()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", me)
        params = {k: trial.suggest_categorical(k, cells.choices[k]) for k in cells.keys}  # the claimed cell
        name = cells.name_of(params)
        trial.set_user_attr("candidate", name)
        first = finished(study).get(name)
        earlier = held(study, cells, before=trial.number).get(name)
        if first is not None or earlier is not None:
            number = first.number if first is not None else earlier
            trial.set_user_attr("duplicate_of", number)
            raise optuna.TrialPruned(f"{name} already held by trial {number}")
        result = train(params, index[name])
        for key, value in result.items():
            trial.set_user_attr(key, value)
        return float(result[cells.value]) if cells.value else 0.0

    return objective


def run_worker(study: optuna.Study, cells: Cells, train: Objective,
               on_trial: Callable[[int, int], None] | None = None, poll: float = 2.0) -> None:
    """Claim and compute cells until every one has a complete trial, waiting for (and taking
    over from dead) workers that hold the last ones."""
    params, names = cells.params, cells.names
    shift = os.getpid() % len(names)  # workers start at different cells: fewer collisions
    order = list(range(shift, len(names))) + list(range(shift))
    objective = make_objective(study, cells, train)
    while True:
        reap(study)
        done = finished(study)
        if on_trial:
            on_trial(len(done), len(names))
        if len(done) == len(names):
            return
        taken = held(study, cells)
        free = [i for i in order if names[i] not in done and names[i] not in taken]
        if free:
            study.enqueue_trial(params[free[0]], skip_if_exists=False)
        elif not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            time.sleep(poll)  # the rest are being trained by other workers
            continue
        study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)


def results_table(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Cell name -> its params and results (one row per cell, duplicates dropped)."""
    bookkeeping = {"candidate", "worker"}
    return {name: {**t.params, **{k: v for k, v in t.user_attrs.items() if k not in bookkeeping}, "trial": t.number}
            for name, t in finished(study).items()}
