"""Pipelines: cache keys, resume of an interrupted stage, named sets, config files and their
errors, run records, and class-sharded distillation (torchrun)."""

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import distill.loop as loop
from distill.config import from_dict, to_dict
from distill.loop import distill
from distill.settings import DistillSettings, NetConfig, SetConfig, resolve
from distill.errors import UserError
from pipelines.cache import Artifact, Cache, config_key, list_artifacts
from pipelines.sets import SetMaker, set_key_config
from pipelines.common import DataConfig
from pipelines.make_configs import CONFIG_DIR, JOBS, render
from pipelines.named_sets import dataset_base, lookup, named_sets
from pipelines.run import main

ROOT = Path(__file__).resolve().parent.parent
DATA_ID = {"name": "digits", "image_size": [8, 8], "zca": False}


def _cfg(method="atom", **changes):
    """``SetConfig`` with ``changes``: fields by name, the methods' hyperparameters (``lam``...) as params."""
    own = {f.name for f in dataclasses.fields(SetConfig)}
    params = {k: v for k, v in changes.items() if k not in own}
    return dataclasses.replace(SetConfig(method=method, ipc=10), params=params,
                               **{k: v for k, v in changes.items() if k in own})


def _key(data_id=DATA_ID, method="atom", **changes):
    cfg = resolve(_cfg(method, **changes), 8, "digits")
    return config_key(set_key_config(data_id, cfg))


def test_cache_key_changes_exactly_with_relevant_values():
    base = _key()
    assert _key() == base  # deterministic
    for change in ({"lam": 0.02}, {"ipc": 11}, {"seed": 1}, {"method": "datadam"}, {"iterations": 301},
                   {"p_spatial": 1.0}, {"net": NetConfig(width=64)}, {"factor": 2}):
        assert _key(**change) != base, change
    for change in ({"checkpoint_every": 7}, {"checkpoint_minutes": 1.0}, {"snapshots": [3]}, {"eval_every": 5},
                   {"eval_epochs": 3}, {"chunk": 64}, {"syn_chunk": 32}, {"compile": "off"}):
        assert _key(**change) == base, change  # reporting, checkpoint cadence, snapshots, exact chunking
    assert _key({**DATA_ID, "zca": True}) != base and _key({**DATA_ID, "image_size": [16, 16]}) != base
    # a method's key holds its own hyperparameters only: DM reads no attention parameter or layer
    dm = _key(method="dm")
    for change in ({"lam": 0.02}, {"p_spatial": 1.0}, {"p_channel": 2.0}, {"layers": [1]}):
        assert _key(method="dm", **change) == dm, change
    assert _key(method="dm", loss_scale=100.0) != dm and _key(method="dm", iterations=5) != dm
    assert _key(method="datadam", p_channel=2.0) == _key(method="datadam")
    assert _key(method="datadam", p_spatial=2.0) != _key(method="datadam")
    # a selection's key: method, ipc, seed, and (herding, k-center) the embedding network
    herding = _key(method="herding")
    for change in ({"loss_scale": 1.0}, {"lam": 0.02}, {"iterations": 301}, {"p_spatial": 1.0}, {"batch_real": 8},
                   {"factor": 2}):
        assert _key(method="herding", **change) == herding, change
    for change in ({"ipc": 11}, {"seed": 1}, {"embed_epochs": 2}, {"net": NetConfig(width=64)}):
        assert _key(method="herding", **change) != herding, change
    assert _key(method="random", net=NetConfig(width=64)) == _key(method="random")
    # where the data live is not part of a result's identity
    d = load_digits8()
    assert DataConfig("digits", root="a").identity(d) == DataConfig("digits", root="b").identity(d)
    assert config_key({"a": 1}, "0.1.0+alg1") != config_key({"a": 1}, "0.1.0+alg2")  # code version


def test_per_class_cut_keeps_the_first_images_of_every_class_and_is_in_the_key():
    full = load_digits8()
    cfg = DataConfig("digits", resolution=8, per_class=5)
    cut = cfg.load()
    for x, y, fx, fy in ((cut.train_x, cut.train_y, full.train_x, full.train_y),
                         (cut.test_x, cut.test_y, full.test_x, full.test_y)):
        assert torch.bincount(y).tolist() == [5] * full.num_classes
        # brute force: walk the full split in order, keep an image while its class has < 5
        seen: dict[int, int] = {}
        keep = []
        for i, label in enumerate(fy.tolist()):
            if seen.get(label, 0) < 5:
                seen[label] = seen.get(label, 0) + 1
                keep.append(i)
        assert torch.equal(x, fx[keep]) and torch.equal(y, fy[keep])
    assert cfg.identity(cut) == {**DataConfig("digits").identity(full), "per_class": 5}
    assert "per_class" not in DataConfig("digits").identity(full)  # keys made without a cut stay as they were
    assert cfg.describe(cut) == "digits (10 classes, 8x8, first 5 per class)"
    for bad in (0, -3):
        with pytest.raises(UserError, match=f"dataset.per_class must be >= 1, got {bad}"):
            DataConfig("digits", per_class=bad).load()


def load_digits8():
    from distill.datasets import load_dataset

    return load_dataset("digits", resolution=8)


def test_interrupted_set_resumes_from_its_checkpoint(tmp_path, monkeypatch, interrupt):
    data = load_digits8()
    base = SetConfig(iterations=6, checkpoint_every=3, batch_real=8, net=NetConfig(width=16))
    maker = SetMaker(DataConfig("digits", resolution=8), data, torch.device("cpu"), Cache(tmp_path / "a"), progress=False)
    cfg = maker.resolve("dm", 2, base)
    real = interrupt(loop, "loss_and_grad", 5)
    with pytest.raises(KeyboardInterrupt):
        maker.get(cfg)
    art = maker.artifact(cfg)
    assert not art.complete and (art.path / "checkpoint.pt").is_file()
    assert [r["status"] for r in list_artifacts(tmp_path / "a")] == ["partial"]
    calls = []
    monkeypatch.setattr(loop, "loss_and_grad", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed, path, reused = maker.get(cfg)
    assert not reused and len(calls) == 2  # iterations 5..6 only: the interruption saved iteration 4
    fresh = SetMaker(DataConfig("digits", resolution=8), data, torch.device("cpu"), Cache(tmp_path / "b"), progress=False).get(cfg)[0]
    assert torch.equal(resumed.images, fresh.images)
    again, _, reused = maker.get(cfg)
    assert reused and torch.equal(again.images, resumed.images)


def test_named_sets_resolve():
    defs = named_sets()
    assert defs["atom_ipc50"].dataset == {"name": "cifar10"} and defs["atom_ipc50"].ipc == 50
    assert defs["datadam_ipc20_cifar100"].method == "datadam"
    pat = lookup("herding_ipc7_tinyimagenet")
    assert (pat.method, pat.ipc, pat.dataset) == ("herding", 7, {"name": "tinyimagenet"})
    assert lookup("runs/x/synset.pt") is None


def test_named_sets_give_one_dataset_base():
    a, b, c = lookup("atom_ipc10_digits"), lookup("random_ipc5_digits"), lookup("dm_ipc50")
    assert dataset_base([a, b]) == {"name": "digits", "resolution": 8}  # union of the keys
    assert dataset_base([]) == {}
    with pytest.raises(UserError, match="disagree on dataset.name: 'digits' and 'cifar10'"):
        dataset_base([a, c])
    settings = DistillSettings(iterations=7)
    cfg = a.distill_config(settings)
    assert (cfg.method, cfg.ipc, cfg.iterations) == ("atom", 10, 7)
    assert SetConfig.of("dm", 3, settings) == SetConfig(method="dm", ipc=3, iterations=7)


@pytest.mark.parametrize("job,argv", [
    ("continual", ["--memories", "random", "--set", "distill.method=dm"]),
    ("nas", ["--proxy", "random_ipc5_digits", "--set", "distill.ipc=3"]),
])
def test_jobs_reject_distill_keys_that_would_not_act(tmp_path, capsys, job, argv):
    assert main([job, "--dataset", "digits", "--out", str(tmp_path / "o"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key 'distill." in err[0] and "allowed keys under distill: preset" in err[0]
    yaml_text = (CONFIG_DIR / f"{job}.yaml").read_text()
    assert "  method:" not in yaml_text.split("distill:")[1] and "  ipc:" not in yaml_text.split("distill:")[1]


def test_run_record_written_when_a_command_fails_after_making_its_folder(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["nas", "--proxy", str(tmp_path / "missing.pt"), "--dataset", "digits", "--space", "tiny", "--out", str(out),
            "--quiet", "--cache", str(tmp_path / "c")]
    assert main(argv) == 2
    assert json.loads((out / "timings.json").read_text())["exit_code"] == 2
    assert "NAS on digits" in (out / "run.log").read_text()


def test_distill_by_set_name_and_run_record(tmp_path):
    out = tmp_path / "r"
    argv = ["distill", "--named-set", "random_ipc10_digits", "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    from distill.synset import SyntheticSet

    s = SyntheticSet.load(out / "synset.pt")
    assert s.meta["dataset"] == "digits" and s.image_shape == (1, 8, 8) and s.ipc == 10
    rec = json.loads((out / "timings.json").read_text())
    assert rec["exit_code"] == 0 and rec["command"][1:3] == ["distill", "--named-set"] and rec["seconds"] > 0
    assert "synthetic set:" in (out / "run.log").read_text()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["distill"]["seed"] == 0 and cfg["device"] == "cpu" and "torch" in cfg["versions"]
    # the set is a cached artifact: a second run (another --out) reuses it, making nothing
    cached = list((tmp_path / "cache" / "sets").glob("*/synset.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert main([*argv, "--out", str(tmp_path / "r2")]) == 0
    assert "reused from the cache" in (tmp_path / "r2" / "run.log").read_text()
    assert cached[0].stat().st_mtime_ns == stamp
    again = SyntheticSet.load(tmp_path / "r2" / "synset.pt")
    assert torch.equal(again.images, s.images) and again.labels.tolist() == s.labels.tolist()


@pytest.mark.parametrize("text, line, message", [
    ("dataset:\n  name: digits\ndistill:\n  method: atom\n  ipcc: 3\n", 5, "unknown config key 'distill.ipcc'; "
     "allowed keys under distill: preset,"),
    ("distill:\n  net:\n    width: wide\n", 3, "distill.net.width: expected an integer"),
    ("distill:\n  method: atom\n   ipc: 3\n", 3, "malformed YAML"),
])
def test_config_file_errors_name_file_and_line(tmp_path, capsys, text, line, message):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert main(["distill", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:{line}") and message in err


def _keys(cls, prefix=""):
    """Every dotted key a config dataclass takes, walked from its fields (and, for the open
    distillation section, every registered method's hyperparameter): independent of the writer."""
    from distill.methods import param_table

    out = set()
    for f in dataclasses.fields(cls):
        if f.name == getattr(cls, "OPEN_FIELD", None):
            out |= {f"{prefix}{name}" for name in param_table()}
        elif dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory) else f.default):
            out |= _keys(type(f.default_factory() if callable(f.default_factory) else f.default), f"{prefix}{f.name}.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


def _yaml_keys(node, prefix=""):
    return {k for key, v in node.items() for k in (_yaml_keys(v, f"{prefix}{key}.") if isinstance(v, dict) and v
                                                     else {f"{prefix}{key}"})}


def test_every_job_with_config_keys_has_its_documented_file():
    from pipelines.jobs import JOBS as REGISTERED

    with_keys = {name for name, job in REGISTERED.items() if dataclasses.fields(job.Config)}
    assert with_keys == {name for name, _, _ in JOBS}


@pytest.mark.parametrize("name, job, head", JOBS)
def test_documented_configs_are_complete_and_load(name, job, head):
    path = CONFIG_DIR / f"{name}.yaml"
    assert path.read_text() == render(job, head), "run python pipelines/make_configs.py"
    data = yaml.safe_load(path.read_text())
    assert _yaml_keys(data) == _keys(type(job))  # every key, and nothing else
    text = path.read_text()
    assert all("  # " in line for line in text.splitlines() if line.strip().startswith(("lam:", "p_spatial:", "mmd_kernel:")))
    loaded = from_dict(type(job), data)
    assert to_dict(loaded) == to_dict(job)


def _small(**kw):
    return resolve(SetConfig(method="atom", ipc=2, iterations=4, batch_real=8,
                                 net=NetConfig(width=16), **kw), 16, "digits")


def test_class_shards_gather_to_the_single_process_set(digits_prep):
    cfg = _small()
    whole = distill(digits_prep, cfg, progress=False)
    parts = [distill(digits_prep, cfg, progress=False, shard=s) for s in ((0, 3), (3, 10))]
    stitched = torch.cat([parts[0].images[: 3 * 2], parts[1].images[3 * 2 :]])
    assert torch.allclose(stitched, whole.images, atol=1e-5)
    # a shard leaves the other classes at their initial images
    init = distill(digits_prep, dataclasses.replace(cfg, iterations=0), progress=False)
    assert torch.equal(parts[0].images[6:], init.images[6:])


def test_torchrun_two_processes_equal_one(tmp_path):
    common = ["--dataset", "digits", "--method", "atom", "--ipc", "1", "--iterations", "3", "--device", "cpu",
              "--quiet", "--set", "distill.batch_real=8", "--set", "distill.net.width=16"]
    torchrun = Path(sys.executable).with_name("torchrun")
    # --standalone: a free rendezvous port (the default 29500 may be taken on a shared machine)
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "pipelines/run.py", "distill", *common,
                        "--out", str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert main(["distill", *common, "--out", str(tmp_path / "one")]) == 0
    from distill.synset import SyntheticSet

    a, b = SyntheticSet.load(tmp_path / "one" / "synset.pt"), SyntheticSet.load(tmp_path / "two" / "synset.pt")
    assert torch.allclose(a.images, b.images, atol=1e-5) and b.meta["processes"] == 2
    assert not list((tmp_path / "two").glob("checkpoint*"))


def test_artifact_folder_records_its_config(tmp_path):
    art = Artifact(tmp_path, "stage", "thing", {"x": 1}, "out.json")
    folder = art.open()
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    assert meta["key"] == art.key == config_key({"x": 1}) and meta["config"] == {"x": 1}
    assert not art.complete
    (folder / "out.json").write_text("{}")
    assert art.complete and list_artifacts(tmp_path)[0]["status"] == "complete"


def test_two_runs_needing_one_set_distil_it_once(tmp_path, monkeypatch, capsys):
    """Two concurrent makers of the same set on one cache: the second waits on the artifact's
    lock, then reuses the first one's file, so the distillation runs once."""
    import threading

    data = load_digits8()
    base = SetConfig(iterations=4, batch_real=8, net=NetConfig(width=16))
    makers = [SetMaker(DataConfig("digits", resolution=8), data, torch.device("cpu"), Cache(tmp_path), progress=False)
              for _ in range(2)]
    cfg = makers[0].resolve("dm", 2, base)
    real = loop.loss_and_grad
    started, calls = threading.Event(), []

    def slow(*a, **k):  # the first distillation signals that it holds the lock, then takes its time
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return real(*a, **k)

    monkeypatch.setattr(loop, "loss_and_grad", slow)
    results: dict[int, tuple] = {}
    first = threading.Thread(target=lambda: results.setdefault(0, makers[0].get(cfg)))
    first.start()
    assert started.wait(60)
    results[1] = makers[1].get(cfg)
    first.join()
    assert [results[0][2], results[1][2]] == [False, True]  # made once, then reused
    assert len(calls) == 4 and torch.equal(results[0][0].images, results[1][0].images)
    assert "waiting for another process that is making" in capsys.readouterr().out


def test_curve_snapshots_and_longer_runs_equal_runs_of_their_own_length(tmp_path, monkeypatch):
    """A learning curve is one distillation to its longest point, the others kept as snapshots;
    a later, longer run continues from the longest finished state. Every set equals a fresh run
    of its own length."""
    data = load_digits8()
    base = SetConfig(iterations=6, batch_real=8, net=NetConfig(width=16), checkpoint_every=0)
    maker = SetMaker(DataConfig("digits", resolution=8), data, torch.device("cpu"), Cache(tmp_path / "a"), progress=False)
    fresh = SetMaker(DataConfig("digits", resolution=8), data, torch.device("cpu"), Cache(tmp_path / "b"), progress=False)
    cfg = maker.resolve("atom", 1, base)
    real = loop.loss_and_grad
    calls = []
    monkeypatch.setattr(loop, "loss_and_grad", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    curve = maker.get_curve(cfg, [2, 4, 6])
    assert len(calls) == 6 and sorted(curve) == [2, 4, 6]
    calls.clear()
    longer = maker.get(dataclasses.replace(cfg, iterations=9))[0]
    assert len(calls) == 3  # continued from the state of the 6-iteration run
    for n, s in [*curve.items(), (9, longer)]:
        assert s.meta["iterations"] == n
        assert torch.equal(s.images, fresh.get(dataclasses.replace(cfg, iterations=n))[0].images), n
    assert maker.artifact(dataclasses.replace(cfg, iterations=4)).key == fresh.artifact(
        dataclasses.replace(cfg, iterations=4)).key


def test_explain_gives_every_value_its_source_and_does_no_work(tmp_path, capsys):
    """--explain: one line per resolved leaf, each with where it came from (file:line, flag,
    --set, preset, method, dataset, size rule, default), and nothing is made or written."""
    cfg = tmp_path / "job.yaml"
    cfg.write_text("distill:\n  momentum: 0.6\n")
    argv = ["distill", "--dataset", "digits", "--method", "datadam", "--ipc", "5", "--config", str(cfg),
            "--set", "distill.lam=0.05", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--explain"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    pairs = dict(line.split("  # ", 1) for line in lines)  # every line has a source
    assert len(pairs) == len(lines) and all(src.strip() for src in pairs.values())
    assert pairs["distill.momentum: 0.6"] == f"{cfg}:2"
    assert pairs["distill.lam: 0.05"] == "--set distill.lam=0.05"
    assert pairs["distill.method: datadam"] == "flag --method"
    assert pairs["distill.p_spatial: 4.0"] == "preset paper"
    assert pairs["distill.loss_scale: 100.0"] == "method datadam"
    assert pairs["distill.iterations: 300"] == "dataset digits (quick defaults)"
    assert pairs["distill.lr_img: 1.0"].startswith("size rule")
    # the resolved config is complete: every key of the distill section is listed
    from distill.settings import DistillSettings
    import dataclasses

    shared = {f.name for f in dataclasses.fields(DistillSettings)} - {"params", "net"}
    assert shared <= {k.split(":")[0].split(".")[1] for k in pairs if k.startswith("distill.")}
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
