"""Every job's cells on N workers (pipelines.runner, workers.claims): real OS processes of the
command line, one worker killed in the middle of a cell, a late joiner, processes started
together on a fresh PostgreSQL database; the tables must equal those of ``--workers 1``. CPU
sums depend on the thread count, so every run here computes with ``--threads 1``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from distill.files import read_plain
from distill.fixtures import write_mnist
from pipelines.run import main
from workers.claims import open_storage, open_study

RUN = str(Path(__file__).resolve().parents[1] / "pipelines" / "run.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
CONTINUAL = ["continual", "--dataset", "digits", "--steps", "5", "--orders", "0,1", "--epochs", "60", "--ipc", "20",
             "--memories", "random", "--device", "cpu", "--quiet", "--threads", "1"]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, RUN, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return out


def continual_rows(folder: Path) -> list[dict]:
    """The table's rows with every cell's accuracies (its seconds are the machine's)."""
    rows = json.loads((folder / "continual.json").read_text())["rows"]
    for r in rows:
        r["cells"] = {k: {kk: v for kk, v in c.items() if kk != "seconds"} for k, c in r["cells"].items()}
    return rows


def the_study(cache: Path, timeout: float = 120) -> tuple[optuna.Study, Path]:
    """The one study of a run's cells in its cache (waiting for its journal to appear)."""
    deadline = time.monotonic() + timeout
    while not list((cache / "cells").glob("*.journal")):
        assert time.monotonic() < deadline, "no cell study appeared"
        time.sleep(0.1)
    (journal,) = (cache / "cells").glob("*.journal")
    storage = open_storage(None, journal)
    deadline = time.monotonic() + timeout
    while not optuna.get_all_study_names(storage):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (name,) = optuna.get_all_study_names(storage)
    return open_study(name, storage), journal


def running_cell(study: optuna.Study, exclude_pid: int, pick, timeout: float = 180) -> optuna.trial.FrozenTrial:
    """A trial computing a cell for which ``pick(cell name)`` holds, in a worker other than
    ``exclude_pid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker", "")
            if "candidate" in t.user_attrs and pick(t.user_attrs["candidate"]) and \
                    worker.split(":")[1:2] != [str(exclude_pid)]:
                return t
        time.sleep(0.05)
    raise AssertionError("no worker started a cell")


def complete_cells(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
            and "duplicate_of" not in t.user_attrs]


def test_continual_on_two_workers_with_one_killed_and_a_late_joiner_equals_one_worker(tmp_path):
    """``continual --workers 2``: one spawned worker is killed (SIGKILL) in the middle of a cell;
    a second command joins the same cache late with ``--workers 1``. Both finish with the table
    of ``--workers 1`` on its own, each cell has one complete trial, and the killed cell was
    computed again by a survivor."""
    assert main([*CONTINUAL, "--cache", str(tmp_path / "alone"), "--out", str(tmp_path / "alone_run")]) == 0
    want = continual_rows(tmp_path / "alone_run")

    cache = tmp_path / "shared"
    first = start([*CONTINUAL, "--workers", "2", "--cache", str(cache), "--out", str(tmp_path / "a")])
    study, journal = the_study(cache)
    victim = running_cell(study, first.pid, lambda cell: int(cell.rsplit("/", 1)[1]) >= 2)  # a long cell
    os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
    late = start([*CONTINUAL, "--workers", "1", "--cache", str(cache), "--out", str(tmp_path / "b")])
    out = finish(first)
    finish(late)
    assert "1 worker(s) stopped (exit codes [-9]); the others finished their cells" in out
    assert continual_rows(tmp_path / "a") == want and continual_rows(tmp_path / "b") == want

    study = open_study(study.study_name, open_storage(None, journal))
    done = complete_cells(study)
    names = [f"random|{o}/{s}" for o in (0, 1) for s in range(5)]
    assert sorted(t.user_attrs["candidate"] for t in done) == sorted(names)  # each cell once
    assert study.trials[victim.number].state == optuna.trial.TrialState.FAIL
    (redone,) = [t for t in done if t.user_attrs["candidate"] == victim.user_attrs["candidate"]]
    assert redone.user_attrs["worker"] != victim.user_attrs["worker"]
    # and the finished cells are in the memory's artifact, so --workers 1 reuses them all
    stamps = {p: p.stat().st_mtime_ns for p in (cache / "continual").glob("*/cells.json")}
    assert len(stamps) == 1
    assert main([*CONTINUAL, "--cache", str(cache), "--out", str(tmp_path / "c")]) == 0
    assert continual_rows(tmp_path / "c") == want
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_killed_er_command_resumes_its_order_with_the_uninterrupted_table(tmp_path):
    """``continual --protocol er`` as an OS process, SIGKILLed once its network has saved a step
    and before the order ends; the same command run again finishes from the saved step with
    the table of a run never interrupted, and leaves no step files behind."""
    argv = ["continual", "--protocol", "er", "--dataset", "digits", "--steps", "5", "--orders", "0", "--epochs", "6",
            "--models", "2", "--memories", "class_balanced", "--device", "cpu", "--quiet", "--threads", "1"]
    assert main([*argv, "--cache", str(tmp_path / "c0"), "--out", str(tmp_path / "whole")]) == 0
    cache = tmp_path / "c1"
    proc = start([*argv, "--cache", str(cache), "--out", str(tmp_path / "cut")])
    deadline = time.monotonic() + 240
    while not list(cache.glob("continual/*/steps/er-order0-model0.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no step was saved"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (ckpt,) = cache.glob("continual/*/steps/er-order0-model0.pt")
    assert read_plain(ckpt, "step checkpoint")["steps_done"] < 5  # killed inside the order
    assert main([*argv, "--cache", str(cache), "--out", str(tmp_path / "again")]) == 0
    assert continual_rows(tmp_path / "again") == continual_rows(tmp_path / "whole")
    assert not list(cache.glob("continual/*/steps/*.pt"))


def test_er_on_two_workers_with_one_killed_mid_order_resumes_its_step_and_equals_one_worker(tmp_path):
    """``continual --protocol er --workers 2``: a worker is killed after its network saved a step
    of an order and before the order ends; a survivor takes the order over from that step (the
    step file is in the shared cache) and the table equals ``--workers 1``."""
    argv = ["continual", "--protocol", "er", "--dataset", "digits", "--steps", "5", "--orders", "0,1", "--epochs", "6",
            "--models", "1", "--memories", "class_balanced", "--device", "cpu", "--quiet", "--threads", "1"]
    assert main([*argv, "--cache", str(tmp_path / "alone"), "--out", str(tmp_path / "alone_run")]) == 0
    want = continual_rows(tmp_path / "alone_run")
    cache = tmp_path / "shared"
    first = start([*argv, "--workers", "2", "--cache", str(cache), "--out", str(tmp_path / "a")])
    study, _ = the_study(cache)
    victim = running_cell(study, first.pid, lambda cell: True)
    order = int(victim.user_attrs["candidate"].rsplit("|", 1)[1])
    deadline = time.monotonic() + 120
    while not list(cache.glob(f"continual/*/steps/er-order{order}-model0.pt")):
        assert time.monotonic() < deadline, "the victim saved no step"
        time.sleep(0.02)
    os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
    (ckpt,) = cache.glob(f"continual/*/steps/er-order{order}-model0.pt")
    saved = read_plain(ckpt, "step checkpoint")["steps_done"]
    out = finish(first)
    assert "1 worker(s) stopped (exit codes [-9])" in out
    assert 1 <= saved < 5
    assert continual_rows(tmp_path / "a") == want
    assert not list(cache.glob("continual/*/steps/*.pt"))


def test_continual_processes_started_together_on_a_fresh_postgresql_database(tmp_path, postgres_url):
    """Two commands as on two machines (each its own cache) start at the same moment with one
    ``--storage`` URL on an empty database: both finish, each cell is computed once, and both
    write the table of ``--workers 1``."""
    assert main([*CONTINUAL, "--cache", str(tmp_path / "alone"), "--out", str(tmp_path / "alone_run")]) == 0
    want = continual_rows(tmp_path / "alone_run")
    procs = [start([*CONTINUAL, "--storage", postgres_url, "--cache", str(tmp_path / f"m{i}"),
                    "--out", str(tmp_path / f"run{i}")]) for i in range(2)]
    outs = [finish(p) for p in procs]
    assert all("shared through database 127.0.0.1" in o for o in outs)
    assert continual_rows(tmp_path / "run0") == want and continual_rows(tmp_path / "run1") == want
    storage = open_storage(postgres_url, tmp_path / "unused")
    (name,) = optuna.get_all_study_names(storage)
    done = complete_cells(open_study(name, storage))
    assert sorted(t.user_attrs["candidate"] for t in done) == sorted(f"random|{o}/{s}" for o in (0, 1) for s in range(5))
    assert len({t.user_attrs["worker"] for t in done}) == 2  # the work was shared


def test_reproduce_on_two_workers_with_one_killed_equals_one_worker(tmp_path):
    """``reproduce --workers 2`` on a fabricated Fashion-MNIST: a worker killed in the middle of
    a cell (its sets distilled, evaluated) leaves the table and the curves of ``--workers 1``."""
    root = tmp_path / "fm"
    write_mnist(root, train=300, test=60, seed=3, gz=True)
    argv = ["reproduce", "--table", "fashionmnist", "--budget", "smoke", "--methods", "random,dm,atom",
            "--ipc", "1", "--models", "1", "--curve", "1,2", "--data-root", str(root), "--device", "cpu", "--quiet",
            "--threads", "1", "--set", "eval.epochs=40"]

    def tables(folder: Path) -> tuple[list, list]:
        rows = json.loads((folder / "reproduce.json").read_text())["rows"]
        points = json.loads((folder / "curve.json").read_text())["points"]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows], points

    assert main([*argv, "--cache", str(tmp_path / "alone"), "--out", str(tmp_path / "alone_run")]) == 0
    want = tables(tmp_path / "alone_run")
    cache = tmp_path / "shared"
    proc = start([*argv, "--workers", "2", "--cache", str(cache), "--out", str(tmp_path / "a")])
    study, journal = the_study(cache)
    victim = running_cell(study, proc.pid, lambda cell: cell != "random_ipc1")
    os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGKILL)
    out = finish(proc)
    assert "1 worker(s) stopped" in out and tables(tmp_path / "a") == want
    study = open_study(study.study_name, open_storage(None, journal))
    assert sorted(t.user_attrs["candidate"] for t in complete_cells(study)) == \
        sorted(f"{m}_ipc1" for m in ("random", "dm", "atom"))
    assert study.trials[victim.number].state == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--storage", "redis://host/0"], "is not an RDB URL"),
])
def test_bad_worker_options_are_refused_before_any_work(tmp_path, capsys, argv, message):
    assert main([*CONTINUAL, "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err
    assert not (tmp_path / "c").exists()
