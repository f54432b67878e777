"""ATOM (Khaki et al., CVPR-W 2024): spatial and channel attention plus the lambda-weighted
last-layer term (ATOM Eq. 6), and its channel-only variant (ATOM-dagger)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import AttentionMatching, lam, loss_scale, p_channel, p_spatial, register_method


@dataclass
class ATOMParams:
    p_spatial: float | None = p_spatial()
    p_channel: float | None = p_channel()
    lam: float | None = lam()
    loss_scale: float | None = loss_scale()


@dataclass
class ATOMChannelParams:
    p_channel: float | None = p_channel()
    lam: float | None = lam()
    loss_scale: float | None = loss_scale()


class ATOM(AttentionMatching):
    name = "atom"
    paper = "Khaki et al., ATOM, CVPR-W 2024"
    Params = ATOMParams

    def maps(self, p: Any) -> tuple[tuple[str, float], ...]:
        return (("spatial", float(p.p_spatial)), ("channel", float(p.p_channel)))


class ATOMChannel(AttentionMatching):
    name = "atom_channel"
    paper = "Khaki et al., ATOM (channel-only variant, ATOM-dagger), CVPR-W 2024"
    Params = ATOMChannelParams

    def maps(self, p: Any) -> tuple[tuple[str, float], ...]:
        return (("channel", float(p.p_channel)),)


register_method(ATOM())
register_method(ATOMChannel())
