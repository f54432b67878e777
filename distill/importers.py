"""Sets released by other repositories, read into :class:`SyntheticSet` files (docs/protocols.md
section 8 states each layout and its preprocessing).

Every reader returns a :class:`Release`: the stored images in the releasing code's input space
(``space``: ``normalised`` with the dataset's mean and std; ``zca``: then ZCA-whitened with
kornia's ``ZCAWhitening(eps=0.1)`` fitted on the whole normalised training set, as MTT's code
does and DATM's and DataDAM's reuse; ``pixels``: image files), hard labels, optional soft labels
and learned rate, and the multi-formation factor the images are stored at. :func:`to_synset`
pairs it with the preprocessing of that space, refitted on the real training set, so that test
images meet the set in the space it was made in.

Files are read with ``weights_only`` (:func:`distill.files.read_plain`): a file that needs code
to unpickle is refused with one error line and nothing of it runs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .data import ImageData
from .errors import UserError, choice_error
from .files import read_plain
from .preprocess import Preprocess
from .synset import SOFT_TOLERANCE, SyntheticSet

SPACES = ("normalised", "zca", "pixels")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Release:
    """What a released file holds, before it is paired with a preprocessing."""

    images: Tensor  # float [N, C, H, W] in ``space`` ([0, 1] for pixels)
    labels: Tensor  # int64 [N]
    space: str
    files: tuple[Path, ...]
    soft_labels: Tensor | None = None  # [N, K] distributions
    lr: float | None = None
    factor: int = 1
    note: str = ""  # what the reader chose (an experiment, a step, logits turned into distributions)


@dataclass(frozen=True)
class ImportFormat:
    """A release layout: its reader ``(path, index, zca, dataset) -> Release`` and a description."""

    name: str
    description: str
    read: Callable[[Path, int | None, bool, ImageData], Release]  # (path, index, zca, dataset)
    takes_index: str = ""  # what --index chooses, if anything


def _tensor(value: Any, what: str, source: Path) -> Tensor:
    if not isinstance(value, Tensor):
        raise UserError(f"{source}: {what} must be a tensor, got {type(value).__name__}")
    return value


def _pair(value: Any, what: str, source: Path) -> tuple[Tensor, Tensor]:
    """``[images, labels]`` (a list or tuple of two tensors)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"{source}: {what} must be a pair [images, labels], got "
                        f"{type(value).__name__}{f' of {len(value)}' if isinstance(value, (list, tuple)) else ''}")
    return _tensor(value[0], f"{what} images", source), _tensor(value[1], f"{what} labels", source)


def _hard(labels: Tensor, source: Path) -> Tensor:
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise UserError(f"{source}: labels must be integer class ids [N], got {labels.dtype} {tuple(labels.shape)}")
    return labels.long()


def _dict_key(blob: Any, key: str, source: Path, layout: str) -> Any:
    if not isinstance(blob, dict) or key not in blob:
        raise UserError(f"{source} is not {layout}: expected a dict with {key!r}, got "
                        f"{type(blob).__name__}{' with keys ' + ', '.join(map(str, blob)) if isinstance(blob, dict) else ''}")
    return blob[key]


def _space(zca: bool) -> str:
    return "zca" if zca else "normalised"


def read_dc(path: Path, index: int | None, zca: bool, data: ImageData) -> Release:
    """DC / DSA / DM ``res_<method>_<dataset>_<net>_<ipc>ipc.pt``: ``{"data": [[images, labels],
    ...], "accs_all_exps": ...}``, one pair per experiment (``index``, default 0); images
    normalised with the dataset's mean and std (their code has no ZCA)."""
    blob = read_plain(path, "DC/DSA/DM result")
    exps = _dict_key(blob, "data", path, "a DC/DSA/DM result file")
    if not isinstance(exps, (list, tuple)) or not exps:
        raise UserError(f"{path}: 'data' must be a non-empty list of [images, labels] experiments")
    i = 0 if index is None else index
    if not 0 <= i < len(exps):
        raise UserError(f"--index {i} is out of range: {path} holds {len(exps)} experiments (0..{len(exps) - 1})")
    x, y = _pair(exps[i], f"experiment {i}", path)
    return Release(x, _hard(y, path), _space(zca), (path,), note=f"experiment {i} of {len(exps)}")


def read_dm_cl(path: Path, index: int | None, zca: bool, data: ImageData) -> Release:
    """DM's continual-learning sets ``cl_DM_<dataset>_ConvNet_<ipc>ipc_<steps>steps_seed<s>.pt``:
    ``["data"][step] = (images, labels)``. Without ``index`` the steps' sets are joined (each
    step holds its new classes; steps that repeat earlier classes are an error); with it, one
    step's set."""
    blob = read_plain(path, "DM continual-learning")
    steps = _dict_key(blob, "data", path, "a DM continual-learning file")
    if not isinstance(steps, (list, tuple)) or not steps:
        raise UserError(f"{path}: 'data' must be a non-empty list of per-step (images, labels)")
    pairs = [_pair(s, f"step {t}", path) for t, s in enumerate(steps)]
    if index is not None:
        if not 0 <= index < len(pairs):
            raise UserError(f"--index {index} is out of range: {path} holds {len(pairs)} steps (0..{len(pairs) - 1})")
        x, y = pairs[index]
        return Release(x, _hard(y, path), _space(zca), (path,), note=f"step {index} of {len(pairs)}")
    seen: set[int] = set()
    for t, (_, y) in enumerate(pairs):
        classes = set(_hard(y, path).tolist())
        if classes & seen:
            raise UserError(f"{path}: step {t} repeats classes of earlier steps ({sorted(classes & seen)[:5]}); "
                            "choose one step with --index")
        seen |= classes
    return Release(torch.cat([x for x, _ in pairs]), torch.cat([_hard(y, path) for _, y in pairs]), _space(zca),
                   (path,), note=f"{len(pairs)} steps joined")


def read_datadam(path: Path, index: int | None, zca: bool, data: ImageData) -> Release:
    """DataDAM's released sets ``<dataset>/syn_data_<dataset>_ipc_<N>.pt``: ``["data"] = [images,
    labels]``; CIFAR images in ZCA space."""
    blob = read_plain(path, "DataDAM set")
    x, y = _pair(_dict_key(blob, "data", path, "a DataDAM set file"), "'data'", path)
    return Release(x, _hard(y, path), _space(zca), (path,))


def as_distributions(labels: Tensor, source: Path) -> tuple[Tensor, str]:
    """Soft labels ``[N, K]`` as target distributions: rows that already are (non-negative,
    summing to 1) are kept; other rows are logits, turned into distributions by a softmax at
    temperature 1."""
    labels = labels.float()
    if not bool(torch.isfinite(labels).all()):
        raise UserError(f"{source}: soft labels hold NaN or infinite values")
    if bool((labels >= 0).all()) and float((labels.sum(1) - 1).abs().max()) <= SOFT_TOLERANCE:
        return labels / labels.sum(1, keepdim=True), "soft labels (distributions)"
    return labels.softmax(1), "soft labels (logits, softmax at temperature 1)"


def read_mtt(path: Path, index: int | None, zca: bool, data: ImageData) -> Release:
    """MTT / DATM: ``images_best.pt`` (a tensor), ``labels_best.pt`` (class ids; DATM: soft
    labels ``[N, K]``) and, when present, ``lr_best.pt`` (the learned training rate), in one
    folder (``path`` is the folder or its ``images_best.pt``). ZCA or not as released."""
    folder = path if path.is_dir() else path.parent
    files = [folder / "images_best.pt", folder / "labels_best.pt"]
    for f in files:
        if not f.is_file():
            raise UserError(f"{folder} is not an MTT/DATM release: {f.name} is missing "
                            "(expected images_best.pt and labels_best.pt, optionally lr_best.pt)")
    x = _tensor(read_plain(files[0], "MTT/DATM images"), "images_best.pt", files[0])
    raw = _tensor(read_plain(files[1], "MTT/DATM labels"), "labels_best.pt", files[1])
    soft, note = None, "hard labels"
    if raw.dim() == 2 and raw.is_floating_point():
        soft, note = as_distributions(raw, files[1])
        labels = soft.argmax(1)
    else:
        labels = _hard(raw, files[1])
    lr = None
    lr_file = folder / "lr_best.pt"
    if lr_file.is_file():
        value = read_plain(lr_file, "MTT/DATM learning rate")
        if not isinstance(value, (Tensor, float, int)) or (isinstance(value, Tensor) and value.numel() != 1):
            raise UserError(f"{lr_file}: expected one learning rate, got {type(value).__name__}")
        lr = float(value)
        files.append(lr_file)
    return Release(x, labels, _space(zca), tuple(files), soft_labels=soft, lr=lr, note=note)


def read_ncfm(path: Path, index: int | None, zca: bool, data: ImageData) -> Release:
    """NCFM: ``[data, targets]`` (``<DATASET>_ipc<N>.pt``), images stored at multi-formation
    factor 2 (decoded at evaluation)."""
    x, y = _pair(read_plain(path, "NCFM set"), "an NCFM file", path)
    return Release(x, _hard(y, path), _space(zca), (path,), factor=2)


def folder_class(name: str, classes: tuple[str, ...]) -> int | None:
    """The class a folder holds: a leading number (``003``, ``003_cat``), else its class name."""
    head = name.split("_", 1)[0]
    if head.isdigit():
        return int(head)
    lowered = [c.lower() for c in classes]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def read_imagefolder(path: Path, index: int | None, zca: bool, data: ImageData) -> Release:
    """An ImageFolder tree: one folder per class (``000_airplane/`` as ``export --format png``
    writes, ``3/``, or the class name) of PNG / JPEG files, read as [0, 1] pixels."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    classes, channels = data.classes, data.channels
    if zca:
        raise UserError("an ImageFolder import is pixels: --zca does not apply (the dataset's own preprocessing is used)")
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: an ImageFolder import needs one folder per class")
    xs, ys = [], []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        k = folder_class(sub.name, classes)
        if k is None or not 0 <= k < len(classes):
            raise UserError(f"{sub}: the folder names no class of the dataset (a number below {len(classes)}, "
                            f"or one of {', '.join(classes[:5])}, ...)")
        for f in sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError):
                raise UserError(f"{f} is not a readable image") from None
            xs.append(torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1))
            ys.append(k)
    if not xs:
        raise UserError(f"{path} holds no PNG or JPEG images in class folders")
    if len({tuple(x.shape) for x in xs}) > 1:
        raise UserError(f"{path}: the images differ in size; all must be the dataset's size")
    return Release(torch.stack(xs).float() / 255.0, torch.tensor(ys, dtype=torch.long), "pixels", (path,))


FORMATS: dict[str, ImportFormat] = {f.name: f for f in (
    ImportFormat("dc", "DC / DSA / DM res_<method>_<dataset>_<net>_<ipc>ipc.pt", read_dc, "the experiment (default 0)"),
    ImportFormat("dm-cl", "DM's continual-learning cl_DM_<dataset>_ConvNet_<ipc>ipc_<steps>steps_seed<s>.pt",
                 read_dm_cl, "one step (default: all steps joined)"),
    ImportFormat("datadam", "DataDAM's syn_data_<dataset>_ipc_<N>.pt (CIFAR in ZCA space)", read_datadam),
    ImportFormat("mtt", "MTT / DATM images_best.pt + labels_best.pt (+ lr_best.pt; DATM's soft labels)", read_mtt),
    ImportFormat("ncfm", "NCFM [data, targets] at multi-formation factor 2", read_ncfm),
    ImportFormat("imagefolder", "an ImageFolder tree of PNG / JPEG files, one folder per class", read_imagefolder),
)}


def default_zca(fmt: str, data: ImageData) -> bool:
    """Whether a release of ``fmt`` on ``data`` is in ZCA space unless told: DC/DSA/DM and NCFM
    never whiten; DataDAM and MTT/DATM whiten CIFAR (the dataset's default)."""
    return fmt in ("datadam", "mtt") and data.zca_default


def file_hash(paths: tuple[Path, ...]) -> str:
    """SHA-256 over the files (a folder: every file under it, by relative path)."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def read_release(path: str | os.PathLike[str], fmt: str, data: ImageData, index: int | None = None,
                 zca: bool | None = None) -> Release:
    """The release at ``path`` in layout ``fmt`` (:data:`FORMATS`); ``data`` gives the classes,
    channels and whether the dataset is whitened by default (check it with :func:`check_release`
    once the dataset is loaded at the release's image size)."""
    if fmt not in FORMATS:
        raise choice_error("import format", fmt, FORMATS)
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if index is not None and not FORMATS[fmt].takes_index:
        raise UserError(f"--index chooses nothing in the {fmt} format (only dc: experiment, dm-cl: step)")
    rel = FORMATS[fmt].read(path, index, default_zca(fmt, data) if zca is None else zca, data)
    if rel.images.dim() != 4 or not rel.images.is_floating_point():
        raise UserError(f"{path}: images must be a float [N, C, H, W] tensor, got {rel.images.dtype} "
                        f"{tuple(rel.images.shape)}")
    return rel


def check_release(rel: Release, data: ImageData) -> None:
    """One error line unless the release fits ``data``: channels, image size, labels, classes."""
    x, path = rel.images, rel.files[0]
    if len(x) != len(rel.labels):
        raise UserError(f"{path}: {len(x)} images but {len(rel.labels)} labels")
    want = (data.channels, *data.image_size)
    if tuple(x.shape[1:]) != want:
        raise UserError(f"{path}: images are {tuple(x.shape[1:])}, {data.name} images are {want} (channels, height, "
                        "width): is --dataset right?")
    if len(rel.labels) and (int(rel.labels.min()) < 0 or int(rel.labels.max()) >= data.num_classes):
        raise UserError(f"{path}: labels lie in [{int(rel.labels.min())}, {int(rel.labels.max())}], {data.name} has "
                        f"{data.num_classes} classes")
    if rel.soft_labels is not None and rel.soft_labels.shape[1] != data.num_classes:
        raise UserError(f"{path}: soft labels have {rel.soft_labels.shape[1]} classes, {data.name} has {data.num_classes}")


def to_synset(rel: Release, fmt: str, data: ImageData, meta: dict[str, Any] | None = None) -> SyntheticSet:
    """The release as a validated set: class-major (a stable sort by label), with the
    preprocessing of its space fitted on ``data``'s training set (pixels go through the
    dataset's default preprocessing), and its provenance (format, files, SHA-256) in ``meta``."""
    if rel.space == "pixels":
        pre = Preprocess.fit(data.train_x, data.mean, data.std, zca=data.zca_default)
        images = pre(rel.images)
    else:
        pre = Preprocess.fit(data.train_x, data.mean, data.std, zca=rel.space == "zca")
        images = rel.images.float()
    order = torch.sort(rel.labels, stable=True).indices
    labels = rel.labels[order]
    counts = torch.bincount(labels, minlength=data.num_classes)
    present = counts[counts > 0]
    provenance = {"format": fmt, "files": [str(f) for f in rel.files], "sha256": file_hash(rel.files),
                  "space": rel.space, "note": rel.note}
    info = {"dataset": data.name, "method": f"imported-{fmt}", "ipc": int(present.min()) if len(present) else 0,
            "iterations": None, "seed": None, "provenance": provenance, **(meta or {})}
    return SyntheticSet(images=images[order].contiguous(), labels=labels, class_names=list(data.classes),
                        preprocess=pre, meta=info, factor=rel.factor,
                        soft_labels=None if rel.soft_labels is None else rel.soft_labels[order].contiguous(),
                        lr=rel.lr)
