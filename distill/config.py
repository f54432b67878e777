"""Typed configuration: nested dataclasses <-> plain dicts / YAML, with strict keys.

- :func:`from_dict` builds a dataclass from a dict; an unknown key is an error naming the key,
  where it was (``distill.lr``) and the allowed keys; values are type-checked.
- :func:`to_dict` gives the plain dict (for YAML, JSON and synthetic-set metadata).
- :func:`apply_override` applies a ``a.b=c`` override (the value parsed as YAML).
- An *open section* is a dataclass whose ``OPEN_FIELD`` (a dict field) takes extra flat keys
  declared elsewhere (``open_keys()``: name -> type): the distillation section takes every
  registered method's own hyperparameters this way (``distill.lam``), and they read, print and
  hash as if they were fields of the section.
- :class:`Sources` records where each value of a config came from (a file and line, a flag,
  ``--set``, a preset, a method, a dataset, a size rule), for ``--explain`` and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError, UserError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except UserError as exc:
                errors.append(str(exc))
        raise ConfigError(where, errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(where, f"{where}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}, "
                            f"got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"{where}: expected a list, got {value!r}")
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(where, f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(where, f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(where, f"{where}: expected a string, got {value!r}")
    return value


# The one list of config keys that change how work is done, never its result (up to float
# rounding): reporting, checkpoint cadence, snapshots, chunking, compilation, ensembling, worker
# processes and storage, and where a job ran and found its data. Cache keys, resume checks and
# the finished-output checks of every job leave them out (:func:`execution_free`).
EXECUTION_KEYS = ("checkpoint_every", "checkpoint_minutes", "snapshots", "eval_every", "eval_epochs", "chunk",
                  "syn_chunk", "compile", "ensemble", "tensorboard", "workers", "storage", "heartbeat", "device",
                  "cache", "versions", "root", "download")


def execution_free(config: Any) -> Any:
    """``config`` (a ``to_dict`` form) without :data:`EXECUTION_KEYS`, at every depth."""
    if isinstance(config, dict):
        return {k: execution_free(v) for k, v in config.items() if k not in EXECUTION_KEYS}
    return config


def open_keys(cls: type) -> dict[str, Any]:
    """The extra flat keys an open section takes (name -> type); ``{}`` for other dataclasses."""
    return dict(cls.open_keys()) if getattr(cls, "OPEN_FIELD", None) else {}  # type: ignore[attr-defined]


def section_keys(cls: type) -> list[str]:
    """Every key a section takes: its fields (an open section's dict field excepted), then its
    open keys."""
    own = [f.name for f in dataclasses.fields(cls) if f.name != getattr(cls, "OPEN_FIELD", None)]  # type: ignore[arg-type]
    return own + [k for k in open_keys(cls) if k not in own]


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; missing keys keep their defaults."""
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    opened = getattr(cls, "OPEN_FIELD", None)
    extra = open_keys(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != opened]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key in names:
            kwargs[key] = _coerce(value, hints[key], path)
        elif key in extra:  # an open key left null is unset, as if absent
            coerced = _coerce(value, extra[key], path)
            kwargs.setdefault(opened, {})
            if coerced is not None:
                kwargs[opened][key] = coerced
        else:
            raise ConfigError(path, f"unknown config key {path!r}; allowed keys{' under ' + where if where else ''}: "
                            f"{', '.join(section_keys(cls))}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict of builtins; an open section's extra keys sit beside its
    fields, in the order ``open_keys`` declares them."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        opened = getattr(obj, "OPEN_FIELD", None)
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != opened}
        if opened:
            given = getattr(obj, opened)
            out.update({k: to_dict(given[k]) for k in open_keys(type(obj)) if k in given})
            out.update({k: to_dict(v) for k, v in given.items() if k not in out})
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def apply_override(data: dict[str, Any], override: str) -> dict[str, Any]:
    """Set ``a.b.c=value`` in a nested dict (value parsed as YAML: ``3``, ``true``, ``[1,2]``)."""
    if "=" not in override:
        raise UserError(f"--set expects key=value (e.g. distill.ipc=10), got {override!r}")
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set expects key=value, got {override!r}")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise UserError(f"--set {key}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value
    return data


def key_lines(path: str | Path) -> dict[str, int]:
    """Dotted key path -> 1-based line of that key in a YAML file (``{}`` if unreadable)."""
    try:
        root = yaml.compose(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    out: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}.{key.value}" if prefix else str(key.value)
                out[name] = key.start_mark.line + 1
                walk(value, name)

    walk(root, "")
    return out


def locate(exc: ConfigError, path: str | Path) -> UserError:
    """``exc`` prefixed with ``file:line`` when its key (or the nearest parent) is in ``path``."""
    lines = key_lines(path)
    key = re.sub(r"\[\d+\]", "", exc.path)  # list items point at their list's key
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return UserError(f"{path}:{lines[key]}: {exc}") if key else UserError(str(exc))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a folder; give a YAML file")
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (a config file is YAML text)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: malformed YAML ({problem})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


class Sources:
    """Where each value of a resolved config came from, by dotted key (``distill.iterations``):
    ``default`` unless recorded otherwise. The layers that assemble a config (file, flags,
    ``--set``) and the steps that fill its ``None`` values (a preset, a method, a dataset's quick
    defaults, a size rule) each record what they set; :meth:`explain` prints every value beside
    its source (``--explain``), and ``config.yaml`` carries them as comments."""

    def __init__(self) -> None:
        self.where: dict[str, str] = {}
        self.aliases: dict[str, str] = {}

    def set(self, key: str, source: str) -> None:
        self.where[key] = source

    def alias(self, prefix: str, target: str) -> None:
        """Keys under ``prefix`` (a set resolved from the job's ``distill`` section) that no step
        filled come from ``target`` (``distill``)."""
        self.aliases[prefix] = target

    def set_tree(self, data: Any, source: str, prefix: str = "") -> None:
        """Record ``source`` for every leaf of a nested mapping (a config file, a named buffer)."""
        if isinstance(data, dict) and data:
            for k, v in data.items():
                self.set_tree(v, source, f"{prefix}.{k}" if prefix else str(k))
        elif prefix:
            self.set(prefix, source)

    def of(self, key: str) -> str:
        """The source of ``key`` (its own, else the nearest recorded section above it)."""
        k = key
        while k:
            if k in self.where:
                return self.where[k]
            if k in self.aliases:
                return self.of(self.aliases[k] + key[len(k):])
            k = k.rpartition(".")[0]
        return "default"

    def explain(self, tree: dict[str, Any], prefix: str = "") -> list[str]:
        """``key: value  # source`` for every leaf of ``tree`` (a ``to_dict`` form), in order."""
        lines = []
        for k, v in tree.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                lines += self.explain(v, key)
            else:
                value = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
                lines.append(f"{key}: {value}  # {self.of(key)}")
        return lines

    def commented_yaml(self, tree: dict[str, Any]) -> str:
        """``tree`` as YAML with each value's source as a trailing comment (a run's config.yaml)."""
        out: list[str] = []

        def walk(node: dict[str, Any], prefix: str, indent: int) -> None:
            for k, v in node.items():
                key = f"{prefix}.{k}" if prefix else str(k)
                pad = "  " * indent
                if isinstance(v, dict) and v:
                    out.append(f"{pad}{k}:")
                    walk(v, key, indent + 1)
                else:
                    value = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
                    out.append(f"{pad}{k}: {value}  # {self.of(key)}")

        walk(tree, "", 0)
        return "\n".join(out) + "\n"
