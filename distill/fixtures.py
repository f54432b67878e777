"""Fabricated datasets in the exact on-disk formats, for tests and the GPU suite (no download).

``write_cifar`` writes the python-version CIFAR archives that torchvision reads
(``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta`` or
``cifar-100-python/train, test, meta``): pickled dicts with str keys, ``data`` uint8 ``N x 3072``
(the R, G and B planes of a 32x32 image, row-major), ``labels`` / ``fine_labels`` lists of int.
torchvision checks the official MD5 sums, which fabricated files cannot match:
``accept_fabricated_cifar`` turns that one check into "the file exists" while it is active.
``write_mnist`` (idx files, plain or gzipped) and ``write_svhn`` (``.mat``) write the MNIST-family
and SVHN formats; ``write_imagenet64`` the downsampled-ImageNet npz files.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CIFAR_LAYOUT = {
    # name: (folder, train files, test file, label key, meta file, meta key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels",
                "batches.meta", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "meta", "fine_label_names", 100),
}


def write_cifar(root: str | Path, name: str, per_class: int, test_per_class: int, seed: int = 0,
                balanced: bool = True) -> dict:
    """Write a fabricated ``name`` archive under ``root``; ``per_class`` training images of every
    class spread over the training files (``balanced=False``: the same total, random labels).
    Returns ``{"files", "test_file", "truth": {file: (data, labels)}, "classes"}``."""
    folder, files, test_file, label_key, meta_file, meta_key, k = CIFAR_LAYOUT[name]
    rng = np.random.default_rng(seed)
    path = Path(root) / folder
    path.mkdir(parents=True, exist_ok=True)

    def labels_for(n_per_class: int) -> np.ndarray:
        y = np.repeat(np.arange(k), n_per_class) if balanced else rng.integers(0, k, size=k * n_per_class)
        return rng.permutation(y)

    train_y = labels_for(per_class)
    truth = {}
    for f, part in zip(files, np.array_split(train_y, len(files))):
        truth[f] = (rng.integers(0, 256, size=(len(part), 3072), dtype=np.uint8), [int(v) for v in part])
    test_y = labels_for(test_per_class)
    truth[test_file] = (rng.integers(0, 256, size=(len(test_y), 3072), dtype=np.uint8), [int(v) for v in test_y])
    for f, (data, labels) in truth.items():
        with open(path / f, "wb") as fh:
            pickle.dump({"data": data, label_key: labels}, fh)
    classes = [f"class{i}" for i in range(k)]
    with open(path / meta_file, "wb") as fh:
        pickle.dump({meta_key: classes}, fh)
    return {"files": files, "test_file": test_file, "truth": truth, "classes": classes}


@contextlib.contextmanager
def accept_fabricated_cifar() -> Iterator[None]:
    """While active, torchvision's CIFAR integrity check accepts any existing file (fabricated
    archives cannot match the official MD5 sums); restored on exit."""
    from torchvision.datasets import cifar

    saved = cifar.check_integrity
    cifar.check_integrity = lambda path, md5=None: os.path.isfile(path)
    try:
        yield
    finally:
        cifar.check_integrity = saved


def write_idx(folder: str | Path, stem: str, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an idx file: bytes ``0, 0, 0x08, ndim``, then each size as a
    big-endian int32, then the data (the MNIST / Fashion-MNIST format); ``gz``: gzipped."""
    import gzip

    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path = Path(folder) / (stem + (".gz" if gz else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


def write_mnist(folder: str | Path, train: int, test: int, seed: int = 0, gz: bool = False) -> dict:
    """The four idx files of an MNIST-format dataset in ``folder``, with random 28x28 images and
    labels 0..9; returns ``{"train": (x, y), "test": (x, y)}`` as written."""
    rng = np.random.default_rng(seed)
    out = {}
    for part, n, prefix in (("train", train, "train"), ("test", test, "t10k")):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(folder, f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(folder, f"{prefix}-labels-idx1-ubyte", y, gz)
        out[part] = (x, y)
    return out


def write_svhn(root: str | Path, train: int, test: int, seed: int = 0) -> dict:
    """torchvision's SVHN files ``train_32x32.mat`` / ``test_32x32.mat`` under ``root``: ``X``
    uint8 ``32 x 32 x 3 x N``, ``y`` ``N x 1`` in 1..10 (10 is the digit 0); returns the arrays."""
    import scipy.io as sio

    rng = np.random.default_rng(seed)
    out = {}
    for part, n in (("train", train), ("test", test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
        Path(root).mkdir(parents=True, exist_ok=True)
        sio.savemat(str(Path(root) / f"{part}_32x32.mat"), {"X": x, "y": y})
        out[part] = (x, y)
    return out


def write_imagenet64(folder: str | Path, per_class_train: int, seed: int = 0, files: int = 10) -> dict:
    """Fabricated downsampled-ImageNet npz files (the exact layout: uint8 [N, 12288] channel-major
    ``data``, ``labels`` 1..1000), the training images spread over ``files`` batch files."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(1, 1001), per_class_train))
    data = rng.integers(0, 256, size=(len(labels), 12288), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), files), start=1):
        np.savez(folder / f"train_data_batch_{i}.npz", data=data[part], labels=labels[part].tolist())
    val_labels = np.arange(1, 1001)
    val = rng.integers(0, 256, size=(1000, 12288), dtype=np.uint8)
    np.savez(folder / "val_data.npz", data=val, labels=val_labels)
    return {"data": data, "labels": labels, "val": val, "val_labels": val_labels}

