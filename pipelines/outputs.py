"""Run folders: where a job's results go, its run record (``run.log``, ``timings.json``, appended
when a run continues) and the one policy for a folder that already holds results.

The policy (:func:`earlier_results`): a folder whose ``config.yaml`` describes the same work
(the same identity: the resolved config without execution keys; ``Job.identity``) is the same
job again, which may continue or rebuild its tables from the cache; a folder holding the
finished results of other work is not replaced without ``--force``. ``evaluate`` keeps other
work's results beside its own instead (``evaluation-<key>.*``).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from distill.config import Sources
from distill.errors import UserError
from distill.files import atomic_text


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
        self.resume_from: int | None = None  # the iteration an interrupted distillation continues from

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
        Cached stages (sets, continual cells, NAS studies, reproduce cells) continue either way."""
        where = "" if self.resume_from is None else f" (from iteration {self.resume_from})"
        if self.folder is not None and self.fresh:
            return (f"to continue{where}, run the same command with --out {self.folder} "
                    "(without --out a new run folder starts from the beginning)")
        return f"run the same command again to continue{where}"

    def finish(self, code: int, log: str) -> None:
        """Write the run record (if the command made a run folder)."""
        if self.folder is not None:
            write_run_record(self.folder, self.argv, self.started, time.perf_counter() - self._t0, code, log)


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
    """``run.log`` (everything printed) and ``timings.json`` (command, start, duration, exit). A
    folder that already has a record (a run continued, or the same job again) keeps it: the log
    is appended after a separator line and ``attempts`` lists every earlier run; the top-level
    fields describe the latest one."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds")
    entry = {"command": ["pipelines/run.py", *argv], "started": stamp, "seconds": round(seconds, 3), "exit_code": code}
    attempts: list[dict[str, Any]] = []
    try:
        old = json.loads((folder / "timings.json").read_text())
        attempts = list(old.get("attempts", [])) + [{k: old[k] for k in entry if k in old}]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    previous = ""
    if attempts and (folder / "run.log").is_file():
        previous = (folder / "run.log").read_text(errors="replace") + f"\n--- run of {stamp} ---\n"
    atomic_text(folder / "run.log", previous + log)
    atomic_text(folder / "timings.json", json.dumps({**entry, "attempts": attempts} if attempts else entry, indent=1))


def write_yaml(path: Path, data: Any, sources: Sources | None = None) -> None:
    """``data`` as YAML; with ``sources``, every value carries its source as a comment."""
    atomic_text(path, sources.commented_yaml(data) if sources is not None else yaml.safe_dump(data, sort_keys=False))


def earlier_results(out: Path, record: dict[str, Any], result: str, force: bool,
                    identity: Callable[[Any], Any]) -> bool:
    """The one policy for a folder that may hold results: True when ``out`` holds the finished
    ``result`` of the same work (``identity`` of its ``config.yaml`` equals that of ``record``),
    False when it holds none (or ``force``); one error line when it holds another work's."""
    path = out / "config.yaml"
    if force or not (out / result).is_file() or not path.is_file():
        return False
    try:
        old = yaml.safe_load(path.read_text())
    except (UnicodeDecodeError, yaml.YAMLError):
        old = None
    if identity(old) == identity(yaml.safe_load(yaml.safe_dump(record))):
        return True
    raise UserError(f"--out {out} holds the finished results of another configuration ({result}); "
                    "give another --out, or --force to replace them")
