"""SyntheticSet: the per-class buffer file that distillation writes and every consumer reads.

File schema (a ``.pt`` written by ``torch.save``; only tensors, lists, dicts, numbers and
strings, so ``torch.load(path, weights_only=True)`` reads it and never runs code):

=============== ==============================================================================
``format``      ``"attention-distill/synthetic-set"``
``version``     ``1``
``images``      float32 ``[N, C, H, W]`` in network-input space (normalised, ZCA-whitened if
                ``preprocess["zca_matrix"]`` is not None), class-major (all of class 0 first)
``labels``      int64 ``[N]``, values in ``[0, len(class_names))``
``class_names`` list of str, one per class of the source dataset
``preprocess``  dict: ``mean`` ``[C]``, ``std`` ``[C]``, ``zca_mean`` ``[D]`` | None,
                ``zca_matrix`` ``[D, D]`` | None, ``zca_inverse`` ``[D, D]`` | None (D = C*H*W);
                pixels = ((images.flatten(1) @ zca_inverse + zca_mean).view_as(images)) * std + mean
``meta``        dict: dataset, method, ipc, seed, iterations, config, versions, created, ...
``factor``      optional int (multi-formation, ``distill.multiformation``): each stored image
                holds ``factor x factor`` patches, decoded into ``factor^2`` training images;
                absent means 1. A file with a factor above 1 is version 2 (older readers refuse
                it instead of training on the stored mosaics).
``soft_labels`` optional float ``[N, K]``: one target distribution per stored image (rows
                non-negative, summing to 1; ``labels`` stays the class each image was made
                for, which per-class consumers such as continual memories use). Networks then train on
                them with the soft loss of docs/protocols.md section 3 (temperature
                ``soft_temperature``, optional float, default 1).
``lr``          optional float: a learned training learning rate (MTT / DATM ``lr_best``) that
                evaluation uses instead of the recipe's.
                A file with soft labels or a learned rate is version 3.
=============== ==============================================================================

A SyntheticSet is immutable: what identifies it (its metadata) is given when it is made;
:meth:`SyntheticSet.with_meta` and :meth:`SyntheticSet.with_images` return new sets.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import UserError
from .files import atomic_save, atomic_write, read_plain
from .multiformation import check_factor, decode, decode_labels
from .preprocess import Preprocess

FORMAT = "attention-distill/synthetic-set"
VERSION = 3  # the newest this toolkit reads and writes; each file is written with the lowest version its fields need
SOFT_TOLERANCE = 1e-3  # how far a soft-label row may sum from 1
REQUIRED_KEYS = ("format", "version", "images", "labels", "class_names", "preprocess", "meta")


def library_versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": str(np.__version__)}



def _plain(value: Any) -> Any:
    """Reduce metadata to types ``weights_only`` loading accepts (str, numbers, lists, dicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


@dataclass(frozen=True)
class SyntheticSet:
    """Synthetic (or selected) images with hard labels, their preprocessing and metadata;
    ``images`` are the stored ones (at multi-formation ``factor``; :meth:`decoded` gives the
    training images)."""

    images: Tensor
    labels: Tensor
    class_names: list[str]
    preprocess: Preprocess
    meta: dict[str, Any] = field(default_factory=dict)
    factor: int = 1
    soft_labels: Tensor | None = None  # [N, K] target distributions, or None (hard labels)
    soft_temperature: float = 1.0
    lr: float | None = None  # a learned training learning rate, or None (the recipe's)

    def __post_init__(self) -> None:
        self.validate()

    def with_meta(self, **entries: Any) -> "SyntheticSet":
        """The same set with more metadata entries."""
        return replace(self, meta={**self.meta, **entries})

    def with_images(self, images: Tensor) -> "SyntheticSet":
        """The same set with other stored images of the same shape (e.g. gathered shards)."""
        return replace(self, images=images)

    # -- checks ----------------------------------------------------------------------------
    def validate(self) -> None:
        img, lab = self.images, self.labels
        if not isinstance(img, Tensor) or img.dim() != 4 or not img.is_floating_point():
            raise UserError(f"synthetic set: images must be a float [N, C, H, W] tensor, got "
                            f"{getattr(img, 'dtype', type(img))} {tuple(getattr(img, 'shape', ()))}")
        if not isinstance(lab, Tensor) or lab.dim() != 1 or lab.dtype != torch.long:
            raise UserError("synthetic set: labels must be an int64 [N] tensor")
        if len(lab) != len(img):
            raise UserError(f"synthetic set: {len(img)} images but {len(lab)} labels")
        if not bool(torch.isfinite(img).all()):
            bad = int((~torch.isfinite(img)).flatten(1).any(1).sum())
            raise UserError(f"synthetic set: {bad} of {len(img)} images hold NaN or infinite values "
                            "(a diverged distillation?)")
        k = len(self.class_names)
        if k == 0:
            raise UserError("synthetic set: class_names is empty")
        if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= k):
            raise UserError(f"synthetic set: labels must lie in [0, {k}), found "
                            f"[{int(lab.min())}, {int(lab.max())}]")
        check_factor(self.factor, img.shape[2], img.shape[3])
        self._validate_soft(k)
        c, pre = img.shape[1], self.preprocess
        if pre.mean.numel() != c or pre.std.numel() != c:
            raise UserError(f"synthetic set: preprocess mean/std have {pre.mean.numel()} "
                            f"channels, images have {c}")
        if not bool(torch.isfinite(pre.mean).all()) or not bool((pre.std > 0).all() & torch.isfinite(pre.std).all()):
            raise UserError("synthetic set: preprocess mean must be finite and std finite and positive")
        if pre.uses_zca:
            d = c * img.shape[2] * img.shape[3]
            if tuple(pre.zca_matrix.shape) != (d, d) or pre.zca_inverse is None \
                    or tuple(pre.zca_inverse.shape) != (d, d):
                raise UserError(f"synthetic set: ZCA matrix must be {d}x{d} with its inverse")
            if pre.zca_mean is None or pre.zca_mean.numel() != d:
                raise UserError(f"synthetic set: ZCA mean must have {d} values (one per pixel and channel)")

    def _validate_soft(self, k: int) -> None:
        soft = self.soft_labels
        if soft is not None:
            if not isinstance(soft, Tensor) or soft.dim() != 2 or not soft.is_floating_point() \
                    or tuple(soft.shape) != (len(self.labels), k):
                raise UserError(f"synthetic set: soft_labels must be a float [{len(self.labels)}, {k}] tensor "
                                f"(one distribution over the classes per image), got "
                                f"{getattr(soft, 'dtype', type(soft))} {tuple(getattr(soft, 'shape', ()))}")
            if not bool(torch.isfinite(soft).all()) or bool((soft < 0).any()) \
                    or float((soft.sum(1) - 1).abs().max()) > SOFT_TOLERANCE:
                raise UserError("synthetic set: every soft_labels row must be non-negative and sum to 1 "
                                "(probabilities, not logits)")
        t = self.soft_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < float(t) < float("inf")):
            raise UserError(f"synthetic set: soft_temperature must be a positive number, got {t!r}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not (0 < float(self.lr) < float("inf"))):
            raise UserError(f"synthetic set: lr must be a positive number, got {self.lr!r}")

    # -- access ----------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def counts(self) -> Tensor:
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)

    @property
    def ipc(self) -> int:
        """Images per class (the minimum over classes present)."""
        c = self.counts()
        c = c[c > 0]
        return int(c.min()) if len(c) else 0

    def class_images(self, k: int) -> Tensor:
        """The stored images of class ``k`` (network-input space)."""
        return self.images[self.labels == k]

    def decoded(self) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` that networks train on: the stored images decoded at the set's
        multi-formation factor (the stored ones themselves at factor 1)."""
        return decode(self.images, self.factor), decode_labels(self.labels, self.factor)

    def targets(self) -> Tensor:
        """What networks train towards, per decoded image: the soft labels ``[N * f^2, K]`` of a
        soft-label set, else the class ids ``[N * f^2]``."""
        return decode_labels(self.soft_labels if self.soft_labels is not None else self.labels, self.factor)

    def hard(self) -> "SyntheticSet":
        """The same images with hard labels only (DD-Ranking's hard-label evaluation)."""
        return replace(self, soft_labels=None, soft_temperature=1.0)

    def decoded_class(self, k: int) -> Tensor:
        """The training images of class ``k`` (decoded)."""
        return decode(self.class_images(k), self.factor)

    def decoded_class_soft(self, k: int) -> Tensor | None:
        """The soft labels of class ``k``'s training images (decoded alike), or None."""
        if self.soft_labels is None:
            return None
        return decode_labels(self.soft_labels[(self.labels == k).to(self.soft_labels.device)], self.factor)

    def subset(self, classes: list[int] | Tensor) -> "SyntheticSet":
        """The set restricted to the given classes (labels unchanged)."""
        cls = torch.as_tensor(list(classes) if not isinstance(classes, Tensor) else classes)
        mask = torch.isin(self.labels.cpu(), cls.cpu()).to(self.labels.device)
        soft = None if self.soft_labels is None else self.soft_labels[mask.to(self.soft_labels.device)]
        return replace(self, images=self.images[mask], labels=self.labels[mask], soft_labels=soft)

    def to_pixels(self, decoded: bool = False) -> Tensor:
        """The stored images (or, with ``decoded``, the training images) mapped back to [0, 1]
        pixels (ZCA and normalisation inverted, clamped)."""
        x = self.decoded()[0] if decoded else self.images
        return self.preprocess.to_pixels(x.detach().cpu())

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        meta = dict(self.meta)
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        meta.setdefault("versions", library_versions())
        blob = {
            "format": FORMAT,
            "version": 1,
            "images": self.images.detach().float().cpu().contiguous(),
            "labels": self.labels.detach().long().cpu().contiguous(),
            "class_names": [str(c) for c in self.class_names],
            "preprocess": self.preprocess.state(),
            "meta": _plain(meta),
        }
        if self.factor != 1:
            blob.update(version=2, factor=int(self.factor))
        if self.soft_labels is not None:
            blob.update(version=3, soft_labels=self.soft_labels.detach().float().cpu().contiguous(),
                        soft_temperature=float(self.soft_temperature))
        if self.lr is not None:
            blob.update(version=3, lr=float(self.lr))
        return blob

    def save(self, path: str | os.PathLike[str]) -> Path:
        atomic_save(self.state(), path)
        return Path(path)

    @staticmethod
    def from_state(blob: Any, source: str = "<memory>") -> "SyntheticSet":
        if not isinstance(blob, dict):
            raise UserError(f"{source} is not a synthetic-set file (expected a dict, got {type(blob).__name__})")
        missing = [k for k in REQUIRED_KEYS if k not in blob]
        if missing:
            raise UserError(f"{source} is not a synthetic-set file: missing keys {', '.join(missing)} "
                            f"(expected {', '.join(REQUIRED_KEYS)})")
        if blob["format"] != FORMAT:
            raise UserError(f"{source}: format {blob['format']!r} is not {FORMAT!r}")
        if not isinstance(blob["version"], int):
            raise UserError(f"{source}: version must be an integer, got {blob['version']!r}")
        if blob["version"] > VERSION:
            raise UserError(f"{source}: file version {blob['version']} is newer than this toolkit "
                            f"reads ({VERSION}); upgrade the package")
        pre = blob["preprocess"]
        if not isinstance(pre, dict) or "mean" not in pre or "std" not in pre:
            raise UserError(f"{source}: preprocess must be a dict with mean and std")
        if not isinstance(blob["meta"], dict):
            raise UserError(f"{source}: meta must be a dict, got {type(blob['meta']).__name__}")
        if not isinstance(blob["class_names"], (list, tuple)):
            raise UserError(f"{source}: class_names must be a list, got {type(blob['class_names']).__name__}")
        if isinstance(blob["labels"], Tensor) and len(blob["labels"]) == 0:
            raise UserError(f"{source} holds no images")
        factor = blob.get("factor", 1)
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise UserError(f"{source}: factor must be an integer, got {factor!r}")
        try:
            return SyntheticSet(images=blob["images"], labels=blob["labels"],
                                class_names=list(blob["class_names"]),
                                preprocess=Preprocess.from_state(pre), meta=dict(blob["meta"]), factor=factor,
                                soft_labels=blob.get("soft_labels"), soft_temperature=blob.get("soft_temperature", 1.0),
                                lr=blob.get("lr"))
        except UserError as exc:  # name the file
            raise UserError(f"{source}: {exc}") from None

    @staticmethod
    def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> "SyntheticSet":
        """Read and validate a synthetic-set file (``weights_only``: it never runs code)."""
        return SyntheticSet.from_state(read_plain(path, "synthetic-set", str(map_location)), str(path))

    # -- exports ---------------------------------------------------------------------------
    def export_npz(self, path: str | os.PathLike[str]) -> Path:
        """``images`` (network space, float32 NCHW), ``pixels`` (uint8 NHWC), ``labels``,
        ``class_names``, the preprocessing arrays (and ``soft_labels``, ``soft_temperature``,
        ``lr`` where the set has them), readable with ``numpy.load``. Images are
        the training images (decoded from a multi-formation set: what other code consumes)."""
        images, labels = self.decoded()
        pix = (self.to_pixels(decoded=True) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pre = {f"preprocess_{k}": v.numpy() for k, v in self.preprocess.state().items() if v is not None}
        arrays = dict(images=images.detach().cpu().numpy(), pixels=pix, labels=labels.cpu().numpy(),
                      class_names=np.array(self.class_names), **pre)
        if self.soft_labels is not None:
            arrays.update(soft_labels=self.targets().detach().cpu().numpy(),
                          soft_temperature=np.float32(self.soft_temperature))
        if self.lr is not None:
            arrays["lr"] = np.float32(self.lr)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: numpy would append ".npz" to a temporary name
                np.savez_compressed(fh, **arrays)

        return atomic_write(path, write)

    def export_png(self, folder: str | os.PathLike[str]) -> Path:
        """One folder per class (``000_airplane/``), one PNG per (decoded) training image: an
        ImageFolder tree."""
        from PIL import Image

        folder = Path(folder)
        pix = (self.to_pixels(decoded=True) * 255).round().to(torch.uint8)
        lab = self.decoded()[1].cpu()
        seen: dict[int, int] = {}
        for img, y in zip(pix, lab.tolist()):
            name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in self.class_names[y])
            d = folder / f"{y:03d}_{name}"
            d.mkdir(parents=True, exist_ok=True)
            i = seen.get(y, 0)
            seen[y] = i + 1
            arr = img.permute(1, 2, 0).numpy()
            Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(d / f"{i:04d}.png")
        return folder

    def save_grid(self, path: str | os.PathLike[str], max_per_class: int = 10) -> Path:
        """The titled picture of the set (``distill.grid``): each class's stored images under its
        name, up to ``max_per_class`` (the number shown is stated when not all)."""
        from .grid import describe, save_grid

        return save_grid(path, self.to_pixels(), self.labels, self.class_names,
                         describe(self.meta, self.factor, self.ipc), self.ipc, max_per_class)
