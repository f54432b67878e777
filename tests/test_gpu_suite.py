"""The GPU validation suite, its compile helper and the chunking rule, checked on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from distill.step import chunk_classes
from distill.nets import build_net
from distill.runtime import compiled, wants_compile

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def test_compile_modes():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [wants_compile(m, cpu) for m in ("auto", "on", "off")] == [False, True, False]
    assert [wants_compile(m, gpu) for m in ("auto", "on", "off")] == [True, True, False]


def test_compiled_falls_back_to_eager_once(monkeypatch):
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(kwargs)
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    f = lambda x: x * 3 + 1  # noqa: E731
    assert compiled(f, enabled=False) is f
    g = compiled(f, enabled=True, dynamic=False)
    x = torch.arange(5.0)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        assert torch.equal(g(x), x * 3 + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call neither retries nor warns
        assert torch.equal(g(x), x * 3 + 1)
    assert calls == [{"dynamic": False}]


@pytest.mark.parametrize("images, k, per_class, device, want", [
    (4096, 100, 128, "cuda", 25),  # 32 fit; 25 divides 100: four equal passes
    (512, 100, 20, "cuda", 25),    # 25 fit and divide
    (512, 10, 50, "cuda", 10),     # all ten classes of IPC 50 in one pass
    (None, 10, 64, "cpu", 2),      # CPU default 128 images
    (None, 10, 50, "cuda", 10),    # GPU default given by auto_gpu=512
    (5 * 8, 7, 8, "cpu", 5),       # 5 fit; the only divisor of 7 below is 1 (< half): uneven passes
    (12 * 8, 20, 8, "cpu", 10),    # 12 fit; 10 divides 20 and is at least half: equal passes
    (8, 10, 64, "cpu", 1),         # fewer images than one class: one class per pass
])
def test_chunk_classes(images, k, per_class, device, want):
    net = build_net("convnet", 3, k, (8, 8), depth=1, norm="instancenorm")
    assert chunk_classes(images, net, k, per_class, torch.device(device), auto_gpu=512) == want


def test_chunk_classes_keeps_batchnorm_classes_together():
    net = build_net("convnet", 3, 10, (8, 8), depth=1, norm="batchnorm")
    assert chunk_classes(16, net, 10, 64, torch.device("cpu"), auto_gpu=512) == 10


def test_suite_rejects_bad_input(tmp_path):
    for argv, msg in ((["--parts", "distill,speed"], "unknown part 'speed'"),
                      (["--device", "tpu"], "unknown device 'tpu'")):
        r = subprocess.run([sys.executable, str(SUITE), *argv, "--out", str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: {msg}"), r.stderr


def test_smoke_without_out_leaves_the_checkout_clean(tmp_path):
    """The default check (two parts, no --out): the report goes to a temporary folder it names,
    and ``git status`` is the same before and after."""
    def status():
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True,
                              text=True, cwd=ROOT).stdout

    before = status()
    r = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", "--smoke", "--parts", "distill"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = Path(r.stdout.strip().splitlines()[-1].split("report: ")[1].split(",")[0])
    assert report.is_file() and not report.is_relative_to(ROOT) and "## Distillation step" in report.read_text()
    assert status() == before


@pytest.mark.slow
def test_suite_smoke_runs_every_part_on_cpu(tmp_path):
    """``--device cpu --smoke``: every part runs, the end-to-end CLI stages on fabricated CIFAR
    archives all exit 0, and the report and raw json are written."""
    r = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert res["failures"] == {}
    assert {"distill", "evaluate", "protocol", "e2e", "profile"} <= set(res)
    ran = [row for row in res["e2e"]["rows"] if row["exit"] is not None]
    assert len(ran) >= 6 and all(row["exit"] == 0 for row in ran), ran
    d = res["distill"]
    assert all(row["ours_ms"] > 0 and row["reference_ms"] > 0 for row in d["rows"])
    # channels_last computes the same function (float rounding only); bf16 does not
    by = {v["variant"]: v for v in d["variants"]}
    assert by["eager + channels_last"]["grad_rel_diff"] < 1e-4
    assert by["one pass for all (chunk 4096, syn_chunk 4096)"]["grad_rel_diff"] < 1e-4
    assert res["evaluate"]["rows"][0]["ensembled_s_per_epoch"] > 0
    assert res["protocol"]["continual"]["ours_min"] > 0 and res["protocol"]["nas"]["whole_min"] > 0
    md = (tmp_path / "gpu_suite.md").read_text()
    for heading in ("## Distillation step", "## Evaluation", "## Full protocols", "## End to end", "## Profile"):
        assert heading in md


def test_compiled_function_keeps_compiling_past_eight_shapes():
    """Every new static shape gets its own graph (here 10 shapes, beyond the compiler's default
    limit of 8), and the compiler's setting is the same after the calls as before."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    before = getattr(config, name)
    counters.clear()
    f = compiled(lambda x: (x * 2).sum(dim=0), enabled=True, dynamic=False)
    for n in range(1, 11):
        x = torch.arange(float(n * 3)).reshape(n, 3)
        assert torch.equal(f(x), (x * 2).sum(dim=0))
    assert counters["stats"]["unique_graphs"] == 10
    assert getattr(config, name) == before
    torch._dynamo.reset()
