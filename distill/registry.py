"""Plug-in folders: a registry package imports every module in its folder when it is imported,
and each module registers what it defines (datasets, architectures, methods). Adding one is
then a new file in the folder and no other edit."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_modules(package: str, path: Iterable[str], first: Iterable[str] = ()) -> list[str]:
    """Import the modules ``first`` (in that order), then every other module found on the
    package's ``path`` (sorted by name); return the names imported."""
    names = list(first)
    names += sorted(m.name for m in pkgutil.iter_modules(list(path)) if m.name not in names)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
