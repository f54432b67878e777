"""``run.py nas``: the 720-ConvNet search with proxy, whole-data and early-stopping training.

Resolves each proxy (a ``<method>_ipc<N>`` name, distilled once and cached, or a synset.pt
path), trains every candidate of the space on it in an Optuna study (several workers may
share a study), trains the whole-data ground truth once (cached, or imported with
``nas.whole_results``) and writes the NAS table (md/csv/json) and the scatter plot.
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
from distill.prepare import prepare
from distill.settings import DistillSettings, settings_for
from distill.errors import UserError
from distill.evaluate import eval_inputs
from distill.files import atomic_text
from distill.report import publish
from distill.synset import SyntheticSet, library_versions
from nas.config import NASConfig, quick_resolution, resolve_nas
from nas.space import candidate_name, get_space, grid

from .artifacts import Artifact, file_digest
from .buffers import BufferMaker
from .common import DataConfig, RunContext, build_config, pick_device, write_job_config
from .registry import dataset_base, lookup, report_labels


@dataclass
class NASJob:
    """``run.py nas``: dataset, search, and how proxies are distilled when needed."""

    dataset: DataConfig = field(default_factory=DataConfig)
    nas: NASConfig = field(default_factory=NASConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)  # for proxies made here (method, IPC: the proxy's name)


def run_study(label: str, cond: Any, key: dict[str, Any], cfg: NASConfig, cache: Path, device: torch.device,
              force: bool, quiet: bool) -> dict[str, dict[str, Any]]:
    """Every candidate trained under ``cond`` (``nas.search.train_all``), cached as an artifact."""
    from tqdm import tqdm

    from nas.search import train_all

    art = Artifact(cache, "nas", label, key, "results.json")
    if art.complete and not force:
        rows = json.loads(art.result_path.read_text())["rows"]
        print(f"  {label}: reused {len(rows)} candidates from {art.path}")
        return rows
    folder = art.open(force=force)
    name = f"{label}-{art.key}"
    bar = tqdm(total=len(grid(get_space(cfg.space))), desc=f"nas {label}", disable=quiet, dynamic_ncols=True)

    def progress(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    try:
        rows = train_all(name, folder / "study.journal", cond, cfg, device, progress)
    finally:
        bar.close()
    atomic_text(art.result_path, json.dumps({"study": name, "seconds": time.perf_counter() - t0,
                                           "rows": rows}, indent=1))
    return rows


def cmd_nas(args: argparse.Namespace, run: RunContext) -> int:
    from nas.report import scatter, summary_row
    from nas.search import (check_space_fits, early_condition, holdout, load_whole_results, proxy_condition,
                            whole_condition, without_validation)

    specs = [s.strip() for s in (args.proxy or "").split(",") if s.strip()]
    if not specs:
        raise UserError("give at least one --proxy: a name like atom_ipc50 or a synset.pt path")
    labels = report_labels(specs, "--proxy")
    for spec, label in labels.items():  # the table's own rows
        if label == "whole" or label.startswith("early_"):
            raise UserError(f"--proxy {spec!r} would be reported as {label!r}, a row the NAS table uses itself; "
                            "rename the file")
    parsed = {s: lookup(s) for s in specs}
    named = dataset_base([p for p in parsed.values() if p])  # the proxies' dataset keys, which must agree
    job = build_config(NASJob, args, {
        "dataset.name": args.dataset,
        "dataset.root": args.data_root, "nas.space": args.space, "nas.workers": args.workers,
        "nas.storage": args.storage, "nas.whole_results": args.whole_results,
        "nas.proxy_epochs": args.proxy_epochs, "nas.whole_epochs": args.whole_epochs, "nas.seed": args.seed,
    }, {"dataset": named})
    if named.get("name") and job.dataset.name != named["name"]:
        raise UserError(f"proxy names dataset {named['name']!r} but the job's dataset is {job.dataset.name!r}")
    device = pick_device(args.device)
    space = get_space(job.nas.space)
    data = job.dataset.load(quick_resolution(job.dataset.name, job.nas.space))
    cfg = resolve_nas(job.nas, data.name)
    settings_for([p.method for p in parsed.values() if p], job.distill)
    check_space_fits(space, data)
    names = [candidate_name(p) for p in grid(space)]
    out = run.folder_for(args.out, f"nas-{data.name}-{cfg.space}")
    write_job_config(out, {"dataset": to_dict(job.dataset), "nas": to_dict(cfg), "proxies": specs,
                           "distill": to_dict(job.distill), "device": str(device),
                           "cache": str(args.cache), "versions": library_versions()}, "nas.json", args.force)
    print(f"NAS on {job.dataset.describe(data)}: {len(names)} candidates "
          f"({cfg.space} space), proxies {', '.join(specs)}, proxy {cfg.proxy_epochs} / whole "
          f"{cfg.whole_epochs} epochs, {cfg.workers} worker(s), on {device} -> {out}")

    # inputs first: a bad results file, a missing proxy file or a set from another dataset fails
    # before any distillation or training
    whole = load_whole_results(cfg.whole_results, names) if cfg.whole_results else None
    proxies: dict[str, tuple[SyntheticSet, str, Any]] = {}  # set, identity, test images in its space
    train_idx, val_idx = holdout(data, cfg)
    # proxies made here are distilled without the validation images (the key records the split)
    maker = BufferMaker(job.dataset, without_validation(data, train_idx), device, args.cache, args.force,
                        progress=not args.quiet, subset={"holdout": [cfg.val_fraction, cfg.val_seed]})
    for spec, p in parsed.items():
        if p is None:
            synset = SyntheticSet.load(spec)
            proxies[labels[spec]] = (synset, "file:" + file_digest(spec), eval_inputs(synset, data))
    for spec, p in parsed.items():
        if p is not None:
            dcfg = maker.resolve(p.method, p.ipc, p.distill_config(job.distill))
            synset, path, reused = maker.get(dcfg)
            print(f"  proxy {spec}: {'reused' if reused else 'made'} {path}")
            proxies[spec] = (synset, "buffer:" + maker.artifact(dcfg).key, eval_inputs(synset, data))

    prep = prepare(data, job.dataset.zca, "cpu")
    base = {"dataset": job.dataset.identity(data), "space": cfg.space, "val": [cfg.val_fraction, cfg.val_seed],
            "recipe": [cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch, cfg.dsa, cfg.init], "seed": cfg.seed}
    whole_cond = whole_condition(prep, cfg, train_idx, val_idx)
    if whole is None:
        whole = run_study(f"{data.name}_whole", whole_cond, {**base, "epochs": cfg.whole_epochs}, cfg,
                          Path(args.cache), device, args.force, args.quiet)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for label, (synset, identity, test_x) in proxies.items():
        results[label] = run_study(f"{data.name}_{label}", proxy_condition(synset, test_x, data, val_idx, cfg),
                                   {**base, "proxy": identity, "epochs": cfg.proxy_epochs},
                                   cfg, Path(args.cache), device, args.force, args.quiet)
        if cfg.early_stopping:
            steps, ecnd = early_condition(whole_cond, len(synset.decoded()[1]), cfg)
            elabel = f"early_{steps}steps"
            if elabel not in results:
                results[elabel] = run_study(f"{data.name}_{elabel}", ecnd, {**base, "early_steps": steps,
                                                                            "epochs": ecnd.epochs},
                                            cfg, Path(args.cache), device, args.force, args.quiet)
    results["whole"] = whole

    rows = [summary_row(label, r, whole, cfg.top_k) for label, r in results.items()]
    topcols = [f"top{k2}" for k2 in cfg.top_k]
    for r in rows:
        r["best_whole_test"] = round(r["best_whole_test"], 2)
        for c in ["spearman", *topcols]:
            r[c] = round(r[c], 3) if r[c] == r[c] else "n/a"
        r["minutes"] = round(r["minutes"], 2)
    columns = ["proxy", "best", "best_whole_test", "spearman", *topcols, "minutes", "images"]
    plot = scatter({lb: r for lb, r in results.items() if lb != "whole"}, whole, out / "nas_scatter.png",
                   f"{job.dataset.describe(data)}:\n{len(names)} ConvNets ({cfg.space} space)")
    publish(rows, columns, out, "nas",
            {"dataset": data.name, "device": str(device), "config": to_dict(cfg), "versions": library_versions(),
             "candidates": dict(results)},
            notes="best = the candidate with the highest proxy validation accuracy; best_whole_test = its test "
                  "accuracy (%) when trained on the whole data")
    print(f"  plot:   {plot}")
    return 0


def add_parser(sub: Any, common: Any) -> None:
    n = sub.add_parser(
        "nas", help="architecture search over the 720-ConvNet grid with a synthetic proxy",
        description="Train every ConvNet of the search space on each proxy (200 epochs), on the whole "
                    "training set (100 epochs, the ground truth, computed once and cached) and with early "
                    "stopping (the whole set for as many steps as the proxy training), rank by accuracy on "
                    "a validation split of the real training set, and report the best architecture's "
                    "whole-data test accuracy and Spearman's rho over all and the top-k candidates. Studies "
                    "are Optuna studies in a journal file under --cache (or --storage URL); workers claim "
                    "candidates, so each is trained once however many workers start, join or die; an "
                    "interrupted search resumes. Writes nas.{md,csv,json} and nas_scatter.png.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python pipelines/run.py nas --proxy atom_ipc50                    # CIFAR-10, 720 ConvNets\n"
               "  python pipelines/run.py nas --proxy random_ipc10_digits --space small   # offline, CPU\n"
               "  python pipelines/run.py nas --proxy atom_ipc50,dm_ipc50 --workers 4\n"
               "  python pipelines/run.py nas --proxy atom_ipc50 --storage postgresql+psycopg2://u:p@host/nas")
    n.add_argument("--proxy", help="comma-separated proxies: <method>_ipc<N>[_<dataset>] (made once, cached) "
                                   "or synset.pt paths")
    n.add_argument("--dataset", help="dataset (default cifar10, or the one a proxy name gives)")
    n.add_argument("--data-root", help="data folder (default: data)")
    n.add_argument("--space", help="full (720, default), small (48) or tiny (4)")
    n.add_argument("--workers", type=int, help="local worker processes per study (default 1)")
    n.add_argument("--storage", help="Optuna RDB URL shared by workers on several machines, e.g. "
                                     "postgresql+psycopg2://user:pass@host/db (pip install -e '.[postgres]'); "
                                     "default: a journal file in the cache")
    n.add_argument("--whole-results", help="csv/json of whole-data results made elsewhere")
    n.add_argument("--proxy-epochs", type=int, help="epochs on the proxy (default 200; digits 100)")
    n.add_argument("--whole-epochs", type=int, help="epochs on the whole data (default 100; digits 50)")
    n.add_argument("--seed", type=int, help="candidate initialisation seed (default 0)")
    n.add_argument("--cache", default="artifacts", help="artifact cache folder (default: artifacts)")
    n.add_argument("--force", action="store_true", help="recompute cached proxies and studies")
    common(n)
    n.set_defaults(func=cmd_nas)
