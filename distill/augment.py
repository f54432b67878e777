"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen 2021), vectorised over groups.

Strategy ``color_crop_cutout_flip_scale_rotate`` in mode 'S': every group draws ONE family
from the strategy, then that family's parameters (docs/protocols.md section 2):

========== ==========================================================================
color      brightness ``x + (U-0.5)``, saturation ``(x - mean_c) * 2U + mean_c``,
           contrast ``(x - mean) * (U+0.5) + mean`` (in that order; never clamped)
crop       translate by an integer in ``[-round(0.125 s), round(0.125 s)]`` px per axis,
           zero fill
cutout     zero a ``round(0.5 s)`` square centred at a random position (clipped)
flip       horizontal flip with probability 0.5
scale      per-axis factor ``U(1/1.2, 1.2)`` of the sampling grid
rotate     ``U(-15, 15)`` degrees
========== ==========================================================================

A *group* is the unit that shares parameters. Siamese distillation uses one group per class:
real and synthetic images of class k are augmented with identical parameters, classes differ.
Evaluation uses one group per sample, with one family per training batch, as the reference
code draws it. Parameters come from an explicit generator.

All geometric families are expressed as one affine sampling grid (``align_corners=True``,
bilinear, zero padding; integer shifts and flips land exactly on pixel centres), so a whole
batch of mixed families is one ``grid_sample`` call; colour and cutout are per-sample tensor
ops. Everything is differentiable with respect to the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"

BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5
CROP_RATIO = 0.125
CUTOUT_RATIO = 0.5
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0
FLIP_PROB = 0.5


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """``'color_crop_...'`` -> family names; ``'none'`` or ``''`` -> no augmentation."""
    if strategy in ("", "none", "None"):
        return ()
    parts = tuple(strategy.split("_"))
    bad = [p for p in parts if p not in FAMILIES]
    if bad:
        raise UserError(
            f"unknown DSA family {bad[0]!r} in strategy {strategy!r}; allowed families: "
            f"{', '.join(FAMILIES)} joined by '_', or 'none'"
        )
    return parts


@dataclass
class DSAParams:
    """Parameters for ``G`` groups; non-selected families hold their neutral value."""

    family: Tensor  # [G] index into FAMILIES
    brightness: Tensor  # [G] additive
    saturation: Tensor  # [G] factor
    contrast: Tensor  # [G] factor
    shift: Tensor  # [G, 2] integer translation (rows, cols) in px
    cutout: Tensor  # [G, 2] integer hole centre (row, col); used only where family == cutout
    flip: Tensor  # [G] bool
    scale: Tensor  # [G, 2] grid factors (x, y)
    angle: Tensor  # [G] radians

    def __len__(self) -> int:
        return int(self.family.numel())

    def index(self, group: Tensor) -> "DSAParams":
        """Expand group parameters to samples: ``group[i]`` is sample i's group."""
        return DSAParams(**{f.name: getattr(self, f.name)[group] for f in fields(self)})


def sample_params(
    n: int,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
    strategy: str = DEFAULT_STRATEGY,
    device: torch.device | str = "cpu",
    family_groups: int | None = None,
) -> DSAParams:
    """Draw DSA parameters for ``n`` groups (mode 'S').

    The family is drawn ``family_groups`` times and shared by consecutive blocks of
    ``n // family_groups`` groups (default ``n``: every group draws its own; ``1``: one family
    for the whole call, the reference code's draw for an evaluation batch; ``M``: one per
    model when M models' batches are stacked).
    """
    family_groups = n if family_groups is None else family_groups
    if family_groups < 1 or n % family_groups:
        raise ValueError(f"DSA: {n} groups cannot be split into {family_groups} family blocks")
    fams = parse_strategy(strategy)
    h, w = image_size
    g, dev = generator, device

    def u(*shape: int) -> Tensor:
        return torch.rand(shape, generator=g, device=dev)

    if not fams:
        choice = torch.full((n,), -1, dtype=torch.long, device=dev)
    else:
        allowed = torch.tensor([FAMILIES.index(f) for f in fams], device=dev)
        pick = torch.randint(len(fams), (family_groups,), generator=g, device=dev)
        choice = allowed[pick].repeat_interleave(n // family_groups)

    def on(name: str) -> Tensor:
        return choice == FAMILIES.index(name)

    # Every family's values are drawn for every group (fixed consumption of the generator,
    # so results do not depend on which families happened to be picked), then neutralised.
    bright = (u(n) - 0.5) * BRIGHTNESS
    sat = u(n) * SATURATION
    con = u(n) + CONTRAST
    crop_h, crop_w = int(h * CROP_RATIO + 0.5), int(w * CROP_RATIO + 0.5)
    shift = torch.stack([torch.randint(-crop_h, crop_h + 1, (n,), generator=g, device=dev),
                         torch.randint(-crop_w, crop_w + 1, (n,), generator=g, device=dev)], 1)
    cut_h, cut_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    centre = torch.stack([torch.randint(0, h + (1 - cut_h % 2), (n,), generator=g, device=dev),
                          torch.randint(0, w + (1 - cut_w % 2), (n,), generator=g, device=dev)], 1)
    flip = u(n) < FLIP_PROB
    scale = u(n, 2) * (SCALE_RATIO - 1.0 / SCALE_RATIO) + 1.0 / SCALE_RATIO
    angle = (u(n) - 0.5) * 2 * ROTATE_DEGREES / 180 * math.pi

    color = on("color")
    return DSAParams(
        family=choice,
        brightness=torch.where(color, bright, 0.0),
        saturation=torch.where(color, sat, 1.0),
        contrast=torch.where(color, con, 1.0),
        shift=torch.where(on("crop").unsqueeze(1), shift, 0),
        cutout=centre,
        flip=flip & on("flip"),
        scale=torch.where(on("scale").unsqueeze(1), scale, 1.0),
        angle=torch.where(on("rotate"), angle, 0.0),
    )


def affine_theta(p: DSAParams, image_size: tuple[int, int]) -> Tensor:
    """``[n, 2, 3]`` sampling matrices (align_corners=True convention) of the geometric part:
    ``flip`` negates x, ``scale`` scales the grid, ``rotate`` rotates it, ``crop`` shifts it by
    ``2 * shift / (size - 1)`` (exactly ``shift`` pixels)."""
    h, w = image_size
    cos, sin = torch.cos(p.angle), torch.sin(p.angle)
    fx = torch.where(p.flip, -1.0, 1.0)
    sx, sy = p.scale[:, 0], p.scale[:, 1]
    tx = 2.0 * p.shift[:, 1].float() / max(w - 1, 1)
    ty = 2.0 * p.shift[:, 0].float() / max(h - 1, 1)
    row0 = torch.stack([cos * sx * fx, -sin * sy, tx], 1)
    row1 = torch.stack([sin * sx * fx, cos * sy, ty], 1)
    return torch.stack([row0, row1], 1)


def cutout_mask(p: DSAParams, image_size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """``[n, 1, H, W]`` multiplicative mask: 0 inside each cutout hole, 1 elsewhere."""
    h, w = image_size
    cut_h, cut_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    dev = p.cutout.device
    top = (p.cutout[:, 0] - cut_h // 2).view(-1, 1, 1)
    left = (p.cutout[:, 1] - cut_w // 2).view(-1, 1, 1)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    hole = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    hole = hole & (p.family == FAMILIES.index("cutout")).view(-1, 1, 1)
    return (~hole).to(dtype).unsqueeze(1)


def apply(x: Tensor, p: DSAParams, skip_unused: bool | None = None) -> Tensor:
    """Augment ``x`` ``[n, C, H, W]`` with per-sample parameters ``p`` (``len(p) == n``).

    ``skip_unused`` (default: on the CPU only) skips a family that no sample uses. Otherwise
    every family is computed and selected per sample with ``torch.where``: the same values,
    without the host synchronisations that asking "is any sample using it?" costs on a GPU
    (each one stalls the launch queue).
    """
    if len(p) != len(x):
        raise ValueError(f"DSA: {len(p)} parameter sets for {len(x)} images")
    skip = (not x.is_cuda) if skip_unused is None else skip_unused
    if len(x) == 0 or (skip and bool((p.family < 0).all())):
        return x
    size = (x.shape[2], x.shape[3])
    col = p.family == FAMILIES.index("color")
    if not skip or bool(col.any()):
        v = lambda t: t.view(-1, 1, 1, 1).to(x.dtype)  # noqa: E731
        y = x + v(p.brightness)
        m = y.mean(dim=1, keepdim=True)
        y = (y - m) * v(p.saturation) + m
        m = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - m) * v(p.contrast) + m
        x = torch.where(v(col).bool(), y, x)
    if not skip or bool((p.family == FAMILIES.index("cutout")).any()):
        x = x * cutout_mask(p, size, x.dtype)
    geo = torch.zeros_like(p.flip)
    for name in ("crop", "flip", "scale", "rotate"):
        geo = geo | (p.family == FAMILIES.index(name))
    if not skip or bool(geo.any()):
        theta = affine_theta(p, size).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        x = torch.where(geo.view(-1, 1, 1, 1), y, x)
    return x


def group_ids(first: int, last: int, per_group: int, device: torch.device | str = "cpu") -> Tensor:
    """Group of each row of a class-major stack of classes ``first..last-1`` with ``per_group``
    rows each: ``[first]*per_group + [first+1]*per_group + ...``. Siamese DSA indexes one
    parameter draw per class with these ids for the real and for the synthetic stack."""
    return torch.arange(first, last, device=device).repeat_interleave(per_group)


def per_sample(x: Tensor, generator: torch.Generator | None, strategy: str = DEFAULT_STRATEGY,
               family_groups: int = 1) -> Tensor:
    """Evaluation-time DSA: independent parameters per sample (not siamese); the family is
    drawn once per block of ``len(x) // family_groups`` samples (default: once per call)."""
    p = sample_params(len(x), (x.shape[2], x.shape[3]), generator, strategy, x.device, family_groups)
    return apply(x, p)
