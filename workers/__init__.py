"""Independent cells of work computed once by any number of workers (docs/protocols.md
section 10): :class:`Cells` names them (importable without Optuna); :mod:`workers.claims`
shares them through an Optuna study (journal file or RDB), :mod:`workers.pool` runs local
worker processes, one per GPU round-robin or with the CPU threads split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def cell_param(params: dict[str, Any]) -> str:
    """The name of a cell of :meth:`Cells.named`: its one parameter."""
    return str(params["cell"])


@dataclass(frozen=True)
class Cells:
    """A fixed set of cells: each cell's parameters (``params``, in a fixed order: a cell's
    index is its position), the values every parameter takes (``choices``: the study's
    categorical distributions), the name that identifies a cell (``name_of``) and, where
    the objective is a number, the result key it is (``value``; NAS: ``val_acc``)."""

    choices: dict[str, list[Any]]
    params: list[dict[str, Any]]
    name_of: Callable[[dict[str, Any]], str]
    value: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.choices)

    @property
    def names(self) -> list[str]:
        return [self.name_of(p) for p in self.params]

    @classmethod
    def named(cls, names: list[str]) -> "Cells":
        """Cells identified by their names alone (one categorical parameter ``cell``)."""
        if len(set(names)) != len(names):
            raise ValueError("cell names must be unique")
        return cls({"cell": list(names)}, [{"cell": n} for n in names], cell_param)
