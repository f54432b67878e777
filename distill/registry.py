"""Plug-in folders: a registry package imports every module in its folder when it is imported,
and each module registers what it defines (datasets, architectures, methods). Adding one is
then a new file in the folder and no other edit."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TypeVar

from .errors import choice_error

T = TypeVar("T")


def add(table: dict[str, T], name: str, item: T, what: str) -> T:
    """Register ``item`` under ``name``; a name registered twice is a programming error."""
    if name in table:
        raise ValueError(f"{what} {name!r} registered twice")
    table[name] = item
    return item


def find(table: dict[str, T], name: str, what: str) -> T:
    """The entry of ``name`` (case-insensitive), or the standard "unknown X; allowed: ..." error."""
    try:
        return table[name.lower()]
    except KeyError:
        raise choice_error(what, name, table) from None


def import_modules(package: str, path: Iterable[str], first: Iterable[str] = ()) -> list[str]:
    """Import the modules ``first`` (in that order), then every other module found on the
    package's ``path`` (sorted by name); return the names imported."""
    names = list(first)
    names += sorted(m.name for m in pkgutil.iter_modules(list(path)) if m.name not in names)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
