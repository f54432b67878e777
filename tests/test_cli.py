"""The command line: a full digits run, and one clear error line (exit 2) per bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.synset import SyntheticSet
from pipelines.run import main

ROOT = Path(__file__).resolve().parent.parent


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_distill_digits_herding_end_to_end(tmp_path, capsys):
    out = tmp_path / "x"
    code = main(["distill", "--dataset", "digits", "--method", "herding", "--ipc", "10", "--out", str(out),
                 "--set", "distill.embed_epochs=2", "--quiet"])
    assert code == 0
    s = SyntheticSet.load(out / "synset.pt")
    assert len(s.labels) == 100 and s.counts().tolist() == [10] * 10
    assert (out / "grid.png").is_file() and (out / "config.yaml").is_file()
    assert "synthetic set:" in capsys.readouterr().out
    # export round trip through the CLI
    assert main(["export", "--synset", str(out / "synset.pt"), "--format", "npz", "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e.npz").is_file()


def test_finished_distillation_is_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--iterations", "2", "--quiet",
            "--set", "distill.batch_real=8", "--set", "distill.net.width=16", "--out", str(out)]
    assert main(argv) == 0
    first = (out / "synset.pt").read_bytes()
    capsys.readouterr()
    # the same command again: nothing to do, said, and the file untouched
    assert main(argv) == 0
    assert "already finished with this config; nothing to do" in capsys.readouterr().out
    assert (out / "synset.pt").read_bytes() == first
    # another config into the same folder: refused
    code, err = _err(capsys, [*argv, "--set", "distill.loss_scale=0.5"])
    assert code == 2 and len(err) == 1 and "holds the finished results of another configuration (synset.pt)" in err[0]
    assert (out / "synset.pt").read_bytes() == first
    # --force replaces it
    assert main([*argv, "--set", "distill.loss_scale=0.5", "--force"]) == 0
    assert SyntheticSet.load(out / "synset.pt").meta["config"]["loss_scale"] == 0.5


def test_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset:\n  name: digits\ndistill:\n  method: atom\n  ipc: 1\n  iterations: 2\n"
                   "  batch_real: 8\n  net:\n    width: 16\n")
    out = tmp_path / "o"
    assert main(["distill", "--config", str(cfg), "--set", "distill.seed=3", "--out", str(out), "--quiet"]) == 0
    s = SyntheticSet.load(out / "synset.pt")
    assert s.meta["config"]["seed"] == 3 and s.meta["config"]["net"]["width"] == 16 and s.ipc == 1


@pytest.mark.parametrize("argv,pattern", [
    (["--method", "mtt"], "unknown method 'mtt'; allowed: dm, datadam, atom"),
    (["--dataset", "emnist"], "unknown dataset 'emnist'; allowed: cifar10"),
    (["--ipc", "500"], "ipc 500 is larger than class"),
    (["--set", "distill.lr=3"], "unknown config key 'distill.lr'; allowed keys under distill: preset, .*, method, ipc"),
    (["--set", "distill.ipc=ten"], "distill.ipc: expected an integer"),
    (["--set", "distill.net.norm=weird", "--iterations", "1"], "unknown norm 'weird'"),
    (["--dataset", "cifar10", "--data-root", "{tmp}/none", "--set", "dataset.download=false"],
     "cifar10 not found or incomplete under"),
    (["--dataset", "tinyimagenet", "--data-root", "{tmp}/none"], "tinyimagenet not found"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--config", "{tmp}/missing.yaml"], "config file .* does not exist"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv, pattern):
    import re

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["distill", "--dataset", "digits", "--out", str(tmp_path / "o"), "--quiet"]
    code, err = _err(capsys, base + argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(pattern, err[0]), err[0]


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("distill:\n  ipc: 10\n  method: [atom\n")
    code, err = _err(capsys, ["distill", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert code == 2 and f"{cfg}:" in err[0] and "malformed YAML" in err[0]


def test_export_rejects_non_set(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"x": 1}, bad)
    code, err = _err(capsys, ["export", "--synset", str(bad)])
    assert code == 2 and "not a synthetic-set file" in err[0]


def test_script_help_runs():
    out = subprocess.run([sys.executable, str(ROOT / "pipelines" / "run.py"), "distill", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--ipc" in out and "--out" in out and "--device" in out


def test_interruption_hint_names_the_folder_to_continue(tmp_path, capsys, monkeypatch):
    import pipelines.jobs.distill as job

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "distill", interrupted)
    monkeypatch.chdir(tmp_path)  # the made-up folder goes under ./runs
    argv = ["distill", "--dataset", "digits", "--method", "atom", "--ipc", "1", "--quiet"]
    assert main(argv) == 130
    (made,) = (tmp_path / "runs").iterdir()
    err = capsys.readouterr().err
    assert f"--out {Path('runs') / made.name}" in err and "without --out a new run folder" in err
    assert json.loads((made / "timings.json").read_text())["exit_code"] == 130
    assert main([*argv, "--out", str(tmp_path / "mine")]) == 130  # a given folder: the same command
    assert "run the same command again" in capsys.readouterr().err


def test_evaluate_trains_the_papers_20_networks_on_a_gpu_unless_told(tmp_path):
    """The device's default lies under every config file and flag (no GPU needed to check)."""
    from pipelines.common import build_config
    from pipelines.jobs.evaluate import EvaluateJobConfig, evaluation_defaults

    def models(device, config=None, sets=(), flag=None):
        job = build_config(EvaluateJobConfig, config, list(sets), {"eval.models": (flag, "--models")},
                           [(evaluation_defaults(torch.device(device)), "device")])
        return job.eval.models

    assert models("cuda") == 20 and models("cpu") == 5
    cfg = tmp_path / "e.yaml"
    cfg.write_text("eval:\n  models: 3\n")
    assert models("cuda", config=str(cfg)) == 3 and models("cuda", flag=7) == 7
    assert models("cuda", sets=["eval.models=2"]) == 2


def test_ctrl_c_before_any_checkpoint_keeps_the_work(tmp_path):
    """A real `run.py distill` process gets SIGINT at iteration N, long before its first periodic
    checkpoint: it writes a checkpoint of iteration N, says it will continue from N, exits 130;
    the same command then continues (its run record appended) and gives exactly the set of an
    uninterrupted run."""
    import re
    import signal
    import time

    common = ["distill", "--dataset", "digits", "--method", "atom", "--ipc", "2", "--set", "distill.iterations=60",
              "--set", "distill.net.width=16", "--set", "distill.batch_real=16", "--set", "distill.checkpoint_every=0",
              "--set", "distill.checkpoint_minutes=60"]
    argv = [*common, "--out", str(tmp_path / "run")]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:  # the child starts with SIGINT at its default, as from a terminal
        proc = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "run.py"), *argv], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = [int(n) for n in re.findall(r"\| (\d+)/60 ", log.read_text())]
            if done and 3 <= max(done) < 50:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    text = log.read_text()
    hint = re.search(r"interrupted; run the same command again to continue \(from iteration (\d+)\)", text)
    assert hint, text[-500:]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == int(hint.group(1)) >= 3
    assert not (tmp_path / "run" / "synset.pt").exists()

    assert main([*argv, "--quiet"]) == 0  # the same command: continues
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["exit_code"] == 0 and [a["exit_code"] for a in timings["attempts"]] == [130]
    assert (tmp_path / "run" / "run.log").read_text().count("distilling digits") == 2
    assert main([*common, "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    resumed, whole = (SyntheticSet.load(tmp_path / d / "synset.pt") for d in ("run", "whole"))
    assert torch.equal(resumed.images, whole.images)


def test_distill_keeps_snapshots_that_equal_shorter_runs(tmp_path, capsys):
    """--set distill.snapshots=[2,4]: snapshots/2 and snapshots/4 hold the sets after 2 and 4 of
    6 iterations, each equal to a run of that length; a snapshot past the end is an error."""
    common = ["distill", "--dataset", "digits", "--method", "atom", "--ipc", "2", "--set", "distill.net.width=16",
              "--set", "distill.batch_real=16", "--quiet"]
    assert main([*common, "--set", "distill.iterations=6", "--set", "distill.snapshots=[2,4]",
                 "--out", str(tmp_path / "long")]) == 0
    assert sorted(p.name for p in (tmp_path / "long" / "snapshots").iterdir()) == ["2", "4"]
    for n in (2, 4):
        assert main([*common, "--set", f"distill.iterations={n}", "--out", str(tmp_path / f"short{n}")]) == 0
        snap = SyntheticSet.load(tmp_path / "long" / "snapshots" / str(n) / "synset.pt")
        short = SyntheticSet.load(tmp_path / f"short{n}" / "synset.pt")
        assert torch.equal(snap.images, short.images) and snap.meta["iterations"] == n
    assert not torch.equal(snap.images, SyntheticSet.load(tmp_path / "long" / "synset.pt").images)
    capsys.readouterr()
    code, err = _err(capsys, [*common, "--set", "distill.iterations=3", "--set", "distill.snapshots=[5]",
                              "--out", str(tmp_path / "bad")])
    assert code == 2 and err == ["error: distill.snapshots [5] lie beyond distill.iterations (3)"]
