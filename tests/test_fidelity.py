"""The full-length table's sittings (benchmarks/fidelity.py), on the CPU with random images in
Fashion-MNIST's idx layout: each cell through the product's own ``reproduce`` in its own OS
process, the deadline's SIGTERM checkpointing a running cell, and the state archive carrying
finished and stopped cells to the next sitting in a fresh cache."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import fidelity  # noqa: E402
from distill.fixtures import write_mnist  # noqa: E402

SUITE = ROOT / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_mnist(root, train=2000, test=1000, seed=3, gz=True)
    return root


def sitting(idx_root: Path, out: Path, state: Path | None, minutes: float, extra: list[str] | None = None) -> dict:
    return fidelity.run_fidelity(device="cpu", data_root=idx_root, out=out, minutes=minutes, jobs=1, budget="smoke",
                                 state=state, models=1, cells=[("atom", 1)], extra=extra, threads=1, grace=60)


def test_a_finished_cell_is_reproduce_itself_and_the_next_sitting_reuses_it(idx_root, tmp_path):
    first = sitting(idx_root, tmp_path / "one", None, minutes=5)
    row = first["rows"][0]
    assert row["status"] == "done" and first["summary"]["finished"] == 1
    # the same cell through the command line directly, in another cache: the same accuracy
    direct = tmp_path / "direct"
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "run.py"), "reproduce", "--table", "fashionmnist",
                        "--budget", "smoke", "--methods", "atom", "--ipc", "1", "--sets", "1", "--models", "1",
                        "--data-root", str(idx_root), "--cache", str(tmp_path / "cache2"), "--out", str(direct),
                        "--device", "cpu", "--threads", "1", "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    want = json.loads((direct / "reproduce.json").read_text())["cells"]["atom_ipc1"]
    assert row["accuracies"] == want["accuracies"] and row["iterations"] == want["iterations"]
    # the next sitting, from the archive alone, computes nothing
    second = sitting(idx_root, tmp_path / "two", tmp_path / "one" / "fidelity_state.tar.gz", minutes=5)
    again = second["rows"][0]
    assert again["status"] == "reused" and again["accuracies"] == row["accuracies"]
    assert "[cached]" in (tmp_path / "two" / "fidelity.log").read_text()
    md = (tmp_path / "two" / "fidelity.md").read_text()
    assert "done in an earlier sitting" in md and "1 set x 1 ConvNet" in md


def test_the_deadline_checkpoints_a_running_cell_and_the_next_sitting_continues_it(idx_root, tmp_path):
    long = [f"distill.iterations={4000 * 100000}"]  # 100,000 iterations at the smoke budget: never finishes
    first = sitting(idx_root, tmp_path / "one", None, minutes=0.35, extra=long)
    row = first["rows"][0]
    assert row["status"] == "stopped" and row["stopped_at"] >= 1, (tmp_path / "one" / "fidelity.log").read_text()
    assert row["state"] == f"stopped at iteration {row['stopped_at']} of 100000"
    with tarfile.open(tmp_path / "one" / "fidelity_state.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("sets/") and n.endswith("/checkpoint.pt") for n in names)
    assert not any(n.endswith(".lock") for n in names)

    second = sitting(idx_root, tmp_path / "two", tmp_path / "one" / "fidelity_state.tar.gz", minutes=0.35, extra=long)
    log = (tmp_path / "two" / "fidelity.log").read_text()
    assert f"continuing from its checkpoint at iteration {row['stopped_at']} of 100000" in log
    assert second["rows"][0]["status"] == "stopped" and second["rows"][0]["stopped_at"] > row["stopped_at"], log


def _archive(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, 0 if kind != tarfile.REGTYPE else 4
        tar.addfile(info, io.BytesIO(b"data") if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("name, kind, link", [
    ("elsewhere/x.pt", tarfile.REGTYPE, ""),             # outside the two stages
    ("sets/../../escape.pt", tarfile.REGTYPE, ""),        # out of the cache through ..
    ("sets/a/link", tarfile.SYMTYPE, "/etc/passwd"),     # a link
])
def test_a_foreign_state_archive_is_refused_before_any_work(tmp_path, name, kind, link):
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(ValueError, match="state archive"):
        fidelity.unpack_state(_archive(tmp_path / "s.tar.gz", name, kind, link), cache)
    assert list(cache.iterdir()) == [] and not (tmp_path / "escape.pt").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--parts", "fidelity"], "the fidelity part needs --data-root"),
    (["--parts", "fidelity", "--smoke", "--cells", "atom:3"], "table fashionmnist has no IPC 3"),
    (["--parts", "fidelity", "--smoke", "--cells", "atom"], "cell 'atom' is not LABEL:IPC"),
    (["--parts", "fidelity", "--smoke", "--minutes", "0"], "--minutes must be above 0"),
    (["--parts", "fidelity", "--smoke", "--state", "README.md"], "--state README.md is not a gzipped tar archive"),
    (["--parts", "fidelity", "--smoke", "--state", "no/such.tar.gz"], "--state no/such.tar.gz does not exist"),
    (["--parts", "fidelity", "--smoke", "--state", "FOREIGN"], "state archive FOREIGN holds 'elsewhere/x.pt'"),
])
def test_the_suite_refuses_bad_fidelity_options(tmp_path, argv, msg):
    foreign = _archive(tmp_path.parent / f"{tmp_path.name}-foreign.tar.gz", "elsewhere/x.pt")
    argv = [str(foreign) if a == "FOREIGN" else a for a in argv]
    msg = msg.replace("FOREIGN", str(foreign))
    r = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", *argv, "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: {msg}"), r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_cell_the_command_refuses_is_reported_failed_with_its_error_line(idx_root, tmp_path):
    res = sitting(idx_root, tmp_path, None, minutes=2, extra=["distill.momentum=2"])
    row = res["rows"][0]
    assert row["status"] == "failed" and res["summary"]["failed"] == 1
    assert row["state"].startswith("failed (exit 2): error: ") and "momentum" in row["state"], row["state"]
