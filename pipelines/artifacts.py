"""The artifact cache: every stage's output lives under a key derived from its fully resolved
config and the code's algorithm version, so a re-run reuses finished stages, a changed
hyperparameter recomputes only what depends on it, and an interrupted stage resumes from the
checkpoint kept in its folder.

Layout: ``<root>/<stage>/<name>-<key>/`` holding ``config.yaml`` (what the key was made from)
and the stage's files. A stage is complete when its result file exists (results are written
atomically, so a half-written file never counts). A process making an artifact holds its lock
(``<root>/<stage>/.<name>-<key>.lock``): another run that needs the same artifact at the same
time waits, then reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import distill
from distill.files import atomic_text

CODE_VERSION = f"{distill.__version__}+alg{distill.ALGORITHM_VERSION}"
DEFAULT_ROOT = "artifacts"


def config_key(config: Any, code_version: str = CODE_VERSION) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of ``config`` and the code version."""
    text = json.dumps({"config": config, "code": code_version}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """16 hex digits of SHA-256 over a file's bytes: the identity of a user-given input file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


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
        """Hold this artifact exclusively while making it (a POSIX advisory lock next to its
        folder, so ``open(force=True)`` cannot delete it); a second holder waits, saying so."""
        lock = self.path.parent / f".{self.path.name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"  waiting for another process that is making {self.path}", flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def open(self, force: bool = False) -> Path:
        """Create the folder (wiped first with ``force``) and record the config."""
        if force and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        cfg = self.path / "config.yaml"
        if not cfg.exists():
            atomic_text(cfg, yaml.safe_dump({"stage": self.stage, "name": self.name, "key": self.key,
                                           "code_version": CODE_VERSION, "result": self.result,
                                           "config": self.config},
                                          sort_keys=False))
        return self.path


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

