"""Attention-matching terms as pure tensor functions (docs/protocols.md section 2).

Notation: ``f`` a feature map ``[B, C, H, W]`` of one block (post-activation, pre-pooling),
``K`` classes stacked class-major (rows ``k*B .. (k+1)*B - 1`` belong to class k).

- Spatial attention (DataDAM Eq. 2): ``A_s(f) = sum_c |f_c|^p_s``, flattened to ``[B, H*W]``.
- Channel attention (ATOM Eq. 3): ``A_c(f) = sum_{h,w} |f_{:,h,w}|^p_c``, ``[B, C]``.
- Both are reductions of ``|f|^p``; ``ATTENTION_MAPS`` registers them by name, and a method
  (``distill.methods``) lists the maps it matches with its own exponents. A new map is one
  ``register_attention_map``.
- Each attention vector is L2-normalised per sample: ``z = A / ||A||_2``.
- Attention matching (DataDAM Eq. 3, ATOM Eq. 4): per class and layer,
  ``|| mean_real(z) - mean_syn(z) ||^2``, summed over classes and layers ``1..L-1``.
- Last-layer term (DataDAM Eq. 4 "MMD" with a linear kernel, = DM's loss):
  ``|| mean_real(e) - mean_syn(e) ||^2`` of the final embeddings, summed over classes.
- Totals (DataDAM Eq. 5, ATOM Eq. 6): ``scale * (attention + lambda * last)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import add


def abs_pow(f: Tensor, p: float) -> Tensor:
    """``|f|^p``; for p = 1, 2, 4 with cheap elementwise ops (no ``abs`` for even powers)."""
    if p == 1:
        return f.abs()
    if p == 2:
        return f * f
    if p == 4:
        sq = f * f
        return sq * sq
    return f.abs().pow(p)


@dataclass(frozen=True)
class AttentionMap:
    """An attention map: ``reduce(|f|^p) -> [B, D]`` for one block's features ``[B, C, H, W]``
    (the exponent ``p`` is a hyperparameter of the method that matches the map)."""

    name: str
    reduce: Callable[[Tensor], Tensor]


ATTENTION_MAPS: dict[str, AttentionMap] = {}


def register_attention_map(m: AttentionMap) -> AttentionMap:
    if m.name == "last":
        raise ValueError("an attention map cannot be called 'last': that names the last-layer term")
    return add(ATTENTION_MAPS, m.name, m, "attention map")


SPATIAL = register_attention_map(AttentionMap("spatial", lambda powered: powered.sum(dim=1).flatten(1)))
CHANNEL = register_attention_map(AttentionMap("channel", lambda powered: powered.sum(dim=(2, 3))))


def spatial_attention(f: Tensor, p: float) -> Tensor:
    """``[B, C, H, W] -> [B, H*W]``: ``sum_c |f_c|^p``."""
    return SPATIAL.reduce(abs_pow(f, p))


def channel_attention(f: Tensor, p: float) -> Tensor:
    """``[B, C, H, W] -> [B, C]``: ``sum_{h,w} |f|^p``."""
    return CHANNEL.reduce(abs_pow(f, p))


def l2_normalize(z: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample L2 normalisation of ``[B, D]`` rows (``F.normalize``, eps 1e-12)."""
    return F.normalize(z, p=2.0, dim=1, eps=eps)


def class_means(z: Tensor, num_classes: int) -> Tensor:
    """Class-major ``[K*B, D] -> [K, D]`` means."""
    return z.reshape(num_classes, -1, z.shape[-1]).mean(dim=1)


@dataclass(frozen=True)
class MatchWeights:
    """Which terms a method uses and how they are weighted."""

    maps: tuple[tuple[str, float], ...] = (("spatial", 4.0),)  # attention maps (by name) and exponents p
    last_weight: float = 0.01  # lambda (1.0 for DM, whose loss is the last-layer term alone)
    scale: float = 1.0  # the DataDAM code multiplies every term by 100
    layers: tuple[int, ...] | None = None  # 0-based block indices; None: all but the last


def class_statistics(feats: list[Tensor], emb: Tensor, num_classes: int,
                     w: MatchWeights) -> dict[str, list[Tensor]]:
    """Per-class means the loss compares: one list per attention map of ``w`` (``"spatial"``:
    ``K x HW`` per layer, ``"channel"``: ``K x C`` per layer, ...), then ``"last"``: ``[K x D]``.

    Only class means enter the loss, so the real side can be computed in class chunks (and
    without keeping feature maps) and concatenated along K.
    """
    layers = w.layers if w.layers is not None else tuple(range(len(feats) - 1))
    k = num_classes
    out: dict[str, list[Tensor]] = {name: [] for name, _ in w.maps}
    for i in layers:
        powered: dict[float, Tensor] = {}  # ATOM with p_s == p_c: one |f|^p serves both maps
        for name, p in w.maps:
            if p not in powered:
                powered[p] = abs_pow(feats[i], p)
            out[name].append(class_means(l2_normalize(ATTENTION_MAPS[name].reduce(powered[p])), k))
    if w.last_weight:
        out["last"] = [class_means(emb, k)]
    return out


def concat_statistics(chunks: list[dict[str, list[Tensor]]]) -> dict[str, list[Tensor]]:
    """Join statistics of consecutive class chunks along the class dimension."""
    return {name: [torch.cat([c[name][j] for c in chunks]) for j in range(len(chunks[0][name]))]
            for name in chunks[0]}


def statistics_loss(real: dict[str, list[Tensor]], syn: dict[str, list[Tensor]],
                    w: MatchWeights) -> tuple[Tensor, dict[str, Tensor]]:
    """``scale * sum_k (spatial_k + channel_k + lambda * last_k)`` from class means; returns the
    total and the unweighted per-class parts (``[K]`` each, summed over layers)."""
    parts = {}
    for name in syn:
        parts[name] = sum(((r - s) * (r - s)).sum(dim=1) for r, s in zip(real[name], syn[name]))
    total = sum((w.last_weight * v if name == "last" else v) for name, v in parts.items())
    return w.scale * total.sum(), parts


def matching_loss(
    feats_real: list[Tensor],
    emb_real: Tensor,
    feats_syn: list[Tensor],
    emb_syn: Tensor,
    num_classes: int,
    w: MatchWeights,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total matching loss over all classes in one pass, and its per-term, per-class parts.

    Returns ``(loss, parts)`` with ``parts[name]`` of shape ``[K]`` for ``spatial``,
    ``channel`` and ``last`` (unweighted, summed over layers), so
    ``loss == scale * (sum of the maps' parts + last_weight * last).sum()``.
    """
    return statistics_loss(class_statistics(feats_real, emb_real, num_classes, w),
                           class_statistics(feats_syn, emb_syn, num_classes, w), w)
