"""The method registry: name -> what it optimises (or selects) and its paper defaults."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import choice_error


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "match": optimise synthetic images; "select": pick real images
    spatial: bool = False
    channel: bool = False
    last: bool = False
    attention_weighted_last: bool = True  # last term weighted by lambda (False: DM, weight 1)
    paper: str = ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dm", "match", last=True, attention_weighted_last=False,
               paper="Zhao & Bilen, Dataset Condensation with Distribution Matching, WACV 2023"),
        Method("datadam", "match", spatial=True, last=True,
               paper="Sajedi et al., DataDAM, ICCV 2023"),
        Method("atom", "match", spatial=True, channel=True, last=True,
               paper="Khaki et al., ATOM, CVPR-W 2024"),
        Method("atom_channel", "match", channel=True, last=True,
               paper="Khaki et al., ATOM (channel-only variant, ATOM-dagger), CVPR-W 2024"),
        Method("random", "select", paper="random real images per class"),
        Method("herding", "select", paper="Welling 2009 / iCaRL herding on ConvNet embeddings"),
        Method("kcenter", "select", paper="Sener & Savarese 2018 greedy k-center on embeddings"),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name.lower()]
    except KeyError:
        raise choice_error("method", name, METHODS) from None
