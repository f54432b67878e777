"""Every bad input is one ``error:`` line and exit status 2, before any long work: one row per
case, so the number of cases handled cleanly is a count we can track (see the README)."""

from __future__ import annotations

import re

import pytest
import torch

from distill.synset import SyntheticSet
from pipelines.run import main

DISTILL = ["distill", "--dataset", "digits", "--iterations", "1", "--quiet"]
EVALUATE = ["evaluate", "--quiet"]  # --synset added per row
CONTINUAL = ["continual", "--dataset", "digits", "--quiet"]
REPRODUCE = ["reproduce", "--table", "fashionmnist", "--budget", "smoke", "--data-root", "no-such-folder", "--quiet"]
NAS = ["nas", "--dataset", "digits", "--space", "tiny", "--proxy", "random_ipc2", "--quiet"]

CASES = [
    # (job, extra argv, pattern of the one error line)
    (DISTILL, ["--set", "distill.lr_img=-1"], r"distill\.lr_img must be > 0, got -1"),
    (DISTILL, ["--set", "distill.momentum=-1"], r"distill\.momentum must be >= 0"),
    (DISTILL, ["--set", "distill.momentum=1.5"], r"distill\.momentum must be < 1"),
    (DISTILL, ["--set", "distill.lam=.nan"], r"distill\.lam must be a finite number"),
    (DISTILL, ["--set", "distill.loss_scale=.inf"], r"distill\.loss_scale must be a finite number"),
    (DISTILL, ["--set", "distill.loss_scale=0"], r"distill\.loss_scale must be > 0"),
    (DISTILL, ["--set", "distill.p_spatial=0"], r"distill\.p_spatial must be > 0"),
    (DISTILL, ["--set", "distill.chunk=0"], r"distill\.chunk must be >= 1"),
    (DISTILL, ["--set", "distill.syn_chunk=-4"], r"distill\.syn_chunk must be >= 1"),
    (DISTILL, ["--set", "distill.embed_epochs=0"], r"distill\.embed_epochs must be >= 1"),
    (DISTILL, ["--set", "distill.checkpoint_every=-1"], r"distill\.checkpoint_every must be >= 0"),
    (DISTILL, ["--set", "distill.eval_epochs=0"], r"distill\.eval_epochs must be >= 1"),
    (DISTILL, ["--set", "distill.net.width=0"], r"distill\.net\.width must be >= 1"),
    (DISTILL, ["--set", "distill.net.depth=0"], r"distill\.net\.depth must be >= 1"),
    (DISTILL, ["--iterations", "-1"], r"distill\.iterations must be >= 0"),
    (DISTILL, ["--set", "distill.batch_real=0"], r"distill\.batch_real must be >= 1"),
    (EVALUATE, ["--epochs", "0"], r"epochs must be >= 1, got 0"),
    (EVALUATE, ["--epochs", "-1"], r"epochs must be >= 1"),
    (EVALUATE, ["--set", "eval.batch=0"], r"batch must be >= 1"),
    (EVALUATE, ["--set", "eval.lr=.nan"], r"lr must be a finite number"),
    (EVALUATE, ["--set", "eval.weight_decay=-0.1"], r"weight_decay must be >= 0"),
    (EVALUATE, ["--set", "eval.schedule=cosine"], r"unknown schedule 'cosine'"),
    (CONTINUAL, ["--orders", "a,b"], r"--orders takes comma-separated integers"),
    (CONTINUAL, ["--epochs", "-1"], r"epochs must be >= 1"),
    (CONTINUAL, ["--set", "distill.method=dm"], r"unknown config key 'distill\.method'"),
    (NAS, ["--set", "nas.batch=0"], r"batch must be >= 1"),
    (NAS, ["--set", "nas.top_k=[5,-1]"], r"nas\.top_k must be >= 1"),
    (NAS, ["--set", "nas.heartbeat=0"], r"nas\.heartbeat must be >= 1"),
    (NAS, ["--proxy-epochs", "0"], r"epochs must be >= 1"),
    (NAS, ["--whole-epochs", "0"], r"nas\.whole_epochs must be >= 1"),
    # where results go: a file (or a path under a file) is no folder, checked before any work
    (DISTILL, ["--out", "{tmp}/file"], r"--out .*/file is a file; give a folder"),
    (DISTILL, ["--out", "{tmp}/file/run"], r"--out .*/file/run is under .*/file, which is a file"),
    (EVALUATE, ["--out", "{tmp}/file"], r"--out .*/file is a file"),
    (CONTINUAL, ["--cache", "{tmp}/file"], r"--cache .*/file is a file"),
    (NAS, ["--cache", "{tmp}/file/cache"], r"--cache .*/file/cache is under"),
    (REPRODUCE, ["--out", "{tmp}/file"], r"--out .*/file is a file"),
    (REPRODUCE, ["--table", "cifar11"], r"unknown table 'cifar11'"),
    (REPRODUCE, ["--methods", "dc"], r"unknown method for table fashionmnist 'dc'"),
    (REPRODUCE, ["--ipc", "3"], r"table fashionmnist has no IPC 3"),
    (REPRODUCE, ["--ipc", "one"], r"--ipc takes comma-separated integers"),
    (REPRODUCE, ["--sets", "0"], r"--sets and --models must be at least 1"),
    (REPRODUCE, ["--set", "distill.lam=.nan"], r"distill\.lam must be a finite number"),
    (REPRODUCE, ["--set", "eval.epochs=0"], r"epochs must be >= 1"),
]


@pytest.mark.parametrize("job,extra,pattern", CASES, ids=[" ".join(c[1]) for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, digits_prep, job, extra, pattern):
    (tmp_path / "file").write_text("not a folder")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    argv = [*job, *extra, *([] if "--out" in extra else ["--out", str(tmp_path / "out")])]
    if job is EVALUATE:
        idx = torch.cat([torch.nonzero(digits_prep.data.train_y == c).flatten()[:2] for c in range(10)])
        SyntheticSet(digits_prep.train_x[idx], digits_prep.data.train_y[idx], list(digits_prep.data.classes),
                     digits_prep.preprocess, {"dataset": "digits", "method": "random", "ipc": 2}).save(tmp_path / "s.pt")
        argv += ["--synset", str(tmp_path / "s.pt")]
    if job in (CONTINUAL, NAS) and "--cache" not in extra:
        argv += ["--cache", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(pattern, err[0]), err
    # checked before long work: nothing was distilled, trained or cached
    assert not list(tmp_path.glob("cache/*/*/synset.pt")) and not (tmp_path / "out" / "synset.pt").exists()
