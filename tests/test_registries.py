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
from distill.distiller import DistillConfig, NetConfig, distill, match_weights, resolve
from distill.evaluate import parse_arch
from distill.registry import import_modules
from pipelines.common import DataConfig

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
from distill.matching import AttentionMap, register_attention_map
from distill.methods import Method, register_method

# attention as the per-sample maximum over channels of |f|^p
register_attention_map(AttentionMap("peak", lambda powered: powered.amax(dim=1).flatten(1), "p_spatial"))
register_method(Method("peakmatch", "match", maps=("peak",), last=True, paper="a test method"))
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
    monkeypatch.syspath_prepend(str(tmp_path))
    # the registries are restored afterwards
    saved = [(reg, dict(reg)) for reg in (datasets.DATASETS, nets.ARCHS, methods.METHODS, matching.ATTENTION_MAPS)]
    names = import_modules("plugins_pkg", [str(pkg)])
    yield names
    for reg, before in saved:
        reg.clear()
        reg.update(before)
    for name in ["plugins_pkg", *(f"plugins_pkg.{n}" for n in names)]:
        sys.modules.pop(name, None)


def test_import_modules_imports_every_file_first_ones_first(plugins):
    assert plugins == ["peakmatch", "stripes", "tinynet"]
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
    cfg = resolve(DistillConfig(method="peakmatch", ipc=2, iterations=3, net=NetConfig(width=8)), 16, "digits")
    w = match_weights(cfg, 3)
    assert w.maps == (("peak", cfg.p_spatial),) and w.last_weight == cfg.lam
    # its statistic is the written-out formula: per-sample channel max of |f|^p, L2-normalised
    f = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    stats = matching.class_statistics([f, f], f.flatten(1), 2, w)
    z = (f.abs() ** cfg.p_spatial).amax(dim=1).flatten(1)
    z = z / z.norm(dim=1, keepdim=True)
    assert torch.allclose(stats["peak"][0], z.view(2, 2, -1).mean(1), atol=1e-6)
    synset = distill(digits_prep, cfg, progress=False)
    assert synset.meta["method"] == "peakmatch" and len(synset.meta["losses"]) == 3
    assert all(l == l for l in synset.meta["losses"])  # finite, not NaN
