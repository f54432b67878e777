"""Experience replay on Avalanche (continual.replay): what each training batch holds, the
storage policies' budgets, the forgetting against its definition written out, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin

import continual.replay as replay
from continual.benchmark import dm_class_order, step_classes
from continual.config import ContinualConfig
from continual.replay import REAL_POLICIES, forgetting, run_replay
from distill.errors import UserError
from distill.preprocess import Preprocess
from distill.synset import SyntheticSet
from pipelines.run import main

K = 6


def data(n_per_class: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    return torch.randn(len(y), 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) * 0.5, y


def test_forgetting_is_the_mean_drop_from_the_best_earlier_accuracy():
    acc = [[0.9], [0.5, 0.8], [0.7, 0.2, 0.6]]  # acc[l][j]: step j's classes after step l
    assert forgetting(acc, 0) == 0.0
    assert forgetting(acc, 1) == pytest.approx(0.9 - 0.5)
    assert forgetting(acc, 2) == pytest.approx(((0.9 - 0.7) + (0.8 - 0.2)) / 2)


@pytest.mark.parametrize("memory", ["synthetic", "class_balanced", "reservoir"])
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
    assert main([*base, "--protocol", "er", "--memories", "reservoir,random", "--out", str(tmp_path / "er2")]) == 0
    again = json.loads((tmp_path / "er2" / "continual.json").read_text())["rows"]
    assert [r["steps"] for r in again] == [r["steps"] for r in rows]  # cached cells, same table
    assert set(REAL_POLICIES) == {"reservoir", "class_balanced"}
    with pytest.raises(UserError):
        from continual.config import resolve_continual
        resolve_continual(ContinualConfig(protocol="gem", memories=["random"]), "digits", 10)


def test_a_replay_cell_equals_a_plain_loop_over_avalanches_strategy():
    """run_replay's accuracies equal those of Avalanche's Naive + ReplayPlugin written out here
    with the same seeds: the protocol adds bookkeeping, not training."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer
    from avalanche.training.supervised import Naive

    from continual.benchmark import make_benchmark
    from continual.strategy import DSAPlugin
    from distill.evaluate import parse_arch
    from distill.nets import init_weights
    from distill.train import derived_seed

    x, y = data(20, 3)
    cfg = ContinualConfig(steps=3, ipc=3, orders=[1], models=1, epochs=2, archs=["convnet"], batch=32, seed=5)
    cells = run_replay("class_balanced", x, y, x, y, cfg)

    seed = derived_seed(5, 1, 0)
    net = parse_arch("convnet").build(1, K, (8, 8))
    init_weights(net, cfg.init, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    policy = ClassBalancedBuffer(cfg.ipc * K, adaptive_size=False, total_num_classes=K)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    strategy = Naive(model=net, optimizer=opt, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32,
                     train_epochs=2, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                     plugins=[ReplayPlugin(mem_size=cfg.ipc * K, storage_policy=policy), DSAPlugin(cfg.dsa, seed),
                              replay.RecipeLR(cfg.lr, 2, cfg.schedule)])
    order = dm_class_order(1, K)
    seen: list[int] = []
    for t, (exp, classes) in enumerate(zip(make_benchmark(x, y, x, y, order, 3).train_stream, step_classes(order, 3))):
        strategy.train(exp, num_workers=0)
        seen += classes
        mask = torch.isin(y, torch.tensor(seen))
        net.eval()
        with torch.no_grad():
            acc = float((net(x[mask]).argmax(1) == y[mask]).float().mean())
        assert cells[f"1/{t}"].accuracies[0] == pytest.approx(acc, abs=1e-6)
