"""SyntheticSet: save/load/export round trips, plain-torch loading, rejection of bad files."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from distill.errors import UserError
from distill.preprocess import Preprocess
from distill.synset import FORMAT, SyntheticSet


def _set(zca: bool = True, k=3, ipc=2, c=3, s=4):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(200, c, s, s, generator=g)
    pre = Preprocess.fit(pixels, (0.5,) * c, (0.25,) * c, zca=zca)
    imgs = pre(torch.rand(k * ipc, c, s, s, generator=g))
    labels = torch.arange(k).repeat_interleave(ipc)
    return SyntheticSet(imgs, labels, [f"c{i}" for i in range(k)], pre, {"method": "atom", "ipc": ipc})


def test_save_load_round_trip(tmp_path):
    s = _set()
    s.save(tmp_path / "a.pt")
    t = SyntheticSet.load(tmp_path / "a.pt")
    assert torch.equal(t.images, s.images) and torch.equal(t.labels, s.labels)
    assert t.class_names == s.class_names and t.ipc == 2 and t.meta["method"] == "atom"
    assert "versions" in t.meta and "created" in t.meta
    assert torch.allclose(t.to_pixels(), s.to_pixels())
    assert torch.equal(t.class_images(1), s.images[2:4])
    assert t.subset([0, 2]).labels.tolist() == [0, 0, 2, 2]


def test_plain_torch_loading_without_package(tmp_path):
    """The README's recipe: weights_only load, invert ZCA and normalisation by hand."""
    s = _set()
    s.save(tmp_path / "a.pt")
    blob = torch.load(tmp_path / "a.pt", weights_only=True)
    assert blob["format"] == FORMAT
    x, pre = blob["images"], blob["preprocess"]
    flat = x.flatten(1) @ pre["zca_inverse"] + pre["zca_mean"]
    pix = flat.view_as(x) * pre["std"].view(1, -1, 1, 1) + pre["mean"].view(1, -1, 1, 1)
    assert torch.allclose(pix.clamp(0, 1), s.to_pixels(), atol=1e-5)


def test_npz_and_png_exports(tmp_path):
    s = _set(zca=False, c=1)
    s.export_npz(tmp_path / "a.npz")
    z = np.load(tmp_path / "a.npz")
    assert np.allclose(z["images"], s.images.numpy())
    assert z["labels"].tolist() == s.labels.tolist()
    assert list(z["class_names"]) == s.class_names
    pix = (s.to_pixels() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(z["pixels"], pix)
    s.export_png(tmp_path / "png")
    folders = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert folders == ["000_c0", "001_c1", "002_c2"]
    img = np.asarray(Image.open(tmp_path / "png" / "001_c1" / "0001.png"))
    assert np.array_equal(img, pix[3, :, :, 0])
    grid = Image.open(s.save_grid(tmp_path / "grid.png"))
    assert grid.size[0] >= 480 and grid.size[1] > 3 * 40  # titled, every class a row of blocks


def test_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SyntheticSet.load(tmp_path / "missing.pt")
    torch.save({"images": torch.zeros(1)}, tmp_path / "keys.pt")
    with pytest.raises(UserError, match="missing keys"):
        SyntheticSet.load(tmp_path / "keys.pt")
    state = _set().state()
    torch.save({**state, "labels": torch.tensor([0, 1, 2, 3, 4, 9])}, tmp_path / "lab.pt")
    with pytest.raises(UserError, match=r"labels must lie in \[0, 3\)"):
        SyntheticSet.load(tmp_path / "lab.pt")
    torch.save({**state, "labels": torch.tensor([0, 1])}, tmp_path / "n.pt")
    with pytest.raises(UserError, match="6 images but 2 labels"):
        SyntheticSet.load(tmp_path / "n.pt")
    torch.save({**state, "images": torch.zeros(6, 4, 4)}, tmp_path / "shape.pt")
    with pytest.raises(UserError, match=r"\[N, C, H, W\]"):
        SyntheticSet.load(tmp_path / "shape.pt")
    torch.save({**state, "format": "other"}, tmp_path / "fmt.pt")
    with pytest.raises(UserError, match="format"):
        SyntheticSet.load(tmp_path / "fmt.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_never_executes_code_from_a_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Evil()}, path)
    with pytest.raises(UserError, match="only running code could rebuild") as err:
        SyntheticSet.load(path)
    assert "weights_only" not in str(err.value) and "False" not in str(err.value)  # torch's unsafe advice: never
    assert SyntheticSet.load.__doc__ and "never runs code" in SyntheticSet.load.__doc__
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError):
        SyntheticSet.load(path)


@pytest.mark.parametrize("classes, ipc, size", [(10, 1, 28), (10, 10, 28), (100, 1, 32), (100, 10, 32),
                                                (10, 20, 8), (200, 50, 64), (3, 1, 8)])
def test_grid_layout_is_readable_at_every_ipc(classes, ipc, size):
    """Every class has a block of the same number of images (all of them, or the stated first
    ones), images are at least 40 screen pixels, and the picture is neither a strip nor a tower."""
    from distill.grid import MAX_IMAGES, layout, shown

    lay = layout(classes, ipc, size)
    assert lay.per == max(1, min(ipc, 10, MAX_IMAGES // classes))
    assert lay.cols * lay.rows >= classes > (lay.rows - 1) * lay.cols  # no empty row of blocks
    assert lay.per_row * lay.block_rows >= lay.per and lay.cell >= 40 and lay.cell % size == 0
    w, h = lay.size
    if classes >= 10:
        assert 0.5 <= w / h <= 2.5, (w, h)
    assert ("per class shown" in shown("t", lay.per, ipc)) == (lay.per < ipc)


def test_grid_mosaic_puts_each_class_in_its_block():
    from distill.grid import GAP, LABEL, PAD, layout, mosaic

    k, ipc, size = 7, 3, 8
    pix = torch.rand(k * ipc, 1, size, size, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(k).repeat_interleave(ipc)
    lay = layout(k, ipc, size)
    img = mosaic(pix, labels, k, lay)
    assert img.shape == (lay.size[1], lay.size[0], 3)
    for c in range(k):
        for i in range(ipc):  # brute force: where image i of class c must be, enlarged, grey in every channel
            bx = (c % lay.cols) * (lay.per_row * (lay.cell + PAD) - PAD + GAP)
            by = (c // lay.cols) * (LABEL + lay.block_rows * (lay.cell + PAD) - PAD + GAP) + LABEL
            x, y = bx + (i % lay.per_row) * (lay.cell + PAD), by + (i // lay.per_row) * (lay.cell + PAD)
            want = pix[c * ipc + i, 0].numpy().repeat(lay.scale, 0).repeat(lay.scale, 1)
            for ch in range(3):
                assert np.array_equal(img[y : y + lay.cell, x : x + lay.cell, ch], want)


def test_grid_title_names_the_set():
    from distill.grid import describe

    assert describe({"dataset": "fashionmnist", "method": "atom", "iterations": 500}, 1, 10) == \
        "fashionmnist · atom · IPC 10 · 500 iterations"
    assert describe({"dataset": "digits", "method": "herding", "iterations": 0}, 1, 5) == "digits · herding · IPC 5"
    assert "multi-formation factor 2 (4 images in each)" in describe({"method": "dm", "dataset": "x"}, 2, 1)
