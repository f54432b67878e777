"""Writes ``pipelines/configs/{distill,evaluate,import,continual,nas,reproduce}.yaml``: every key of each job with
its default and the comment from the dataclass that defines it. ``tests/test_pipelines.py``
checks the committed files equal this output, so the documented keys never drift.

    python pipelines/make_configs.py
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.config import to_dict  # noqa: E402
from distill.methods import param_table  # noqa: E402
from pipelines.jobs.continual import ContinualJobConfig  # noqa: E402
from pipelines.jobs.distill import DistillJobConfig  # noqa: E402
from pipelines.jobs.evaluate import EvaluateJobConfig  # noqa: E402
from pipelines.jobs.importer import ImportConfig  # noqa: E402
from pipelines.jobs.nas import NASJobConfig  # noqa: E402
from pipelines.jobs.reproduce import ReproduceJobConfig  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

def comments(cls: type) -> dict[str, str]:
    """Field name -> its trailing ``# comment`` in the dataclass source (bases included)."""
    out = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        src = inspect.getsource(klass)
        for m in re.finditer(r"^\s+(\w+):[^=\n]*=[^\n#]*(?:#\s*(.*))?$", src, re.M):
            if m.group(2):
                out[m.group(1)] = m.group(2).strip()
    return out

def dump(obj: Any, indent: int = 0) -> list[str]:
    """Every key of a config section with its default and comment; an open section (the
    distillation settings) also lists every registered method's hyperparameters."""
    lines = []
    cm = comments(type(obj))
    opened = getattr(obj, "OPEN_FIELD", None)
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        if f.name == opened:
            lines += [f"{pad}{name}: null  # {info.comment()}" for name, info in param_table().items()]
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            note = cm.get(f.name) or (type(v).__doc__ or "").strip().splitlines()[0]
            lines.append(f"{pad}{f.name}:  # {note}")
            lines.extend(dump(v, indent + 1))
        else:
            val = yaml.safe_dump(to_dict(v), default_flow_style=True).strip()
            if val.endswith("..."):
                val = val[:-3].strip()
            c = cm.get(f.name)
            lines.append(f"{pad}{f.name}: {val}" + (f"  # {c}" if c else ""))
    return lines

JOBS = [
    ("distill", DistillJobConfig(), "run.py distill: condense a dataset (DataDAM / ATOM / DM / M3D) or select a coreset."),
    ("evaluate", EvaluateJobConfig(), "run.py evaluate: train networks on a synthetic set, test on the real test set."),
    ("import", ImportConfig(), "run.py import: a set released by another repository read into a synset.pt."),
    ("continual", ContinualJobConfig(), "run.py continual: class-incremental learning with distilled replay memories."),
    ("nas", NASJobConfig(), "run.py nas: the 720-ConvNet search with synthetic proxies."),
    ("reproduce", ReproduceJobConfig(), "run.py reproduce: a published table measured cell by cell."),
]


def render(job: Any, head: str) -> str:
    text = [f"# {head}", "# Every key with its default (null: the paper's / the dataset's default, resolved at run",
            "# time and written to the run's config.yaml). Use: --config this.yaml, --set key=value.", ""]
    return "\n".join(text + dump(job)) + "\n"


if __name__ == "__main__":
    for name, job, head in JOBS:
        (CONFIG_DIR / f"{name}.yaml").write_text(render(job, head))
