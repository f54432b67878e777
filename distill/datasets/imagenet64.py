"""ImageNet-1K downsampled to 64 x 64 (Chrabaszcz et al., "A Downsampled Variant of ImageNet as
an Alternative to the CIFAR datasets", 2017), its npz release: ``train_data_batch_1.npz`` ..
``train_data_batch_10.npz`` and ``val_data.npz`` under ``<root>/imagenet64`` (or ``<root>``),
each with ``data`` (uint8 ``[N, 12288]``, channel-major: all red values, then green, then blue)
and ``labels`` (1 .. 1000). Class names come from the devkit's ``map_clsloc.txt`` (``wnid index
name`` per line) when it lies beside the files, else ``class_0000`` ...

The training set stays uint8 (about 16 GB for 1.28 M images; float32 would be 63 GB): it is
filled batch file by batch file into one preallocated tensor, so the peak host memory is the
dataset plus one batch file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import IMAGENET_MEAN, IMAGENET_STD, ImageData
from ..errors import UserError
from . import DatasetDef, register

NUM_CLASSES = 1000
SIDE = 64
TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
VAL_FILE = "val_data.npz"


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 [N, 12288], labels int64 [N] in 0..999)`` of one npz file, checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data, labels = z["data"], np.asarray(z["labels"])
    except KeyError:
        raise UserError(f"{path}: expected the arrays 'data' and 'labels' (the downsampled-ImageNet npz format)") from None
    except (OSError, ValueError):
        raise UserError(f"{path} is not a readable npz file (without pickled objects)") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise UserError(f"{path}: 'data' must be uint8 [N, {3 * SIDE * SIDE}], got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: 'labels' must hold one integer per image")
    if len(labels) and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise UserError(f"{path}: labels must lie in 1..{NUM_CLASSES}, found {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64) - 1


def _images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data).view(-1, 3, SIDE, SIDE)


def class_names(base: Path) -> tuple[str, ...]:
    names = [f"class_{i:04d}" for i in range(NUM_CLASSES)]
    devkit = base / "map_clsloc.txt"
    if devkit.is_file():
        for line in devkit.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit() and 1 <= int(parts[1]) <= NUM_CLASSES:
                names[int(parts[1]) - 1] = parts[2]
    return tuple(names)


def load_imagenet64(root: Path) -> ImageData:
    base = root / "imagenet64" if (root / "imagenet64").is_dir() else root
    present = [f for f in TRAIN_FILES if (base / f).is_file()]
    if not present or not (base / VAL_FILE).is_file():
        raise UserError(f"imagenet64 not found under {root / 'imagenet64'}: expected {TRAIN_FILES[0]} .. "
                        f"{TRAIN_FILES[-1]} and {VAL_FILE} (the npz release of downsampled ImageNet 64x64)")
    missing = [f for f in TRAIN_FILES if f not in present]
    if missing:
        raise UserError(f"imagenet64 under {base} lacks {', '.join(missing)}: all ten training batches are needed")
    sizes = []
    for f in present:  # the sizes first, so that the dataset is allocated once
        with np.load(base / f, allow_pickle=False) as z:
            sizes.append(int(z["labels"].shape[0]) if "labels" in z.files else 0)
    train_x = torch.empty(sum(sizes), 3, SIDE, SIDE, dtype=torch.uint8)
    train_y = torch.empty(sum(sizes), dtype=torch.long)
    from tqdm import tqdm

    at = 0
    for f, n in tqdm(list(zip(present, sizes)), desc="imagenet64 training batches", unit="file", leave=False,
                     disable=len(present) < 2, dynamic_ncols=True):
        data, labels = _arrays(base / f)
        if len(data) != n:
            raise UserError(f"{base / f} changed while it was read")
        train_x[at : at + n] = _images(data)
        train_y[at : at + n] = torch.from_numpy(labels)
        at += n
    val, val_labels = _arrays(base / VAL_FILE)
    return ImageData(name="imagenet64", train_x=train_x, train_y=train_y, test_x=_images(val).clone(),
                     test_y=torch.from_numpy(val_labels), classes=class_names(base),
                     mean=IMAGENET_MEAN, std=IMAGENET_STD)


register(DatasetDef("imagenet64", lambda root, _res, _download: load_imagenet64(root), resolution=SIDE))
