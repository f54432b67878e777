"""Named sets: ``atom_ipc50``, ``datadam_ipc20_cifar100``, ``random_ipc10_digits`` ... resolve to
definitions in ``pipelines/configs/sets.yaml`` (dataset + distillation sections), or, when not
listed, to the pattern ``<method>_ipc<N>[_<dataset>]``. ``distill --named-set NAME``, ``nas
--proxy NAME`` and ``continual --memories NAME`` take them; a name is a role-free recipe for a
cached synthetic set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import from_dict, load_yaml, locate, to_dict
from distill.datasets import DATASETS
from distill.settings import DistillSettings, SetConfig
from distill.errors import ConfigError, UserError
from distill.methods import get_method

from .common import DataConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SETS_FILE = CONFIG_DIR / "sets.yaml"
PATTERN = re.compile(r"^(?P<method>[a-z_]+?)_ipc(?P<ipc>\d+)(?:_(?P<dataset>[a-z0-9]+))?$")


@dataclass
class NamedSet:
    """A named set: its dataset section (``None`` fields: the job's) and distillation."""

    name: str
    dataset: dict[str, Any]
    distill: dict[str, Any]

    @property
    def method(self) -> str:
        return str(self.distill["method"])

    @property
    def ipc(self) -> int:
        return int(self.distill["ipc"])

    def distill_config(self, settings: DistillSettings) -> SetConfig:
        """The job's distillation settings with this set's distill keys (method, IPC, ...) applied."""
        return from_dict(SetConfig, {**to_dict(settings), **self.distill}, "distill")


def dataset_base(defs: list[NamedSet]) -> dict[str, Any]:
    """The dataset section that named sets give a job, as the base its file and flags override
    (``run.py distill --named-set``, ``run.py nas --proxy``): the union of their dataset keys,
    which must agree."""
    out: dict[str, Any] = {}
    for d in defs:
        for key, value in d.dataset.items():
            if key in out and out[key] != value:
                raise UserError(f"the named sets disagree on dataset.{key}: {out[key]!r} and {value!r} ({d.name})")
            out[key] = value
    return out


def named_sets(path: Path = SETS_FILE) -> dict[str, NamedSet]:
    """Every set defined in ``sets.yaml``, validated (a typo names the file and line)."""
    raw = load_yaml(path)
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) - {"dataset", "distill"}:
            raise UserError(f"{path}: named set {name!r} must be a mapping with dataset and distill sections")
        try:
            ds = to_dict(from_dict(DataConfig, entry.get("dataset") or {}, f"{name}.dataset"))
            from_dict(SetConfig, entry.get("distill") or {}, f"{name}.distill")
        except ConfigError as exc:
            raise locate(exc, path) from None
        given = entry.get("dataset") or {}
        out[str(name)] = NamedSet(str(name), {k: ds[k] for k in given}, dict(entry.get("distill") or {}))
    return out


def is_path(spec: str) -> bool:
    """True when a spec names a synset file rather than a named set or a method."""
    return spec.endswith(".pt") or "/" in spec or Path(spec).exists()


def file_label(path: str) -> str:
    """How a synset file is called in reports: its stem, or its folder for ``.../synset.pt``."""
    p = Path(path)
    return p.parent.name if p.stem == "synset" and p.parent.name else p.stem


def report_labels(specs: list[str], flag: str) -> dict[str, str]:
    """Spec -> the label its rows carry in reports (a name as given, a file as :func:`file_label`);
    two specs that would share a label, or one given twice, are an error."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for spec in specs:
        label = file_label(spec) if is_path(spec) else spec
        if label in seen:
            what = "is given twice" if seen[label] == spec else f"and {seen[label]!r} would both be reported as {label!r}"
            raise UserError(f"{flag}: {spec!r} {what}; give each once, with distinct file names")
        seen[label] = spec
        out[spec] = label
    return out


def lookup(name: str) -> NamedSet | None:
    """The definition of a set name; None when ``name`` is a file path."""
    if is_path(name):
        return None
    defs = named_sets()
    if name in defs:
        return defs[name]
    m = PATTERN.match(name)
    if not m:
        raise UserError(f"{name!r} is neither a synset.pt path, a set named in {SETS_FILE.name} "
                        f"({', '.join(list(defs)[:4])}, ...) nor a name like atom_ipc50 or random_ipc10_digits "
                        "(<method>_ipc<N>[_<dataset>])")
    get_method(m["method"])
    if m["dataset"] and m["dataset"] not in DATASETS:
        raise UserError(f"set {name!r}: unknown dataset {m['dataset']!r}; allowed: {', '.join(DATASETS)}")
    return NamedSet(name, {"name": m["dataset"]} if m["dataset"] else {},
                     {"method": m["method"], "ipc": int(m["ipc"])})
