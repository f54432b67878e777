"""A dataset made ready for distillation: moved to the device, preprocessed once (normalisation,
ZCA fitted on the whole training set), and the helpers every set made from it shares (the IPC
check, the set's labels and metadata, what a checkpoint's images depend on)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .config import to_dict
from .data import ImageData
from .errors import UserError
from .methods import get_method
from .preprocess import Preprocess
from .settings import SetConfig
from .synset import SyntheticSet


HOST_BYTES = 8 << 30  # a float32 training set above this stays as uint8 pixels in host memory


class HostImages:
    """A training set kept as uint8 pixels in host memory (ImageNet-1K at 64 px: 16 GB, 63 GB as
    float32): indexing gathers the rows asked for (one class chunk of a matching step, a batch of
    training) on the host, moves them to ``device`` and preprocesses them there, so the device
    never holds more than that batch. Indexes like the float tensor it stands for."""

    def __init__(self, pixels: Tensor, preprocess: Preprocess, device: torch.device | str):
        self.pixels = pixels.pin_memory() if torch.device(device).type == "cuda" else pixels
        self.preprocess, self.device = preprocess, torch.device(device)
        self.shape = torch.Size(pixels.shape)
        self.dtype = torch.float32

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, Tensor):
            flat = key.reshape(-1).cpu()
            if flat.dtype == torch.bool:
                flat, out_shape = flat.nonzero().squeeze(1), None
            else:
                out_shape = tuple(key.shape)
            x = self.preprocess(self.pixels[flat].to(self.device, non_blocking=True))
            return x if out_shape is None else x.reshape(*out_shape, *x.shape[1:])
        return self.preprocess(self.pixels[key].to(self.device, non_blocking=True))


@dataclass
class Prepared:
    """A dataset mapped to network-input space, on the device (the training set possibly as
    :class:`HostImages`)."""

    data: ImageData
    preprocess: Preprocess
    train_x: Tensor | HostImages  # float32 network-input space
    test_x: Tensor
    # the last selection embeddings computed for this data, by (network, embed_epochs, seed):
    # herding and k-center at several IPCs train the embedding ConvNet once
    embeddings: dict[tuple[str, int, int], Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


def keeps_on_host(data: ImageData, host: bool | None = None) -> bool:
    """Whether the training set stays as uint8 pixels in host memory (:class:`HostImages`):
    ``host`` when given, else when its float32 form would exceed :data:`HOST_BYTES`."""
    return bool(host) if host is not None else data.train_x.numel() * 4 > HOST_BYTES


def prepare(data: ImageData, zca: bool | None = None, device: str | torch.device = "cpu",
            host: bool | None = None) -> Prepared:
    """Move ``data`` to ``device``, fit the preprocessing (ZCA on the whole training set if
    enabled; ``None``: the dataset's default) and map both splits to network-input space. A
    training set too large for that (:func:`keeps_on_host`) stays on the host as uint8 and is
    preprocessed on the device batch by batch (the same values)."""
    if keeps_on_host(data, host):
        pixels = data.train_x
        data = replace(data, train_y=data.train_y.to(device), test_x=data.test_x.to(device),
                       test_y=data.test_y.to(device))
        pre = Preprocess.fit(pixels, data.mean, data.std, zca=data.whitened(zca))
        return Prepared(data=data, preprocess=pre, train_x=HostImages(pixels, pre, device), test_x=pre(data.test_x))
    data = data.to(device)
    pre = Preprocess.fit(data.train_x, data.mean, data.std, zca=data.whitened(zca))
    return Prepared(data=data, preprocess=pre, train_x=pre(data.train_x), test_x=pre(data.test_x))


def check_ipc(data: ImageData, ipc: int, factor: int = 1) -> None:
    """Every class must have ``ipc`` training images (``ipc * factor^2`` for a multi-formation
    initialisation from real images)."""
    counts = data.class_counts()
    small = int(counts.argmin())
    need = ipc * factor * factor
    if need > int(counts[small]):
        what = f"ipc {ipc}" + (f" x factor {factor}^2 = {need} real images" if factor > 1 else "")
        raise UserError(f"{what} is larger than class {small} ({data.classes[small]!r}), "
                        f"which has {int(counts[small])} training images; use ipc <= {int(counts.min()) // (factor * factor)}")


def class_labels(k: int, ipc: int, device: torch.device | str = "cpu") -> Tensor:
    """Class-major labels: ``ipc`` of class 0, then of class 1, ..."""
    return torch.arange(k, device=device).repeat_interleave(ipc)


def make_set(prep: Prepared, images: Tensor, cfg: SetConfig, extra: dict[str, Any]) -> SyntheticSet:
    """A SyntheticSet of class-major stored ``images`` (``cfg.ipc`` per class, at ``cfg.factor``)
    with the run's metadata: the set's identity fields, then ``extra`` (iterations, seconds,
    the data section it was made from, ...), all given at creation."""
    meta = {"dataset": prep.data.name, "method": cfg.method, "ipc": cfg.ipc, "seed": cfg.seed,
            "image_size": list(prep.data.image_size), "config": to_dict(cfg), **extra}
    return SyntheticSet(images=images.detach().cpu(), labels=class_labels(prep.num_classes, cfg.ipc),
                        class_names=list(prep.data.classes), preprocess=prep.preprocess, meta=meta,
                        factor=cfg.factor if get_method(cfg.method).kind == "match" else 1)


def data_identity(prep: Prepared) -> dict[str, Any]:
    """What a checkpoint's images depend on besides the config: the dataset, its image size and
    training-set size, and whether the images live in ZCA space."""
    return {"dataset": prep.data.name, "image_size": list(prep.data.image_size),
            "train_images": len(prep.data.train_y), "zca": prep.preprocess.uses_zca}
