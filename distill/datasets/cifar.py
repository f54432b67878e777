"""CIFAR-10 and CIFAR-100 through torchvision (downloaded on first use when ``download`` is on),
read from ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``; 32x32, ZCA-whitened by
default as in the papers (docs/protocols.md section 1)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import ImageData, hwc_to_chw, no_leftovers
from ..errors import UserError
from . import DatasetDef, register

STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
         "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))}


def load_cifar(name: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    try:
        with no_leftovers(root):
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:  # not found, corrupted, or no network
        how = (f"the download failed ({exc.__class__.__name__})" if download
               else "download is off (--set dataset.download=true fetches it)")
        raise UserError(
            f"{name} not found or incomplete under {root / folder} and {how}; put the extracted "
            f"python-version archive there (--data-root) or run on a machine with internet"
        ) from exc
    mean, std = STATS[name]
    return ImageData(
        name=name,
        train_x=hwc_to_chw(train.data),
        train_y=torch.tensor(train.targets, dtype=torch.long),
        test_x=hwc_to_chw(test.data),
        test_y=torch.tensor(test.targets, dtype=torch.long),
        classes=tuple(train.classes),
        mean=mean,
        std=std,
    )


for _name in STATS:
    register(DatasetDef(_name, lambda root, _res, download, n=_name: load_cifar(n, root, download),
                        resolution=32, zca=True))
