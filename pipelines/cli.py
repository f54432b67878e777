"""Command-line options every job shares, declared once (a job picks the ones it takes and may
word their help for itself), and the converters of list-valued flags.

A flag's value reaches the job's config through the job's ``flags`` table (flag -> dotted key,
converter), so ``--ipc 10`` and ``--set distill.ipc=10`` are the same setting, with different
sources (``--explain`` tells which).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any

from distill.errors import UserError

# name -> (flags, argparse keywords, the help where a job words none of its own)
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any], str]] = {
    "config": (("--config",), {"metavar": "FILE.yaml"}, "YAML config file (keys and defaults: pipelines/configs/)"),
    "set": (("--set",), {"action": "append", "metavar": "KEY=VALUE"},
            "override a config key, e.g. --set distill.lam=0.02 (repeatable; wins over flags and --config)"),
    "out": (("--out",), {"metavar": "DIR"}, "output folder (default: a fresh runs/<job>-<time>/)"),
    "device": (("--device",), {"default": "auto"}, "cpu, cuda, cuda:N or auto (default auto: cuda if available)"),
    "quiet": (("--quiet",), {"action": "store_true"}, "no progress bars"),
    "explain": (("--explain",), {"action": "store_true"},
                "print every resolved config value with its source (default, preset, method, dataset, size "
                "rule, file, flag, --set) and exit without running"),
    "cache": (("--cache",), {"default": "artifacts", "metavar": "DIR"},
              "artifact cache folder (default: artifacts)"),
    "dataset": (("--dataset",), {}, "dataset name"),
    "data_root": (("--data-root",), {"metavar": "DIR"},
                  "data folder (default: the one the set was made from where it still holds the data, else data)"),
    "seed": (("--seed",), {"type": int}, "random seed (default 0)"),
    "force": (("--force",), {"action": "store_true"}, "recompute what is cached instead of reusing it"),
    "workers": (("--workers",), {"type": int, "metavar": "N"},
                "worker processes sharing the cells (default 1: this process alone; one per GPU round-robin, "
                "or the CPU threads split); each cell is computed once, also when a worker dies"),
    "threads": (("--threads",), {"type": int, "metavar": "N"},
                "torch CPU threads of this process and of each worker (default: torch's own, and the cores "
                "split evenly among --workers); CPU results are bitwise equal between runs with equal threads"),
    "storage": (("--storage",), {"metavar": "URL"},
                "an Optuna RDB URL that processes on several machines running the same command share, e.g. "
                "postgresql+psycopg2://user:pass@host/db (pip install -e '.[postgres]'); default: a journal "
                "file in the cache"),
}


def add_options(parser: argparse.ArgumentParser, names: tuple[str, ...], helps: dict[str, str] | None = None) -> None:
    """Add the shared options ``names`` to ``parser``, with the job's own help text where given."""
    for name in names:
        flags, kwargs, default_help = OPTIONS[name]
        parser.add_argument(*flags, help=(helps or {}).get(name, default_help), **kwargs)


def wrapped(text: str, width: int = 92) -> str:
    """A description as paragraphs wrapped to ``width`` (for RawDescriptionHelpFormatter, which
    keeps the line breaks given: the examples stay as written)."""
    return "\n\n".join(textwrap.fill(" ".join(par.split()), width) for par in text.strip().split("\n\n"))


def csv_items(text: str | None) -> list[str] | None:
    """``a,b, c`` -> ``["a", "b", "c"]`` (``None`` when not given)."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def csv_ints(flag: str) -> Callable[[str | None], list[int] | None]:
    """A converter of ``--flag 1,2,3`` to integers, one error line otherwise."""
    def convert(text: str | None) -> list[int] | None:
        if not text:
            return None
        try:
            return [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise UserError(f"{flag} takes comma-separated integers, e.g. 1,10; got {text!r}") from None
    return convert
