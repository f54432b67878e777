"""Jobs: every subcommand of ``pipelines/run.py`` is a small object, and Python code runs the
same objects with the same caching.

A job class declares its command line (``name``, ``help``, ``description``, ``examples``, the
shared ``options`` it takes, its own flags in :meth:`Job.add_arguments`, the config key each
flag sets in ``flags``) and its config schema (``Config``, a dataclass of YAML sections). An
instance holds one assembled config (named-set base < ``--config`` file < flags < ``--set``) and
the source of every value, and runs in three steps:

- :meth:`Job.resolve`: fill every default (recording its source) and check every input, before
  any long work; ``--explain`` prints the result and stops here;
- :meth:`Job.run`: the work, each stage through the cache engine (``pipelines.cache``);
- its tables and pictures in the run folder.

Each module of this package registers its job when imported (the package imports them all), so
a new job is one new file.

    from pipelines.jobs import get_job
    job = get_job("continual").create(["--dataset", "digits", "--steps", "5"])
    job.resolve(); job.run()
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from distill.config import Sources, execution_free, to_dict
from distill.errors import UserError
from distill.registry import add, find, import_modules
from distill.synset import library_versions

from ..cache import Cache
from ..cli import add_options, wrapped
from ..common import build_config, pick_device
from ..outputs import RunContext, earlier_results, write_yaml


@dataclass
class Env:
    """Where and how a job runs: the artifact cache, the device, the run folder, progress bars."""

    cache: Cache = field(default_factory=Cache)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run: RunContext = field(default_factory=lambda: RunContext([]))
    out: str | None = None  # None: a fresh runs/<job>-<time>/
    quiet: bool = False
    overwrite: bool = False  # --force: the run folder's results of other work may be replaced
    workers: int = 1  # --workers: processes computing the job's cells (pipelines.runner)
    threads: int | None = None  # --threads: torch CPU threads of this process and of each worker
    storage: str | None = None  # --storage: the RDB the cells are shared through (several machines)

    @property
    def progress(self) -> bool:
        return not self.quiet


class Job:
    """A subcommand: subclasses set the class attributes and implement ``resolve`` and ``run``."""

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str]
    examples: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type]
    options: ClassVar[tuple[str, ...]] = ("config", "set", "out", "device", "quiet", "explain")
    option_help: ClassVar[dict[str, str]] = {}
    flags: ClassVar[dict[str, tuple[str, Any]]] = {}  # flag dest -> (dotted config key, converter | None)
    result: ClassVar[str] = ""  # the file that marks its finished results in the run folder
    force_remakes: ClassVar[bool] = True  # --force also remakes the cached stages (not for reproduce)

    def __init__(self, config: Any, sources: Sources | None = None, env: Env | None = None,
                 args: argparse.Namespace | None = None):
        self.config = config
        self.sources = sources if sources is not None else Sources()
        self.env = env or Env()
        self.args = args or argparse.Namespace()

    # -- the command line ------------------------------------------------------------------
    @classmethod
    def add_parser(cls, sub: Any) -> argparse.ArgumentParser:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in cls.examples) if cls.examples else None
        p = sub.add_parser(cls.name, help=cls.help, description=wrapped(cls.description), epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cls.add_arguments(p)
        add_options(p, cls.options, cls.option_help)
        p.set_defaults(job=cls)
        return p

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        """The job's own flags."""

    @classmethod
    def bases(cls, args: argparse.Namespace, device: torch.device) -> list[tuple[dict[str, Any], str]]:
        """Config layers below the file and the flags, each with its source (a named set, the
        device's defaults, a synthetic set's metadata)."""
        return []

    @classmethod
    def implied(cls, args: argparse.Namespace) -> list[tuple[dict[str, Any], str]]:
        """Config layers above the file but below the flags: what an input says of itself (the
        dataset a synthetic set was made from)."""
        return []

    @classmethod
    def from_args(cls, args: argparse.Namespace, run: RunContext) -> "Job":
        """The job of a parsed command line: its config assembled with sources, its environment."""
        flags = {}
        for dest, (key, convert) in cls.flags.items():
            value = getattr(args, dest, None)
            flags[key] = ((convert(value) if convert and value is not None else value), f"--{dest.replace('_', '-')}")
        device = pick_device(getattr(args, "device", "auto"))
        sources = Sources()
        config = build_config(cls.Config, getattr(args, "config", None), getattr(args, "set", None), flags,
                              cls.bases(args, device), sources, cls.implied(args))
        force = getattr(args, "force", False)
        workers, threads = getattr(args, "workers", None), getattr(args, "threads", None)
        for flag, value in (("--workers", workers), ("--threads", threads)):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        env = Env(cache=Cache(getattr(args, "cache", None) or "artifacts", force and cls.force_remakes),
                  device=device, run=run, out=getattr(args, "out", None), quiet=getattr(args, "quiet", False),
                  overwrite=force, workers=workers or 1, threads=threads,
                  storage=getattr(args, "storage", None))
        sources.set("device", f"--device {getattr(args, 'device', 'auto')}" + (" (cuda if available)" if getattr(
            args, "device", "auto") == "auto" else ""))
        sources.set("cache", "--cache" if getattr(args, "cache", "artifacts") != "artifacts" else "default")
        sources.set("versions", "this installation")
        sources.set("processes", "the torchrun environment (WORLD_SIZE)")
        return cls(config, sources, env, args)

    @classmethod
    def create(cls, argv: list[str]) -> "Job":
        """The job as its command line would make it (for Python code and tests)."""
        from ..run import make_parser

        args = make_parser().parse_args([cls.name, *argv])
        return cls.from_args(args, RunContext([cls.name, *argv]))

    # -- the steps -------------------------------------------------------------------------
    def resolve(self) -> None:  # pragma: no cover - every job implements it
        raise NotImplementedError

    def run(self) -> int:  # pragma: no cover - every job implements it
        raise NotImplementedError

    def cell_plan(self) -> Any:
        """A job made of independent cells returns its ``pipelines.runner.CellPlan`` (called
        after :meth:`resolve`, by the job's run and by every worker process)."""
        raise NotImplementedError(f"{self.name} has no cells")

    def record(self) -> dict[str, Any]:
        """The resolved config as written to the run's ``config.yaml`` (``to_dict`` sections,
        the device, the cache, library versions)."""
        return {**to_dict(self.config), "device": str(self.env.device), "cache": str(self.env.cache.root),
                "versions": library_versions()}

    @staticmethod
    def identity(record: Any) -> Any:
        """What a run's results depend on, from its ``config.yaml`` record: the record without
        execution keys (the one overwrite policy compares these, ``pipelines.outputs``)."""
        return execution_free(record) if isinstance(record, dict) else record

    def resolve_sets(self, named: dict[str, Any], size: int, dataset: str) -> dict[str, Any]:
        """The resolved config of every set a job makes (label -> ``SetConfig``), each value's
        source under ``sets.<label>`` (what the ``distill`` section gave, else its fill)."""
        from distill.settings import resolve

        out = {}
        for label, cfg in named.items():
            self.sources.alias(f"sets.{label}", "distill")
            out[label] = resolve(cfg, size, dataset, self.sources, f"sets.{label}")
        return out

    def explain(self) -> str:
        """Every value of the resolved config with its source."""
        return "\n".join(self.sources.explain(self.record()))

    def open_folder(self, stem: str) -> tuple[Path, bool]:
        """The run folder (``--out`` or a fresh one) with the resolved config written into it,
        and whether it already holds the finished results of this same work."""
        out = self.env.run.folder_for(self.env.out, stem)
        record = self.record()
        same = earlier_results(out, record, self.result, self.env.overwrite, self.identity) if self.result else False
        write_yaml(out / "config.yaml", record, self.sources)
        return out, same


JOBS: dict[str, type[Job]] = {}


def register_job(cls: type[Job]) -> type[Job]:
    """Add a job class (each module of this package calls it at import)."""
    return add(JOBS, cls.name, cls, "job")


def get_job(name: str) -> type[Job]:
    return find(JOBS, name, "job")


# the order of run.py --help
import_modules(__name__, __path__, first=("distill", "evaluate", "export", "importer", "continual", "nas", "reproduce", "listing"))
