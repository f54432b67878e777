"""scikit-learn's bundled 8x8 digits (1,797 real images, offline): split 70/30 per class with a
fixed seed, upsampled to 16x16 by default so every network of the NAS grid (depth 4 with
pooling) fits; ``resolution=8`` keeps the native size.

Its ``quick`` defaults make every job finish in minutes on a CPU (docs/protocols.md section 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import ImageData
from . import DatasetDef, register

TEST_FRACTION = 0.3
SPLIT_SEED = 0


def load_digits(resolution: int) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8] in [0,1]
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):  # stratified: the same fraction of every class goes to test
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_mask[idx[: round(TEST_FRACTION * len(idx))]] = True
    train_x, test_x = x[~test_mask], x[test_mask]
    pix = train_x.float() / 255
    return ImageData(
        name="digits",
        train_x=train_x,
        train_y=y[~test_mask],
        test_x=test_x,
        test_y=y[test_mask],
        classes=tuple(str(c) for c in range(10)),
        mean=(round(pix.mean().item(), 4),),
        std=(round(pix.std().item(), 4),),
    )


register(DatasetDef(
    "digits", lambda _root, res, _download: load_digits(res), resolution=16, resizable=True,
    quick={
        "distill": {"iterations": 300, "batch_real": 64},  # fewer, smaller iterations
        "eval": {"epochs": 300},
        # native 8x8 images, fewer orders, models and epochs
        "continual": {"orders": [0, 1, 2], "models": 1, "epochs": 150, "resolution": 8,
                      "memories": ["random", "herding", "dm", "datadam"]},
        # shorter trainings; images at the smallest size the space fits (nas.config.quick_resolution)
        "nas": {"proxy_epochs": 100, "whole_epochs": 50},
    }))
