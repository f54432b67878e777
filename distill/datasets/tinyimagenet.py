"""Tiny ImageNet: the standard ``<root>/tiny-imagenet-200`` layout (``train/<wnid>/images/*.JPEG``,
``val/images`` + ``val/val_annotations.txt``), 64x64, 200 classes; decoded once into
``decoded_64.pt`` next to the images."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import IMAGENET_MEAN, IMAGENET_STD, ImageData, cached_decode, read_images
from ..errors import UserError
from . import DatasetDef, register


def load_tinyimagenet(root: Path) -> ImageData:
    base = root / "tiny-imagenet-200" if (root / "tiny-imagenet-200").is_dir() else root
    wnids_file = base / "wnids.txt"
    if not wnids_file.is_file() or not (base / "val" / "val_annotations.txt").is_file():
        raise UserError(
            f"tinyimagenet not found under {root / 'tiny-imagenet-200'}: expected wnids.txt, "
            f"train/<wnid>/images/*.JPEG and val/val_annotations.txt (unzip tiny-imagenet-200.zip "
            f"into {root})"
        )

    def build() -> ImageData:
        wnids = sorted(w.strip() for w in wnids_file.read_text().split() if w.strip())
        words = {}
        if (base / "words.txt").is_file():
            for line in (base / "words.txt").read_text().splitlines():
                if "\t" in line:
                    wnid, label = line.split("\t", 1)
                    words[wnid] = label.split(",")[0].strip()
        cls_of = {w: i for i, w in enumerate(wnids)}
        train_paths, train_y = [], []
        for w in wnids:
            for p in sorted((base / "train" / w / "images").glob("*")):
                train_paths.append(p)
                train_y.append(cls_of[w])
        test_paths, test_y = [], []
        for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in cls_of:
                test_paths.append(base / "val" / "images" / parts[0])
                test_y.append(cls_of[parts[1]])
        return ImageData(
            name="tinyimagenet",
            train_x=read_images(train_paths, 64, "tinyimagenet train"),
            train_y=torch.tensor(train_y, dtype=torch.long),
            test_x=read_images(test_paths, 64, "tinyimagenet val"),
            test_y=torch.tensor(test_y, dtype=torch.long),
            classes=tuple(words.get(w, w) for w in wnids),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    return cached_decode(base / "decoded_64.pt", build, base)


register(DatasetDef("tinyimagenet", lambda root, _res, _download: load_tinyimagenet(root), resolution=64))
