"""``run.py reproduce``: the published tables, cell selection, and a smoke run on fabricated
Fashion-MNIST files checked against ``evaluate`` of the same cached set."""

from __future__ import annotations

import dataclasses
import json

import pytest

from distill.datasets import DATASETS
from distill.errors import UserError
from distill.methods import METHODS
from distill.fixtures import write_mnist
from distill.settings import DistillSettings
from pipelines.common import DataConfig
from pipelines.tables import BUDGETS, cell_configs, load_table, select_cells, table_names
from pipelines.run import main


def test_every_table_reads_and_names_a_registered_dataset():
    assert {"fashionmnist", "mnist", "cifar10", "cifar100", "tinyimagenet"} <= set(table_names())
    for name in table_names():
        t = load_table(name)
        assert t.dataset in DATASETS
        assert t.rows and all(r.mean is None or 0 < r.mean <= 100 for r in t.rows)
        assert all(r.source for r in t.rows)
        # every IPC of an implemented method is a cell; published-only methods are not
        assert select_cells(t, None, None) == [r for r in t.rows if r.runs in METHODS]
        whole = [r for r in t.rows if r.ipc == 0]  # the whole-dataset row, last, where published
        assert whole == ([t.rows[-1]] if t.name != "imagenet64" else [])


def test_cell_selection_and_its_errors():
    t = load_table("fashionmnist")
    cells = select_cells(t, ["atom", "random"], [1, 10])
    assert [(c.label, c.ipc) for c in cells] == [("random", 1), ("random", 10), ("atom", 1), ("atom", 10)]
    with pytest.raises(UserError, match="unknown method for table fashionmnist 'dsa'"):
        select_cells(t, ["dsa"], None)  # published only
    with pytest.raises(UserError, match="has no IPC 20"):
        select_cells(t, None, [20])
    # a row with its own method and settings: atom at multi-formation factor 2
    (f2,) = select_cells(t, ["atom_f2"], [10])
    cfgs = cell_configs(f2, DistillSettings(), BUDGETS["cpu"], DataConfig("fashionmnist"))
    assert (f2.runs, cfgs[0].method, cfgs[0].factor, cfgs[0].iterations) == ("atom", "atom", 2, 100)
    assert cell_configs(f2, DistillSettings(), BUDGETS["cpu"], DataConfig("fashionmnist"), 7)[0].iterations == 7


def test_smoke_run_matches_evaluate_and_resumes_from_cached_cells(tmp_path, capsys):
    root = tmp_path / "fm"
    write_mnist(root, train=300, test=60, seed=3, gz=True)
    argv = ["reproduce", "--table", "fashionmnist", "--budget", "smoke", "--methods", "random,atom", "--ipc", "1",
            "--models", "1", "--data-root", str(root), "--cache", str(tmp_path / "cache"), "--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--curve", "1,2"]) == 0
    first = json.loads((tmp_path / "a" / "reproduce.json").read_text())
    rows = {(r["method"], r["ipc"]): r for r in first["rows"]}
    budget = dataclasses.replace(BUDGETS["smoke"], models=1)  # --models 1 overrides the budget's
    assert first["title"].endswith(budget.describe()) and "budget smoke" in (tmp_path / "a" / "reproduce.md").read_text()
    assert (tmp_path / "a" / "reproduce.png").stat().st_size > 0
    atom = first["cells"]["atom_ipc1"]
    assert atom["iterations"] == max(1, round(8000 * budget.iterations)) and atom["networks"] == 1
    diff = round(rows[("random", 1)]["ours_mean"] - 51.4, 2)
    assert rows[("random", 1)]["difference_value"] == diff and rows[("random", 1)]["difference"] == f"{diff:+.2f}"
    assert rows[("random", 1)]["iterations"] is None  # a selection has no iterations ("—" in the table)
    assert rows[("atom", 1)]["paper"] == "not published" and rows[("atom", 1)]["difference"] is None
    assert rows[("dc", 10)]["ours"] == "published only" and ("random", 10) not in rows  # not selected
    # the curve: atom after 1 and 2 iterations (the latter is the table's cell), random as a flat line
    curve = json.loads((tmp_path / "a" / "curve.json").read_text())["points"]
    assert [(p["label"], p["iterations"]) for p in curve] == [("random", None), ("atom", 1), ("atom", 2)]
    assert curve[2]["accuracies"] == atom["accuracies"] and (tmp_path / "a" / "curve.png").stat().st_size > 0

    # the cell's accuracy is what `evaluate` gives the same cached set with the same recipe
    from distill.synset import SyntheticSet

    made = {SyntheticSet.load(p).meta["iterations"]: p
            for p in (tmp_path / "cache" / "sets").glob("fashionmnist_atom_ipc1-*/synset.pt")}
    assert sorted(made) == [1, 2]  # the snapshot at 1 is a set of its own
    for its, want in ((2, atom["accuracies"]), (1, curve[1]["accuracies"])):
        assert main(["evaluate", "--baseline", "none", "--synset", str(made[its]), "--models", "1", "--epochs", str(budget.epochs),
                     "--data-root", str(root), "--out", str(tmp_path / f"e{its}"), "--device", "cpu", "--quiet"]) == 0
        evaluated = json.loads((tmp_path / f"e{its}" / "evaluation.json").read_text())["rows"][0]
        assert evaluated["accuracies"] == want

    # a second run (as after a kill) reuses every finished cell and writes the same table
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.count("[cached]") == 2
    again = json.loads((tmp_path / "b" / "reproduce.json").read_text())
    assert [r["ours"] for r in again["rows"]] == [r["ours"] for r in first["rows"]]

    # another selection of cells into a folder with finished tables: refused, then --force
    capsys.readouterr()
    assert main([*argv[:6], "random", *argv[7:], "--out", str(tmp_path / "b")]) == 2
    assert "holds the finished results of another configuration (reproduce.json)" in capsys.readouterr().err
    assert main([*argv[:6], "random", *argv[7:], "--out", str(tmp_path / "b"), "--force"]) == 0
    assert "[cached]" in capsys.readouterr().out  # --force replaces the tables, never the cached cells
    assert [r["method"] for r in json.loads((tmp_path / "b" / "reproduce.json").read_text())["rows"]
            if r["ours_mean"] is not None] == ["random"]
