"""The dataset registry: name -> loader, default image size, ZCA default, quick defaults.

Each dataset family is one module in this folder that calls :func:`register` when imported;
every module here is imported with the package, so adding a dataset is one new file (plus its
test) and no other edit. ``load_dataset(name, root, resolution, download)`` is the one entry
point the toolkit uses.

``quick`` holds per-stage defaults for datasets small enough to run end to end on a CPU in
minutes (``digits``): ``distill`` (DistillConfig fields), ``eval`` (TrainRecipe fields),
``continual`` (ContinualConfig fields plus ``resolution``) and ``nas`` (NASConfig fields).
A value given by the user always wins over a quick default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data import ImageData
from ..errors import UserError
from ..registry import add, find, import_modules

STAGES = ("distill", "eval", "continual", "nas")


@dataclass(frozen=True)
class DatasetDef:
    """How to load a dataset and the defaults the toolkit applies to it."""

    name: str
    load: Callable[[Path, int, bool], ImageData]  # (root, resolution, download) -> CPU tensors
    resolution: int  # default image size (square)
    resizable: bool = False  # False: the dataset comes at ``resolution`` only
    zca: bool = False  # the papers ZCA-whiten this dataset (CIFAR)
    quick: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # stage -> defaults


DATASETS: dict[str, DatasetDef] = {}


def register(spec: DatasetDef) -> DatasetDef:
    """Add a dataset to the registry (called by each module of this package at import)."""
    unknown = set(spec.quick) - set(STAGES)
    if unknown:
        raise ValueError(f"dataset {spec.name!r}: quick defaults for unknown stages {sorted(unknown)}")
    return add(DATASETS, spec.name, spec, "dataset")


def get_dataset(name: str) -> DatasetDef:
    return find(DATASETS, name, "dataset")


def quick_defaults(dataset: str | None, stage: str) -> dict[str, Any]:
    """The quick defaults of ``dataset`` for one stage (``{}`` for full-size datasets)."""
    spec = DATASETS.get((dataset or "").lower())
    return dict(spec.quick.get(stage, {})) if spec else {}


def load_dataset(name: str, root: str | Path = "data", resolution: int | None = None,
                 download: bool = True) -> ImageData:
    """Load a registered dataset as an :class:`ImageData` on the CPU.

    ``root`` is the data folder (for ``imagefolder``: the tree itself). ``resolution``
    overrides the default size where the dataset is resizable."""
    spec = get_dataset(name)
    res = resolution or spec.resolution
    if not spec.resizable and resolution not in (None, res):
        raise UserError(f"{spec.name} comes at {res}x{res}; resolution {resolution} is not supported")
    if res < 4:
        raise UserError(f"resolution must be at least 4, got {res}")
    return replace(spec.load(Path(root), res, download), zca_default=spec.zca)


import_modules(__name__, __path__, first=("cifar", "tinyimagenet", "imagefolder", "mnist", "digits"))  # listing order
