"""DM (Zhao & Bilen, WACV 2023): the last-layer embedding means alone, weight 1
(docs/protocols.md section 2), with its authors' settings in every preset: 20,000 iterations,
256 real images per class, image learning rate 1 at every IPC, no loss scaling (DM's code never
multiplies by 100). DM matches no attention map, so it reads neither ``layers`` nor any
attention parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import AttentionMatching, MatchingMethod, loss_scale, register_method


@dataclass
class DMParams:
    loss_scale: float | None = loss_scale(1.0)


class DM(AttentionMatching):
    name = "dm"
    paper = "Zhao & Bilen, Dataset Condensation with Distribution Matching, WACV 2023"
    Params = DMParams
    reads = tuple(r for r in MatchingMethod.reads if r != "layers")
    settings = {"iterations": 20000, "batch_real": 256, "lr_img": 1.0}

    def last_weight(self, p: Any) -> float:
        return 1.0


register_method(DM())
