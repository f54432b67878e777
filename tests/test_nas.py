"""NAS: the 720-candidate grid, Spearman and top-k against scipy, the validation split, and the
Optuna studies (resume after a kill, concurrent workers, dedupe), the CLI and its errors."""

import json
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from scipy.stats import spearmanr

from distill.errors import UserError
from nas.report import best_pick, spearman, summary_row, top_k_spearman
from nas.space import SPACES, candidate_name, candidate_spec, grid, space_cells
from workers.claims import (ORPHAN_SECONDS, candidate_of, finished, make_objective, open_storage, open_study, reap,
                            results_table, run_worker, worker_alive, worker_id)
from nas.train import val_split
from pipelines.run import main


def test_grid_has_720_distinct_buildable_candidates():
    cands = grid(SPACES["full"])
    assert len(cands) == 720 and len({candidate_name(p) for p in cands}) == 720
    assert len({tuple(p.values()) for p in cands}) == 720
    for p in cands:
        with torch.device("meta"):
            net = candidate_spec(p).build(3, 10, (32, 32))
        assert net(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 10)
    assert len(grid(SPACES["small"])) == 48


def test_spearman_and_top_k_match_scipy():
    g = np.random.default_rng(0)
    a = g.integers(0, 6, 40).astype(float)  # many ties
    b = a + g.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    names = [f"c{i}" for i in range(40)]
    proxy, whole = dict(zip(names, b)), dict(zip(names, a + 0.001 * np.arange(40)))
    for k in (5, 10, 20, 30):
        top = sorted(names, key=lambda n: -whole[n])[:k]
        expected = spearmanr([proxy[n] for n in top], [whole[n] for n in top]).statistic
        assert top_k_spearman(proxy, whole, k) == pytest.approx(expected, abs=1e-12)


def test_summary_row_picks_by_validation_and_reports_whole_test():
    rows = {"a": {"val_acc": 0.9, "test_acc": 0.5, "seconds": 60, "images": 10},
            "b": {"val_acc": 0.8, "test_acc": 0.6, "seconds": 60, "images": 10}}
    whole = {"a": {"test_acc": 0.7}, "b": {"test_acc": 0.75}}
    r = summary_row("p", rows, whole, [5])
    assert best_pick(rows) == "a" and r["best"] == "a" and r["best_whole_test"] == pytest.approx(70.0)
    assert r["spearman"] == pytest.approx(1.0) and r["minutes"] == pytest.approx(2.0) and r["top5"] != r["top5"]
    # imported ground truth without validation accuracies is ranked by test accuracy
    assert best_pick({"a": {"val_acc": float("nan"), "test_acc": 0.7},
                      "b": {"val_acc": float("nan"), "test_acc": 0.75}}) == "b"


def test_validation_split_is_stratified_and_disjoint():
    y = torch.arange(10).repeat_interleave(torch.arange(10, 20))
    tr, va = val_split(y, 10, 0.1, seed=3)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == len(y)
    counts = torch.bincount(y[va], minlength=10)
    assert counts.tolist() == [max(1, round(0.1 * n)) for n in range(10, 20)]
    assert torch.equal(val_split(y, 10, 0.1, seed=3)[1], va)  # seeded


def _fake_train(calls, delay=0.0):
    def train(params, index):
        calls.append(candidate_name(params))
        time.sleep(delay)
        return {"val_acc": 0.1 * index, "test_acc": 0.05 * index, "seconds": delay, "images": 1}
    return train


def _dead_worker() -> str:
    """The worker id of a process that has exited (this host)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from workers.claims import worker_id; print(worker_id())"],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_worker_identity_tells_live_from_dead_processes():
    me = worker_id()
    host, pid, start = me.rsplit(":", 2)
    assert int(pid) == os.getpid() and worker_alive(me)
    dead = _dead_worker()
    assert dead.rsplit(":", 2)[0] == host and not worker_alive(dead)
    assert not worker_alive(f"{host}:{pid}:{int(start) + 1}")  # same pid, another process (pid reused)
    assert worker_alive(f"some-other-host:{pid}:1")  # another host: judged by RDB heartbeats, not here
    import subprocess

    zombie = subprocess.Popen(["true"])  # exited, not yet reaped by its parent
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not worker_alive(f"{host}:{zombie.pid}:?")
    zombie.wait()


def test_killed_study_resumes_without_repeating_finished_candidates(tmp_path):
    space = SPACES["tiny"]
    study = open_study("s", open_storage(None, tmp_path / "j.log"))
    calls: list[str] = []
    train = _fake_train(calls)

    def interrupted(params, index):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(params, index)

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, space_cells(space), interrupted)
    first = list(calls)
    assert len(finished(study)) == 2 and study.trials[-1].state == optuna.trial.TrialState.FAIL
    # a process killed outright leaves its trial RUNNING, signed by a pid that no longer exists
    left = [p for p in grid(space) if candidate_name(p) not in finished(study)]
    study.enqueue_trial(left[1])
    orphan = study.ask()
    orphan.set_user_attr("worker", _dead_worker())
    # and one killed before it signed its trial: failed once it is older than ORPHAN_SECONDS
    study.enqueue_trial(left[0])
    unsigned = study.ask()
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert reap(study, now=frozen[unsigned.number].datetime_start) == 1  # the dead worker's only
    assert candidate_of(frozen[unsigned.number], space_cells(space)) == candidate_name(left[0])

    again = open_study("s", open_storage(None, tmp_path / "j.log"))
    later = frozen[unsigned.number].datetime_start + timedelta(seconds=ORPHAN_SECONDS + 1)
    assert reap(again, now=later) == 1
    run_worker(again, space_cells(space), train)
    rows = results_table(again)
    assert sorted(rows) == sorted(candidate_name(p) for p in grid(space))
    assert len(calls) == 4 and sorted(calls) == sorted(rows)  # each candidate trained exactly once
    assert set(first) <= set(rows) and not {"worker", "claimed_by", "candidate"} & set(next(iter(rows.values())))


def test_two_concurrent_workers_complete_the_grid_once(tmp_path):
    space = SPACES["tiny"]
    open_study("c", open_storage(None, tmp_path / "j.log"))
    calls: list[str] = []

    def worker():
        st = open_study("c", open_storage(None, tmp_path / "j.log"))
        run_worker(st, space_cells(space), _fake_train(calls, delay=0.2), poll=0.05)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = open_study("c", open_storage(None, tmp_path / "j.log"))
    rows = results_table(study)
    assert sorted(rows) == sorted(candidate_name(p) for p in grid(space))
    assert sorted(calls) == sorted(rows)  # nobody trained a candidate twice


def test_duplicate_trial_is_pruned_before_training(tmp_path):
    space = SPACES["tiny"]
    study = open_study("d", open_storage(None, tmp_path / "j.log"))
    calls: list[str] = []
    run_worker(study, space_cells(space), _fake_train(calls))
    params = grid(space)[0]
    study.enqueue_trial(params)
    study.optimize(make_objective(study, space_cells(space), _fake_train(calls)), n_trials=1)
    last = study.trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED and "duplicate_of" in last.user_attrs
    # a trial without a claimed candidate never trains
    study.optimize(make_objective(study, space_cells(space), _fake_train(calls)), n_trials=1)
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED and "candidate" not in study.trials[-1].user_attrs
    assert len(calls) == 4 and len(results_table(study)) == 4


def test_two_claims_of_one_candidate_train_it_once(tmp_path):
    """Two workers that claim the same candidate at the same moment: the lower trial number
    trains it, the other is pruned, whichever worker pops which trial."""
    space = SPACES["tiny"]
    study = open_study("r", open_storage(None, tmp_path / "j.log"))
    params = grid(space)[2]
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    calls: list[str] = []
    study.optimize(make_objective(study, space_cells(space), _fake_train(calls)), n_trials=2)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert calls == [candidate_name(params)] and study.trials[1].user_attrs["duplicate_of"] == 0


_WORKER = """
import os, sys, time
from pathlib import Path
import workers.claims as st
from nas.space import SPACES, candidate_name, space_cells

journal, log, url, remote = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] or None, sys.argv[4] == "remote"
if remote:  # a worker on another machine: only its heartbeat can tell that it died
    st.worker_id = lambda: f"remote-host:{os.getpid()}:1"

def train(params, index):
    name = candidate_name(params)
    with open(log, "a") as fh:
        fh.write(f"start {name}\\n")
    time.sleep(1.5)
    with open(log, "a") as fh:
        fh.write(f"end {name}\\n")
    return {"val_acc": 0.1 * index, "test_acc": 0.05 * index, "seconds": 1.5, "images": 1}

st.run_worker(st.open_study("k", st.open_storage(url, journal, heartbeat=1)), space_cells(SPACES["tiny"]), train, poll=0.2)
"""


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_worker_processes_join_late_and_die_mid_trial(tmp_path, request, storage):
    """OS processes on one study: two start together, one is killed (SIGKILL) in the middle of a
    trial, a third joins late; the survivors train the dead worker's candidate again and every
    candidate has exactly one complete trial. On the journal the dead process is recognised by
    its pid; on PostgreSQL the victim poses as a worker of another host, so its stopped
    heartbeat (1 s, three missed) is what frees its candidate."""
    import subprocess
    import sys

    url = request.getfixturevalue("postgres_url") if storage == "postgresql" else ""
    journal, log = tmp_path / "j.log", tmp_path / "trained.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start(role=""):
        return subprocess.Popen([sys.executable, "-c", _WORKER, str(journal), str(log), url, role], env=env)

    first, second = start("remote" if url else ""), start()
    study = open_study("k", open_storage(url or None, journal))
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").split(":")[1:2] == [str(first.pid)] and "candidate" in t.user_attrs:
                victim = t
        time.sleep(0.05)
    assert victim is not None, "the first worker never started a trial"
    first.send_signal(signal.SIGKILL)
    first.wait()
    late = start()
    assert second.wait(timeout=120) == 0 and late.wait(timeout=120) == 0

    names = sorted(candidate_name(p) for p in grid(SPACES["tiny"]))
    trials = open_study("k", open_storage(url or None, journal)).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["candidate"] for t in complete) == names  # each exactly once
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL
    lines = log.read_text().split()
    ended = sorted(lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "end")
    assert ended == names  # the killed trial never ended; its candidate was trained again to the end
    assert victim.user_attrs["candidate"] in [t.user_attrs["candidate"] for t in complete
                                              if t.user_attrs["worker"] != victim.user_attrs["worker"]]


def test_storage_errors(tmp_path):
    with pytest.raises(UserError, match="not an RDB URL"):
        open_storage("redis://localhost", tmp_path / "j")
    with pytest.raises(UserError, match="cannot open the study storage"):
        open_storage("postgresql://u:p@127.0.0.1:1/nas", tmp_path / "j")
    with pytest.raises(UserError, match="cannot open the study storage"):
        open_storage(f"sqlite:///{tmp_path}/no/such/dir/x.db", tmp_path / "j")


def _nas(tmp_path, *extra):
    return ["nas", "--dataset", "digits", "--space", "tiny", "--proxy-epochs", "3", "--whole-epochs", "1",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--quiet", *extra]


def test_nas_proxies_are_made_without_the_validation_images(tmp_path):
    from distill.datasets import load_dataset
    from distill.synset import SyntheticSet
    from nas.config import NASConfig, resolve_nas
    from nas.search import holdout

    assert main(_nas(tmp_path, "--proxy", "random_ipc3", "--set", "nas.early_stopping=false")) == 0
    (path,) = (tmp_path / "cache" / "sets").glob("*/synset.pt")
    s = SyntheticSet.load(path)
    data = load_dataset("digits", resolution=s.image_shape[1])
    train_idx, val_idx = holdout(data, resolve_nas(NASConfig(), "digits"))
    picked = train_idx[torch.tensor(s.meta["source_indices"])]  # positions in the split -> dataset indices
    assert not set(picked.tolist()) & set(val_idx.tolist()) and s.meta["holdout"] == [0.1, 0]
    assert torch.allclose(s.images, s.preprocess(data.train_x[picked]), atol=1e-6)
    assert torch.equal(s.labels, data.train_y[picked])


def test_cli_nas_end_to_end_cached_and_imported_ground_truth(tmp_path, capsys):
    assert main(_nas(tmp_path, "--proxy", "random_ipc2")) == 0
    blob = json.loads((tmp_path / "run" / "nas.json").read_text())
    assert [r["proxy"] for r in blob["rows"]] == ["random_ipc2", "early_3steps", "whole"]
    assert all(r["candidates"] == 4 for r in blob["rows"]) and blob["rows"][-1]["spearman"] == 1.0
    assert (tmp_path / "run" / "nas_scatter.png").is_file() and (tmp_path / "run" / "nas.md").is_file()
    capsys.readouterr()
    assert main(_nas(tmp_path, "--proxy", "random_ipc2")) == 0  # everything reused
    out = capsys.readouterr().out
    assert out.count("reused") == 4
    # the ground truth made elsewhere, imported from a csv
    whole = blob["candidates"]["whole"]
    csv = tmp_path / "whole.csv"
    csv.write_text("candidate,test_acc,val_acc\n" + "".join(f"{n},{r['test_acc']},{r['val_acc']}\n"
                                                            for n, r in whole.items()))
    assert main(_nas(tmp_path, "--proxy", "random_ipc2", "--whole-results", str(csv), "--out",
                     str(tmp_path / "run2"))) == 0
    blob2 = json.loads((tmp_path / "run2" / "nas.json").read_text())
    assert blob2["rows"][0]["best_whole_test"] == blob["rows"][0]["best_whole_test"]


def test_finished_nas_tables_are_not_replaced_by_another_configuration(tmp_path, capsys):
    argv = _nas(tmp_path, "--proxy", "random_ipc2", "--set", "nas.early_stopping=false")
    assert main(argv) == 0
    table = (tmp_path / "run" / "nas.json").read_text()
    assert main(argv) == 0  # the same job again: rebuilt from the cache
    capsys.readouterr()
    assert main([*argv, "--proxy-epochs", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the finished results of another configuration (nas.json)" in err[0]
    assert json.loads((tmp_path / "run" / "nas.json").read_text())["rows"] == json.loads(table)["rows"]
    assert main([*argv, "--proxy-epochs", "4", "--force"]) == 0


def test_cli_nas_two_worker_processes(tmp_path):
    assert main(_nas(tmp_path, "--proxy", "random_ipc2", "--workers", "2", "--set", "nas.early_stopping=false")) == 0
    rows = json.loads((tmp_path / "run" / "nas.json").read_text())["rows"]
    assert [r["candidates"] for r in rows] == [4, 4]


@pytest.mark.parametrize("signum, code, word", [
    (signal.SIGINT, 130, "interrupted"),
    pytest.param(signal.SIGTERM, 143, "terminated", marks=pytest.mark.slow),  # the same path; SIGINT runs by default
])
def test_interrupting_the_nas_process_alone_stops_its_workers(tmp_path, signum, code, word):
    """SIGINT (`kill -INT`, not a terminal's Ctrl-C, which reaches every process of the group) or
    SIGTERM (a batch scheduler's stop, `kill`) to `run.py nas --workers 2` alone: the command exits
    128 + the signal number at once with a resume hint, and the worker processes it spawned are
    gone with it instead of training the study to its end."""
    import subprocess
    import sys

    argv = [sys.executable, "pipelines/run.py", *_nas(tmp_path, "--proxy", "random_ipc2", "--workers", "2",
                                                       "--whole-epochs", "400")]
    # a command started from a terminal: a suite run in the background (`nohup ... &`) ignores SIGINT,
    # and an ignored signal stays ignored in its children, where Python then installs no handler
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: set[int] = set()
    deadline = time.monotonic() + 300
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        for journal in (tmp_path / "cache" / "nas").glob("*/study.journal"):
            storage = open_storage(None, journal)
            for name in optuna.get_all_study_names(storage):
                for t in optuna.load_study(study_name=name, storage=storage).get_trials(
                        deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    if "candidate" in t.user_attrs:
                        workers.add(int(t.user_attrs["worker"].split(":")[1]))
        time.sleep(0.2)
    assert len(workers) == 2 and proc.pid not in workers, "two workers never trained at once"
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == code
    err = proc.stderr.read()
    assert f"\n{word}; " in err and "the same command" in err, err
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_two_nas_processes_on_one_cache_share_every_study(tmp_path):
    """The scale-out path on one host: two `run.py nas` processes started together on one cache
    both finish with the same table, and every candidate of every study is trained once."""
    import subprocess
    import sys

    argv = [sys.executable, "pipelines/run.py", *_nas(tmp_path, "--proxy", "random_ipc2")]
    procs = [subprocess.Popen([*argv, "--out", str(tmp_path / f"run{i}")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    tables = [json.loads((tmp_path / f"run{i}" / "nas.json").read_text())["rows"] for i in range(2)]
    assert tables[0] == [{**r, "minutes": tables[0][i]["minutes"]} for i, r in enumerate(tables[1])]
    journals = sorted((tmp_path / "cache" / "nas").glob("*/study.journal"))
    assert len(journals) == 3  # whole data, the proxy, early stopping
    names = sorted(candidate_name(p) for p in grid(SPACES["tiny"]))
    for j in journals:
        storage = open_storage(None, j)
        (study_name,) = optuna.get_all_study_names(storage)
        trials = optuna.load_study(study_name=study_name, storage=storage).trials
        trained = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert sorted(t.user_attrs["candidate"] for t in trained) == names
        assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]


@pytest.mark.parametrize("extra, message", [
    (["--proxy", "missing/synset.pt"], "does not exist"),
    (["--proxy", "atom_ipc"], "neither a synset.pt path, a set named in sets.yaml"),
    (["--proxy", "atom_ipc10_emnist"], "unknown dataset 'emnist'"),
    (["--proxy", "random_ipc2", "--storage", "postgresql://u:p@127.0.0.1:1/nas"], "cannot open the study storage"),
    (["--proxy", "random_ipc2_cifar10"], "proxy names dataset 'cifar10'"),
    ([], "give at least one --proxy"),
])
def test_cli_nas_errors(tmp_path, capsys, extra, message):
    assert main(_nas(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_cli_nas_rejects_a_proxy_from_another_dataset(tmp_path, capsys, digits_prep):
    from dataclasses import replace

    from distill.selection import select
    from distill.settings import SetConfig, resolve

    s = select(digits_prep, resolve(SetConfig(method="random", ipc=2), 16, "digits"))
    replace(s, meta={**s.meta, "dataset": "cifar10"}).save(tmp_path / "other.pt")
    assert main(_nas(tmp_path, "--proxy", str(tmp_path / "other.pt"))) == 2
    err = capsys.readouterr().err
    assert "made from 'cifar10'" in err and "evaluate" not in err  # no advice meant for another job


def test_cli_nas_on_a_real_postgresql_server(tmp_path, postgres_url, capsys):
    """Two worker processes share the studies through PostgreSQL: every grid point is trained
    once, and the results equal those of the same job on a local journal file."""
    argv = _nas(tmp_path, "--proxy", "random_ipc2", "--set", "nas.early_stopping=false")
    assert main([*argv, "--workers", "2", "--storage", postgres_url]) == 0
    on_pg = json.loads((tmp_path / "run" / "nas.json").read_text())["rows"]
    storage = open_storage(postgres_url, tmp_path / "unused")
    studies = optuna.get_all_study_names(storage)
    assert len(studies) == 2  # the proxy and the whole-data ground truth
    for name in studies:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert sorted(t.user_attrs["candidate"] for t in done) == sorted(candidate_name(p) for p in grid(SPACES["tiny"]))

    assert main([*argv, "--cache", str(tmp_path / "cache2"), "--out", str(tmp_path / "run2")]) == 0
    on_journal = json.loads((tmp_path / "run2" / "nas.json").read_text())["rows"]
    assert [r["candidates"] for r in on_pg] == [4, 4]
    for a, b in zip(on_pg, on_journal):
        assert a["spearman"] == pytest.approx(b["spearman"], nan_ok=True) and a["best_whole_test"] == pytest.approx(b["best_whole_test"])

    # the plain postgresql:// form picks a driver that is not installed: one error naming the form that works
    capsys.readouterr()
    assert main([*argv, "--cache", str(tmp_path / "cache3"), "--out", str(tmp_path / "run3"),
                 "--storage", postgres_url.replace("+psycopg2", "")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "postgresql+psycopg2://" in err[0]


STARTER = """
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
from workers.claims import open_storage, open_study
storage = open_storage(sys.argv[1], Path(sys.argv[3]))
open_study("fresh", storage)
print("ok")
"""


def test_workers_starting_together_on_a_fresh_database_all_proceed(tmp_path, postgres_url):
    """Six OS processes released at the same moment open one empty PostgreSQL database: the
    first creates Optuna's schema while the others wait for it, and every one opens the study
    (before, a second creator failed with a duplicate-key error on pg_type)."""
    import subprocess
    import sys

    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, postgres_url, str(go), str(tmp_path / "j")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(3)  # every process is importing or waiting at the barrier
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-400:] for _, err in outs]
    assert all(out.strip().endswith("ok") for out, _ in outs)
    assert optuna.get_all_study_names(open_storage(postgres_url, tmp_path / "unused")) == ["fresh"]
