"""Structure the code must keep: the core imports no pipeline library, and the documents the
code cites are in the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("distill", "continual", "nas", "pipelines", "benchmarks")


def test_core_imports_no_pipeline_library():
    """Importing every ``distill`` module loads none of avalanche, optuna, continual, nas or
    pipelines (the GPU machine and other code may use the core without them)."""
    probe = (
        "import importlib, pkgutil, sys\n"
        "import distill\n"
        "names = [m.name for m in pkgutil.iter_modules(distill.__path__)]\n"
        "for n in names: importlib.import_module('distill.' + n)\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'avalanche', 'optuna', 'continual', 'nas', 'pipelines'})\n"
        "print(len(names), ','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    count, bad = r.stdout.split()[0], r.stdout.strip().partition(" ")[2]
    assert int(count) >= 10 and bad == "", f"distill imports {bad}"


def _code_files():
    for d in CODE_DIRS:
        for path in (ROOT / d).rglob("*"):
            if path.suffix in (".py", ".yaml", ".md") and path.is_file():
                yield path
    yield ROOT / "README.md"


def test_cited_protocol_sections_exist():
    """Every ``docs/protocols.md section N`` cited in code or docs names a section of that file,
    and no file cites the notes that live outside the repository."""
    doc = (ROOT / "docs" / "protocols.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", doc, flags=re.M)}
    cited = 0
    for path in _code_files():
        text = path.read_text()
        assert "PROTOCOLS.md" not in text, f"{path} cites a file outside the repository"
        for n in re.findall(r"docs/protocols\.md\s+section (\d+)", text):
            assert int(n) in sections, f"{path} cites section {n}; docs/protocols.md has {sorted(sections)}"
            cited += 1
    assert cited >= 15
