"""MNIST, Fashion-MNIST (28x28, 1 channel) and SVHN (32x32 RGB), as the DC-family code loads
them (docs/protocols.md section 7), with that code's normalisation.

- ``mnist`` / ``fashionmnist`` read the four official idx files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  plain or ``.gz``) from torchvision's layout ``<root>/MNIST/raw/`` (``FashionMNIST/raw/``) or
  from ``<root>`` itself, so any folder holding the files works, such as the one Debian's
  ``dataset-fashion-mnist`` package installs. Missing files are downloaded by torchvision
  when ``download`` is on.
- ``svhn`` reads torchvision's ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat``
  (label 10 is the digit 0).

28x28 single-channel input keeps the ConvNet's padding-3 first convolution (section 1).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..data import ImageData, hwc_to_chw, no_leftovers
from ..errors import UserError
from . import DatasetDef, register

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MNIST_FAMILY = {
    # name: (torchvision folder and class, mean, std, class names)
    "mnist": ("MNIST", (0.1307,), (0.3081,), tuple(str(c) for c in range(10))),
    "fashionmnist": ("FashionMNIST", (0.2861,), (0.3530,),
                     ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot")),
}
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (plain or gzipped): magic ``0x0000 08 <ndim>`` (unsigned bytes), ``ndim``
    big-endian int32 sizes, then the data."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise UserError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise UserError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(folders: list[Path], stem: str) -> Path | None:
    return next((f / (stem + s) for f in folders for s in ("", ".gz") if (f / (stem + s)).is_file()), None)


def load_mnist_family(name: str, root: Path, download: bool) -> ImageData:
    folder, mean, std, classes = MNIST_FAMILY[name]
    places = [root / folder / "raw", root]
    stems = [s for pair in IDX_FILES.values() for s in pair]
    if any(_find(places, s) is None for s in stems) and download:
        from torchvision import datasets

        try:
            with no_leftovers(root):
                for train in (True, False):
                    getattr(datasets, folder)(str(root), train=train, download=True)
        except (RuntimeError, OSError) as exc:
            raise UserError(f"{name}: the idx files are not under {root / folder / 'raw'} or {root} and the "
                            f"download failed ({exc.__class__.__name__}); put the four files in one of "
                            "those folders (--data-root)") from exc
    found = {s: _find(places, s) for s in stems}
    missing = [s for s, p in found.items() if p is None]
    if missing:
        raise UserError(f"{name}: {', '.join(missing)} (plain or .gz) not found under {root / folder / 'raw'} or "
                        f"{root}; point --data-root at the folder holding the idx files, or allow the download")
    split = {}
    for part, (images, labels) in IDX_FILES.items():
        x, y = read_idx(found[images]), read_idx(found[labels])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.shape[1:] != (28, 28):
            raise UserError(f"{name}: {found[images]} / {found[labels]} are not N x 28 x 28 images with N labels")
        if y.max(initial=0) >= len(classes):
            raise UserError(f"{name}: {found[labels]} has label {int(y.max())}; expected 0..{len(classes) - 1}")
        split[part] = (torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    return ImageData(name=name, train_x=split["train"][0], train_y=split["train"][1], test_x=split["test"][0],
                     test_y=split["test"][1], classes=classes, mean=mean, std=std)


def load_svhn(root: Path, download: bool) -> ImageData:
    import scipy.io as sio
    from scipy.io.matlab import MatReadError

    files = {part: root / f"{part}_32x32.mat" for part in ("train", "test")}
    if download and not all(f.is_file() for f in files.values()):
        from torchvision import datasets

        try:
            with no_leftovers(root):
                for part in files:
                    datasets.SVHN(str(root), split=part, download=True)
        except (RuntimeError, OSError) as exc:
            raise UserError(f"svhn: {files['train'].name} / {files['test'].name} not under {root} and the download "
                            f"failed ({exc.__class__.__name__}); put them there (--data-root)") from exc
    split = {}
    for part, path in files.items():
        if not path.is_file():
            raise UserError(f"svhn: {path} not found; put train_32x32.mat and test_32x32.mat under --data-root "
                            "or allow the download")
        try:
            mat = sio.loadmat(str(path))
            x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
        except (MatReadError, ValueError, KeyError, OSError, TypeError) as exc:
            raise UserError(f"svhn: {path} is not an SVHN .mat file with X and y ({exc})") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y) or x.dtype != np.uint8:
            raise UserError(f"svhn: {path}: X must be uint8 32 x 32 x 3 x N with N labels, got {x.shape} {x.dtype}")
        if len(y) and (y.min() < 1 or y.max() > 10):
            raise UserError(f"svhn: {path}: labels must be 1..10 (10 is the digit 0)")
        y[y == 10] = 0
        split[part] = (hwc_to_chw(np.moveaxis(x, 3, 0)), torch.from_numpy(y))
    return ImageData(name="svhn", train_x=split["train"][0], train_y=split["train"][1], test_x=split["test"][0],
                     test_y=split["test"][1], classes=tuple(str(c) for c in range(10)),
                     mean=SVHN_STATS[0], std=SVHN_STATS[1])


for _name in MNIST_FAMILY:
    register(DatasetDef(_name, lambda root, _res, download, n=_name: load_mnist_family(n, root, download),
                        resolution=28))
register(DatasetDef("svhn", lambda root, _res, download: load_svhn(root, download), resolution=32))
