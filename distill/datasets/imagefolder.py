"""Folder datasets: ``imagefolder`` reads any ``<root>/{train,val}/<class>/<image>`` tree (``test/``
also accepted) given as the root itself; ``imagenette``, ``imagewoof`` and ``imagesquawk`` are
the same loader reading ``<root>/<name>``. Images are resized (shorter side) and centre-cropped
to the resolution (default 128) and decoded once into ``decoded_<res>.pt``."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import IMAGENET_MEAN, IMAGENET_STD, ImageData, cached_decode, read_images
from ..errors import UserError
from . import DatasetDef, register

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def load_imagefolder(name: str, base: Path, resolution: int) -> ImageData:
    train_dir = base / "train"
    test_dir = next((base / d for d in ("val", "test") if (base / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise UserError(
            f"{name}: expected an image tree {base}/train/<class>/<image> and "
            f"{base}/val/<class>/<image> (or test/); found no such folders"
        )
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"{name}: {train_dir} has no class folders")

    def listing(split: Path) -> tuple[list[Path], list[int]]:
        paths, labels = [], []
        for i, c in enumerate(classes):
            for p in sorted((split / c).glob("*")) if (split / c).is_dir() else []:
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(p)
                    labels.append(i)
        return paths, labels

    def build() -> ImageData:
        tr_p, tr_y = listing(train_dir)
        te_p, te_y = listing(test_dir)
        return ImageData(
            name=name,
            train_x=read_images(tr_p, resolution, f"{name} train"),
            train_y=torch.tensor(tr_y, dtype=torch.long),
            test_x=read_images(te_p, resolution, f"{name} test"),
            test_y=torch.tensor(te_y, dtype=torch.long),
            classes=tuple(classes),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    return cached_decode(base / f"decoded_{resolution}.pt", build, base)


def _subset(name: str, root: Path, resolution: int) -> ImageData:
    base = root / name
    if not base.is_dir():
        raise UserError(f"{name}: data folder {base} does not exist (give --data-root)")
    return load_imagefolder(name, base, resolution)


register(DatasetDef("imagefolder", lambda root, res, _download: load_imagefolder("imagefolder", root, res),
                    resolution=128, resizable=True))
for _name in ("imagenette", "imagewoof", "imagesquawk"):
    register(DatasetDef(_name, lambda root, res, _download, n=_name: _subset(n, root, res),
                        resolution=128, resizable=True))
