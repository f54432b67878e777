"""Atomic result files: a failed write leaves the previous file and no temporary behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.files import atomic_save, atomic_text, atomic_write


def test_atomic_text_and_save_round_trip(tmp_path):
    p = atomic_text(tmp_path / "sub" / "a.json", '{"x": 1}')
    assert p.read_text() == '{"x": 1}'
    q = atomic_save({"t": torch.arange(3)}, tmp_path / "b.pt")
    assert torch.equal(torch.load(q, weights_only=True)["t"], torch.arange(3))
    assert sorted(f.name for f in tmp_path.rglob("*") if f.is_file()) == ["a.json", "b.pt"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = atomic_text(tmp_path / "r.json", "old")

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # an interruption in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_exports_keep_their_names(tmp_path, digits_prep):
    """Writers that infer a format from the file name (numpy's .npz, PNG grids) still produce the
    named file although they write to a temporary first."""
    from distill.selection import select
    from distill.settings import SetConfig, resolve

    cfg = resolve(SetConfig(method="random", ipc=2), 8, "digits")
    synset = select(digits_prep, cfg)
    npz = synset.export_npz(tmp_path / "set.npz")
    grid = synset.save_grid(tmp_path / "grid.png")
    assert npz.name == "set.npz" and np.load(npz)["labels"].tolist() == synset.labels.tolist()
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["grid.png", "set.npz"]
