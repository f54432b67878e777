"""Importers of other repositories' released sets (fabricated files in each exact layout), their
refusal of pickles that would run code, soft labels through the file, export and training, and
DD-Ranking's scores against the formulas written out."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.datasets import load_dataset
from distill.errors import UserError
from distill.importers import FORMATS, as_distributions, check_release, read_release, to_synset
from distill.scores import hard_label_recovery, improvement_over_random, label_robust_score
from distill.synset import SyntheticSet
from distill.train import soft_loss
from pipelines.run import main

K, IPC = 10, 2  # digits: 10 classes


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", resolution=8)


def images(n: int, seed: int, size: int = 8, channels: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def shuffled_labels(seed: int) -> torch.Tensor:
    """Class ids, IPC per class, not class-major (the importer sorts them)."""
    y = torch.arange(K).repeat(IPC)
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


class Evil:
    """Unpickling this object would call ``open(marker, "w")``: code running from a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_release(fmt: str, folder, evil: object | None = None):
    """A fabricated release of ``fmt`` in ``folder`` (its exact layout); ``evil`` replaces the
    images with an object whose unpickling runs code. Returns (path, images, labels)."""
    x, y = images(K * IPC, 1), shuffled_labels(2)
    payload = evil if evil is not None else x
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "dc":
        path = folder / "res_DM_digits_ConvNet_2ipc.pt"
        torch.save({"data": [[images(K * IPC, 9), y], [payload, y]], "accs_all_exps": {"ConvNet": [0.1, 0.2]}}, path)
    elif fmt == "dm-cl":
        path = folder / "cl_DM_digits_ConvNet_2ipc_2steps_seed0.pt"
        first = torch.isin(y, torch.arange(5))
        torch.save({"data": [(payload if evil is not None else x[first], y[first]), (x[~first], y[~first])]}, path)
        if evil is None:
            x, y = torch.cat([x[first], x[~first]]), torch.cat([y[first], y[~first]])
    elif fmt == "datadam":
        path = folder / "digits" / "syn_data_digits_ipc_2.pt"
        path.parent.mkdir()
        torch.save({"data": [payload, y]}, path)
    elif fmt == "mtt":
        path = folder
        torch.save(payload, folder / "images_best.pt")
        torch.save(y, folder / "labels_best.pt")
        torch.save(torch.tensor(0.02), folder / "lr_best.pt")
    elif fmt == "ncfm":
        path = folder / "DIGITS_ipc2.pt"
        torch.save([payload, y], path)
    else:
        raise AssertionError(fmt)
    return path, x, y


TENSOR_FORMATS = ("dc", "dm-cl", "datadam", "mtt", "ncfm")


@pytest.mark.parametrize("fmt", TENSOR_FORMATS)
def test_each_layout_imports_class_major_with_its_provenance(fmt, tmp_path, digits8):
    path, x, y = write_release(fmt, tmp_path / fmt)
    rel = read_release(path, fmt, digits8, index=1 if fmt == "dc" else None)
    check_release(rel, digits8)
    s = to_synset(rel, fmt, digits8)
    order = torch.sort(y, stable=True).indices  # by hand: class 0's images first, in file order
    assert torch.equal(s.labels, y[order]) and torch.equal(s.images, x[order])
    assert s.factor == (2 if fmt == "ncfm" else 1) and s.ipc == IPC
    assert torch.allclose(s.preprocess.mean, torch.tensor(digits8.mean)) and not s.preprocess.uses_zca
    assert s.lr == (pytest.approx(0.02) if fmt == "mtt" else None)
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update((str(f.relative_to(path)) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    assert s.meta["provenance"]["sha256"] == h.hexdigest() and s.meta["provenance"]["format"] == fmt


@pytest.mark.parametrize("fmt", TENSOR_FORMATS)
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(fmt, tmp_path, capsys, digits8):
    marker = tmp_path / "ran"
    path, _, _ = write_release(fmt, tmp_path / fmt, evil=Evil(str(marker)))
    rc = main(["import", str(path), "--format", fmt, "--dataset", "digits", "--out", str(tmp_path / "o"), "--quiet",
               *(["--index", "1"] if fmt == "dc" else [])])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists() and not (tmp_path / "o" / "synset.pt").exists()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "never runs code" in lines[0]
    assert "weights_only=False" not in err


def test_dm_cl_joins_disjoint_steps_takes_one_with_index_and_refuses_repeated_classes(tmp_path, digits8):
    path, x, y = write_release("dm-cl", tmp_path / "cl")
    joined = read_release(path, "dm-cl", digits8)
    assert len(joined.labels) == K * IPC and "2 steps joined" in joined.note
    one = read_release(path, "dm-cl", digits8, index=1)
    assert sorted(set(one.labels.tolist())) == [5, 6, 7, 8, 9]
    torch.save({"data": [(x[:10], y[:10]), (x, y)]}, tmp_path / "cumulative.pt")  # step 1 repeats step 0's classes
    with pytest.raises(UserError, match="repeats classes"):
        read_release(tmp_path / "cumulative.pt", "dm-cl", digits8)


def test_bad_releases_give_one_error_line(tmp_path, digits8):
    path, x, y = write_release("dc", tmp_path / "dc")
    with pytest.raises(UserError, match="out of range"):
        read_release(path, "dc", digits8, index=2)
    with pytest.raises(UserError, match="--index chooses nothing"):
        read_release(path, "ncfm", digits8, index=0)
    torch.save({"data": [images(20, 1, size=16), y]}, tmp_path / "big.pt")
    with pytest.raises(UserError, match="is --dataset right"):
        check_release(read_release(tmp_path / "big.pt", "datadam", digits8), digits8)
    torch.save({"data": [x, y + 5]}, tmp_path / "labels.pt")
    with pytest.raises(UserError, match="10 classes"):
        check_release(read_release(tmp_path / "labels.pt", "datadam", digits8), digits8)
    torch.save({"images": x}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="expected a dict with 'data'"):
        read_release(tmp_path / "other.pt", "dc", digits8)
    (tmp_path / "mtt").mkdir()
    torch.save(x, tmp_path / "mtt" / "images_best.pt")
    with pytest.raises(UserError, match="labels_best.pt is missing"):
        read_release(tmp_path / "mtt", "mtt", digits8)
    with pytest.raises(UserError, match="import format"):
        read_release(path, "sre2l", digits8)


def test_zca_release_meets_test_images_in_its_own_space(tmp_path):
    """An MTT release on (fabricated) CIFAR-10 is in ZCA space: kornia's ZCAWhitening(eps=0.1)
    fitted on the whole normalised training set, applied here directly. The imported set maps
    back to the very pixels it was made from, and its test images get the same transform."""
    from kornia.enhance import ZCAWhitening

    from distill.fixtures import accept_fabricated_cifar, write_cifar

    write_cifar(tmp_path / "data", "cifar10", per_class=6, test_per_class=2, seed=0)
    with accept_fabricated_cifar():
        data = load_dataset("cifar10", tmp_path / "data", download=False)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    norm = (data.train_x.float() / 255 - mean) / std
    zca = ZCAWhitening(eps=0.1, compute_inv=True).fit(norm)
    pixels = torch.rand(K * IPC, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    released = zca((pixels - mean) / std)
    (tmp_path / "mtt").mkdir()
    torch.save(released, tmp_path / "mtt" / "images_best.pt")
    torch.save(torch.arange(K).repeat_interleave(IPC), tmp_path / "mtt" / "labels_best.pt")
    rel = read_release(tmp_path / "mtt", "mtt", data)  # auto: MTT whitens CIFAR
    s = to_synset(rel, "mtt", data)
    assert s.preprocess.uses_zca and rel.space == "zca"
    assert torch.allclose(s.preprocess.inverse(s.images), pixels, atol=1e-3)
    test = data.test_x[:4]
    assert torch.allclose(s.preprocess(test), zca((test.float() / 255 - mean) / std), atol=1e-3)
    plain = to_synset(read_release(tmp_path / "mtt", "mtt", data, zca=False), "mtt", data)
    assert not plain.preprocess.uses_zca


def test_imagefolder_round_trips_an_exported_tree(tmp_path, digits8):
    x, y = images(K * IPC, 4).clamp(-1, 1), torch.arange(K).repeat_interleave(IPC)
    pre = to_synset(read_release(write_release("dc", tmp_path / "dc")[0], "dc", digits8), "dc", digits8).preprocess
    s = SyntheticSet(x, y, list(digits8.classes), pre, {"dataset": "digits8"})
    s.export_png(tmp_path / "tree")
    rel = read_release(tmp_path / "tree", "imagefolder", digits8)
    back = to_synset(rel, "imagefolder", digits8)
    expected = (s.to_pixels() * 255).round() / 255  # the PNGs hold 8-bit pixels
    assert torch.equal(back.labels, y)
    assert torch.allclose(back.to_pixels(), expected, atol=1e-5)
    (tmp_path / "tree" / "099_nothing").mkdir()
    with pytest.raises(UserError, match="names no class"):
        read_release(tmp_path / "tree", "imagefolder", digits8)


def test_soft_labels_logits_become_distributions_and_round_trip(tmp_path, digits8):
    logits = torch.randn(K * IPC, K, generator=torch.Generator().manual_seed(5))
    probs, note = as_distributions(logits, tmp_path)
    assert torch.allclose(probs, torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)) and "logits" in note
    kept, note = as_distributions(probs, tmp_path)
    assert torch.allclose(kept, probs) and "distributions" in note
    path, x, y = write_release("mtt", tmp_path / "datm")
    torch.save(logits, path / "labels_best.pt")  # DATM: soft labels
    s = to_synset(read_release(path, "mtt", digits8), "mtt", digits8)
    order = torch.sort(logits.argmax(1), stable=True).indices
    assert torch.allclose(s.soft_labels, probs[order]) and torch.equal(s.labels, logits.argmax(1)[order])
    s.save(tmp_path / "s.pt")
    back = SyntheticSet.load(tmp_path / "s.pt")
    assert torch.equal(back.soft_labels, s.soft_labels) and back.lr == pytest.approx(0.02)
    assert torch.load(tmp_path / "s.pt", weights_only=True)["version"] == 3
    f2 = SyntheticSet(s.images, s.labels, s.class_names, s.preprocess, s.meta, factor=2, soft_labels=s.soft_labels,
                      lr=s.lr)
    assert torch.equal(f2.targets(), s.soft_labels.repeat_interleave(4, dim=0))
    f2.export_npz(tmp_path / "e.npz")
    npz = np.load(tmp_path / "e.npz")
    assert np.allclose(npz["soft_labels"], f2.targets().numpy()) and npz["images"].shape[0] == 4 * len(s.labels)
    from continual.memory import export_buffers

    export_buffers(f2, tmp_path / "b.pt")
    blob = torch.load(tmp_path / "b.pt", weights_only=True)
    assert torch.equal(blob["soft_labels"][3], s.soft_labels[s.labels == 3].repeat_interleave(4, dim=0))
    f2.save(tmp_path / "f2.pt")
    assert main(["export", "--synset", str(tmp_path / "f2.pt"), "--format", "ddranking", "--out", str(tmp_path / "dd"),
                 "--quiet"]) == 0
    assert torch.equal(torch.load(tmp_path / "dd" / "labels.pt", weights_only=True), f2.targets())
    assert torch.equal(torch.load(tmp_path / "dd" / "images.pt", weights_only=True), f2.decoded()[0])
    assert float(torch.load(tmp_path / "dd" / "lr.pt", weights_only=True)) == pytest.approx(0.02)
    assert len(list((tmp_path / "dd" / "images").rglob("*.png"))) == 4 * len(s.labels)
    with pytest.raises(UserError, match="sum to 1"):
        SyntheticSet(s.images, s.labels, s.class_names, s.preprocess, soft_labels=logits)


def test_soft_loss_is_temperature_scaled_kl():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    q = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), 1)
    for t in (1.0, 3.0):
        p = torch.softmax(z / t, 1)
        by_hand = (q * (q.log() - p.log())).sum(1).mean() * t * t
        assert torch.allclose(soft_loss(z, q, t), by_hand, atol=1e-6)
    onehot = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4).float()
    assert torch.allclose(soft_loss(z, onehot), F.cross_entropy(z, onehot.argmax(1)), atol=1e-6)


def test_training_follows_the_soft_labels(digits8):
    """The same images with soft labels that name another class (a cyclic shift): networks
    trained on them predict the shifted class, so training reads the soft labels."""
    from distill.evaluate import evaluate_set
    from distill.prepare import prepare
    from distill.train import TrainRecipe

    prep = prepare(digits8)
    idx = torch.cat([torch.nonzero(digits8.train_y == k)[:10, 0] for k in range(K)])
    x, y = prep.train_x[idx], digits8.train_y[idx]
    shifted = F.one_hot((y + 1) % K, K).float() * 0.9 + 0.01
    s = SyntheticSet(x, y, list(digits8.classes), prep.preprocess, {"dataset": "digits"}, soft_labels=shifted)
    cfg = TrainRecipe(models=1, epochs=60, dsa="none")
    test_x, test_y = prep.test_x, digits8.test_y
    soft = evaluate_set(s, test_x, (test_y + 1) % K, cfg)[0].mean  # accuracy at predicting the shifted class
    hard = evaluate_set(s.hard(), test_x, test_y, cfg)[0].mean
    assert soft > 0.6 and hard > 0.6


def test_dd_ranking_scores_follow_their_definitions():
    assert improvement_over_random(0.62, 0.50) == pytest.approx(0.12)
    assert hard_label_recovery(0.85, 0.62) == pytest.approx(0.23)
    alpha = 0.5 * 0.12 - 0.5 * 0.23
    assert label_robust_score(0.12, 0.23) == pytest.approx((math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert label_robust_score(1.0, 0.0, weight=1.0) == pytest.approx(1.0)  # alpha = 1 -> 1; alpha = -1 -> 0
    assert label_robust_score(0.0, 1.0, weight=0.0) == pytest.approx(0.0)


def test_an_imported_set_evaluates_with_ior_and_serves_as_memory_and_proxy(tmp_path, capsys):
    path, _, _ = write_release("dc", tmp_path / "dc")
    out = tmp_path / "imp"
    assert main(["import", str(path), "--format", "dc", "--dataset", "digits", "--out", str(out), "--quiet"]) == 0
    s = SyntheticSet.load(out / "synset.pt")
    assert s.meta["method"] == "imported-dc" and s.image_shape == (1, 8, 8) and (out / "grid.png").is_file()
    cache = ["--cache", str(tmp_path / "c")]
    assert main(["evaluate", "--synset", str(out / "synset.pt"), "--models", "1", "--epochs", "2", "--quiet",
                 "--whole-acc", "95", *cache]) == 0
    printed = capsys.readouterr().out
    assert "ior" in printed and "random baseline" in printed
    row = json.loads((out / "evaluation.json").read_text())["rows"][0]
    assert row["ior_value"] == pytest.approx(row["mean"] - row["random_value"])
    assert row["hlr_value"] == pytest.approx(0.95 - row["mean"])
    assert main(["evaluate", "--synset", str(out / "synset.pt"), "--models", "1", "--epochs", "2", "--quiet",
                 *cache]) == 0
    assert "random baseline" not in capsys.readouterr().out  # computed once, cached
    assert main(["continual", "--dataset", "digits", "--steps", "2", "--ipc", "2", "--orders", "0", "--epochs", "1",
                 "--memories", str(out / "synset.pt"), "--out", str(tmp_path / "cl"), "--quiet", *cache]) == 0
    assert len(json.loads((tmp_path / "cl" / "continual.json").read_text())["rows"][0]["steps"]) == 2
    assert main(["nas", "--dataset", "digits", "--space", "tiny", "--proxy", str(out / "synset.pt"), "--proxy-epochs", "1",
                 "--whole-epochs", "1", "--out", str(tmp_path / "n"), "--quiet", "--set", "dataset.resolution=8",
                 *cache]) == 0
    rows = json.loads((tmp_path / "n" / "nas.json").read_text())["rows"]
    assert next(r for r in rows if r["proxy"] == "imp")["images"] == K * IPC


def test_every_format_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    text = capsys.readouterr().out
    assert all(f in text for f in FORMATS)
