"""The NAS search space (docs/protocols.md section 5): ConvNets over depth x width x activation x
normalisation x pooling = 4 x 4 x 3 x 5 x 3 = 720 candidates, plus smaller named subsets."""

from __future__ import annotations

import itertools
from typing import Any

from distill.errors import UserError, choice_error
from distill.nets import ACTIVATIONS, NORMS, POOLINGS, NetSpec
from workers import Cells

KEYS = ("depth", "width", "act", "norm", "pool")
SPACES: dict[str, dict[str, list[Any]]] = {
    "full": {"depth": [1, 2, 3, 4], "width": [32, 64, 128, 256], "act": list(ACTIVATIONS),
             "norm": list(NORMS), "pool": list(POOLINGS)},
    # 48 candidates for quick runs (CPU minutes on digits)
    "small": {"depth": [1, 2, 3], "width": [32, 64], "act": ["sigmoid", "relu"],
              "norm": ["none", "instancenorm"], "pool": ["maxpooling", "avgpooling"]},
    # 4 candidates for tests
    "tiny": {"depth": [1, 2], "width": [8], "act": ["relu"], "norm": ["none", "instancenorm"],
             "pool": ["avgpooling"]},
}


def get_space(name: str) -> dict[str, list[Any]]:
    if name not in SPACES:
        raise choice_error("search space", name, list(SPACES))
    return SPACES[name]


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every candidate, in a fixed order (depth slowest, pooling fastest)."""
    missing = [k for k in KEYS if k not in space]
    if missing:
        raise UserError(f"search space lacks {', '.join(missing)} (needs {', '.join(KEYS)})")
    return [dict(zip(KEYS, values)) for values in itertools.product(*(space[k] for k in KEYS))]


def candidate_name(params: dict[str, Any]) -> str:
    """``{'depth': 3, 'width': 128, ...}`` -> ``d3-w128-relu-instancenorm-avgpooling``."""
    return f"d{params['depth']}-w{params['width']}-{params['act']}-{params['norm']}-{params['pool']}"


def space_cells(space: dict[str, list[Any]]) -> Cells:
    """The candidates of ``space`` as the cells of a study (``workers``): the search keys as
    categorical parameters, the grid's order, ranked by validation accuracy."""
    return Cells({k: list(space[k]) for k in KEYS}, grid(space), candidate_name, value="val_acc")


def candidate_spec(params: dict[str, Any]) -> NetSpec:
    return NetSpec(arch="convnet", width=int(params["width"]), depth=int(params["depth"]),
                   act=str(params["act"]), norm=str(params["norm"]), pool=str(params["pool"]))
