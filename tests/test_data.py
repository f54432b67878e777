"""Loaders read fabricated archives in the exact on-disk formats through the real code path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data import ClassIndex
from distill.datasets import load_dataset
from distill.errors import UserError
from distill.fixtures import accept_fabricated_cifar, write_cifar, write_imagenet64, write_mnist, write_svhn


@pytest.fixture
def no_md5():
    """Fabricated archives cannot match the official checksums: skip only that check."""
    with accept_fabricated_cifar():
        yield


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_python_pickles(tmp_path, no_md5, name, num_classes):
    fab = write_cifar(tmp_path, name, per_class=7, test_per_class=5, seed=0, balanced=False)
    files, test_file, truth, names = fab["files"], fab["test_file"], fab["truth"], fab["classes"]
    data = load_dataset(name, tmp_path, download=False)
    exp_train = np.concatenate([truth[f][0] for f in files])
    exp_labels = sum((truth[f][1] for f in files), [])
    # pixel (row 0, col 1) of channel G of image 0 sits at offset 1024 + 1 of the row
    assert data.train_x.shape == (len(exp_labels), 3, 32, 32)
    assert data.train_x.dtype == torch.uint8
    assert torch.equal(data.train_x.reshape(len(exp_labels), -1), torch.from_numpy(exp_train))
    assert data.train_x[0, 1, 0, 1] == exp_train[0, 1024 + 1]
    assert data.train_y.tolist() == exp_labels
    assert data.test_y.tolist() == truth[test_file][1]
    assert list(data.classes) == names
    assert data.zca_default


def test_cifar_missing_offline_is_clear(tmp_path):
    with pytest.raises(UserError, match="cifar10 not found.*cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)


def _jpeg(path, rng, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path, quality=95)


def test_tinyimagenet_layout(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius\nn02\tcat\nn03\tdog\n")
    for i, w in enumerate(wnids):
        for j in range(i + 2):
            _jpeg(base / "train" / w / "images" / f"{w}_{j}.JPEG", rng, 64)
    lines = []
    for j, w in enumerate(["n03", "n01", "n01", "n02"]):
        _jpeg(base / "val" / "images" / f"val_{j}.JPEG", rng, 64)
        lines.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset("tinyimagenet", tmp_path)
    assert data.classes == ("goldfish", "cat", "dog")  # sorted wnids n01, n02, n03
    assert data.train_x.shape == (2 + 3 + 4, 3, 64, 64)
    assert data.train_y.tolist() == [0] * 3 + [1] * 2 + [2] * 4
    assert data.test_y.tolist() == [2, 0, 0, 1]
    # the decoded cache gives back the same tensors
    again = load_dataset("tinyimagenet", tmp_path)
    assert torch.equal(again.train_x, data.train_x) and again.classes == data.classes
    # an image added to the folder, or one replaced: the cache notices and decodes again
    _jpeg(base / "train" / "n01" / "images" / "n01_9.JPEG", rng, 64)
    grown = load_dataset("tinyimagenet", tmp_path)
    assert grown.train_x.shape[0] == 10 and grown.train_y.tolist() == [0] * 4 + [1] * 2 + [2] * 4
    replaced = base / "train" / "n02" / "images" / "n02_0.JPEG"
    _jpeg(replaced, np.random.default_rng(7), 64)
    os.utime(replaced, ns=(1, 1))  # a new image with an old time stamp still changes size or time
    changed = load_dataset("tinyimagenet", tmp_path)
    want = torch.from_numpy(np.array(Image.open(replaced).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(changed.train_x[4], want)  # n02 is class 1: after the four n01 images
    # a damaged cache file is decoded again, not a traceback
    (base / "decoded_64.pt").write_bytes(b"broken")
    assert torch.equal(load_dataset("tinyimagenet", tmp_path).train_x, changed.train_x)


def test_tinyimagenet_missing(tmp_path):
    with pytest.raises(UserError, match="tinyimagenet not found"):
        load_dataset("tinyimagenet", tmp_path)


def test_imagefolder_resizes_and_crops(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 3), ("val", 2)):
        for c in ("b_dog", "a_cat"):
            for j in range(n):
                d = tmp_path / "tree" / split / c
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(d / f"{j}.png")
    data = load_dataset("imagefolder", tmp_path / "tree", resolution=16)
    assert data.classes == ("a_cat", "b_dog")
    assert data.train_x.shape == (6, 3, 16, 16) and data.test_x.shape == (4, 3, 16, 16)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]


def test_imagefolder_missing_tree(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagenette", tmp_path)
    (tmp_path / "imagenette").mkdir()
    with pytest.raises(UserError, match="expected an image tree"):
        load_dataset("imagenette", tmp_path)


def test_digits_split_is_stratified_and_fixed(digits):
    from sklearn.datasets import load_digits

    assert digits.image_size == (16, 16) and digits.channels == 1
    n = len(load_digits().target)
    assert len(digits.train_y) + len(digits.test_y) == n
    train_counts = torch.bincount(digits.train_y, minlength=10).float()
    test_counts = torch.bincount(digits.test_y, minlength=10).float()
    frac = test_counts / (train_counts + test_counts)
    assert torch.all((frac - 0.3).abs() < 0.01)
    again = load_dataset("digits")
    assert torch.equal(again.train_x, digits.train_x)
    native = load_dataset("digits", resolution=8)
    # native 8x8 pixels are the 0..16 values scaled to 0..255
    ref = np.round(load_digits().images / 16 * 255).astype(np.uint8)
    assert native.image_size == (8, 8)
    assert set(native.train_x.flatten().tolist()) <= set(ref.flatten().tolist())


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'emnist'.*cifar10"):
        load_dataset("emnist")


def test_class_index_sampling(gen):
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 2])
    index = ClassIndex.from_labels(labels, 3)
    assert index.counts.tolist() == [3, 2, 4]
    idx = index.sample(2, gen)
    assert idx.shape == (3, 2)
    for k in range(3):
        assert torch.all(labels[idx[k]] == k)
        assert len(set(idx[k].tolist())) == 2  # without replacement
    # more than a class holds: every image of the class appears, cyclically
    big = index.sample(6, gen)
    assert sorted(set(big[1].tolist())) == [1, 4]
    assert sorted(big[0, :3].tolist()) == [0, 2, 5]


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_mnist_family_reads_idx_like_torchvision(tmp_path, name, folder):
    from torchvision import datasets

    write_mnist(tmp_path / folder / "raw", train=30, test=12, seed=1)  # torchvision's layout, uncompressed
    data = load_dataset(name, tmp_path, download=False)
    for train, x, y in ((True, data.train_x, data.train_y), (False, data.test_x, data.test_y)):
        ref = getattr(datasets, folder)(str(tmp_path), train=train, download=False)  # torchvision's own reader
        assert torch.equal(x[:, 0], ref.data) and torch.equal(y, ref.targets.long())
    assert data.image_size == (28, 28) and data.channels == 1 and data.num_classes == 10
    assert data.mean == ((0.1307,) if name == "mnist" else (0.2861,)) and not data.zca_default


def test_mnist_family_reads_any_folder_of_gzipped_idx(tmp_path):
    truth = write_mnist(tmp_path / "debian", train=20, test=5, seed=2, gz=True)  # flat, .gz: the Debian package
    data = load_dataset("fashionmnist", tmp_path / "debian", download=False)
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(truth["train"][0]))
    assert data.test_y.tolist() == truth["test"][1].tolist() and data.classes[0] == "T-shirt/top"


def test_mnist_family_bad_files(tmp_path):
    with pytest.raises(UserError, match="train-images-idx3-ubyte.*not found under"):
        load_dataset("mnist", tmp_path, download=False)
    write_mnist(tmp_path, train=4, test=2)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")  # 5 said, 1 there
    with pytest.raises(UserError, match="header says"):
        load_dataset("mnist", tmp_path, download=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(UserError, match="bad magic number"):
        load_dataset("mnist", tmp_path, download=False)


def test_svhn_reads_mat_like_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import svhn

    truth = write_svhn(tmp_path, train=9, test=4, seed=3)
    data = load_dataset("svhn", tmp_path, download=False)
    monkeypatch.setattr(svhn, "check_integrity", lambda path, md5=None: True)  # fabricated: no official MD5
    ref = svhn.SVHN(str(tmp_path), split="train")
    assert torch.equal(data.train_x, torch.from_numpy(ref.data)) and data.train_y.tolist() == ref.labels.tolist()
    x, y = truth["test"]  # and from the format's definition: X[h, w, c, n], label 10 is the digit 0
    assert int(data.test_x[2, 1, 5, 7]) == int(x[5, 7, 1, 2])
    assert data.test_y.tolist() == [0 if v == 10 else int(v) for v in y[:, 0]]
    assert data.image_size == (32, 32) and data.channels == 3
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match="not an SVHN .mat file"):
        load_dataset("svhn", tmp_path, download=False)


def test_imagenet64_npz_layout_reads_channel_major_uint8(tmp_path):
    from distill.datasets import load_dataset

    fab = write_imagenet64(tmp_path / "imagenet64", per_class_train=1)
    (tmp_path / "imagenet64" / "map_clsloc.txt").write_text("n01440764 1 tench\nn01443537 2 goldfish\n")
    d = load_dataset("imagenet64", tmp_path)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (1000, 3, 64, 64) and d.num_classes == 1000
    i = 17  # by hand: pixel (row r, column c) of channel ch is data[ch * 4096 + r * 64 + c]
    for ch, r, c in [(0, 0, 0), (1, 5, 9), (2, 63, 63)]:
        assert int(d.train_x[i, ch, r, c]) == int(fab["data"][i, ch * 4096 + r * 64 + c])
    assert d.train_y.tolist() == (fab["labels"] - 1).tolist() and d.test_y.tolist() == list(range(1000))
    assert d.classes[:3] == ("tench", "goldfish", "class_0002")
    (tmp_path / "imagenet64" / "train_data_batch_7.npz").unlink()
    with pytest.raises(UserError, match="lacks train_data_batch_7.npz"):
        load_dataset("imagenet64", tmp_path)


def test_a_training_set_kept_on_the_host_indexes_and_distils_like_the_float_tensor():
    """HostImages (uint8 pixels on the host, preprocessed per gathered batch) returns what the
    preprocessed float tensor does for every kind of index, and a distillation, a multi-formation
    initialisation and a herding selection from it give exactly the sets made from the tensor."""
    from dataclasses import replace

    from distill.loop import distill
    from distill.prepare import HostImages, prepare
    from distill.settings import SetConfig, resolve

    d = load_dataset("digits")
    dense, host = prepare(d), prepare(d, host=True)
    assert isinstance(host.train_x, HostImages) and host.train_x.pixels.dtype == torch.uint8
    x = dense.train_x
    idx = torch.tensor([[3, 1], [0, 7]])
    mask = d.train_y == 2
    for key in (idx, idx.flatten(), mask, slice(5, 9)):
        assert torch.allclose(host.train_x[key], x[key], atol=1e-6)
    assert host.train_x.shape == x.shape and len(host.train_x) == len(x)
    for method, extra in (("datadam", {"iterations": 2}), ("dm", {"iterations": 2, "factor": 2}), ("herding", {})):
        cfg = replace(resolve(SetConfig.of(method, 2), 16, "digits"), **extra)
        assert torch.equal(distill(dense, cfg, progress=False).images, distill(host, cfg, progress=False).images)
