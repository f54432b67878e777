"""Evaluation: schedule, preprocessing of the test set, ensembled = sequential, errors."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.datasets import load_dataset
from distill.errors import UserError
from distill.evaluate import ALL_ARCHS, eval_inputs, evaluate_set, expand_archs, parse_arch, resolve_eval
from distill.train import TrainRecipe, can_ensemble, train_group
from distill.preprocess import Preprocess
from distill.synset import SyntheticSet
from distill.train import lr_at
from pipelines.run import main


def _set(prep, ipc=3, method="random"):
    idx = torch.cat([torch.nonzero(prep.data.train_y == c).flatten()[:ipc] for c in range(10)])
    return SyntheticSet(prep.train_x[idx].clone(), prep.data.train_y[idx].clone(), list(prep.data.classes),
                        prep.preprocess, {"dataset": "digits", "method": method, "ipc": ipc})


def test_lr_schedule_steps_at_half():
    lrs = [lr_at(e, 10, 0.01) for e in range(10)]
    assert lrs == [0.01] * 5 + [pytest.approx(0.001)] * 5
    # the schedule is what the optimiser actually used
    seen = []

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    orig = torch.optim.SGD
    torch.optim.SGD = Spy
    try:
        train_group(parse_arch("convnet"), 1, x, y, 2, TrainRecipe(epochs=4, batch=4, dsa="none"),
                    torch.Generator().manual_seed(0), ensemble=False)
    finally:
        torch.optim.SGD = orig
    assert seen == [0.01, 0.01, pytest.approx(0.001), pytest.approx(0.001)]


def test_the_other_lr_schedules():
    assert [lr_at(e, 100, 0.01, "constant") for e in (0, 50, 99)] == [0.01] * 3
    step = [lr_at(e, 100, 0.01, "step15") for e in (0, 14, 15, 29, 30, 99)]
    assert step == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.01 / 2 ** 6])
    with pytest.raises(UserError, match="unknown schedule 'cosine'"):
        resolve_eval(TrainRecipe(schedule="cosine"), "digits")


def test_test_set_goes_through_the_sets_own_preprocessing(digits, digits_prep):
    odd = Preprocess(mean=torch.tensor([0.9]), std=torch.tensor([0.1]))  # not the dataset's statistics
    s = _set(digits_prep)
    s = SyntheticSet(s.images, s.labels, s.class_names, odd, s.meta)
    tx = eval_inputs(s, digits)
    assert torch.allclose(tx, (digits.test_x.float() / 255 - 0.9) / 0.1)


@pytest.mark.parametrize("arch", ["convnet", "convnet-layernorm"])
def test_ensembled_equals_sequential(digits_prep, arch):
    s = _set(digits_prep)
    cfg = TrainRecipe(models=3, epochs=3, batch=16)
    spec = parse_arch(arch)
    a = train_group(spec, 3, s.images, s.labels, 10, cfg, torch.Generator().manual_seed(0), ensemble=True)
    b = train_group(spec, 3, s.images, s.labels, 10, cfg, torch.Generator().manual_seed(0), ensemble=False)
    for name, stacked in a.params.items():
        seq = torch.stack([dict(n.named_parameters())[name] for n in b.nets])
        assert torch.allclose(stacked, seq, atol=1e-5), name
    tx, ty = digits_prep.test_x[:200], digits_prep.data.test_y[:200]
    assert a.accuracies(tx, ty) == pytest.approx(b.accuracies(tx, ty), abs=0.01)
    # the models differ from each other (own init, own batch order)
    assert not torch.allclose(a.params["classifier.weight"][0], a.params["classifier.weight"][1])


def test_batchnorm_is_not_ensembled():
    assert not can_ensemble(parse_arch("convnet-batchnorm"), 1, 10, (16, 16), torch.device("cpu"))
    assert can_ensemble(parse_arch("convnet"), 1, 10, (16, 16), torch.device("cpu"))


def test_evaluate_set_learns(digits_prep):
    s = _set(digits_prep, ipc=5)
    res = evaluate_set(s, digits_prep.test_x, digits_prep.data.test_y,
                       resolve_eval(TrainRecipe(models=2, epochs=60, archs=["convnet", "convnet-batchnorm"]), "digits"))
    assert [r.arch for r in res] == ["convnet", "convnet-batchnorm"]
    for r in res:
        assert len(r.accuracies) == 2 and r.mean > 0.5  # chance is 0.1


def test_arch_parsing():
    assert parse_arch("resnet18-batchnorm") == dataclasses.replace(parse_arch("resnet18"), norm="batchnorm")
    assert expand_archs(["all"]) == list(ALL_ARCHS)
    with pytest.raises(UserError, match="unknown architecture 'lenet'"):
        parse_arch("lenet")
    with pytest.raises(UserError, match="unknown norm"):
        parse_arch("convnet-foo")
    with pytest.raises(UserError, match="unknown ensemble"):
        resolve_eval(TrainRecipe(ensemble="maybe"))
    assert resolve_eval(TrainRecipe(), "digits").epochs == 300 and resolve_eval(TrainRecipe()).epochs == 1000


def test_set_that_does_not_fit_the_dataset(digits, digits_prep):
    s = _set(digits_prep)
    other = SyntheticSet(s.images, s.labels, s.class_names, s.preprocess, {**s.meta, "dataset": "cifar10"})
    with pytest.raises(UserError, match="made from 'cifar10'"):
        eval_inputs(other, digits)
    native = load_dataset("digits", resolution=8)
    with pytest.raises(UserError, match=r"images are \(1, 16, 16\).*\(1, 8, 8\)"):
        eval_inputs(s, native)
    few = SyntheticSet(s.images[:6], s.labels[:6] % 3, ["a", "b", "c"], s.preprocess, {})
    with pytest.raises(UserError, match="3 classes, digits has 10"):
        eval_inputs(few, digits)


def test_cli_evaluate_writes_tables(tmp_path, digits_prep, capsys):
    s = _set(digits_prep)
    s.save(tmp_path / "s.pt")
    code = main(["evaluate", "--baseline", "none", "--synset", str(tmp_path / "s.pt"), "--models", "2", "--epochs", "2",
                 "--arch", "convnet,alexnet", "--quiet"])
    assert code == 0
    md = (tmp_path / "evaluation.md").read_text()
    assert "| convnet | 2 |" in md and "| alexnet | 2 |" in md
    assert (tmp_path / "evaluation.csv").is_file() and (tmp_path / "evaluation.json").is_file()
    code = main(["evaluate", "--synset", str(tmp_path / "s.pt"), "--arch", "lenet", "--quiet"])
    assert code == 2 and "unknown architecture" in capsys.readouterr().err
    # another recipe next to the same set keeps the earlier results; the same recipe replaces them
    first = (tmp_path / "evaluation.json").read_text()
    assert main(["evaluate", "--baseline", "none", "--synset", str(tmp_path / "s.pt"), "--models", "1", "--epochs", "2", "--quiet"]) == 0
    assert (tmp_path / "evaluation.json").read_text() == first
    other = [p for p in tmp_path.glob("evaluation-*.json")]
    assert len(other) == 1 and json.loads(other[0].read_text())["config"]["models"] == 1
    assert main(["evaluate", "--baseline", "none", "--synset", str(tmp_path / "s.pt"), "--models", "2", "--epochs", "2",
                 "--arch", "convnet,alexnet", "--quiet"]) == 0
    assert len(list(tmp_path.glob("evaluation*.json"))) == 2


def test_combine_sets_is_one_mean_over_every_network():
    from distill.evaluate import ArchResult, combine_sets

    a = [ArchResult("convnet", [0.5, 0.7], 1.0, True)]
    b = [ArchResult("convnet", [0.9, 0.9], 2.0, False)]
    (r,) = combine_sets({"a": a, "b": b})
    assert r.accuracies == [0.5, 0.7, 0.9, 0.9] and r.mean == pytest.approx(0.75)
    assert r.std == pytest.approx((((0.25 ** 2) + (0.05 ** 2) + 2 * (0.15 ** 2)) / 4) ** 0.5)
    assert r.per_set == {"a": pytest.approx(0.6), "b": pytest.approx(0.9)} and r.seconds == 3.0
    assert not r.ensembled and r.row()["sets"] == 2


def test_cli_evaluates_several_sets_as_the_papers_do(tmp_path, digits_prep, capsys):
    import json

    for name, ipc in (("a", 3), ("b", 2)):
        (tmp_path / name).mkdir()
        _set(digits_prep, ipc=ipc).save(tmp_path / name / "synset.pt")
    common = ["--models", "2", "--epochs", "2", "--quiet"]
    assert main(["evaluate", "--baseline", "none", "--synset", f"{tmp_path}/a/synset.pt,{tmp_path}/b/synset.pt", *common,
                 "--out", str(tmp_path / "both")]) == 0
    row = json.loads((tmp_path / "both" / "evaluation.json").read_text())["rows"][0]
    assert (row["sets"], row["models"], set(row["per_set"])) == (2, 4, {"a", "b"})
    assert row["mean"] == pytest.approx(sum(row["accuracies"]) / 4)
    # set 0 is trained exactly as when it is evaluated alone; set 1 gets its own networks
    assert main(["evaluate", "--baseline", "none", "--synset", f"{tmp_path}/a/synset.pt", *common, "--out", str(tmp_path / "one")]) == 0
    alone = json.loads((tmp_path / "one" / "evaluation.json").read_text())["rows"][0]
    assert row["accuracies"][:2] == alone["accuracies"] and row["per_set"]["a"] == pytest.approx(alone["mean"])
    capsys.readouterr()
    assert main(["evaluate", "--synset", f"{tmp_path}/a/synset.pt,{tmp_path}/a/synset.pt", *common]) == 2
    assert "names a file twice" in capsys.readouterr().err


_FAULTS = """
import resource, sys, torch
from distill.runtime import keep_host_memory
if sys.argv[1] == "keep":
    assert keep_host_memory()
if sys.argv[1] == "distill":  # one CPU iteration of the library's loop, nothing else
    from distill.datasets import load_dataset
    from distill.loop import distill
    from distill.prepare import prepare
    from distill.settings import NetConfig, SetConfig, resolve
    prep = prepare(load_dataset("digits"))
    cfg = SetConfig(method="dm", ipc=1, iterations=1, batch_real=4, net=NetConfig(width=8))
    distill(prep, resolve(cfg, prep.data.image_size[0], "digits"), progress=False)
if sys.argv[1] == "train":  # one CPU training step of the library's evaluation
    from distill.nets import NetSpec
    from distill.train import TrainRecipe, train_group
    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    train_group(NetSpec(width=8), 1, x, y, 2, TrainRecipe(epochs=1, dsa="none"), torch.Generator(), ensemble=False)
x = torch.ones(1)  # torch's own start-up faults happen before the count
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    t = torch.empty(16 * 2**20)  # 64 MiB, above glibc's largest default mmap threshold (32 MiB)
    t.fill_(1.0)
    del t
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc settings")
def test_keep_host_memory_reuses_freed_large_blocks():
    """By default each 64 MiB tensor is a fresh mmap: its 16,384 4-KiB pages fault in on every
    one of the 200 fills (about 3.3 million faults; fewer with transparent huge pages). With the
    setting the heap grows a few times (a block's pages each time: 2 to 8 times seen, 8 when
    another process loads the machine) and the blocks are then reused. A process that has run
    the library's distillation or training on the CPU has the setting without asking for it."""
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        return int(out.stdout.strip().splitlines()[-1])

    pages = 16 * 2**20 * 4 // 4096
    for mode in ("keep", "distill", "train"):
        kept = faults(mode)
        assert kept < 20 * pages, (mode, kept)  # not per fill: 200 fills would be 200 * pages
    default = faults("default")
    assert default > 100 * pages, default  # at least every other fill faulted its pages in
