"""Real datasets as device-ready tensors, plus a per-class index for fast sampling.

Every loader returns an :class:`ImageData`: uint8 images ``[N, C, H, W]`` (pixels, not yet
normalised; :mod:`distill.preprocess` maps them to network-input space), int64 labels, class
names and the per-channel mean/std the papers normalise with.

Supported datasets (``DATASETS``):

- ``cifar10`` / ``cifar100``: through torchvision (downloaded on first use when
  ``download=True``), read from ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``.
- ``tinyimagenet``: the standard ``<root>/tiny-imagenet-200`` layout
  (``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val/val_annotations.txt``), 64x64.
- ``imagefolder``: any ``<root>/{train,val}/<class>/<image>`` tree, resized (shorter side) and
  centre-cropped to ``resolution`` (default 128). ``imagenette``, ``imagewoof`` and
  ``imagesquawk`` are the same loader reading ``<root>/<name>``.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 real images, offline), split 70/30
  per class with a fixed seed, upsampled to 16x16 by default so every network of the NAS grid
  (depth 4 with pooling) fits; ``resolution=8`` keeps the native size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .files import atomic_save
from .errors import UserError, choice_error

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4866, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset held as tensors.

    ``train_x`` / ``test_x`` are uint8 ``[N, C, H, W]`` pixels; labels are int64 in
    ``[0, num_classes)``; ``mean`` / ``std`` are the per-channel statistics (on [0, 1] pixels)
    used for normalisation; ``zca_default`` says whether the papers whiten this dataset.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca_default: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def to(self, device: torch.device | str) -> "ImageData":
        """Move all tensors to ``device`` (uint8 stays uint8: 4x less memory than float)."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def class_index(self) -> "ClassIndex":
        return ClassIndex.from_labels(self.train_y, self.num_classes)

    def class_counts(self) -> Tensor:
        return torch.bincount(self.train_y.cpu(), minlength=self.num_classes)


@dataclass(frozen=True)
class ClassIndex:
    """Per-class sample indices, padded into one ``[K, max_count]`` tensor.

    Sampling ``n`` images of every class is then a few tensor ops (no Python loop over
    classes): a random permutation of each row's valid entries, then the first ``n`` columns.
    """

    indices: Tensor  # [K, max_count] int64, rows padded with -1
    counts: Tensor  # [K] int64

    @staticmethod
    def from_labels(labels: Tensor, num_classes: int) -> "ClassIndex":
        labels = labels.long()
        counts = torch.bincount(labels, minlength=num_classes)
        order = torch.argsort(labels, stable=True)
        width = int(counts.max().item()) if labels.numel() else 0
        indices = torch.full((num_classes, width), -1, dtype=torch.long, device=labels.device)
        starts = torch.cumsum(counts, 0) - counts
        col = torch.arange(labels.numel(), device=labels.device) - starts[labels[order]]
        indices[labels[order], col] = order
        return ClassIndex(indices=indices, counts=counts)

    @property
    def num_classes(self) -> int:
        return int(self.counts.numel())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` dataset indices for every class: ``[K, n]``.

        Within a class the draw is without replacement (a random permutation of the class,
        as the reference code's ``np.random.permutation(indices_class[c])[:n]``); when a class
        has fewer than ``n`` images, the permutation is repeated cyclically.
        """
        k, width = self.indices.shape
        device = self.indices.device
        keys = torch.rand((k, width), generator=generator, device=device)
        keys = keys.masked_fill(self.indices < 0, 2.0)  # padding sorts last
        perm = torch.argsort(keys, dim=1)
        cols = torch.arange(n, device=device).unsqueeze(0) % self.counts.clamp(min=1).unsqueeze(1)
        chosen = torch.gather(perm, 1, cols)
        return torch.gather(self.indices, 1, chosen)


# --------------------------------------------------------------------------------------
# Loaders


def _hwc_to_chw(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def _load_cifar(name: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:  # not found, corrupted, or no network
        how = (f"the download failed ({exc.__class__.__name__})" if download
               else "download is off (--set dataset.download=true fetches it)")
        raise UserError(
            f"{name} not found or incomplete under {root / folder} and {how}; put the extracted "
            f"python-version archive there (--data-root) or run on a machine with internet"
        ) from exc
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageData(
        name=name,
        train_x=_hwc_to_chw(train.data),
        train_y=torch.tensor(train.targets, dtype=torch.long),
        test_x=_hwc_to_chw(test.data),
        test_y=torch.tensor(test.targets, dtype=torch.long),
        classes=tuple(train.classes),
        mean=mean,
        std=std,
        zca_default=True,
    )


def _read_image(path: Path, resolution: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if resolution is not None and img.size != (resolution, resolution):
            w, h = img.size
            scale = resolution / min(w, h)
            img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                             Image.BILINEAR)
            w, h = img.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
        return np.asarray(img, dtype=np.uint8)


def _read_images(paths: list[Path], resolution: int | None, desc: str) -> Tensor:
    from tqdm import tqdm

    arrays = [_read_image(p, resolution) for p in tqdm(paths, desc=desc, unit="img",
                                                       leave=False, disable=len(paths) < 2000)]
    if not arrays:
        return torch.zeros((0, 3, resolution or 1, resolution or 1), dtype=torch.uint8)
    return _hwc_to_chw(np.stack(arrays))


def _cached(cache: Path, build: Callable[[], ImageData]) -> ImageData:
    """Decode a folder dataset once; later loads read the tensors back (safe: weights_only)."""
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        return ImageData(**{**blob, "classes": tuple(blob["classes"]),
                            "mean": tuple(blob["mean"]), "std": tuple(blob["std"])})
    data = build()
    try:
        atomic_save({f: getattr(data, f) for f in data.__dataclass_fields__}, cache)
    except OSError:
        pass  # read-only data folder: decode again next time
    return data


def _load_tinyimagenet(root: Path) -> ImageData:
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
            train_x=_read_images(train_paths, 64, "tinyimagenet train"),
            train_y=torch.tensor(train_y, dtype=torch.long),
            test_x=_read_images(test_paths, 64, "tinyimagenet val"),
            test_y=torch.tensor(test_y, dtype=torch.long),
            classes=tuple(words.get(w, w) for w in wnids),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    return _cached(base / "decoded_64.pt", build)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def _load_imagefolder(name: str, base: Path, resolution: int) -> ImageData:
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
            train_x=_read_images(tr_p, resolution, f"{name} train"),
            train_y=torch.tensor(tr_y, dtype=torch.long),
            test_x=_read_images(te_p, resolution, f"{name} test"),
            test_y=torch.tensor(te_y, dtype=torch.long),
            classes=tuple(classes),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )

    return _cached(base / f"decoded_{resolution}.pt", build)


def _load_digits(resolution: int) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8] in [0,1]
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):  # stratified: the same fraction of every class goes to test
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_mask[idx[: round(DIGITS_TEST_FRACTION * len(idx))]] = True
    train_x, test_x = x[~test_mask], x[test_mask]
    pix = train_x.float() / 255
    return ImageData(
        name="digits",
        train_x=train_x,
        train_y=y[~test_mask],
        test_x=test_x,
        test_y=y[test_mask],
        classes=tuple(str(c) for c in range(10)),
        mean=(round(pix.mean().item(), 4),),
        std=(round(pix.std().item(), 4),),
    )


DATASETS = ("cifar10", "cifar100", "tinyimagenet", "imagefolder", "imagenette", "imagewoof",
            "imagesquawk", "digits")
FIXED_RESOLUTION = ("cifar10", "cifar100", "tinyimagenet")  # the others are resized on load
DEFAULT_RESOLUTION = {"cifar10": 32, "cifar100": 32, "tinyimagenet": 64, "imagefolder": 128,
                      "imagenette": 128, "imagewoof": 128, "imagesquawk": 128, "digits": 16}


def load_dataset(
    name: str,
    root: str | os.PathLike[str] = "data",
    resolution: int | None = None,
    download: bool = True,
) -> ImageData:
    """Load a dataset by name (see module docstring) as an :class:`ImageData` on the CPU.

    ``root`` is the data folder (for ``imagefolder``: the tree itself). ``resolution``
    overrides the default size where the dataset allows it (folders and digits).
    """
    name = name.lower()
    if name not in DATASETS:
        raise choice_error("dataset", name, DATASETS)
    root = Path(root)
    res = resolution or DEFAULT_RESOLUTION[name]
    if name in FIXED_RESOLUTION and resolution not in (None, res):
        raise UserError(f"{name} comes at {res}x{res}; resolution {resolution} is not supported")
    if res < 4:
        raise UserError(f"resolution must be at least 4, got {res}")
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, download)
    if name == "tinyimagenet":
        return _load_tinyimagenet(root)
    if name == "digits":
        return _load_digits(res)
    base = root if name == "imagefolder" else root / name
    if not base.is_dir():
        raise UserError(f"{name}: data folder {base} does not exist (give --data-root)")
    return _load_imagefolder(name, base, res)
