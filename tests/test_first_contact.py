"""What a new user meets in the first hour: the data folder remembered, no empty folders after a
failed download, no advice to load untrusted files, no foreign warnings, help that reads."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.fixtures import write_mnist
from pipelines.run import main

ROOT = Path(__file__).resolve().parent.parent


def test_evaluate_finds_the_data_folder_the_set_was_made_from(tmp_path, monkeypatch, capsys):
    """A Fashion-MNIST set made with --data-root is evaluated without repeating it (the set's
    metadata names the folder), also from another working directory; a root given wins."""
    data = tmp_path / "fm"
    written = write_mnist(data, train=60, test=40)
    out = tmp_path / "set"
    assert main(["distill", "--dataset", "fashionmnist", "--data-root", str(data), "--method", "random", "--ipc", "2",
                 "--out", str(out), "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)  # no data/ here
    assert main(["evaluate", "--baseline", "none", "--synset", str(out / "synset.pt"), "--models", "1", "--epochs", "1",
                 "--out", str(tmp_path / "e"), "--quiet", "--explain"]) == 0
    assert f"dataset.root: {data}  # the set's metadata ({out / 'synset.pt'})" in capsys.readouterr().out
    assert main(["evaluate", "--baseline", "none", "--synset", str(out / "synset.pt"), "--models", "1", "--epochs", "1",
                 "--out", str(tmp_path / "e"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "e" / "evaluation.json").read_text())["rows"]
    assert rows and 0 <= rows[0]["mean"] <= 1
    assert len(written["test"][1]) == 40 and not (tmp_path / "data").exists()


def test_a_failed_offline_download_leaves_no_folders(tmp_path, capsys):
    """No network: the download fails with one error line, and the data folder holds nothing
    it did not hold before (no empty FashionMNIST/raw/)."""
    root = tmp_path / "data"
    code = main(["distill", "--dataset", "fashionmnist", "--data-root", str(root), "--method", "random",
                 "--ipc", "1", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert not root.exists() or not any(root.rglob("*"))


@pytest.mark.parametrize("content", [b"just some text\n", "pickle"], ids=["text", "pickle"])
def test_no_advice_to_load_an_untrusted_file(tmp_path, capsys, content):
    """A file that is not a synthetic set: one line saying what it is not; torch's advice to
    retry with weights_only=False (which would run the file's code) is never passed on."""
    path = tmp_path / "x.pt"
    if content == "pickle":
        torch.save({"images": torch.zeros(1), "hook": pickle.loads(pickle.dumps(Path("/")))}, path)
    else:
        path.write_bytes(content)
    assert main(["evaluate", "--synset", str(path), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err
    assert "weights_only" not in err.replace("it is read with weights_only", "") and "WeightsUnpickler" not in err


def test_export_for_avalanche_prints_no_foreign_warning(tmp_path):
    """Avalanche's 'no QP solver' warning (only GEM needs one) is not shown by the toolkit."""
    out = tmp_path / "s"
    assert main(["distill", "--dataset", "digits", "--method", "random", "--ipc", "2", "--out", str(out), "--quiet"]) == 0
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "run.py"), "export", "--synset", str(out / "synset.pt"),
                        "--format", "avalanche"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "exported 20 images" in r.stdout
    assert "QP" not in r.stdout + r.stderr and "warn" not in (r.stdout + r.stderr).lower()


@pytest.mark.parametrize("job", ["distill", "evaluate", "export", "continual", "nas", "reproduce", "list"])
def test_help_is_wrapped_and_states_defaults(job):
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "run.py"), job, "--help"], capture_output=True,
                       text=True, env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    long = [ln for ln in lines if len(ln) > 100 and not ln.lstrip().startswith("python ")]
    assert not long, long  # descriptions wrapped (the examples stay as written)
    text = " ".join(r.stdout.split())
    if job == "reproduce":
        assert re.search(r"--budget .*default full", text) and "hours" in text
    if job == "nas":
        assert re.search(r"--proxy .*\(default", text)
    if job == "export":
        assert "(default npz)" in text
    if job == "evaluate":
        assert "--out DIR output folder (default: the folder of the first --synset file)" in text
