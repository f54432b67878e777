"""NAS: the 720-candidate grid, Spearman and top-k against scipy, the validation split, and the
Optuna studies (resume after a kill, concurrent workers, dedupe), the CLI and its errors."""

import json
import threading
import time

import numpy as np
import optuna
import pytest
import torch
from scipy.stats import spearmanr

from distill.errors import UserError
from nas.report import best_pick, spearman, summary_row, top_k_spearman
from nas.space import SPACES, candidate_name, candidate_spec, grid
from nas.study import finished, make_objective, open_storage, open_study, recover, results_table, run_worker
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


def test_killed_study_resumes_without_repeating_finished_candidates(tmp_path):
    space = SPACES["tiny"]
    study = open_study("s", open_storage(None, tmp_path / "j.log"), space)
    calls: list[str] = []
    train = _fake_train(calls)

    def interrupted(params, index):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(params, index)

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, space, interrupted)
    # a process killed outright leaves its trial RUNNING
    orphan = study.ask()
    make_params = {k: orphan.suggest_categorical(k, space[k]) for k in ("depth", "width", "act", "norm", "pool")}
    orphan.set_user_attr("candidate", candidate_name(make_params))
    first = list(calls)
    assert len(finished(study)) == 2

    again = open_study("s", open_storage(None, tmp_path / "j.log"), space)
    recover(again, space)
    run_worker(again, space, train)
    rows = results_table(again)
    assert sorted(rows) == sorted(candidate_name(p) for p in grid(space))
    assert len(calls) == 4 and sorted(calls) == sorted(rows)  # each candidate trained exactly once
    assert set(first) <= set(rows)


def test_two_concurrent_workers_complete_the_grid_once(tmp_path):
    space = SPACES["tiny"]
    open_study("c", open_storage(None, tmp_path / "j.log"), space)
    calls: list[str] = []

    def worker():
        st = open_study("c", open_storage(None, tmp_path / "j.log"), space)
        run_worker(st, space, _fake_train(calls, delay=0.2))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = open_study("c", open_storage(None, tmp_path / "j.log"), space)
    rows = results_table(study)
    assert sorted(rows) == sorted(candidate_name(p) for p in grid(space))
    assert all(len([n for n in rows if n == name]) == 1 for name in rows)
    assert set(calls) == set(rows)


def test_duplicate_trial_is_pruned_before_training(tmp_path):
    space = SPACES["tiny"]
    study = open_study("d", open_storage(None, tmp_path / "j.log"), space)
    calls: list[str] = []
    run_worker(study, space, _fake_train(calls))
    params = grid(space)[0]
    study.enqueue_trial(params)
    study.optimize(make_objective(study, space, _fake_train(calls)), n_trials=1)
    last = study.trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED and "duplicate_of" in last.user_attrs
    assert len(calls) == 4 and len(results_table(study)) == 4


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
    (path,) = (tmp_path / "cache" / "buffers").glob("*/synset.pt")
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


def test_cli_nas_two_worker_processes(tmp_path):
    assert main(_nas(tmp_path, "--proxy", "random_ipc2", "--workers", "2", "--set", "nas.early_stopping=false")) == 0
    rows = json.loads((tmp_path / "run" / "nas.json").read_text())["rows"]
    assert [r["candidates"] for r in rows] == [4, 4]


@pytest.mark.parametrize("extra, message", [
    (["--proxy", "missing/synset.pt"], "does not exist"),
    (["--proxy", "atom_ipc"], "neither a synset.pt path, a buffer named in buffers.yaml"),
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

    from distill.distiller import DistillConfig, resolve, select

    s = select(digits_prep, resolve(DistillConfig(method="random", ipc=2), 16, "digits"))
    replace(s, meta={**s.meta, "dataset": "cifar10"}).save(tmp_path / "other.pt")
    assert main(_nas(tmp_path, "--proxy", str(tmp_path / "other.pt"))) == 2
    assert "made from 'cifar10'" in capsys.readouterr().err


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port (Debian's ``postgresql`` package;
    ``.ci/run`` installs it), with a database ``nas``; yields its SQLAlchemy URL."""
    import glob
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="the postgres extra is not installed (pip install -e '.[postgres]')")
    bindir = Path(initdb[-1]).parent
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
    folder = Path(tempfile.mkdtemp(prefix="pg-test-", dir="/tmp"))
    if as_owner:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = folder / "db"

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_owner, str(bindir / tool), *args], check=True, capture_output=True, timeout=120)

    pg("initdb", "-D", str(db), "-A", "trust", "-U", "postgres")
    pg("pg_ctl", "-D", str(db), "-l", str(folder / "log"), "-w", "-o",
       f"-p {port} -h 127.0.0.1 -k {folder}", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nas"
    finally:
        pg("pg_ctl", "-D", str(db), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


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
    assert main([*argv, "--cache", str(tmp_path / "cache3"), "--storage", postgres_url.replace("+psycopg2", "")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "postgresql+psycopg2://" in err[0]
