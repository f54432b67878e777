"""M3D's kernel MMD against a by-hand transcription of the estimate, its two limits (a linear
kernel and very wide Gaussians give DM's loss), and a distillation that learns."""

from __future__ import annotations

import math

import pytest
import torch

from distill.loop import distill
from distill.methods import get_method
from distill.methods.m3d import mmd2
from distill.errors import UserError
from distill.settings import NetConfig, SetConfig, resolve


def by_hand_mmd2(x: list[list[float]], y: list[list[float]], widths: list[float]) -> float:
    """sum_w s * [mean k(x,x') + mean k(y,y') - 2 mean k(x,y)], k = exp(-d^2 / 2s), s = w * median
    of the squared distances between distinct x's."""
    def d2(a, b):
        return sum((u - v) ** 2 for u, v in zip(a, b))

    pairs = sorted(d2(x[i], x[j]) for i in range(len(x)) for j in range(len(x)) if i != j)
    n = len(pairs)
    median = pairs[(n - 1) // 2]  # torch's median: the lower of the two middle values
    total = 0.0
    for w in widths:
        s = w * median

        def k(a, b):
            return math.exp(-d2(a, b) / (2 * s))

        kxx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
        kyy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
        kxy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
        total += s * (kxx + kyy - 2 * kxy)
    return total


def test_gaussian_mmd_equals_the_written_out_estimate():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 6, 4, generator=g).double(), torch.randn(2, 3, 4, generator=g).double() + 0.5
    got = mmd2(x, y, "gaussian", [0.5, 1.0, 2.0])
    for c in range(2):
        assert got[c].item() == pytest.approx(by_hand_mmd2(x[c].tolist(), y[c].tolist(), [0.5, 1.0, 2.0]), rel=1e-9)


def test_linear_kernel_and_wide_gaussians_give_dms_loss():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 8, 5, generator=g).double(), torch.randn(3, 4, 5, generator=g).double()
    dm = ((x.mean(1) - y.mean(1)) ** 2).sum(1)
    assert torch.allclose(mmd2(x, y, "linear", []), dm, atol=1e-12)
    assert torch.allclose(mmd2(x, y, "gaussian", [1e6]), dm, rtol=1e-4)


def test_m3d_defaults_checks_and_learning(digits_prep):
    cfg = resolve(SetConfig(method="m3d", ipc=2, iterations=40, batch_real=16, net=NetConfig(width=16)), 16, "digits")
    assert cfg.params == {"mmd_kernel": "gaussian", "mmd_bandwidths": [0.5, 1.0, 2.0], "loss_scale": 1.0}
    assert (resolve(SetConfig(method="m3d"), 32).iterations, resolve(SetConfig(method="m3d"), 32).batch_real) == (20000, 256)
    assert "layers" not in get_method("m3d").reads and "factor" in get_method("m3d").reads
    for bad, msg in (({"mmd_bandwidths": [1.0, -2.0]}, "must be a non-empty list of positive numbers"),
                     ({"mmd_bandwidths": []}, "must be a non-empty list"),
                     ({"mmd_kernel": "laplace"}, "unknown distill.mmd_kernel 'laplace'")):
        with pytest.raises(UserError, match=msg):
            resolve(SetConfig(method="m3d", params=bad), 16, "digits")
    s = distill(digits_prep, cfg, progress=False)
    losses = torch.tensor(s.meta["losses"])
    assert losses[-10:].mean() < 0.9 * losses[:10].mean()
