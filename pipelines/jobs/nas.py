"""``run.py nas``: the 720-ConvNet search with proxy, whole-data and early-stopping training.

Resolves each proxy (a named set, distilled once and cached, or a synset.pt path), trains every
candidate of the space on it in an Optuna study (several workers may share a study), trains the
whole-data ground truth once (cached, or imported with ``nas.whole_results``) and writes the NAS
table (md/csv/json) and the scatter plot.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill.config import to_dict
from distill.errors import UserError
from distill.evaluate import eval_inputs
from distill.files import atomic_text
from distill.prepare import prepare
from distill.report import publish
from distill.settings import DistillSettings, settings_for
from distill.synset import SyntheticSet
from nas.config import NASConfig, quick_resolution, resolve_nas
from nas.space import candidate_name, get_space, grid

from ..cache import file_digest, load_json
from ..common import DataConfig
from ..named_sets import SETS_FILE, dataset_base, lookup, report_labels
from ..sets import SetMaker
from . import Job, register_job


@dataclass
class NASJobConfig:
    """``run.py nas``: dataset, search, and how proxies are distilled when needed."""

    dataset: DataConfig = field(default_factory=DataConfig)
    nas: NASConfig = field(default_factory=NASConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)  # for proxies made here (method, IPC: the proxy's name)


def proxy_specs(text: str | None) -> dict[str, Any]:
    """``--proxy`` entries -> their named-set definitions (None for a file), checked."""
    specs = [s.strip() for s in (text or "").split(",") if s.strip()]
    if not specs:
        raise UserError("give at least one --proxy: a name like atom_ipc50 or a synset.pt path")
    for spec, label in report_labels(specs, "--proxy").items():  # the table's own rows
        if label == "whole" or label.startswith("early_"):
            raise UserError(f"--proxy {spec!r} would be reported as {label!r}, a row the NAS table uses itself; "
                            "rename the file")
    return {s: lookup(s) for s in specs}


class NASJob(Job):
    name = "nas"
    help = "architecture search over the 720-ConvNet grid with a synthetic proxy"
    description = ("Train every ConvNet of the search space on each proxy (200 epochs), on the whole training set "
                   "(100 epochs, the ground truth, computed once and cached) and with early stopping (the whole "
                   "set for as many steps as the proxy training); rank by accuracy on a validation split of the "
                   "real training set, and report the best architecture's whole-data test accuracy and Spearman's "
                   "rho over all and the top-k candidates.\n\n"
                   "Studies are Optuna studies in a journal file under --cache (or --storage URL); workers claim "
                   "candidates, so each is trained once however many workers start, join or die; an interrupted "
                   "search resumes. Writes nas.{md,csv,json} and nas_scatter.png.")
    examples = ("python pipelines/run.py nas --proxy atom_ipc50                    # CIFAR-10, 720 ConvNets",
                "python pipelines/run.py nas --proxy random_ipc10_digits --space small   # offline, CPU",
                "python pipelines/run.py nas --proxy atom_ipc50,dm_ipc50 --workers 4",
                "python pipelines/run.py nas --proxy atom_ipc50 --storage postgresql+psycopg2://u:p@host/nas")
    Config = NASJobConfig
    options = ("dataset", "data_root", "seed", "cache", "force", "workers", "threads", "storage", *Job.options)
    option_help = {"dataset": "dataset (default cifar10, or the one a proxy name gives)",
                   "workers": "local worker processes per study (default 1; one per GPU round-robin, or the CPU "
                              "threads split); each candidate is trained once, also when a worker dies",
                   "data_root": "data folder (default: data)", "seed": "candidate initialisation seed (default 0)",
                   "force": "recompute cached proxies and studies"}
    flags = {"dataset": ("dataset.name", None), "data_root": ("dataset.root", None), "space": ("nas.space", None),
             "workers": ("nas.workers", None), "storage": ("nas.storage", None),
             "whole_results": ("nas.whole_results", None), "proxy_epochs": ("nas.proxy_epochs", None),
             "whole_epochs": ("nas.whole_epochs", None), "seed": ("nas.seed", None)}
    result = "nas.json"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--proxy", help="comma-separated proxies (no default; give at least one): named sets "
                                       f"({SETS_FILE.name}, or <method>_ipc<N>[_<dataset>]; made once, cached) or "
                                       "synset.pt paths")
        p.add_argument("--space", help="full (720, default), small (48) or tiny (4)")
        p.add_argument("--whole-results", help="csv/json of whole-data results made elsewhere")
        p.add_argument("--proxy-epochs", type=int, help="epochs on the proxy (default 200; digits 100)")
        p.add_argument("--whole-epochs", type=int, help="epochs on the whole data (default 100; digits 50)")

    @classmethod
    def bases(cls, args: argparse.Namespace, device: torch.device) -> list[tuple[dict[str, Any], str]]:
        """The dataset keys the named proxies give (they must agree)."""
        named = dataset_base([p for p in proxy_specs(args.proxy).values() if p])
        return [({"dataset": named}, "the named proxies")] if named else []

    def resolve(self) -> None:
        from nas.search import check_space_fits

        job = self.config
        self.parsed = proxy_specs(self.args.proxy)
        self.labels = report_labels(list(self.parsed), "--proxy")
        named = dataset_base([p for p in self.parsed.values() if p])
        if named.get("name") and job.dataset.name != named["name"]:
            raise UserError(f"proxy names dataset {named['name']!r} but the job's dataset is {job.dataset.name!r}")
        self.space = get_space(job.nas.space)
        self.data = job.dataset.load(quick_resolution(job.dataset.name, job.nas.space))
        self.cfg = resolve_nas(job.nas, self.data.name)
        settings_for([p.method for p in self.parsed.values() if p], job.distill)
        self.set_cfgs = self.resolve_sets({s: p.distill_config(job.distill) for s, p in self.parsed.items() if p},
                                          self.data.image_size[0], self.data.name)
        check_space_fits(self.space, self.data)
        self.names = [candidate_name(p) for p in grid(self.space)]

    def record(self) -> dict[str, Any]:
        base = super().record()
        return {"dataset": to_dict(self.config.dataset), "nas": to_dict(self.cfg), "proxies": list(self.parsed),
                "distill": to_dict(self.config.distill), "sets": {k: to_dict(v) for k, v in self.set_cfgs.items()},
                **{k: base[k] for k in ("device", "cache", "versions")}}

    def run(self) -> int:
        from nas.search import holdout, load_whole_results, without_validation, whole_condition

        cfg, data = self.cfg, self.data
        out, _ = self.open_folder(f"nas-{data.name}-{cfg.space}")
        print(f"NAS on {self.config.dataset.describe(data)}: {len(self.names)} candidates ({cfg.space} space), "
              f"proxies {', '.join(self.parsed)}, proxy {cfg.proxy_epochs} / whole {cfg.whole_epochs} epochs, "
              f"{cfg.workers} worker(s), on {self.env.device} -> {out}")
        # inputs first: a bad results file, a missing proxy file or a set from another dataset fails
        # before any distillation or training
        whole = load_whole_results(cfg.whole_results, self.names) if cfg.whole_results else None
        train_idx, val_idx = holdout(data, cfg)
        proxies = self.proxies(without_validation(data, train_idx))
        self.base_key = {"dataset": self.config.dataset.identity(data), "space": cfg.space,
                         "val": [cfg.val_fraction, cfg.val_seed],
                         "recipe": [cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch, cfg.dsa, cfg.init],
                         "seed": cfg.seed}
        whole_cond = whole_condition(prepare(data, self.config.dataset.zca, "cpu"), cfg, train_idx, val_idx)
        if whole is None:
            whole = self.study(f"{data.name}_whole", whole_cond, {"epochs": cfg.whole_epochs})
        results = self.searches(proxies, whole_cond, val_idx)
        results["whole"] = whole
        self.tables(results, whole, out)
        return 0

    def proxies(self, train_data: Any) -> dict[str, tuple[SyntheticSet, str, Any]]:
        """Every proxy as ``(set, identity, test images in its space)``: files first, then named
        sets distilled without the validation images (the key records the split)."""
        data, cfg = self.data, self.cfg
        maker = SetMaker(self.config.dataset, train_data, self.env.device, self.env.cache, self.env.progress,
                         subset={"holdout": [cfg.val_fraction, cfg.val_seed]})
        proxies: dict[str, tuple[SyntheticSet, str, Any]] = {}
        for spec, p in self.parsed.items():
            if p is None:
                synset = SyntheticSet.load(spec)
                proxies[self.labels[spec]] = (synset, "file:" + file_digest(spec), eval_inputs(synset, data))
        for spec, p in self.parsed.items():
            if p is not None:
                dcfg = self.set_cfgs[spec]
                synset, path, reused = maker.get(dcfg)
                print(f"  proxy {spec}: {'reused' if reused else 'made'} {path}")
                proxies[spec] = (synset, "buffer:" + maker.artifact(dcfg).key, eval_inputs(synset, data))
        return {self.labels[s]: proxies[self.labels[s]] for s in self.parsed}

    def searches(self, proxies: dict[str, Any], whole_cond: Any, val_idx: Any) -> dict[str, dict[str, Any]]:
        """Every proxy's study and, per proxy size, the early-stopping study."""
        from nas.search import early_condition, proxy_condition

        cfg, data = self.cfg, self.data
        results: dict[str, dict[str, Any]] = {}
        for label, (synset, identity, test_x) in proxies.items():
            results[label] = self.study(f"{data.name}_{label}", proxy_condition(synset, test_x, data, val_idx, cfg),
                                        {"proxy": identity, "epochs": cfg.proxy_epochs})
            if cfg.early_stopping:
                steps, ecnd = early_condition(whole_cond, len(synset.decoded()[1]), cfg)
                elabel = f"early_{steps}steps"
                if elabel not in results:
                    results[elabel] = self.study(f"{data.name}_{elabel}", ecnd,
                                                 {"early_steps": steps, "epochs": ecnd.epochs})
        return results

    def study(self, label: str, cond: Any, key: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every candidate trained under ``cond`` (``nas.search.train_all``), cached as an artifact."""
        art = self.env.cache.artifact("nas", label, {**self.base_key, **key}, "results.json")

        def make(folder: Path) -> dict[str, dict[str, Any]]:
            from tqdm import tqdm

            from nas.search import train_all

            bar = tqdm(total=len(self.names), desc=f"nas {label}", disable=self.env.quiet, dynamic_ncols=True)
            t0 = time.perf_counter()
            try:
                rows = train_all(f"{label}-{art.key}", folder / "study.journal", cond, self.cfg, self.env.device,
                                 lambda done, _total: bar.update(done - bar.n), self.env.threads)
            finally:
                bar.close()
            atomic_text(art.result_path, json.dumps({"study": f"{label}-{art.key}", "seconds": time.perf_counter() - t0,
                                                     "rows": rows}, indent=1))
            return rows

        rows, reused = self.env.cache.get_or_make(art, make, lambda path: load_json(path)["rows"])
        if reused:
            print(f"  {label}: reused {len(rows)} candidates from {art.path}")
        return rows

    def tables(self, results: dict[str, dict[str, Any]], whole: dict[str, Any], out: Path) -> None:
        from nas.report import scatter, summary_row

        cfg = self.cfg
        rows = [summary_row(label, r, whole, cfg.top_k) for label, r in results.items()]
        topcols = [f"top{k}" for k in cfg.top_k]
        for r in rows:
            r["best_whole_test"] = round(r["best_whole_test"], 2)
            for c in ["spearman", *topcols]:
                r[c] = round(r[c], 3) if r[c] == r[c] else "n/a"
            r["minutes"] = round(r["minutes"], 2)
        columns = ["proxy", "best", "best_whole_test", "spearman", *topcols, "minutes", "images"]
        plot = scatter({lb: r for lb, r in results.items() if lb != "whole"}, whole, out / "nas_scatter.png",
                       f"{self.config.dataset.describe(self.data)}:\n{len(self.names)} ConvNets ({cfg.space} space)")
        publish(rows, columns, out, "nas",
                {"dataset": self.data.name, "device": str(self.env.device), "config": to_dict(cfg),
                 "versions": self.record()["versions"], "candidates": dict(results)},
                notes="best = the candidate with the highest proxy validation accuracy; best_whole_test = its test "
                      "accuracy (%) when trained on the whole data")
        print(f"  plot:   {plot}")


register_job(NASJob)
