"""Shared fixtures: small real data (scikit-learn digits) prepared once per session."""

from __future__ import annotations

import pytest
import torch

from distill.datasets import load_dataset
from distill.prepare import prepare


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_prep(digits):
    return prepare(digits)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(owner, name, n)``: ``owner.name`` raises KeyboardInterrupt (a Ctrl-C) on its
    n-th call and runs normally before; returns the original function."""

    def apply(owner, name, n):
        real = getattr(owner, name)
        calls = []

        def wrapper(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(owner, name, wrapper)
        return real

    return apply


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port (Debian's ``postgresql`` package;
    ``.ci/run`` installs it), with a database ``nas``; yields its SQLAlchemy URL."""
    import glob
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="the postgres extra is not installed (pip install -e '.[postgres]')")
    bindir = Path(initdb[-1]).parent
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
    folder = Path(tempfile.mkdtemp(prefix="pg-test-", dir="/tmp"))
    if as_owner:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = folder / "db"

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_owner, str(bindir / tool), *args], check=True, capture_output=True, timeout=120)

    pg("initdb", "-D", str(db), "-A", "trust", "-U", "postgres")
    pg("pg_ctl", "-D", str(db), "-l", str(folder / "log"), "-w", "-o",
       f"-p {port} -h 127.0.0.1 -k {folder}", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nas"
    finally:
        pg("pg_ctl", "-D", str(db), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)
