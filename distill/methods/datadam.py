"""DataDAM (Sajedi et al., ICCV 2023): spatial attention matching plus the lambda-weighted
last-layer term (DataDAM Eq. 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import AttentionMatching, lam, loss_scale, p_spatial, register_method


@dataclass
class DataDAMParams:
    p_spatial: float | None = p_spatial()
    lam: float | None = lam()
    loss_scale: float | None = loss_scale()


class DataDAM(AttentionMatching):
    name = "datadam"
    paper = "Sajedi et al., DataDAM, ICCV 2023"
    Params = DataDAMParams

    def maps(self, p: Any) -> tuple[tuple[str, float], ...]:
        return (("spatial", float(p.p_spatial)),)


register_method(DataDAM())
