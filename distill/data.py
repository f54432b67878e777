"""Real datasets as device-ready tensors, plus a per-class index for fast sampling.

Every loader (one file per dataset family in :mod:`distill.datasets`, which also holds the
registry and ``load_dataset``) returns an :class:`ImageData`: uint8 images ``[N, C, H, W]``
(pixels, not yet normalised; :mod:`distill.preprocess` maps them to network-input space), int64
labels, class names and the per-channel mean/std the papers normalise with. This module holds
the container, the class index and the decoding helpers the loaders share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .files import atomic_save

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset held as tensors.

    ``train_x`` / ``test_x`` are uint8 ``[N, C, H, W]`` pixels; labels are int64 in
    ``[0, num_classes)``; ``mean`` / ``std`` are the per-channel statistics (on [0, 1] pixels)
    used for normalisation; ``zca_default`` says whether the papers whiten this dataset
    (set by ``distill.datasets.load_dataset`` from the dataset's registry entry).
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

    def whitened(self, zca: bool | None) -> bool:
        """Whether to ZCA-whiten: ``zca`` when given, else the dataset's default (the one rule
        preprocessing and cache keys share)."""
        return self.zca_default if zca is None else bool(zca)

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
# Helpers shared by the loaders in distill/datasets/


def hwc_to_chw(array: np.ndarray) -> Tensor:
    """``[N, H, W, C]`` uint8 array -> contiguous ``[N, C, H, W]`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


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


def read_images(paths: list[Path], resolution: int | None, desc: str) -> Tensor:
    """Decode image files as RGB, resized (shorter side) and centre-cropped to ``resolution``."""
    from tqdm import tqdm

    arrays = [_read_image(p, resolution) for p in tqdm(paths, desc=desc, unit="img",
                                                       leave=False, disable=len(paths) < 2000)]
    if not arrays:
        return torch.zeros((0, 3, resolution or 1, resolution or 1), dtype=torch.uint8)
    return hwc_to_chw(np.stack(arrays))


def folder_fingerprint(base: Path, skip_prefix: str = "decoded_") -> str:
    """SHA-256 over every file under ``base`` (relative path, size, modification time), except
    the decode caches themselves: it changes when an image is added, removed or replaced."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(base.rglob("*")):
        if p.is_file() and not p.name.startswith(skip_prefix):
            st = p.stat()
            h.update(f"{p.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cached_decode(cache: Path, build: Callable[[], ImageData], source: Path) -> ImageData:
    """Decode a folder dataset once; later loads read the tensors back (safe: weights_only). The
    cache records ``source``'s :func:`folder_fingerprint`: a changed folder, or an unreadable
    cache, is decoded again."""
    stamp = folder_fingerprint(source)
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            fresh = isinstance(blob, dict) and blob.pop("source_fingerprint", None) == stamp
        except Exception:  # truncated or foreign: decode again
            fresh = False
        if fresh:
            return ImageData(**{**blob, "classes": tuple(blob["classes"]),
                                "mean": tuple(blob["mean"]), "std": tuple(blob["std"])})
        print(f"{cache}: the image folder changed since it was decoded (or the file is unreadable); decoding again")
    data = build()
    try:
        atomic_save({**{f: getattr(data, f) for f in data.__dataclass_fields__}, "source_fingerprint": stamp}, cache)
    except OSError:
        pass  # read-only data folder: decode again next time
    return data


@contextmanager
def no_leftovers(root: Path) -> Iterator[None]:
    """Run a download into ``root``; if it fails, remove the folders it created and left empty
    (torchvision makes ``<root>/<Dataset>/raw`` before it knows the network is unreachable), so
    a failed offline attempt leaves the disk as it was."""
    root = Path(root)
    missing = [p for p in (root, *root.parents) if not p.exists()]
    before = {p for p in root.rglob("*") if p.is_dir()} if root.exists() else set()
    try:
        yield
    except BaseException:
        if root.exists():
            for d in sorted((p for p in root.rglob("*") if p.is_dir() and p not in before), key=lambda p: -len(p.parts)):
                with suppress(OSError):
                    d.rmdir()  # only if empty
        for d in missing:  # the folders above that the attempt made, deepest first
            with suppress(OSError):
                d.rmdir()
        raise
