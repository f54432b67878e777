"""Synthetic replay memories: a SyntheticSet's per-class buffers as an Avalanche storage policy.

Every class's synthetic images depend only on that class's data, so one IPC-20 set serves
every class order and step count: the memory after step ``t`` is simply the buffers of the
classes seen so far.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from avalanche.training.storage_policy import ExemplarsBuffer
from torch import Tensor

from distill.errors import UserError
from distill.files import atomic_save
from distill.multiformation import decode
from distill.synset import SyntheticSet

from .benchmark import task_dataset

BUFFERS_FORMAT = "attention-distill/class-buffers"


def check_memory(synset: SyntheticSet, dataset: str, num_classes: int,
                 image_shape: tuple[int, int, int], ipc: int, label: str = "the synthetic set") -> None:
    """Fail with a clear message unless ``synset`` holds exactly ``ipc`` images of every one of
    the dataset's ``num_classes`` classes, at the dataset's image shape."""
    src = synset.meta.get("dataset")
    if src and src != dataset:
        raise UserError(f"{label} was made from {src!r}, but the benchmark runs on {dataset!r}; "
                        f"use a memory distilled from {dataset}")
    if synset.num_classes != num_classes:
        raise UserError(f"{label} has {synset.num_classes} classes, {dataset} has {num_classes}")
    if tuple(synset.image_shape) != tuple(image_shape):
        raise UserError(f"{label} holds {tuple(synset.image_shape)} images, the benchmark's are "
                        f"{tuple(image_shape)} (channels, height, width)")
    counts = synset.counts()
    missing = [k for k in range(num_classes) if counts[k] == 0]
    if missing:
        names = ", ".join(f"{k} ({synset.class_names[k]})" for k in missing[:5])
        raise UserError(f"{label} has no images of {len(missing)} classes: {names}"
                        f"{' ...' if len(missing) > 5 else ''}; a memory needs every class")
    wrong = [k for k in range(num_classes) if counts[k] != ipc]
    if wrong:
        have = sorted({int(counts[k]) for k in wrong})
        raise UserError(f"{label} has {'/'.join(map(str, have))} images per class where the memory "
                        f"needs {ipc} (continual.ipc); distil it with --ipc {ipc} or set "
                        f"continual.ipc={have[0]}")


def memory_for(synset: SyntheticSet, classes: list[int], ipc: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """The memory of a step: the training images of exactly ``ipc`` stored images of each class
    in ``classes`` (in that order; ``ipc * factor^2`` decoded ones for a multi-formation set) and
    nothing else, as ``(images, labels, soft labels or None)``."""
    xs, ys, ss = [], [], []
    for c in classes:
        stored = synset.class_images(int(c))
        if len(stored) != ipc:
            raise UserError(f"class {c} has {len(stored)} images in the synthetic set, the memory needs {ipc}")
        imgs = decode(stored, synset.factor)
        xs.append(imgs)
        ys.append(torch.full((len(imgs),), int(c), dtype=torch.long, device=imgs.device))
        if synset.soft_labels is not None:
            ss.append(synset.decoded_class_soft(int(c)))
    if not xs:
        return synset.images[:0], synset.labels[:0], None
    return torch.cat(xs), torch.cat(ys), torch.cat(ss) if ss else None


class SyntheticMemory(ExemplarsBuffer):
    """Avalanche storage policy whose memory is a SyntheticSet's buffers of the classes seen so far.

    Plug it into ``ReplayPlugin(mem_size=m.max_size, storage_policy=m)`` or set it as
    ``GDumbPlugin.storage_policy``. ``tensors`` holds the same memory as ``(x, y)`` tensors, and
    ``soft`` its soft labels (None for a hard-label set; Avalanche's buffer carries the hard ones)."""

    def __init__(self, synset: SyntheticSet, ipc: int = 20, max_size: int | None = None,
                 device: torch.device | str | None = None):
        self.per_class = ipc * synset.factor * synset.factor  # training images per class
        super().__init__(max_size if max_size is not None else synset.num_classes * self.per_class)
        self.synset = synset if device is None else replace(
            synset, images=synset.images.to(device), labels=synset.labels.to(device),
            soft_labels=None if synset.soft_labels is None else synset.soft_labels.to(device))
        self.ipc = ipc
        self.classes: list[int] = []
        self.set_classes([])

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """What ``GDumbPlugin`` calls (Avalanche 0.6's deprecated path): same as ``post_adapt``."""
        self.post_adapt(strategy, strategy.experience)

    def post_adapt(self, agent_state: Any, exp: Any) -> None:
        """Fill the memory with the buffers of ``exp.classes_seen_so_far``."""
        self.set_classes(sorted(int(c) for c in exp.classes_seen_so_far))

    def set_classes(self, classes: list[int]) -> None:
        if len(classes) * self.per_class > self.max_size:
            raise UserError(f"{len(classes)} classes x {self.per_class} images exceed the memory size "
                            f"{self.max_size}; give max_size >= {len(classes) * self.per_class}")
        self.classes = list(classes)
        x, y, self.soft = memory_for(self.synset, self.classes, self.ipc)
        self.tensors: tuple[Tensor, Tensor] = (x, y)
        self.buffer = task_dataset(x.cpu(), y.cpu())

    def resize(self, strategy: Any, new_size: int) -> None:
        if new_size < len(self.classes) * self.per_class:
            raise UserError(f"cannot shrink a synthetic memory below its {len(self.classes) * self.per_class} images")
        self.max_size = new_size


def export_buffers(synset: SyntheticSet, path: str | os.PathLike[str]) -> Path:
    """Write the per-class buffers for other continual-learning code: a ``weights_only``
    ``.pt`` with ``buffers`` (class id -> float ``[ipc, C, H, W]`` in network-input space; the
    decoded ``ipc * factor^2`` training images of a multi-formation set), ``class_names``,
    ``preprocess`` and ``meta`` (README: "Using buffers in other CL code"); a soft-label set adds
    ``soft_labels`` (class id -> ``[ipc, K]``, decoded alike) and ``soft_temperature``, a learned
    rate ``lr``."""
    labels = synset.labels.cpu()
    present = [k for k in range(synset.num_classes) if bool((labels == k).any())]
    buffers = {int(k): synset.decoded_class(k).detach().cpu().contiguous() for k in present}
    state = synset.state()
    blob = {"format": BUFFERS_FORMAT, "version": 1, "buffers": buffers,
            "class_names": state["class_names"], "preprocess": state["preprocess"], "meta": state["meta"]}
    if synset.soft_labels is not None:
        blob["soft_labels"] = {int(k): synset.decoded_class_soft(k).detach().cpu().contiguous() for k in present}
        blob["soft_temperature"] = float(synset.soft_temperature)
    if synset.lr is not None:
        blob["lr"] = float(synset.lr)
    atomic_save(blob, path)
    return Path(path)
