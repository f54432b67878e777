"""Continual learning: DM's class orders, the Avalanche benchmark, the synthetic memory as an
Avalanche storage policy, the GDumb-like protocol, its outputs and its errors."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from continual.benchmark import dm_class_order, make_benchmark, step_classes
from continual.config import ContinualConfig, resolve_continual
from continual.memory import SyntheticMemory, check_memory, export_buffers, memory_for
from continual.protocol import CellResult, benchmarks_for, cell_seed, run_memory, step_stats
from continual.report import step_rows
from distill.datasets import load_dataset
from distill.prepare import prepare
from distill.selection import select
from distill.settings import SetConfig, resolve
from distill.errors import UserError
from distill.evaluate import parse_arch
from distill.train import TrainRecipe, train_group
from pipelines.run import main


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", resolution=8)


@pytest.fixture(scope="module")
def memory_set(digits8):
    """A random-real memory: 4 images per class of 8x8 digits."""
    prep = prepare(digits8)
    return select(prep, resolve(SetConfig(method="random", ipc=4), 8, "digits"))


def _bench(data, order, steps):
    return make_benchmark(data.train_x, data.train_y, data.test_x, data.test_y, order, steps)


@pytest.mark.parametrize("k", [10, 100])
def test_class_orders_equal_dms(k):
    saved = np.random.get_state()
    try:
        for s in range(5):
            np.random.seed(s)  # DM's script, verbatim
            expected = np.random.permutation(k).tolist()
            assert dm_class_order(s, k) == expected
    finally:
        np.random.set_state(saved)


def test_benchmark_follows_the_order(digits8):
    order = dm_class_order(3, 10)
    bm = _bench(digits8, order, 5)
    assert len(bm.train_stream) == 5 and len(bm.test_stream) == 5
    for t, (exp, new) in enumerate(zip(bm.train_stream, step_classes(order, 5))):
        assert exp.classes_in_this_experience == set(new)
        assert set(exp.classes_seen_so_far) == set(order[: 2 * (t + 1)])
        # the experience holds exactly the real training images of its classes
        assert len(exp.dataset) == int(torch.isin(digits8.train_y, torch.tensor(new)).sum())
    with pytest.raises(UserError, match="cannot be split into 3 equal steps"):
        step_classes(order, 3)


def test_memory_holds_exactly_ipc_images_of_every_seen_class(digits8, memory_set):
    order = dm_class_order(1, 10)
    bm = _bench(digits8, order, 5)
    mem = SyntheticMemory(memory_set, ipc=4)
    for exp in bm.train_stream:
        mem.post_adapt(None, exp)
        x, y = mem.tensors
        seen = set(exp.classes_seen_so_far)
        counts = torch.bincount(y, minlength=10)
        assert all(int(counts[c]) == (4 if c in seen else 0) for c in range(10))
        for c in seen:  # the very images of the set, nothing else
            assert torch.equal(x[y == c], memory_set.class_images(c))
        # the Avalanche view holds the same samples
        assert len(mem.buffer) == 4 * len(seen) <= mem.max_size
        assert sorted(int(t) for t in mem.buffer.targets) == sorted(y.tolist())
        bx, by, task = mem.buffer[0]  # (image, label, task label 0), as the experiences
        assert torch.equal(bx, x[0]) and int(by) == int(y[0]) and task == 0


def test_memory_errors(digits8, memory_set):
    shape = (1, 8, 8)
    with pytest.raises(UserError, match="made from 'digits'.*runs on 'cifar100'"):
        check_memory(memory_set, "cifar100", 10, shape, 4)
    with pytest.raises(UserError, match="4 images per class where the memory needs 20"):
        check_memory(memory_set, "digits", 10, shape, 20)
    partial = memory_set.subset(list(range(8)))
    with pytest.raises(UserError, match="no images of 2 classes: 8 .*9 "):
        check_memory(partial, "digits", 10, shape, 4)
    with pytest.raises(UserError, match=r"\(1, 8, 8\) images, the benchmark's are \(1, 16, 16\)"):
        check_memory(memory_set, "digits", 10, (1, 16, 16), 4)
    check_memory(memory_set, "digits", 10, shape, 4)  # fits
    mem = SyntheticMemory(memory_set, ipc=4, max_size=8)
    with pytest.raises(UserError, match="exceed the memory size 8"):
        mem.set_classes([0, 1, 2])


def test_models_are_trained_from_scratch_at_every_step(digits8, memory_set):
    """Each step's models equal a fresh training on that step's memory with the step's seed:
    nothing carries over from the previous step."""
    cfg = resolve_continual(ContinualConfig(steps=5, ipc=4, models=2, epochs=3, orders=[2], memories=["x"],
                                            dsa="none"), "digits", 10)
    test_x = memory_set.preprocess(digits8.test_x)
    bms = benchmarks_for(digits8.train_x, digits8.train_y, digits8.test_x, digits8.test_y, 10, cfg)
    seen_cells: list[CellResult] = []
    cells = run_memory(memory_set, test_x, digits8.test_y, bms, cfg, "cpu", on_cell=seen_cells.append)
    assert sorted(cells) == [f"2/{s}" for s in range(5)] and len(seen_cells) == 5
    order = dm_class_order(2, 10)
    for step in (1, 3):
        classes = order[: 2 * (step + 1)]
        x, y, _ = memory_for(memory_set, classes, 4)
        gen = torch.Generator().manual_seed(cell_seed(cfg.seed, 2, step))
        group = train_group(parse_arch("convnet"), 2, x, y, 10, cfg, gen, ensemble=False)
        mask = torch.isin(digits8.test_y, torch.tensor(classes))
        assert cells[f"2/{step}"].accuracies == group.accuracies(test_x[mask], digits8.test_y[mask])
        assert cells[f"2/{step}"].classes == len(classes)
    # resuming with finished cells recomputes nothing
    again = run_memory(memory_set, test_x, digits8.test_y, bms, cfg, "cpu", done=cells,
                       on_cell=lambda c: pytest.fail("recomputed a finished cell"))
    assert again == cells


def test_step_stats_pool_models_and_orders():
    cells = {f"{o}/{s}": CellResult(o, s, 2 * (s + 1), [0.1 * (o + s), 0.2 + 0.1 * s], 0.0)
             for o in (0, 1) for s in (0, 1)}
    stats = step_stats(cells, [0, 1], 2)
    for s, st in enumerate(stats):
        pooled = np.array([0.1 * s, 0.2 + 0.1 * s, 0.1 * (1 + s), 0.2 + 0.1 * s])
        assert st.mean == pytest.approx(pooled.mean()) and st.std == pytest.approx(pooled.std())
        assert st.n == 4 and st.classes == 2 * (s + 1)
    # the table: mean +- std over pooled accuracies; a single accuracy (1 order x 1 model) has no spread
    rows, columns = step_rows({"pooled": stats, "one": step_stats({k: replace(c, accuracies=c.accuracies[:1])
                                                                   for k, c in cells.items() if k[0] == "0"}, [0], 2)})
    assert columns == ["memory", "2", "4", "final"]
    assert rows[0]["final"] == f"{100 * stats[1].mean:.2f} +- {100 * stats[1].std:.2f}"
    assert rows[1]["2"] == "0.00" and rows[1]["final"] == "10.00"  # order 0: 0.1 * (0 + s)


def test_config_defaults_and_checks():
    cfg = resolve_continual(ContinualConfig(), "cifar100", 100)
    assert (cfg.models, cfg.orders, cfg.epochs, cfg.steps, cfg.ipc) == (3, [0, 1, 2, 3, 4], 1000, 10, 20)
    assert cfg.memories == ["random", "herding", "dm", "datadam", "atom"]
    with pytest.raises(UserError, match="one architecture"):
        resolve_continual(ContinualConfig(archs=["convnet", "vgg11"]), "cifar100", 100)
    with pytest.raises(UserError, match="orders is empty"):
        resolve_continual(ContinualConfig(orders=[]), "cifar100", 100)
    with pytest.raises(UserError, match="100 classes cannot be split into 7"):
        resolve_continual(ContinualConfig(steps=7), "cifar100", 100)


def test_export_buffers_and_the_readme_recipe(tmp_path, memory_set):
    path = export_buffers(memory_set, tmp_path / "m.buffers.pt")
    blob = torch.load(path, weights_only=True)  # no code runs, no package needed
    assert sorted(blob["buffers"]) == list(range(10)) and blob["class_names"] == memory_set.class_names
    # the README snippet: memory after step t of a 5-step run with DM's order 0
    order, per_step, t = np.random.RandomState(0).permutation(10), 2, 2
    seen = order[: (t + 1) * per_step]
    x = torch.cat([blob["buffers"][int(c)] for c in seen])
    y = torch.cat([torch.full((len(blob["buffers"][int(c)]),), int(c)) for c in seen])
    ex, ey, _ = memory_for(memory_set, [int(c) for c in seen], 4)
    assert torch.equal(x, ex) and torch.equal(y, ey)


def test_avalanche_gdumb_and_replay_plugins_use_the_memory(digits8, memory_set):
    from avalanche.core import SupervisedPlugin
    from avalanche.training.plugins import ReplayPlugin

    from continual.strategy import gdumb_strategy
    from distill.nets import NetSpec

    test_x = memory_set.preprocess(digits8.test_x)
    bm = make_benchmark(memory_set.preprocess(digits8.train_x), digits8.train_y, test_x, digits8.test_y,
                        dm_class_order(0, 10), 5)
    model = NetSpec("convnet", width=8, depth=2).build(1, 10, (8, 8))
    trained_on = []

    class Spy(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            trained_on.append(sorted(int(t) for t in strategy.adapted_dataset.targets))

    strategy = gdumb_strategy(model, memory_set, ipc=4, recipe=TrainRecipe(epochs=1, batch=16), plugins=[Spy()])
    for exp in list(bm.train_stream)[:2]:
        strategy.train(exp)
        seen = sorted(exp.classes_seen_so_far)
        assert trained_on[-1] == sorted(seen * 4)  # the memory only, 4 per seen class
        metrics = strategy.eval(bm.test_stream[: exp.current_experience + 1])
        assert any(k.startswith("Top1_Acc_Stream") for k in metrics)
    mem = SyntheticMemory(memory_set, ipc=4)
    replay = ReplayPlugin(mem_size=mem.max_size, storage_policy=mem)
    assert replay.storage_policy is mem


def test_cli_continual_digits_end_to_end_and_cached(tmp_path, memory_set, capsys):
    memory_set.save(tmp_path / "rand4.pt")
    argv = ["continual", "--dataset", "digits", "--steps", "5", "--ipc", "4", "--orders", "0,1",
            "--epochs", "2", "--memories", f"dm,{tmp_path / 'rand4.pt'}", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run"), "--quiet", "--set", "distill.iterations=3"]
    assert main(argv) == 0
    out = tmp_path / "run"
    for name in ("continual.md", "continual.csv", "continual.json", "continual.png", "config.yaml"):
        assert (out / name).is_file(), name
    table = (out / "continual.md").read_text()
    assert "| memory | 2 | 4 | 6 | 8 | 10 | final |" in table and "| rand4 |" in table
    rows = json.loads((out / "continual.json").read_text())["rows"]
    assert [r["memory"] for r in rows] == ["dm", "rand4"]
    assert all(len(r["cells"]) == 10 and len(r["steps"]) == 5 for r in rows)
    cells = sorted((tmp_path / "cache" / "continual").glob("*/cells.json"))
    assert len(cells) == 2 and not list((tmp_path / "cache" / "continual").glob("*/cells.partial.json"))
    stamps = [c.stat().st_mtime_ns for c in cells]
    capsys.readouterr()
    assert main(argv) == 0  # the second run reuses the memory and every cell
    assert "memory dm: reused" in capsys.readouterr().out
    assert [c.stat().st_mtime_ns for c in cells] == stamps
    assert json.loads((out / "continual.json").read_text())["rows"] == rows


def test_coreset_memories_use_only_the_data_of_their_step(digits8):
    from dataclasses import replace

    from continual.baselines import stepwise_coreset
    from continual.benchmark import dm_class_order, step_classes
    from distill.prepare import prepare
    from distill.settings import SetConfig, resolve

    steps = step_classes(dm_class_order(0, 10), 5)
    later = torch.isin(digits8.train_y, torch.tensor(steps[-1]))
    # the last step's images replaced by noise: no earlier step's choice may change
    noisy_x = digits8.train_x.clone()
    noisy_x[later] = torch.randint(0, 256, noisy_x[later].shape, generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8)
    noisy = replace(digits8, train_x=noisy_x)
    for method in ("herding", "kcenter", "random"):
        cfg = resolve(SetConfig(method=method, ipc=3, embed_epochs=2), 8, "digits")
        a = stepwise_coreset(prepare(digits8), method, 0, 5, cfg)
        b = stepwise_coreset(prepare(noisy), method, 0, 5, cfg)
        early = [c for s in steps[:-1] for c in s]
        pick = lambda s: torch.tensor(s.meta["source_indices"]).view(10, 3)[early]  # noqa: E731
        assert torch.equal(pick(a), pick(b)), method
        assert torch.equal(digits8.train_y[torch.tensor(a.meta["source_indices"])], a.labels)
    other = stepwise_coreset(prepare(digits8), "random", 1, 5, cfg)  # random: a draw per class order
    assert other.meta["source_indices"] != a.meta["source_indices"]
    assert stepwise_coreset(prepare(digits8), "random", 0, 5, cfg).meta["source_indices"] == a.meta["source_indices"]


def test_cli_stepwise_memory_cells_are_cached(tmp_path, capsys, monkeypatch):
    import continual.baselines as baselines

    argv = ["continual", "--dataset", "digits", "--steps", "2", "--ipc", "2", "--orders", "0,1", "--epochs", "1",
            "--memories", "herding", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--quiet",
            "--set", "distill.embed_epochs=1"]
    made = []
    real = baselines.stepwise_coreset
    monkeypatch.setattr(baselines, "stepwise_coreset", lambda *a: made.append(a[2]) or real(*a))
    assert main(argv) == 0 and made == [0, 1]  # one memory per class order
    assert main(argv) == 0 and made == [0, 1]  # every cell cached: no memory built again
    assert "chosen per class order and step" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--steps", "3"], "10 classes cannot be split into 3 equal steps"),
    (["--memories", "dmm"], "dmm"),
    (["--memories", "MISSING.pt"], "does not exist"),
])
def test_cli_continual_errors(tmp_path, capsys, argv, message):
    code = main(["continual", "--dataset", "digits", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
                 "--quiet", *argv])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_cli_continual_rejects_a_memory_from_another_dataset(tmp_path, memory_set, capsys):
    other = replace(memory_set, meta={**memory_set.meta, "dataset": "cifar10"})
    other.save(tmp_path / "other.pt")
    code = main(["continual", "--dataset", "digits", "--ipc", "4", "--memories", str(tmp_path / "other.pt"),
                 "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "made from 'cifar10'" in capsys.readouterr().err


def test_cli_list_shows_an_interrupted_continual_run_as_partial(tmp_path, memory_set, capsys, monkeypatch, interrupt):
    """Interrupted after its first cell, a continual artifact is listed as partial; the rerun
    finishes it (complete), keeping the finished cell."""
    import continual.protocol as protocol
    from pipelines.cache import list_artifacts

    memory_set.save(tmp_path / "rand4.pt")
    argv = ["continual", "--dataset", "digits", "--steps", "2", "--ipc", "4", "--orders", "0", "--epochs", "1",
            "--memories", str(tmp_path / "rand4.pt"), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run"), "--quiet"]
    real = interrupt(protocol, "train_group", 2)
    assert main(argv) == 130
    rows = [r for r in list_artifacts(tmp_path / "cache") if r["stage"] == "continual"]
    assert [r["status"] for r in rows] == ["partial"]
    monkeypatch.setattr(protocol, "train_group", real)
    assert main(argv) == 0
    rows = [r for r in list_artifacts(tmp_path / "cache") if r["stage"] == "continual"]
    assert [r["status"] for r in rows] == ["complete"]
    cells = json.loads(next((tmp_path / "cache" / "continual").glob("*/cells.json")).read_text())
    assert sorted(cells) == ["0/0", "0/1"]
