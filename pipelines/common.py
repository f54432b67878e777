"""Pieces every job shares: the data section, the device, writable output folders, and the
config assembly (named-set base < file < flags < ``--set``, each value with its source)."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from distill.config import Sources, apply_override, from_dict, key_lines, load_yaml, locate
from distill.data import ImageData
from distill.datasets import get_dataset, load_dataset
from distill.errors import ConfigError, UserError, check_range


@dataclass
class DataConfig:
    """Which real dataset, where it lives, and how it is preprocessed."""

    name: str = "cifar10"
    root: str = "data"  # data folder (for imagefolder: the tree itself)
    resolution: int | None = None  # None: the dataset's native/default size
    zca: bool | None = None  # None: on for CIFAR (the papers), off elsewhere
    download: bool = True  # torchvision download on first use (CIFAR)
    per_class: int | None = None  # None: all images; N: the first N training and N test images of every class (CPU budgets)

    def load(self, resolution: int | None = None) -> ImageData:
        """The dataset, at ``self.resolution`` (else ``resolution``, else its default), cut to
        ``per_class`` images per class when set."""
        check_range("dataset.per_class", self.per_class, 1)
        res = self.resolution
        if res is None and get_dataset(self.name).resizable:
            res = resolution
        return per_class_subset(load_dataset(self.name, self.root, res, self.download), self.per_class)

    def identity(self, data: ImageData) -> dict[str, Any]:
        """What a result computed from this data depends on (not where the files live)."""
        ident: dict[str, Any] = {"name": data.name, "image_size": list(data.image_size),
                                 "zca": data.whitened(self.zca)}
        if self.per_class is not None:
            ident["per_class"] = self.per_class
        return ident

    def describe(self, data: ImageData) -> str:
        """``fashionmnist (10 classes, 28x28)``, plus the cut when ``per_class`` is set."""
        cut = f", first {self.per_class} per class" if self.per_class else ""
        return f"{data.name} ({data.num_classes} classes, {data.image_size[0]}x{data.image_size[1]}{cut})"


def per_class_subset(data: ImageData, n: int | None) -> ImageData:
    """The first ``n`` training and ``n`` test images of every class (``None``: all of them)."""
    if n is None:
        return data

    def first(y: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.nonzero(y == c).flatten()[:n] for c in range(data.num_classes)]).sort().values

    tr, te = first(data.train_y), first(data.test_y)
    return replace(data, train_x=data.train_x[tr], train_y=data.train_y[tr], test_x=data.test_x[te],
                   test_y=data.test_y[te])


def check_writable(path: str | Path, flag: str) -> None:
    """Fail before any work when ``path`` cannot become a folder we write into: it (or the
    nearest existing folder above it) is a file, or is not writable (read-only file system,
    permissions). Creates nothing."""
    p = Path(path).absolute()
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    if existing is None:  # pragma: no cover - the root always exists
        return
    if not existing.is_dir():
        what = "is a file" if existing == p else f"is under {existing}, which is a file"
        raise UserError(f"{flag} {path} {what}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable; give a folder you can write to")


def pick_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return dev


def build_config(cls: type, config_file: str | None, overrides: list[str] | None,
                 flags: dict[str, tuple[Any, str]], bases: list[tuple[dict[str, Any], str]] | None = None,
                 sources: Sources | None = None, implied: list[tuple[dict[str, Any], str]] | None = None) -> Any:
    """``bases`` (``(section dict, its source)`` layers, later ones winning) < file
    (``config_file``) < ``implied`` layers (what an input itself says, e.g. the dataset a set was
    made from) < flags (dotted key -> ``(value, flag)``; ``None`` values are not given) <
    ``--set`` ``overrides``; every value given records its source in ``sources`` (the layer's, the
    ``file:line``, the flag, ``--set``)."""
    src = sources if sources is not None else Sources()
    data: dict[str, Any] = {}

    def layer(values: dict[str, Any], source: str) -> None:
        nonlocal data
        values = copy.deepcopy(values)  # overrides write into nested sections: keep the caller's intact
        data = _merge(data, values)
        src.set_tree(values, source)

    for values, source in bases or []:
        layer(values, source)
    if config_file:
        from_file = load_yaml(config_file)
        data = _merge(data, from_file)
        lines = key_lines(config_file)
        for key in _leaves(from_file):
            src.set(key, f"{config_file}:{lines.get(key, '?')}")
        try:  # the file on its own: a bad value in it is reported even where a flag overrides it
            from_dict(cls, copy.deepcopy(data))
        except ConfigError as exc:
            raise locate(exc, config_file) from None
    for values, source in implied or []:
        layer(values, source)
    for key, (value, flag) in flags.items():
        if value is not None:
            apply_override(data, f"{key}={json.dumps(value)}")
            src.set(key, f"flag {flag}")
    for override in overrides or []:
        apply_override(data, override)
        src.set(override.split("=", 1)[0].strip(), f"--set {override}")
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if config_file:
            raise locate(exc, config_file) from None
        raise


def _leaves(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict) and data:
        return [k for key, v in data.items() for k in _leaves(v, f"{prefix}.{key}" if prefix else str(key))]
    return [prefix] if prefix else []


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
