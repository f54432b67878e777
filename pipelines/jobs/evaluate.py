"""``run.py evaluate``: train networks on one or several synthetic sets and test them on the real
test set (docs/protocols.md section 3), tables written next to the (first) set."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from distill.config import to_dict
from distill.errors import UserError
from distill.evaluate import ALL_ARCHS, ArchResult, combine_sets, eval_inputs, evaluate_set, labels_used, resolve_eval
from distill.files import atomic_text
from distill.scores import hard_label_recovery, improvement_over_random, label_robust_score
from distill.report import markdown_table, pct, write_tables
from distill.synset import SyntheticSet, library_versions
from distill.train import TrainRecipe

from ..cache import config_key
from ..cli import csv_items
from ..common import DataConfig, check_writable
from ..named_sets import file_label
from ..sets import SetMaker
from . import Job, register_job


@dataclass
class EvaluateJobConfig:
    """``run.py evaluate``: which real test set, and how to train the networks."""

    dataset: DataConfig = field(default_factory=DataConfig)
    eval: TrainRecipe = field(default_factory=TrainRecipe)


def evaluation_defaults(device: torch.device) -> dict[str, Any]:
    """The device's defaults under every config file and flag: on a GPU the papers' 20 networks
    per set (docs/protocols.md section 3); on the CPU ``TrainRecipe``'s 5."""
    return {"eval": {"models": 20}} if device.type == "cuda" else {}


def evaluation_stem(out: Path, config: dict, synset: str | list[str]) -> str:
    """``evaluation`` unless ``out/evaluation.json`` holds results of another recipe or other
    sets (its ``config`` / ``synset`` fields), which are kept: then ``evaluation-<key>`` (12 hex
    digits of this recipe and sets)."""
    earlier = out / "evaluation.json"
    if not earlier.is_file():
        return "evaluation"
    try:
        prev = json.loads(earlier.read_text())
    except (OSError, ValueError):
        prev = {}
    if isinstance(prev, dict) and prev.get("config") == config and prev.get("synset") == synset:
        return "evaluation"
    return f"evaluation-{config_key({'config': config, 'synset': synset})}"


def synset_files(text: str) -> tuple[list[str], list[str]]:
    """The files of ``--synset`` and the labels their results carry (file stems, or the paths
    where two would be alike)."""
    files = csv_items(text) or []
    if not files:
        raise UserError("--synset needs at least one synset.pt path")
    labels = [file_label(f) for f in files]
    if len(set(labels)) < len(labels):  # two files called alike: label them by path
        labels = files
    if len(set(labels)) < len(labels):
        raise UserError(f"--synset names a file twice: {text}")
    return files, labels


class EvaluateJob(Job):
    name = "evaluate"
    help = "train networks on a synthetic set and test them"
    description = ("Train --models fresh networks of each --arch on a synthetic set (SGD 0.01, momentum 0.9, "
                   "weight decay 5e-4, batch 256, LR x0.1 at half, DSA; a multi-formation set's decoded images) "
                   "and test them on the real test set, mapped through the set's own stored preprocessing. "
                   "Several sets (--synset a.pt,b.pt) give the papers' protocol: one mean +- std over every "
                   "network of every set.\n\n"
                   "Writes evaluation.{md,csv,json} next to the (first) set, or into --out; results of another "
                   "recipe already there are kept (evaluation-<key>.*).")
    examples = ("python pipelines/run.py evaluate --synset runs/atom10/synset.pt --models 20 --arch convnet,resnet18",
                "python pipelines/run.py evaluate --synset s0/synset.pt,s1/synset.pt --arch all")
    Config = EvaluateJobConfig
    options = ("dataset", "data_root", "seed", "cache", *Job.options)
    option_help = {"out": "output folder (default: the folder of the first --synset file)",
                   "dataset": "real dataset for testing (default: the one the set was made from)"}
    flags = {"dataset": ("dataset.name", None), "data_root": ("dataset.root", None), "models": ("eval.models", None),
             "epochs": ("eval.epochs", None), "seed": ("eval.seed", None), "arch": ("eval.archs", csv_items)}

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--synset", required=True,
                       help="a synset.pt path, or several, comma-separated (e.g. one per distillation seed): the "
                            "papers' protocol, one mean +- std over every network of every set")
        p.add_argument("--models", type=int, help="networks per architecture (default: 20 on a GPU, as the papers; "
                                                 "5 on the CPU)")
        p.add_argument("--arch", help="comma-separated: convnet, alexnet, vgg11, resnet18, vit, a norm variant like "
                                      "resnet18-batchnorm, or all (= " + ", ".join(ALL_ARCHS) + ")")
        p.add_argument("--epochs", type=int, help="training epochs (default 1000; digits 300)")
        p.add_argument("--baseline", choices=("random", "none"), default="random",
                       help="random (default): also train the same networks on random real images at the set's IPC "
                            "(made once per dataset, IPC and recipe, cached) and report DD-Ranking's improvement over "
                            "random (IOR); none: skip it")
        p.add_argument("--whole-acc", type=float, metavar="PCT",
                       help="the test accuracy (%%) of the same networks trained on the whole training set with hard "
                            "labels: adds DD-Ranking's hard-label recovery (HLR) and label-robust score (LRS)")

    @staticmethod
    def first_set(args: argparse.Namespace) -> tuple[str, SyntheticSet]:
        """The first ``--synset`` file and its set (read once per command line)."""
        if not hasattr(args, "first_set"):
            files, _ = synset_files(args.synset)
            args.first_set = (files[0], SyntheticSet.load(files[0]))
        return args.first_set

    @classmethod
    def bases(cls, args: argparse.Namespace, device: torch.device) -> list[tuple[dict[str, Any], str]]:
        """The data folder the first set was made from, where it still exists (any root given
        wins), and the device's default number of networks."""
        path, first = cls.first_set(args)
        made = first.meta.get("data_config") if isinstance(first.meta.get("data_config"), dict) else {}
        layers = []
        if made.get("root") and Path(str(made["root"])).is_dir():
            layers.append(({"dataset": {"root": str(made["root"])}}, f"the set's metadata ({path})"))
        if device.type == "cuda":
            layers.append((evaluation_defaults(device), "device cuda (the papers' 20 networks per set)"))
        return layers

    @classmethod
    def implied(cls, args: argparse.Namespace) -> list[tuple[dict[str, Any], str]]:
        """The dataset the first set was made from (``--dataset`` wins)."""
        path, first = cls.first_set(args)
        return [({"dataset": {"name": first.meta["dataset"]}}, f"the set's metadata ({path})")] \
            if first.meta.get("dataset") else []

    def resolve(self) -> None:
        self.files, self.labels = synset_files(self.args.synset)
        self.sets = [SyntheticSet.load(f) for f in self.files]  # every file is checked before any training
        self.cfg = resolve_eval(self.config.eval, self.config.dataset.name)
        size = self.sets[0].image_shape[1]
        try:
            self.data = self.config.dataset.load(size)  # the real data at the set's size
        except UserError:
            if self.sources.of("dataset.root").startswith("the set's metadata"):  # that folder no longer holds it
                self.config.dataset = replace(self.config.dataset, root=DataConfig.root)
                self.sources.set("dataset.root", "default (the set's data folder no longer holds the data)")
                self.data = self.config.dataset.load(size)
            else:
                raise
        self.test_xs = [eval_inputs(s, self.data) for s in self.sets]
        whole = self.args.whole_acc
        if whole is not None and not 0 < whole <= 100:
            raise UserError(f"--whole-acc is a percentage in (0, 100], got {whole}")
        self.baseline = self.args.baseline == "random" and len({s.ipc for s in self.sets}) == 1
        self.out = Path(self.env.out) if self.env.out else Path(self.files[0]).parent
        check_writable(self.out, "--out (default: the set's folder)")

    def record(self) -> dict[str, Any]:
        return {"dataset": to_dict(self.config.dataset), "eval": to_dict(self.cfg), "synset": self.files,
                "device": str(self.env.device), "versions": library_versions()}

    def run(self) -> int:
        cfg, data, sets, first = self.cfg, self.data, self.sets, self.sets[0]
        many = f" x {len(sets)} sets" if len(sets) > 1 else ""
        print(f"evaluating {', '.join(self.files)} ({first.meta.get('method', '?')}, ipc {first.ipc}, "
              f"{len(first.labels)} images{f', {len(sets)} sets' if len(sets) > 1 else ''}) on {data.name} test "
              f"({len(data.test_y)} images): {cfg.models} models x {len(cfg.archs)} architectures{many}, "
              f"{cfg.epochs} epochs, on {self.env.device}")
        results = combine_sets({lb: evaluate_set(s, tx, data.test_y, cfg, self.env.device, progress=self.env.progress,
                                                 set_index=i)
                                for i, (lb, s, tx) in enumerate(zip(self.labels, sets, self.test_xs))})
        rows = [{**r.row(), "accuracy": pct(r.mean, r.std, len(r.accuracies))} for r in results]
        columns = ["arch", "models", "sets", "accuracy", "seconds", "ensembled"]
        notes = [f"trained with {labels_used(first)}"]
        if self.baseline:
            columns += self.scores(rows, notes)
        elif self.args.baseline == "random":
            notes.append("no random baseline: the sets differ in IPC")
        synset_field = self.files if len(self.files) > 1 else self.files[0]
        stem = evaluation_stem(self.out, to_dict(cfg), synset_field)
        if stem != "evaluation":
            print(f"\n  {self.out / 'evaluation.json'} holds another configuration's results; keeping it and writing {stem}.*")
        paths = write_tables(rows, columns, self.out, stem,
                             extra={"synset": synset_field, "dataset": data.name, "device": str(self.env.device),
                                    "config": to_dict(cfg), "versions": library_versions(), "notes": notes})
        print("\n" + markdown_table(rows, columns))
        print("\n" + "\n".join(f"  {n}" for n in notes))
        print(f"\n  results: {paths['md']}, {paths['csv'].name}, {paths['json'].name}")
        return 0


    def random_baseline(self) -> list[ArchResult]:
        """The recipe's networks trained on random real images at the sets' IPC (the ``random``
        selection, hard labels), each stage cached: the set, then its evaluation."""
        maker = SetMaker(self.config.dataset, self.data, self.env.device, self.env.cache, self.env.progress)
        rcfg = maker.resolve("random", self.sets[0].ipc)
        synset, _, _ = maker.get(rcfg)
        cfg = self.cfg
        art = self.env.cache.artifact("baselines", f"{self.data.name}_random_ipc{rcfg.ipc}",
                                      {"set": maker.artifact(rcfg).key, "eval": to_dict(cfg)}, "baseline.json")

        def make(folder: Path) -> list[ArchResult]:
            print(f"  random baseline: {rcfg.ipc} real images per class, the same recipe", flush=True)
            res = evaluate_set(synset, synset.preprocess(self.data.test_x), self.data.test_y, cfg, self.env.device,
                               progress=self.env.progress)
            atomic_text(art.result_path, json.dumps([r.row() for r in res], indent=1))
            return res

        def load(path: Path) -> list[ArchResult]:
            return [ArchResult(r["arch"], r["accuracies"], r["seconds"], r["ensembled"]) for r in json.loads(path.read_text())]

        return self.env.cache.get_or_make(art, make, load)[0]

    def scores(self, rows: list[dict[str, Any]], notes: list[str]) -> list[str]:
        """DD-Ranking's scores (``distill.scores``) added to ``rows``: IOR against the random
        baseline, and with ``--whole-acc`` HLR and LRS; returns the columns added."""
        base = {r.arch: r for r in self.random_baseline()}
        first = self.sets[0]
        if first.soft_labels is not None:
            notes.append("random baseline with hard labels: this toolkit has no teacher to give random images soft "
                         "labels as DD-Ranking does, so IOR here also counts what the soft labels add")
        hard_acc: dict[str, float] = {}
        whole = self.args.whole_acc
        if whole is not None:
            if any(s.soft_labels is not None for s in self.sets):  # HLR needs the images with hard labels
                hard = combine_sets({lb: evaluate_set(s.hard(), tx, self.data.test_y, self.cfg, self.env.device,
                                                      progress=self.env.progress, set_index=i)
                                     for i, (lb, s, tx) in enumerate(zip(self.labels, self.sets, self.test_xs))})
                hard_acc = {r.arch: r.mean for r in hard}
            else:
                hard_acc = {r["arch"]: r["mean"] for r in rows}
        added = ["random", "ior"] + (["hlr", "lrs"] if whole is not None else [])
        for r in rows:
            rnd = base[r["arch"]].mean
            ior = improvement_over_random(r["mean"], rnd)
            r.update(random=f"{100 * rnd:.2f}", ior=f"{100 * ior:+.2f}", ior_value=ior, random_value=rnd)
            if whole is not None:
                hlr = hard_label_recovery(whole / 100, hard_acc[r["arch"]])
                r.update(hlr=f"{100 * hlr:.2f}", lrs=f"{100 * label_robust_score(ior, hlr):.2f}", hlr_value=hlr,
                         lrs_value=label_robust_score(ior, hlr))
        notes.append("ior: improvement over random real images at the same IPC (points); "
                     + ("hlr: hard-label recovery against --whole-acc (points); lrs: label-robust score (0-100, "
                        "w = 0.5); " if whole is not None else "")
                     + "DD-Ranking's definitions, docs/protocols.md section 8")
        return added


register_job(EvaluateJob)
