"""Multi-formation (IDC): the decode against a by-hand split and bilinear interpolation, IDC's mix
initialisation, the file contract, and a factor-2 set through every job of the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from distill.multiformation import check_factor, decode, decode_labels, mix
from distill.errors import UserError
from distill.synset import SyntheticSet
from pipelines.run import main


def bilinear(img: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Bilinear resize written out (half-pixel centres, edge clamped: align_corners=False)."""
    c, h, w = img.shape
    out = torch.empty(c, out_h, out_w, dtype=torch.float64)
    for i in range(out_h):
        for j in range(out_w):
            y = max((i + 0.5) * h / out_h - 0.5, 0.0)
            x = max((j + 0.5) * w / out_w - 0.5, 0.0)
            y0, x0 = min(int(math.floor(y)), h - 1), min(int(math.floor(x)), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[:, i, j] = ((1 - dy) * (1 - dx) * img[:, y0, x0] + (1 - dy) * dx * img[:, y0, x1]
                            + dy * (1 - dx) * img[:, y1, x0] + dy * dx * img[:, y1, x1])
    return out


@pytest.mark.parametrize("factor,size", [(2, 8), (3, 9), (2, 6)])
def test_decode_is_a_split_then_bilinear_upsampling(factor, size):
    x = torch.randn(3, 2, size, size, generator=torch.Generator().manual_seed(factor)).double()
    got = decode(x, factor)
    assert got.shape == (3 * factor * factor, 2, size, size)
    p = size // factor
    for t in range(3):
        for i in range(factor):
            for j in range(factor):
                patch = x[t, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
                want = bilinear(patch, size, size)
                assert torch.allclose(got[t * factor * factor + i * factor + j], want, atol=1e-10), (t, i, j)
    assert decode_labels(torch.tensor([4, 7]), factor).tolist() == [4] * factor ** 2 + [7] * factor ** 2
    assert decode(x, 1) is x


def test_gradients_reach_the_stored_images():
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    decode(x, 2).pow(2).sum().backward()
    assert x.grad is not None and bool((x.grad != 0).all())


def test_mix_puts_factor_squared_nearest_shrunk_images_into_each_stored_one():
    real = torch.arange(8 * 2 * 8 * 8, dtype=torch.float32).view(8, 2, 8, 8)
    stored = mix(real, 2)
    assert stored.shape == (2, 2, 8, 8)
    for t in range(2):
        for i in range(2):
            for j in range(2):  # source t*4 + i*2 + j, every second pixel (nearest neighbour at scale 1/2)
                assert torch.equal(stored[t, :, i * 4:(i + 1) * 4, j * 4:(j + 1) * 4], real[t * 4 + i * 2 + j, :, ::2, ::2])
    with pytest.raises(UserError, match="does not divide the image size 8x8"):
        check_factor(3, 8, 8)
    with pytest.raises(UserError, match="positive integer"):
        check_factor(0, 8, 8)


def test_file_stores_the_compact_images_and_the_factor(tmp_path, digits_prep):
    idx = torch.cat([torch.nonzero(digits_prep.data.train_y == c).flatten()[:2] for c in range(10)])
    s = SyntheticSet(digits_prep.train_x[idx], digits_prep.data.train_y[idx], list(digits_prep.data.classes),
                     digits_prep.preprocess, {"dataset": "digits"}, factor=2)
    s.save(tmp_path / "s.pt")
    blob = torch.load(tmp_path / "s.pt", weights_only=True)
    assert blob["factor"] == 2 and blob["version"] == 2 and blob["images"].shape == (20, 1, 16, 16)
    back = SyntheticSet.load(tmp_path / "s.pt")
    x, y = back.decoded()
    assert back.factor == 2 and x.shape == (80, 1, 16, 16) and torch.equal(y, decode_labels(s.labels, 2))
    plain = SyntheticSet(s.images, s.labels, s.class_names, s.preprocess, {})
    plain.save(tmp_path / "p.pt")
    assert "factor" not in torch.load(tmp_path / "p.pt", weights_only=True)  # files without it: factor 1
    assert SyntheticSet.load(tmp_path / "p.pt").factor == 1 and torch.load(tmp_path / "p.pt", weights_only=True)["version"] == 1
    blob["factor"] = 3  # 16 px cannot be split in 3
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="factor 3 does not divide the image size 16x16"):
        SyntheticSet.load(tmp_path / "bad.pt")


def test_a_factor_2_set_through_every_job(tmp_path, capsys):
    """distill at factor 2, then evaluate, export, continual (as a memory) and nas (as a proxy):
    each trains on the decoded images."""
    base = ["--quiet", "--set", "distill.batch_real=8", "--set", "distill.net.width=8"]
    out = tmp_path / "d"
    assert main(["distill", "--dataset", "digits", "--method", "dm", "--ipc", "2", "--iterations", "2", "--out", str(out),
                 "--set", "distill.factor=2", "--set", "dataset.resolution=8", *base]) == 0
    s = SyntheticSet.load(out / "synset.pt")
    assert s.factor == 2 and s.images.shape == (20, 1, 8, 8) and s.meta["config"]["factor"] == 2
    assert main(["evaluate", "--baseline", "none", "--synset", str(out / "synset.pt"), "--models", "1", "--epochs", "1", "--quiet"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["rows"][0]["models"] == 1
    assert main(["export", "--synset", str(out / "synset.pt"), "--format", "npz", "--out", str(tmp_path / "e")]) == 0
    import numpy as np

    npz = np.load(tmp_path / "e.npz")
    assert npz["images"].shape == (80, 1, 8, 8) and npz["labels"].tolist() == s.decoded()[1].tolist()
    assert main(["continual", "--dataset", "digits", "--steps", "2", "--ipc", "2", "--orders", "0", "--epochs", "1",
                 "--memories", str(out / "synset.pt"), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "cl"),
                 "--quiet"]) == 0
    assert len(json.loads((tmp_path / "cl" / "continual.json").read_text())["rows"][0]["steps"]) == 2
    assert main(["nas", "--dataset", "digits", "--space", "tiny", "--proxy", str(out / "synset.pt"), "--proxy-epochs", "1",
                 "--whole-epochs", "1", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "n"), "--quiet",
                 "--set", "dataset.resolution=8"]) == 0
    rows = json.loads((tmp_path / "n" / "nas.json").read_text())["rows"]
    assert next(r for r in rows if r["proxy"] == "d")["images"] == 80  # trained on the decoded images
