"""DSA: each family against a direct transcription, the siamese property, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill import augment as A
from distill.errors import UserError

SIZE = (8, 8)


def _only(family, n=1, **values):
    p = A.sample_params(n, SIZE, torch.Generator().manual_seed(0), family)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def test_crop_is_integer_translation_with_zero_fill(gen):
    x = torch.randn(1, 3, *SIZE, generator=gen)
    y = A.apply(x, _only("crop", shift=torch.tensor([[2, -1]])))
    ref = torch.zeros_like(x)
    for i in range(8):
        for j in range(8):
            if 0 <= i + 2 < 8 and 0 <= j - 1 < 8:
                ref[0, :, i, j] = x[0, :, i + 2, j - 1]
    assert torch.allclose(y, ref, atol=1e-5)


def test_flip_and_identity(gen):
    x = torch.randn(2, 3, *SIZE, generator=gen)
    y = A.apply(x, _only("flip", 2, flip=torch.tensor([True, False])))
    assert torch.allclose(y[0], x[0].flip(-1), atol=1e-5)
    assert torch.allclose(y[1], x[1], atol=1e-5)  # identity grid, bilinear at pixel centres


def test_rotate_matches_affine_grid(gen):
    x = torch.randn(1, 3, *SIZE, generator=gen)
    ang = 0.2
    y = A.apply(x, _only("rotate", angle=torch.tensor([ang])))
    theta = torch.tensor([[[math.cos(ang), -math.sin(ang), 0.0], [math.sin(ang), math.cos(ang), 0.0]]])
    ref = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=True), align_corners=True)
    assert torch.allclose(y, ref, atol=1e-5)


def test_scale_matches_affine_grid(gen):
    x = torch.randn(1, 3, *SIZE, generator=gen)
    y = A.apply(x, _only("scale", scale=torch.tensor([[1.1, 0.9]])))
    theta = torch.tensor([[[1.1, 0.0, 0.0], [0.0, 0.9, 0.0]]])
    ref = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=True), align_corners=True)
    assert torch.allclose(y, ref, atol=1e-5)


def test_color_formula_unclamped(gen):
    x = torch.randn(1, 3, *SIZE, generator=gen) * 3  # normalised data lies far outside [0, 1]
    b, s, c = 0.3, 1.7, 1.2
    y = A.apply(x, _only("color", brightness=torch.tensor([b]), saturation=torch.tensor([s]),
                         contrast=torch.tensor([c])))
    r = x + b
    r = (r - r.mean(1, keepdim=True)) * s + r.mean(1, keepdim=True)
    r = (r - r.mean((1, 2, 3), keepdim=True)) * c + r.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(y, r, atol=1e-5)
    assert y.max() > 1 or y.min() < 0


def test_cutout_hole(gen):
    x = torch.randn(1, 1, *SIZE, generator=gen) + 10
    y = A.apply(x, _only("cutout", cutout=torch.tensor([[3, 7]])))
    hole = (y == 0)[0, 0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:5, 5:8] = True  # 4x4 hole centred at (3, 7), clipped at the border
    assert torch.equal(hole, expected)


def test_parameter_ranges():
    p = A.sample_params(4000, (32, 32), torch.Generator().manual_seed(1))
    fam = p.family
    col = fam == A.FAMILIES.index("color")
    assert p.brightness[col].abs().max() <= 0.5 and p.saturation[col].max() <= 2.0
    assert p.contrast[col].min() >= 0.5 and p.contrast[col].max() <= 1.5
    assert p.shift.abs().max() == 4  # round(0.125 * 32)
    rot = fam == A.FAMILIES.index("rotate")
    assert p.angle[rot].abs().max() <= math.radians(15) + 1e-6
    sc = fam == A.FAMILIES.index("scale")
    assert p.scale[sc].min() >= 1 / 1.2 - 1e-6 and p.scale[sc].max() <= 1.2 + 1e-6
    counts = torch.bincount(fam, minlength=6).float() / 4000
    assert torch.all((counts - 1 / 6).abs() < 0.03)  # one family per group, uniformly
    # non-selected families are neutral
    assert torch.all(p.shift[fam != A.FAMILIES.index("crop")] == 0)
    assert torch.all(p.angle[~rot] == 0)


def test_siamese_same_within_class_different_across(gen):
    assert A.group_ids(2, 4, 3).tolist() == [2, 2, 2, 3, 3, 3]
    k, b, i = 5, 4, 2
    base = torch.randn(1, 3, 16, 16, generator=gen)
    # identical images everywhere: after siamese DSA, real and synthetic images of one class
    # must still be identical (same parameters), while classes differ
    x_real = base.repeat(k * b, 1, 1, 1)
    x_syn = base.repeat(k * i, 1, 1, 1).clone().requires_grad_(True)
    # the distillation step's mechanism: one draw per class, indexed by each stack's class ids
    p = A.sample_params(k, (16, 16), torch.Generator().manual_seed(7))
    r = A.apply(x_real, p.index(A.group_ids(0, k, b)))
    s = A.apply(x_syn, p.index(A.group_ids(0, k, i)))
    r = r.view(k, b, *base.shape[1:])
    s = s.view(k, i, *base.shape[1:])
    for c in range(k):
        assert torch.allclose(r[c], r[c, :1].expand_as(r[c]))
        assert torch.allclose(s[c], r[c, :i], atol=1e-6)
    distinct = {tuple(r[c, 0].flatten()[:50].round(decimals=4).tolist()) for c in range(k)}
    assert len(distinct) > 1
    # differentiable with respect to the synthetic images
    s.sum().backward()
    assert x_syn.grad is not None and x_syn.grad.abs().sum() > 0


def test_gradient_through_every_family(gen):
    for fam in A.FAMILIES:
        x = torch.randn(3, 3, *SIZE, generator=gen, requires_grad=True)
        A.apply(x, A.sample_params(3, SIZE, gen, fam)).pow(2).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, fam


def test_per_sample_is_seeded_and_shares_family(gen):
    x = torch.randn(6, 3, *SIZE, generator=gen)
    a = A.per_sample(x, torch.Generator().manual_seed(3))
    b = A.per_sample(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    p = A.sample_params(50, SIZE, torch.Generator().manual_seed(3), family_groups=1)
    assert len(set(p.family.tolist())) == 1
    blocks = A.sample_params(600, SIZE, torch.Generator().manual_seed(3), family_groups=30).family.view(30, 20)
    assert torch.all(blocks == blocks[:, :1]) and len(set(blocks[:, 0].tolist())) > 1
    with pytest.raises(ValueError, match="cannot be split"):
        A.sample_params(10, SIZE, None, family_groups=3)


def test_strategy_validation():
    assert A.parse_strategy("none") == ()
    assert A.parse_strategy("crop_flip") == ("crop", "flip")
    with pytest.raises(UserError, match="unknown DSA family 'blur'"):
        A.parse_strategy("crop_blur")
    x = torch.randn(2, 3, *SIZE)
    assert torch.equal(A.per_sample(x, None, "none"), x)


def test_apply_without_host_checks_matches_skipping():
    """The GPU path (every family computed, selected per sample) gives exactly the CPU path's
    values (unused families skipped), for every mix of families, including none used."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 3, 12, 12, generator=g)
    for strategy in (A.DEFAULT_STRATEGY, "color", "crop_flip", "cutout", "none"):
        p = A.sample_params(48, (12, 12), g, strategy)
        fast = A.apply(x, p, skip_unused=False)
        assert torch.equal(fast, A.apply(x, p, skip_unused=True)), strategy
    # only crops drawn: colour and cutout are computed but must leave every image untouched there
    p = A.sample_params(48, (12, 12), g, "crop")
    assert torch.equal(A.apply(x, p, skip_unused=False), A.apply(x, p, skip_unused=True))
