"""Matching terms against loop-based transcriptions of the papers' equations."""

import pytest
import torch

from distill.matching import (MatchWeights, channel_attention, class_means, l2_normalize, matching_loss,
                              spatial_attention)


def loop_spatial(f, p):
    b, c, h, w = f.shape
    out = torch.zeros(b, h * w, dtype=f.dtype)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                out[i, y * w + x] = sum(abs(float(f[i, ch, y, x])) ** p for ch in range(c))
    return out


def loop_channel(f, p):
    b, c, h, w = f.shape
    out = torch.zeros(b, c, dtype=f.dtype)
    for i in range(b):
        for ch in range(c):
            out[i, ch] = sum(abs(float(f[i, ch, y, x])) ** p for y in range(h) for x in range(w))
    return out


def loop_normalize(z):
    return torch.stack([row / max(float(sum(v * v for v in row)) ** 0.5, 1e-12) for row in z])


def loop_class_distance(zr, zs, k):
    br, bs = len(zr) // k, len(zs) // k
    out = []
    for c in range(k):
        mr = sum(zr[c * br + i] for i in range(br)) / br
        ms = sum(zs[c * bs + i] for i in range(bs)) / bs
        out.append(float(sum((mr[d] - ms[d]) ** 2 for d in range(len(mr)))))
    return torch.tensor(out, dtype=zr.dtype)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 4.0])
def test_attention_maps(p):
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(int(p)), dtype=torch.float64)
    assert torch.allclose(spatial_attention(f, p), loop_spatial(f, p))
    assert torch.allclose(channel_attention(f, p), loop_channel(f, p))


def test_normalize_and_class_distance():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 7, generator=g, dtype=torch.float64)
    assert torch.allclose(l2_normalize(z), loop_normalize(z))
    zs = torch.randn(4, 7, generator=g, dtype=torch.float64)
    diff = class_means(z, 2) - class_means(zs, 2)
    assert torch.allclose((diff ** 2).sum(1), loop_class_distance(z, zs, 2))


def _feats(k, b, seed):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(k * b, 4, 6, 6, generator=g, dtype=torch.float64),
             torch.randn(k * b, 4, 3, 3, generator=g, dtype=torch.float64),
             torch.randn(k * b, 4, 2, 2, generator=g, dtype=torch.float64)]
    return feats, torch.randn(k * b, 8, generator=g, dtype=torch.float64)


def loop_loss(fr, er, fs, es, k, w):
    """The paper's total written out class by class, layer by layer."""
    total = 0.0
    br, bs = len(er) // k, len(es) // k
    for c in range(k):
        r = slice(c * br, (c + 1) * br)
        s = slice(c * bs, (c + 1) * bs)
        for l in range(len(fr) - 1):
            for name, p in w.maps:
                loop = {"spatial": loop_spatial, "channel": loop_channel}[name]
                total += float(loop_class_distance(loop_normalize(loop(fr[l][r], p)),
                                                   loop_normalize(loop(fs[l][s], p)), 1)[0])
        total += w.last_weight * float(loop_class_distance(er[r], es[s], 1)[0])
    return w.scale * total


@pytest.mark.parametrize("w", [
    MatchWeights(maps=(), last_weight=1.0),  # dm
    MatchWeights(maps=(("spatial", 4.0),), last_weight=0.01),  # datadam
    MatchWeights(maps=(("spatial", 4.0), ("channel", 4.0)), last_weight=0.01),  # atom
    MatchWeights(maps=(("channel", 8.0),), last_weight=0.02),  # atom_channel
    MatchWeights(maps=(("spatial", 1.0), ("channel", 8.0)), last_weight=0.01, scale=100.0),
])
def test_batched_loss_equals_per_class_loops(w):
    k = 3
    fr, er = _feats(k, 4, 1)
    fs, es = _feats(k, 2, 2)
    loss, parts = matching_loss(fr, er, fs, es, k, w)
    assert loss.item() == pytest.approx(loop_loss(fr, er, fs, es, k, w), rel=1e-9)
    # and the one-pass total equals the sum of one-class-at-a-time calls
    per_class = sum(
        matching_loss([f[c * 4:(c + 1) * 4] for f in fr], er[c * 4:(c + 1) * 4],
                      [f[c * 2:(c + 1) * 2] for f in fs], es[c * 2:(c + 1) * 2], 1, w)[0]
        for c in range(k))
    assert loss.item() == pytest.approx(per_class.item(), rel=1e-12)
    assert all(v.shape == (k,) for v in parts.values())


def test_layer_selection():
    fr, er = _feats(2, 3, 3)
    fs, es = _feats(2, 3, 4)
    w_all = MatchWeights(maps=(("spatial", 4.0),), last_weight=0.0, layers=(0, 1, 2))
    w_last = MatchWeights(maps=(("spatial", 4.0),), last_weight=0.0, layers=(2,))
    w_def = MatchWeights(maps=(("spatial", 4.0),), last_weight=0.0)
    a, b, d = (matching_loss(fr, er, fs, es, 2, w)[0] for w in (w_all, w_last, w_def))
    assert a.item() == pytest.approx(b.item() + d.item())
