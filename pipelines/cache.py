"""The cache engine: every stage's result (a synthetic set, a continual memory's cells, a NAS
study, a reproduce cell) lives under a key derived from what it depends on and the code's
algorithm version, is made once under a lock, and is reused after.

Layout: ``<root>/<stage>/<name>-<key>/`` holding ``config.yaml`` (what the key was made from)
and the stage's files. An artifact is complete when its result file exists (results are written
atomically, so a half-written file never counts); until then its folder holds the partial
results a maker keeps (a checkpoint, the cells finished so far), so an interrupted stage
continues. :meth:`Cache.get_or_make` is the one way a job obtains a result: reuse it when
complete, else take the artifact's lock (``<root>/<stage>/.<name>-<key>.lock``; a second process
needing it waits, saying so, then reuses it), make it, and write the result.

Key configs never hold execution keys (``distill.config.EXECUTION_KEYS``: chunking,
compilation, checkpoints, reporting, workers, device): :func:`config_key` drops them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

import distill
from distill.config import execution_free
from distill.files import atomic_text

CODE_VERSION = f"{distill.__version__}+alg{distill.ALGORITHM_VERSION}"
DEFAULT_ROOT = "artifacts"
T = TypeVar("T")


def config_key(config: Any, code_version: str = CODE_VERSION) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``config`` (without execution keys)
    and the code version."""
    text = json.dumps({"config": execution_free(config), "code": code_version}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """16 hex digits of SHA-256 over a file's bytes: the identity of a user-given input file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@contextmanager
def file_lock(path: Path, waiting: str | None = None, block: bool = True) -> Iterator[bool]:
    """Hold a POSIX advisory lock on ``path`` (created); yields True once held. A second holder
    waits (printing ``waiting`` first), or with ``block=False`` gets False at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not block:
                yield False
                return
            if waiting:
                print(waiting, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Artifact:
    """One stage output: ``root/stage/name-key/``, complete once ``result`` exists."""

    root: Path
    stage: str
    name: str
    config: dict[str, Any]
    result: str  # file name of the finished output

    @property
    def key(self) -> str:
        return config_key(self.config)

    @property
    def path(self) -> Path:
        return Path(self.root) / self.stage / f"{self.name}-{self.key}"

    @property
    def result_path(self) -> Path:
        return self.path / self.result

    @property
    def complete(self) -> bool:
        return self.result_path.is_file()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this artifact exclusively while making it (the lock file sits next to its
        folder, so ``open(force=True)`` cannot delete it); a second holder waits, saying so."""
        with file_lock(self.path.parent / f".{self.path.name}.lock",
                       f"  waiting for another process that is making {self.path}"):
            yield

    def open(self, force: bool = False) -> Path:
        """Create the folder (wiped first with ``force``) and record the config."""
        if force and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        cfg = self.path / "config.yaml"
        if not cfg.exists():
            atomic_text(cfg, yaml.safe_dump({"stage": self.stage, "name": self.name, "key": self.key,
                                             "code_version": CODE_VERSION, "result": self.result,
                                             "config": execution_free(self.config)}, sort_keys=False))
        return self.path


@dataclass
class Cache:
    """The artifact cache of one run: its root folder and ``force`` (each artifact this run
    touches is made again once)."""

    root: Path = Path(DEFAULT_ROOT)
    force: bool = False
    _made: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def artifact(self, stage: str, name: str, config: dict[str, Any], result: str) -> Artifact:
        return Artifact(self.root, stage, name, config, result)

    def stale(self, art: Artifact) -> bool:
        """True while ``--force`` still asks this run to remake ``art``."""
        return self.force and art.key not in self._made

    def open(self, art: Artifact) -> Path:
        """The artifact's folder, created (and, under ``--force``, emptied the first time this run
        opens it); the caller holds its lock."""
        folder = art.open(force=self.stale(art))
        self._made.add(art.key)
        return folder

    def get_or_make(self, art: Artifact, make: Callable[[Path], T], load: Callable[[Path], T]) -> tuple[T, bool]:
        """``(result, reused)``: ``load(result path)`` when the artifact is complete, else
        ``make(folder)`` under its lock (``make`` writes the result file and may keep partial
        files in the folder; it returns what the caller needs)."""
        if art.complete and not self.stale(art):
            return load(art.result_path), True
        with art.lock():  # another process making it: wait, then reuse it
            if art.complete and not self.stale(art):
                return load(art.result_path), True
            return make(self.open(art)), False


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def list_artifacts(root: str | Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    """Every artifact folder under ``root``: stage, name, key, complete or partial, size."""
    rows = []
    for cfg in sorted(Path(root).glob("*/*/config.yaml")):
        folder = cfg.parent
        try:
            meta = yaml.safe_load(cfg.read_text()) or {}
        except (UnicodeDecodeError, yaml.YAMLError):
            meta = {}
        if not isinstance(meta, dict):  # damaged or foreign: listed as partial, by its folder
            meta = {}
        files = [f for f in folder.rglob("*") if f.is_file()]
        done = bool(meta.get("result")) and (folder / str(meta["result"])).is_file()
        rows.append({"stage": folder.parent.name, "name": meta.get("name", folder.name),
                     "key": meta.get("key", "?"), "code_version": meta.get("code_version", "?"),
                     "status": "complete" if done else "partial",
                     "mb": round(sum(f.stat().st_size for f in files) / 2**20, 2), "path": str(folder)})
    return rows


class CellStore:
    """The results of many small cells of one artifact (the (order, step) cells of one continual
    memory): ``cells.partial.json`` grows as cells finish (atomically, after each one), and the
    artifact's result ``cells.json`` holds them all once every wanted cell is there. Cells asked
    for later (more class orders) are added the same way, so nothing finished is computed twice.
    Several processes add cells through :meth:`add`, which rereads and writes under the store's
    own lock."""

    def __init__(self, art: Artifact, wanted: set[str]):
        self.art, self.wanted = art, set(wanted)
        self.partial = art.path / "cells.partial.json"
        self.cells: dict[str, Any] = {}
        for source in (art.result_path, self.partial):
            if source.is_file():
                self.cells.update(json.loads(source.read_text()))

    @property
    def missing(self) -> set[str]:
        return self.wanted - set(self.cells)

    @classmethod
    def add(cls, art: Artifact, wanted: set[str], cells: dict[str, Any]) -> "CellStore":
        """Add ``cells`` to the store as it is on disk now (other processes may have added
        theirs since this one read it) and close it when complete; under the store's lock."""
        with file_lock(art.path.parent / f".{art.path.name}.cells.lock"):
            store = cls(art, wanted)
            store.cells.update(cells)
            atomic_text(store.partial, json.dumps(store.cells, indent=1))
            store.close()
        return store

    def close(self) -> bool:
        """Write ``cells.json`` when every wanted cell is done (and drop the partial file);
        True when complete."""
        if self.missing:
            return False
        if self.partial.exists() or not self.art.complete:
            atomic_text(self.art.result_path, json.dumps(self.cells, indent=1))
            self.partial.unlink(missing_ok=True)
        return True
