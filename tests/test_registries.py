"""Datasets, architectures and matching methods are plug-ins: one file that registers itself is
all a new one needs, and it then works through the toolkit's real entry points."""

from __future__ import annotations

import pkgutil
import sys

import pytest
import torch

import distill.datasets as datasets
import distill.matching as matching
import distill.methods as methods
import distill.nets as nets
from distill.loop import distill
from distill.settings import NetConfig, SetConfig, resolve
from distill.evaluate import parse_arch
from distill.registry import import_modules
from pipelines.common import DataConfig
from pipelines.jobs import JOBS

NEW_DATASET = '''
import torch
from distill.data import ImageData
from distill.datasets import DatasetDef, register

def load(root, resolution, download):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, resolution, resolution), generator=g, dtype=torch.uint8)
    y = torch.arange(4).repeat(10)
    return ImageData("stripes", x[:32], y[:32], x[32:], y[32:], tuple("abcd"), (0.5,), (0.25,))

register(DatasetDef("stripes", load, resolution=12, resizable=True, quick={"eval": {"epochs": 7}}))
'''

NEW_ARCH = '''
import torch.nn as nn
from distill.nets import Net, register_arch

class TinyNet(Net):
    def __init__(self, cin, k, size, width):
        super().__init__()
        self.conv = nn.Conv2d(cin, width, 3, padding=1)
        self.embed_dim = width
        self.classifier = nn.Linear(width, k)
        self.taps = ("conv",)

    def forward_features(self, x):
        f = self.conv(x).relu()
        return [f], f.mean(dim=(2, 3))

register_arch("tinynet", lambda cin, k, size, spec: TinyNet(cin, k, size, spec.width), default_norm=None)
'''

NEW_METHOD = '''
from dataclasses import dataclass

from distill.matching import AttentionMap, register_attention_map
from distill.methods import AttentionMatching, lam, loss_scale, param, register_method

# attention as the per-sample maximum over channels of |f|^p, with an exponent of its own
register_attention_map(AttentionMap("peak", lambda powered: powered.amax(dim=1).flatten(1)))


@dataclass
class PeakParams:
    p_peak: float | None = param("exponent p of the peak attention max_c |f_c|^p", value=2.0, low=0, low_open=True)
    lam: float | None = lam()
    loss_scale: float | None = loss_scale()


class PeakMatch(AttentionMatching):
    name = "peakmatch"
    paper = "a test method"
    Params = PeakParams

    def maps(self, p):
        return (("peak", float(p.p_peak)),)


register_method(PeakMatch())
'''

NEW_SELECTION = '''
import torch

from distill.methods import SelectionMethod, register_method


class Farthest(SelectionMethod):
    """The images whose embeddings lie farthest from their class mean."""

    name = "farthest"
    paper = "a test selection"
    needs_embeddings = True
    reads = ("seed", "net", "embed_epochs")

    def pick(self, embeddings, count, k, generator):
        d = ((embeddings - embeddings.mean(0)) ** 2).sum(1)
        return torch.argsort(d, descending=True)[: min(k, count)]


register_method(Farthest())
'''


NEW_JOB = '''
import argparse, json
from dataclasses import dataclass, field
from pathlib import Path
from distill.files import atomic_text
from pipelines.common import DataConfig
from pipelines.jobs import Job, register_job


@dataclass
class ClassMeansConfig:
    dataset: DataConfig = field(default_factory=DataConfig)


class ClassMeansJob(Job):
    name = "classmeans"
    help = "the mean pixel of every class"
    description = "Write the mean pixel value of every class of the training set (cached)."
    Config = ClassMeansConfig
    options = ("dataset", "cache", *Job.options)
    flags = {"dataset": ("dataset.name", None)}
    result = "classmeans.json"

    def resolve(self):
        self.data = self.config.dataset.load()

    def run(self):
        out, _ = self.open_folder("classmeans")
        art = self.env.cache.artifact("classmeans", self.data.name,
                                      {"dataset": self.config.dataset.identity(self.data)}, "means.json")

        def make(folder):
            x, y = self.data.train_x.float(), self.data.train_y
            means = [float(x[y == k].mean()) for k in range(len(self.data.classes))]
            atomic_text(art.result_path, json.dumps(means))
            return means

        means, reused = self.env.cache.get_or_make(art, make, lambda p: json.loads(p.read_text()))
        atomic_text(out / self.result, json.dumps({"means": means}))
        print("reused" if reused else "computed", len(means))
        return 0


register_job(ClassMeansJob)
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A package holding one new file per registry, imported the way the toolkit imports its own."""
    pkg = tmp_path / "plugins_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stripes.py").write_text(NEW_DATASET)
    (pkg / "tinynet.py").write_text(NEW_ARCH)
    (pkg / "peakmatch.py").write_text(NEW_METHOD)
    (pkg / "farthest.py").write_text(NEW_SELECTION)
    (pkg / "classmeans.py").write_text(NEW_JOB)
    monkeypatch.syspath_prepend(str(tmp_path))
    # the registries are restored afterwards
    saved = [(reg, dict(reg)) for reg in (datasets.DATASETS, nets.ARCHS, methods.METHODS, matching.ATTENTION_MAPS,
                                          JOBS)]
    names = import_modules("plugins_pkg", [str(pkg)])
    yield names
    for reg, before in saved:
        reg.clear()
        reg.update(before)
    for name in ["plugins_pkg", *(f"plugins_pkg.{n}" for n in names)]:
        sys.modules.pop(name, None)


def test_import_modules_imports_every_file_first_ones_first(plugins):
    assert plugins == ["classmeans", "farthest", "peakmatch", "stripes", "tinynet"]
    assert import_modules("distill.methods", methods.__path__, first=("dm",))[0] == "dm"


def test_every_registry_module_registers_something():
    def files(pkg):  # every module file of a registry folder
        return {f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)}

    assert {d.load.__module__ for d in datasets.DATASETS.values()} == files(datasets)
    assert {a.build.__module__ for a in nets.ARCHS.values()} == files(nets) - {"distill.nets.base"}
    assert list(methods.METHODS)[:3] == ["dm", "datadam", "atom"]
    assert list(nets.ARCHS)[0] == "convnet" and list(datasets.DATASETS)[:2] == ["cifar10", "cifar100"]


def test_new_dataset_file(plugins):
    data = datasets.load_dataset("stripes", resolution=8)
    assert data.image_size == (8, 8) and data.num_classes == 4 and not data.zca_default
    assert DataConfig(name="stripes").load().image_size == (12, 12)  # its default size
    assert datasets.quick_defaults("stripes", "eval") == {"epochs": 7}
    assert datasets.quick_defaults("cifar10", "eval") == {}
    with pytest.raises(ValueError, match="registered twice"):
        datasets.register(datasets.DATASETS["stripes"])


def test_new_architecture_file(plugins):
    net = nets.build_net("tinynet", 1, 4, (8, 8), width=6)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert parse_arch("tinynet").build(1, 4, (8, 8)).embed_dim == 128  # the evaluation's parser knows it (width 128)
    nets.init_weights(net, "he", torch.Generator().manual_seed(0))
    w = net.conv.weight  # He-normal: std sqrt(2 / fan_in)
    assert w.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.5)


def test_new_attention_method_file(plugins, digits_prep):
    cfg = resolve(SetConfig(method="peakmatch", ipc=2, iterations=3, net=NetConfig(width=8)), 16, "digits")
    method = methods.get_method("peakmatch")
    assert cfg.params == {"p_peak": 2.0, "lam": 0.01, "loss_scale": 100.0}  # its own default, the shared ones
    w = method.weights(method.typed(cfg.params))
    assert w.maps == (("peak", 2.0),) and w.last_weight == 0.01
    # its statistic is the written-out formula: per-sample channel max of |f|^p, L2-normalised
    f = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    stats = matching.class_statistics([f, f], f.flatten(1), 2, w)
    z = (f.abs() ** 2.0).amax(dim=1).flatten(1)
    z = z / z.norm(dim=1, keepdim=True)
    assert torch.allclose(stats["peak"][0], z.view(2, 2, -1).mean(1), atol=1e-6)
    synset = distill(digits_prep, cfg, progress=False)
    assert synset.meta["method"] == "peakmatch" and len(synset.meta["losses"]) == 3
    assert all(l == l for l in synset.meta["losses"])  # finite, not NaN


def test_new_method_hyperparameter_through_the_cli_and_the_yaml(plugins, tmp_path, capsys):
    """The new file's own hyperparameter is a ``distill.p_peak`` key: documented in the generated
    YAML, set with ``--set``, part of the set's config and key, refused for a method that ignores it."""
    from pipelines.make_configs import JOBS, render
    from pipelines.run import main

    name, job, head = JOBS[0]
    line = next(l for l in render(job, head).splitlines() if l.strip().startswith("p_peak:"))
    assert line.strip().startswith("p_peak: null  # exponent p of the peak attention") and "peakmatch" in line
    argv = ["distill", "--dataset", "digits", "--method", "peakmatch", "--ipc", "1", "--iterations", "2", "--quiet",
            "--set", "distill.batch_real=8", "--set", "distill.net.width=8"]
    assert main([*argv, "--set", "distill.p_peak=3", "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    from distill.synset import SyntheticSet

    a, b = (SyntheticSet.load(tmp_path / x / "synset.pt") for x in "ab")
    assert a.meta["config"]["p_peak"] == 3.0 and b.meta["config"]["p_peak"] == 2.0
    assert not torch.equal(a.images, b.images)  # the exponent acts
    capsys.readouterr()
    assert main(["distill", "--dataset", "digits", "--method", "atom", "--ipc", "1", "--iterations", "1", "--quiet",
                 "--set", "distill.p_peak=3", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: distill.p_peak is a parameter of peakmatch, not of atom; remove it or choose a method that reads it"


def test_new_selection_file_is_a_leak_free_continual_memory(plugins, tmp_path, capsys):
    """A selection method from a new file is built per class order and step (its kind says so),
    from each step's data only: replacing the last step's images changes none of the earlier picks."""
    from continual.baselines import is_stepwise, stepwise_coreset
    from continual.benchmark import dm_class_order, step_classes
    from distill.prepare import prepare
    from pipelines.run import main

    assert is_stepwise("farthest") and not is_stepwise("peakmatch")
    digits8 = datasets.load_dataset("digits", resolution=8)
    steps = step_classes(dm_class_order(0, 10), 5)
    later = torch.isin(digits8.train_y, torch.tensor(steps[-1]))
    noisy_x = digits8.train_x.clone()
    noisy_x[later] = torch.randint(0, 256, noisy_x[later].shape, generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8)
    cfg = resolve(SetConfig(method="farthest", ipc=2, embed_epochs=1, net=NetConfig(width=8)), 8, "digits")
    import dataclasses

    a = stepwise_coreset(prepare(digits8), "farthest", 0, 5, cfg)
    b = stepwise_coreset(prepare(dataclasses.replace(digits8, train_x=noisy_x)), "farthest", 0, 5, cfg)
    early = [c for s in steps[:-1] for c in s]
    picks = [torch.tensor(s.meta["source_indices"]).view(10, 2)[early] for s in (a, b)]
    assert torch.equal(*picks)
    # through the command line: chosen per step, and the table has its row
    argv = ["continual", "--dataset", "digits", "--steps", "5", "--ipc", "2", "--orders", "0", "--epochs", "1",
            "--memories", "farthest,peakmatch", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--quiet",
            "--set", "distill.embed_epochs=1", "--set", "distill.iterations=1", "--set", "distill.p_peak=3",
            "--set", "distill.batch_real=8", "--set", "distill.net.width=8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "memory farthest: chosen per class order and step (no later data)" in out
    assert "| farthest |" in (tmp_path / "o" / "continual.md").read_text()


def test_new_job_file_runs_through_the_cli_with_the_cache(plugins, tmp_path, capsys):
    """A job from a new file is a subcommand with the shared options, its config has sources,
    and its stage goes through the cache engine: made once, then reused."""
    import json

    from pipelines.run import main

    argv = ["classmeans", "--dataset", "digits", "--cache", str(tmp_path / "c"), "--quiet"]
    assert main([*argv, "--explain"]) == 0
    explained = capsys.readouterr().out.splitlines()
    assert "dataset.name: digits  # flag --dataset" in explained and "dataset.root: data  # default" in explained
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.split().count("computed") == 1
    d = datasets.load_dataset("digits")
    expect = [d.train_x[d.train_y == k].double().mean().item() for k in range(10)]  # brute force, in float64
    for run in "ab":
        got = json.loads((tmp_path / run / "classmeans.json").read_text())["means"]
        assert got == pytest.approx(expect, rel=1e-5)
    assert len(list((tmp_path / "c" / "classmeans").glob("digits-*/means.json"))) == 1
