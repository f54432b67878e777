"""Pieces every subcommand shares: the data section of a job, device choice, run folders,
config assembly (file < flags < ``--set``)."""

from __future__ import annotations

import argparse
import copy
import io
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from distill.config import apply_override, from_dict, load_yaml, locate
from distill.data import ImageData
from distill.datasets import get_dataset, load_dataset
from distill.errors import ConfigError, UserError, check_range
from distill.files import atomic_text


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


class RunContext:
    """One invocation of the CLI: every command gets one, and makes its run folder through
    :meth:`folder_for`, which also records the folder so that ``main`` writes ``run.log`` and
    ``timings.json`` into it however the command ends."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.folder: Path | None = None
        self.fresh = False  # the folder was made up (no --out): a rerun would make another one

    def folder_for(self, out: str | None, stem: str, record: bool = True) -> Path:
        """``out``, or a fresh ``runs/<stem>-<time>/``, created; ``record=False`` (a torchrun
        rank other than 0) uses the folder without writing the run record there."""
        if out:
            path = Path(out)
        else:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path("runs") / f"{stem}-{stamp}"
        path.mkdir(parents=True, exist_ok=True)
        if record:
            self.folder, self.fresh = path, not out
        return path

    def resume_hint(self) -> str:
        """What continues an interrupted run: the same command, or, when its folder was made up,
        the same command with ``--out`` naming that folder (a plain rerun would start a new one).
        Cached stages (buffers, continual cells, NAS studies) continue either way."""
        if self.folder is not None and self.fresh:
            return (f"to continue from the last checkpoint, run the same command with --out {self.folder} "
                    "(without --out a new run folder starts from the beginning)")
        return "run the same command again to continue from the last checkpoint"

    def finish(self, code: int, log: str) -> None:
        """Write the run record (if the command made a run folder)."""
        if self.folder is not None:
            write_run_record(self.folder, self.argv, self.started, time.perf_counter() - self._t0, code, log)


def build_config(cls: type, args: argparse.Namespace, cli: dict[str, Any],
                 base: dict[str, Any] | None = None) -> Any:
    """``base`` < file (``--config``) < explicit CLI flags < ``--set`` overrides."""
    data = copy.deepcopy(base or {})  # overrides write into nested sections: keep the caller's intact
    if args.config:
        data = _merge(data, load_yaml(args.config))
        try:  # the file on its own: a bad value in it is reported even where a flag overrides it
            from_dict(cls, copy.deepcopy(data))
        except ConfigError as exc:
            raise locate(exc, args.config) from None
    for key, value in cli.items():
        if value is not None:
            apply_override(data, f"{key}={json.dumps(value)}")
    for override in args.set or []:
        apply_override(data, override)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if args.config:
            raise locate(exc, args.config) from None
        raise


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy (the run's log)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def write_run_record(folder: Path, argv: list[str], started: float, seconds: float, code: int,
                     log: str) -> None:
    """``run.log`` (everything printed) and ``timings.json`` (command, start, duration, exit)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_text(folder / "run.log", log)
    stamp = _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds")
    atomic_text(folder / "timings.json", json.dumps({"command": ["pipelines/run.py", *argv], "started": stamp,
                                                     "seconds": round(seconds, 3), "exit_code": code}, indent=1))


def write_yaml(path: Path, data: Any) -> None:
    atomic_text(path, yaml.safe_dump(data, sort_keys=False))


RUN_ONLY = ("device", "cache", "versions")  # where and with what a job ran, not what it computed


def write_job_config(out: Path, record: dict[str, Any], result: str, force: bool) -> None:
    """Record a job's resolved config as ``out/config.yaml``. A folder that already holds the
    finished ``result`` of a job with another config is not reused without ``--force`` (its
    tables would be replaced); the same job again is allowed: it rebuilds its tables from the
    artifact cache."""
    path = out / "config.yaml"
    if not force and (out / result).is_file() and path.is_file():
        try:
            old = yaml.safe_load(path.read_text())
        except (UnicodeDecodeError, yaml.YAMLError):
            old = None

        def what(d: Any) -> Any:
            return {k: v for k, v in d.items() if k not in RUN_ONLY} if isinstance(d, dict) else d

        if what(old) != what(yaml.safe_load(yaml.safe_dump(record))):
            raise UserError(f"--out {out} holds the finished results of another configuration ({result}); "
                            "give another --out, or --force to replace them")
    write_yaml(path, record)
