"""The method registry: name -> what a method optimises (or selects) and the paper it follows.

A matching method lists the attention maps it matches (``distill.matching.ATTENTION_MAPS``:
``spatial``, ``channel``, or one its own module registers) and whether it adds the last-layer
embedding term; a ``select`` method picks real images (``distill.coreset``). Each module of this
package registers its methods when imported, and every module is imported with the package, so
adding a method is one new file (plus its test).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..matching import ATTENTION_MAPS
from ..registry import add, find, import_modules


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "match": optimise synthetic images; "select": pick real images
    maps: tuple[str, ...] = ()  # attention maps matched at every chosen layer, in this order
    last: bool = False  # also match the final embeddings' class means
    attention_weighted_last: bool = True  # last term weighted by lambda (False: DM, weight 1)
    paper: str = ""
    # the method's own defaults, in every preset (its authors' settings where they differ from
    # the preset's); a value the user gives still wins
    defaults: Mapping[str, Any] = field(default_factory=dict)


METHODS: dict[str, Method] = {}


def register_method(m: Method) -> Method:
    """Add a method (called by each module of this package at import)."""
    if m.kind not in ("match", "select"):
        raise ValueError(f"method {m.name!r}: kind must be match or select, got {m.kind!r}")
    unknown = [a for a in m.maps if a not in ATTENTION_MAPS]
    if unknown:
        raise ValueError(f"method {m.name!r}: unknown attention maps {unknown}; register them first")
    return add(METHODS, m.name, m, "method")


def get_method(name: str) -> Method:
    return find(METHODS, name, "method")


# the papers' order in listings and --help first, then any other method file
import_modules(__name__, __path__, first=("dm", "datadam", "atom", "coresets"))
