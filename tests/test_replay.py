"""Experience replay on Avalanche (continual.replay): what each training batch holds, the
storage policies' budgets, the herding buffer against herding written out, the accuracy and
forgetting against a plain Avalanche loop measured by hand, resuming at step boundaries (in
process; a SIGKILLed command in tests/test_workers.py), and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin

import continual.replay as replay
from continual.benchmark import dm_class_order, step_classes
from continual.config import ContinualConfig
from continual.replay import REAL_POLICIES, run_replay
from distill.errors import UserError
from distill.files import read_plain
from distill.preprocess import Preprocess
from distill.synset import SyntheticSet
from pipelines.run import main

K = 6


def data(n_per_class: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    return torch.randn(len(y), 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) * 0.5, y


def patterns(n_per_class: int, seed: int):
    """A fixed random 8x8 pattern per class plus noise: learnable in a few epochs (a constant
    offset per class would vanish under the ConvNet's instance norm)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    templates = torch.randn(K, 1, 8, 8, generator=torch.Generator().manual_seed(99))
    return templates[y] + torch.randn(len(y), 1, 8, 8, generator=g), y


@pytest.mark.parametrize("memory", ["synthetic", "class_balanced", "herding_buffer", "reservoir"])
def test_each_batch_replays_the_earlier_classes_memory_within_its_budget(memory, monkeypatch):
    """At step t every training batch holds the step's new classes plus memory images of the
    classes of steps 0..t-1 only; class-balanced and synthetic memories hold ipc images per
    class, the reservoir ipc x K in all."""
    ipc, steps = 3, 3
    x, y = data(20, 0)
    seen_batches: list[tuple[int, list[int]]] = []
    sizes: list[int] = []

    class Spy(SupervisedPlugin):
        def after_forward(self, strategy, **kw):
            seen_batches.append((strategy.experience.current_experience, strategy.mb_y.tolist()))

        def before_training_exp(self, strategy, **kw):
            pol = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin)).storage_policy
            sizes.append(len(pol.buffer))

    made = replay.replay_strategy
    monkeypatch.setattr(replay, "replay_strategy", lambda *a, **k: (s := made(*a, **k), s.plugins.append(Spy()))[0])
    synset = SyntheticSet(*data(ipc, 1), [str(i) for i in range(K)], Preprocess(torch.zeros(1), torch.ones(1)))
    cfg = ContinualConfig(steps=steps, ipc=ipc, orders=[0], models=1, epochs=1, archs=["convnet"], batch=64)
    cells = run_replay(synset if memory == "synthetic" else memory, x, y, x, y, cfg)
    groups = step_classes(dm_class_order(0, K), steps)
    for t, labels in seen_batches:
        earlier = {c for g in groups[:t] for c in g}
        assert set(labels) <= earlier | set(groups[t]) and set(labels) & set(groups[t])
        if t > 0:
            assert set(labels) & earlier  # the memory is replayed
    per_class = ipc * len(groups[0])
    assert sizes[0] == 0 and sizes[1] == (per_class if memory != "reservoir" else ipc * K)
    assert sorted(cells) == [f"0/{t}" for t in range(steps)]
    assert all(c.forgetting is not None and len(c.accuracies) == 1 for c in cells.values())


def test_real_policies_need_the_er_protocol_and_the_cli_reports_forgetting(tmp_path, capsys):
    base = ["continual", "--dataset", "digits", "--steps", "2", "--ipc", "2", "--orders", "0", "--epochs", "1",
            "--quiet", "--cache", str(tmp_path / "c")]
    assert main([*base, "--memories", "reservoir", "--out", str(tmp_path / "g")]) == 2
    assert "--protocol er" in capsys.readouterr().err
    assert main([*base, "--protocol", "er", "--memories", "reservoir,random", "--out", str(tmp_path / "er")]) == 0
    rows = json.loads((tmp_path / "er" / "continual.json").read_text())["rows"]
    assert [r["memory"] for r in rows] == ["reservoir", "random"]
    assert all("forgetting" in r and "forgetting" in r["steps"][-1] for r in rows)
    header = (tmp_path / "er" / "continual.md").read_text().splitlines()[0]
    assert header.split("|")[-2].strip() == "forgetting@10"  # a column per step after the first
    assert all(r["forgetting@10"] == f"{100 * r['steps'][-1]['forgetting']:.2f}" for r in rows)
    assert main([*base, "--protocol", "er", "--memories", "reservoir,random", "--out", str(tmp_path / "er2")]) == 0
    again = json.loads((tmp_path / "er2" / "continual.json").read_text())["rows"]
    assert [r["steps"] for r in again] == [r["steps"] for r in rows]  # cached cells, same table
    assert set(REAL_POLICIES) == {"reservoir", "class_balanced", "herding_buffer"}
    with pytest.raises(UserError):
        from continual.config import resolve_continual
        resolve_continual(ContinualConfig(protocol="gem", memories=["random"]), "digits", 10)


def test_a_replay_cell_equals_a_plain_loop_over_avalanches_strategy():
    """run_replay's accuracies and forgetting equal a plain Avalanche Naive + ReplayPlugin loop
    written out here (train on a step, evaluate on the test stream so far) with the same seeds,
    measured by hand: the accuracy on the test images
    of the classes seen so far, and the mean over earlier steps j of the accuracy on j's classes
    right after step j minus the accuracy now. The protocol (its evaluation plugin, its
    checkpoints) adds bookkeeping, not training."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer
    from avalanche.training.supervised import Naive

    from continual.benchmark import make_benchmark
    from continual.strategy import DSAPlugin
    from distill.evaluate import parse_arch
    from distill.nets import init_weights
    from distill.train import derived_seed

    x, y = patterns(20, 3)
    cfg = ContinualConfig(steps=3, ipc=3, orders=[1], models=1, epochs=8, archs=["convnet"], batch=32, seed=5)
    cells = run_replay("class_balanced", x, y, x, y, cfg)

    seed = derived_seed(5, 1, 0)
    net = parse_arch("convnet").build(1, K, (8, 8))
    init_weights(net, cfg.init, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    policy = ClassBalancedBuffer(cfg.ipc * K, adaptive_size=False, total_num_classes=K)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    strategy = Naive(model=net, optimizer=opt, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32,
                     train_epochs=8, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                     plugins=[ReplayPlugin(mem_size=cfg.ipc * K, storage_policy=policy), DSAPlugin(cfg.dsa, seed),
                              replay.RecipeLR(cfg.lr, 8, cfg.schedule)])
    order = dm_class_order(1, K)
    groups = step_classes(order, 3)

    def acc_on(classes: list[int]) -> float:
        mask = torch.isin(y, torch.tensor(classes))
        net.eval()
        with torch.no_grad():
            return float((net(x[mask]).argmax(1) == y[mask]).float().mean())

    first: list[float] = []  # accuracy on step j's classes right after step j
    accs, forgets = [], []
    bm = make_benchmark(x, y, x, y, order, 3)
    for t, exp in enumerate(bm.train_stream):
        strategy.train(exp, num_workers=0)
        strategy.eval(bm.test_stream[: t + 1], num_workers=0)  # Avalanche's loop; its loaders draw seeds
        accs.append(acc_on([c for g in groups[: t + 1] for c in g]))
        first.append(acc_on(groups[t]))
        forgets.append(sum(first[j] - acc_on(groups[j]) for j in range(t)) / t if t else 0.0)
    assert len(set(accs)) == 3 and any(f != 0 for f in forgets)  # a run that learns and forgets
    for t in range(3):
        assert cells[f"1/{t}"].accuracies[0] == pytest.approx(accs[t], abs=1e-6)
        assert cells[f"1/{t}"].forgetting[0] == pytest.approx(forgets[t], abs=1e-6)


@pytest.mark.parametrize("memory", ["synthetic", "class_balanced", "herding_buffer", "reservoir"])
def test_an_interrupted_order_resumes_at_the_next_step_with_the_uninterrupted_result(memory, tmp_path):
    """Two networks per order; the run stops right after network 1 saved its first step. The
    rerun restores network 0 finished and network 1 after one step (network, optimiser,
    storage policy, metric history, random states) and ends with exactly the cells of a run
    that was never interrupted."""
    x, y = patterns(20, 0)
    synset = SyntheticSet(*patterns(3, 1), [str(i) for i in range(K)], Preprocess(torch.zeros(1), torch.ones(1)))
    mem = synset if memory == "synthetic" else memory
    cfg = ContinualConfig(steps=3, ipc=3, orders=[0], models=2, epochs=15, archs=["convnet"], batch=32)
    want = run_replay(mem, x, y, x, y, cfg)

    class Stop(Exception):
        pass

    def stop(order: int, model: int, step: int) -> None:
        if (model, step) == (1, 0):
            raise Stop

    with pytest.raises(Stop):
        run_replay(mem, x, y, x, y, cfg, checkpoints=tmp_path, after_step=stop)
    steps_done = {p.name: read_plain(p, "step checkpoint")["steps_done"] for p in tmp_path.glob("*.pt")}
    assert steps_done == {"er-order0-model0.pt": 3, "er-order0-model1.pt": 1}
    trained: list[tuple[int, int]] = []
    got = run_replay(mem, x, y, x, y, cfg, checkpoints=tmp_path, after_step=lambda o, m, t: trained.append((m, t)))
    assert trained == [(1, 1), (1, 2)]  # only what was left
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].accuracies == want[key].accuracies and got[key].forgetting == want[key].forgetting
    assert len({a for c in want.values() for a in c.accuracies}) > 2  # networks that learn


def test_the_herding_buffer_holds_herding_on_the_learners_embedding_of_the_steps_data():
    """After each step, every new class's exemplars are the first ``ipc`` picks of herding
    written out here (each pick brings the mean of the picked embeddings nearest the class
    mean) over that step's images, on the embedding of the network that has just learnt them;
    earlier classes keep theirs."""
    ipc, steps = 4, 3
    x, y = patterns(15, 2)
    checked: list[int] = []

    class Check(SupervisedPlugin):
        def after_training_exp(self, strategy, **kw):  # runs after the replay plugin's update
            pol = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin)).storage_policy
            net = strategy.model.eval()
            for c in strategy.experience.classes_in_this_experience:
                pool = x[y == c]
                with torch.no_grad():
                    emb = net.embed(pool)
                picked: list[int] = []
                for _ in range(ipc):
                    best = min((i for i in range(len(pool)) if i not in picked),
                               key=lambda i: float(((emb[picked + [i]].mean(0) - emb.mean(0)) ** 2).sum()))
                    picked.append(best)
                buf = pol.buffer_groups[int(c)].buffer
                held = torch.stack([buf[i][0] for i in range(len(buf))])
                rows = [int((pool == h).flatten(1).all(1).nonzero()) for h in held]
                assert sorted(rows) == sorted(picked)  # Avalanche keeps its picks in the data's order
                checked.append(int(c))
            assert sum(len(g.buffer) for g in pol.buffer_groups.values()) == ipc * len(checked)

    made = replay.replay_strategy
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay, "replay_strategy", lambda *a, **k: (s := made(*a, **k), s.plugins.append(Check()))[0])
        cfg = ContinualConfig(steps=steps, ipc=ipc, orders=[0], models=1, epochs=2, archs=["convnet"], batch=32)
        run_replay("herding_buffer", x, y, x, y, cfg)
    assert sorted(checked) == list(range(K))


def test_a_damaged_step_file_is_said_and_the_network_learns_again_from_the_first_step(tmp_path, capsys):
    x, y = patterns(10, 4)
    cfg = ContinualConfig(steps=2, ipc=2, orders=[0], models=1, epochs=3, archs=["convnet"], batch=32)
    want = run_replay("reservoir", x, y, x, y, cfg)
    (tmp_path / "er-order0-model0.pt").write_bytes(b"PK\x03\x04 not a whole file")
    got = run_replay("reservoir", x, y, x, y, cfg, checkpoints=tmp_path)
    assert "damaged or truncated" in capsys.readouterr().out
    assert [got[k].accuracies for k in sorted(got)] == [want[k].accuracies for k in sorted(want)]
    assert read_plain(tmp_path / "er-order0-model0.pt", "step checkpoint")["steps_done"] == 2


def test_a_step_file_whose_pickle_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    """The plugins' pickle inside a step file may build avalanche's and the toolkit's objects
    only: one that would call ``os.system`` is refused before anything runs, and the network
    learns again from the first step."""
    import os
    import pickle

    x, y = patterns(10, 4)
    cfg = ContinualConfig(steps=2, ipc=2, orders=[0], models=1, epochs=3, archs=["convnet"], batch=32)
    want = run_replay("reservoir", x, y, x, y, cfg, checkpoints=tmp_path)
    path = tmp_path / "er-order0-model0.pt"
    blob = read_plain(path, "step checkpoint")
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    blob["plugins"] = torch.frombuffer(bytearray(pickle.dumps([Evil()])), dtype=torch.uint8)
    torch.save(blob, path)
    got = run_replay("reservoir", x, y, x, y, cfg, checkpoints=tmp_path)
    assert "may not build" in capsys.readouterr().out and not flag.exists()
    assert [got[k].accuracies for k in sorted(got)] == [want[k].accuracies for k in sorted(want)]
