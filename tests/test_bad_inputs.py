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
    (NAS, ["--set", "dataset.per_class=0"], r"dataset\.per_class must be >= 1, got 0"),
    (NAS, ["--set", "dataset.per_class=2.5"], r"dataset\.per_class: expected an integer, got 2\.5"),
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
    # this round's inputs: DD-Ranking's whole-data accuracy, the continual protocol and its real memories
    (EVALUATE, ["--whole-acc", "150"], r"--whole-acc is a percentage in \(0, 100\], got 150"),
    (CONTINUAL, ["--set", "continual.protocol=gem"], r"unknown continual\.protocol 'gem'"),
    (CONTINUAL, ["--memories", "reservoir"], r"memories reservoir are real-exemplar storage policies .* --protocol er"),
    (CONTINUAL, ["--memories", "herding_buffer"], r"memories herding_buffer are real-exemplar storage policies .* --protocol er"),
    # cells on N workers
    (CONTINUAL, ["--workers", "0"], r"--workers must be at least 1, got 0"),
    (CONTINUAL, ["--threads", "-2"], r"--threads must be at least 1, got -2"),
    (CONTINUAL, ["--storage", "redis://host/0"], r"storage URL 'redis://host/0' is not an RDB URL"),
    (REPRODUCE, ["--workers", "0"], r"--workers must be at least 1, got 0"),
    (NAS, ["--threads", "0"], r"--threads must be at least 1, got 0"),
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


# -- bad files: every loader answers a damaged, foreign or malformed file with one error line --

def _good_set(prep, path):
    idx = torch.cat([torch.nonzero(prep.data.train_y == c).flatten()[:2] for c in range(10)])
    s = SyntheticSet(prep.train_x[idx], prep.data.train_y[idx], list(prep.data.classes), prep.preprocess,
                     {"dataset": "digits", "method": "random", "ipc": 2})
    s.save(path)
    return s


def _edited_set(edit):
    """A valid set file, then ``edit`` applied to its saved dict."""
    def write(prep, path):
        _good_set(prep, path)
        blob = torch.load(path, weights_only=True)
        edit(blob)
        torch.save(blob, path)
    return write


def _bytes(data: bytes):
    def write(_prep, path):
        path.write_bytes(data)
    return write


def _truncated(prep, path):
    _good_set(prep, path)
    path.write_bytes(path.read_bytes()[:700])


def _text(text: str):
    def write(_prep, path):
        path.write_text(text)
    return write


WHOLE = NAS + ["--whole-results", "{file}"]
SYNSET = EVALUATE + ["--synset", "{file}"]
IMPORT = ["import", "{file}", "--dataset", "digits", "--quiet"]

FILE_CASES = [
    # (name, file suffix, how the file is written, argv, pattern of the one error line)
    ("binary config", ".yaml", _bytes(bytes(range(128, 256)) * 4), DISTILL + ["--config", "{file}"],
     r"not a text file"),
    ("config is a list", ".yaml", _text("- 1\n- 2\n"), DISTILL + ["--config", "{file}"], r"must be a mapping of keys"),
    ("bad value in a config file that a flag overrides", ".yaml", _text("distill:\n  lam: abc\n"),
     DISTILL + ["--config", "{file}", "--set", "distill.lam=0.1"], r"bad\.yaml:2: distill\.lam: expected a number"),
    ("empty set file", ".pt", _bytes(b""), SYNSET, r"bad\.pt is empty, not a synthetic-set file"),
    ("truncated set file", ".pt", _truncated, SYNSET, r"is damaged or truncated: not a complete synthetic-set file"),
    ("text as set file", ".pt", _text("hello"), SYNSET, r"is not a synthetic-set file \(not a torch file\)$"),
    ("foreign dict", ".pt", lambda _p, path: torch.save({"weights": torch.ones(2)}, path), SYNSET,
     r"is not a synthetic-set file: missing keys"),
    ("NaN images", ".pt", _edited_set(lambda b: b["images"].view(-1)[::7].fill_(float("nan"))), SYNSET,
     r"20 images hold NaN or infinite values"),
    ("inf images", ".pt", _edited_set(lambda b: b["images"][3].fill_(float("inf"))), SYNSET,
     r"1 of 20 images hold NaN or infinite"),
    ("no images", ".pt", _edited_set(lambda b: b.update(images=b["images"][:0], labels=b["labels"][:0])), SYNSET,
     r"holds no images"),
    ("labels shorter", ".pt", _edited_set(lambda b: b.update(labels=b["labels"][:3])), SYNSET,
     r"20 images but 3 labels"),
    ("labels out of range", ".pt", _edited_set(lambda b: b.update(labels=b["labels"] + 10)), SYNSET,
     r"labels must lie in \[0, 10\)"),
    ("meta not a dict", ".pt", _edited_set(lambda b: b.update(meta=[1, 2])), SYNSET, r"meta must be a dict"),
    ("class_names not a list", ".pt", _edited_set(lambda b: b.update(class_names=7)), SYNSET,
     r"class_names must be a list"),
    ("version not a number", ".pt", _edited_set(lambda b: b.update(version="one")), SYNSET,
     r"version must be an integer, got 'one'"),
    ("preprocess mean a list", ".pt", _edited_set(lambda b: b["preprocess"].update(mean=[0.5])), SYNSET,
     r"bad\.pt: preprocess mean must be a float tensor, got list"),
    ("preprocess std zero", ".pt", _edited_set(lambda b: b["preprocess"].update(std=torch.zeros(1))), SYNSET,
     r"std finite and positive"),
    ("ZCA matrix of the wrong size", ".pt", _edited_set(lambda b: b["preprocess"].update(
        zca_matrix=torch.eye(5), zca_inverse=torch.eye(5), zca_mean=torch.zeros(5))), SYNSET,
     r"ZCA matrix must be 256x256 with its inverse"),
    ("ZCA mean of the wrong size", ".pt", _edited_set(lambda b: b["preprocess"].update(
        zca_matrix=torch.eye(256), zca_inverse=torch.eye(256), zca_mean=torch.zeros(3))), SYNSET,
     r"ZCA mean must have 256 values"),
    ("images a string", ".pt", _edited_set(lambda b: b.update(images="abc")), SYNSET,
     r"images must be a float \[N, C, H, W\] tensor"),
    ("whole results: broken json", ".json", _text("{\"rows\": [1,"), WHOLE, r"is not a json results file"),
    ("whole results: json object without rows", ".json", _text("{\"a\": 1}"), WHOLE, r"expected a list of rows"),
    ("whole results: json rows not objects", ".json", _text("[1, 2]"), WHOLE, r"expected a list of rows"),
    ("whole results: row without candidate", ".json", _text("[{\"test_acc\": 0.5}]"), WHOLE,
     r"row 1 needs test_acc and candidate"),
    ("whole results: accuracy not a number", ".csv", _text("candidate,test_acc\nx,abc\n"), WHOLE,
     r"row 1: test_acc 'abc' is not a number"),
    ("whole results: NaN accuracy", ".csv", _text("candidate,test_acc\nx,nan\n"), WHOLE,
     r"row 1: test_acc must be a finite number"),
    ("whole results: binary", ".csv", _bytes(bytes(range(128, 256))), WHOLE, r"is not a csv results file"),
    # a checkpoint in --out that is damaged or not a checkpoint: refused, never half-read
    ("truncated checkpoint", ".pt", lambda _p, path: torch.save({"iteration": 3, "images": torch.ones(9)}, path),
     DISTILL + ["--method", "dm", "--out", "{folder}"], r"is not a distillation checkpoint \(missing config, optimizer"),
    ("garbage checkpoint", ".pt", _bytes(b"\x80\x04garbage"), DISTILL + ["--method", "dm", "--out", "{folder}"],
     r"checkpoint .*checkpoint\.pt could not be read"),
    # two sets that the reports would call alike
    ("memory file named like a method", ".pt", _good_set, CONTINUAL + ["--memories", "dm,{dm}"],
     r"--memories: '.*/dm\.pt' and 'dm' would both be reported as 'dm'"),
    ("memory given twice", ".pt", _good_set, CONTINUAL + ["--memories", "random,herding,random"],
     r"--memories: 'random' is given twice"),
    # releases of other repositories (run.py import): damaged, foreign, mis-shaped or misnamed
    ("import: text as a DC file", ".pt", _text("hello"), IMPORT + ["--format", "dc"], r"is not a DC/DSA/DM result file"),
    ("import: a set file as a DC file", ".pt", _good_set, IMPORT + ["--format", "dc"],
     r"is not a DC/DSA/DM result file: expected a dict with 'data'"),
    ("import: DC experiment out of range", ".pt",
     lambda p, path: torch.save({"data": [[p.train_x[:20], p.data.train_y[:20]]]}, path),
     IMPORT + ["--format", "dc", "--index", "3"], r"--index 3 is out of range: .* holds 1 experiments"),
    ("import: images of another dataset's size", ".pt",
     lambda p, path: torch.save({"data": [torch.zeros(20, 3, 32, 32), torch.arange(10).repeat(2)]}, path),
     IMPORT + ["--format", "datadam"], r"images are \(3, 32, 32\), digits images are .* is --dataset right"),
    ("import: float class labels", ".pt",
     lambda p, path: torch.save([torch.zeros(20, 1, 8, 8), torch.zeros(20)], path),
     IMPORT + ["--format", "ncfm"], r"labels must be integer class ids"),
    ("import: --index for a format without one", ".pt", _text("x"), IMPORT + ["--format", "ncfm", "--index", "0"],
     r"--index chooses nothing in the ncfm format"),
    ("import: not an MTT folder", ".pt", _text("x"), IMPORT + ["--format", "mtt"], r"is not an MTT/DATM release"),
    ("proxy given twice", ".pt", _good_set, ["nas", "--dataset", "digits", "--space", "tiny", "--quiet",
                                             "--proxy", "random_ipc2,random_ipc2"], r"--proxy: 'random_ipc2' is given twice"),
    ("proxy file named like a table row", ".pt", _good_set, ["nas", "--dataset", "digits", "--space", "tiny",
                                                            "--quiet", "--proxy", "{whole}"],
     r"would be reported as 'whole', a row the NAS table uses itself"),
]


@pytest.mark.parametrize("writer,suffix,job,pattern", [c[2:3] + c[1:2] + c[3:] for c in FILE_CASES],
                         ids=[c[0] for c in FILE_CASES])
def test_bad_file_is_one_error_line_and_exit_2(tmp_path, capsys, digits_prep, writer, suffix, job, pattern):
    names = {"{file}": f"bad{suffix}", "{folder}": "run/checkpoint.pt", "{dm}": "dm.pt", "{whole}": "whole.pt"}
    given = next((k for k in names if any(k in a for a in job)), "{file}")
    bad = tmp_path / names[given]
    bad.parent.mkdir(exist_ok=True)
    writer(digits_prep, bad)
    argv = [a.replace(given, str(bad.parent if given == "{folder}" else bad)) for a in job]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if job[0] in ("nas", "continual"):
        argv += ["--cache", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(pattern, err[0]), err
    assert not list(tmp_path.glob("cache/*/*/*.json")) and not list(tmp_path.glob("cache/*/*/synset.pt"))
    assert not (tmp_path / "out" / "evaluation.json").exists() and not (tmp_path / "run" / "synset.pt").exists()
    assert not (tmp_path / "out" / "synset.pt").exists()  # an import refused writes no set


def test_list_shows_damaged_artifact_folders_as_partial(tmp_path, capsys):
    for name, text in (("binary", bytes(range(128, 256))), ("alist", b"- 1\n- 2\n"), ("broken", b"key: [1,\n")):
        folder = tmp_path / "sets" / f"{name}-0123456789ab"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_bytes(text)
    assert main(["list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("binary", "alist", "broken"):
        row = next(line for line in out.splitlines() if f"{name}-0123456789ab" in line and "sets" in line)
        assert "partial" in row
