"""``run.py nas``: the 720-ConvNet search with proxy, whole-data and early-stopping training.

Resolves each proxy (a ``<method>_ipc<N>`` name, distilled once and cached, or a synset.pt
path), trains every candidate of the space on it in an Optuna grid study (several workers may
share a study), trains the whole-data ground truth once (cached, or imported with
``nas.whole_results``) and writes the NAS table (md/csv/json) and the scatter plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill.config import to_dict
from distill.data import ImageData
from distill.distiller import DistillSettings, prepare
from distill.errors import UserError
from distill.evaluate import eval_inputs
from distill.train import steps_per_epoch
from distill.files import atomic_text
from distill.report import publish
from distill.synset import SyntheticSet, library_versions
from nas.config import NASConfig, quick_resolution, resolve_nas
from nas.space import KEYS, candidate_name, candidate_spec, get_space, grid

from .artifacts import Artifact, file_digest
from .buffers import BufferMaker
from .common import DataConfig, build_config, RunContext, pick_device, write_yaml
from .registry import dataset_base, file_label, lookup

@dataclass
class NASJob:
    """``run.py nas``: dataset, search, and how proxies are distilled when needed."""

    dataset: DataConfig = field(default_factory=DataConfig)
    nas: NASConfig = field(default_factory=NASConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)  # for proxies made here (method, IPC: the proxy's name)


def check_space_fits(space: dict[str, list[Any]], data: ImageData) -> None:
    """Every candidate's feature maps must survive its pooling at this image size."""
    for pool in space["pool"]:
        params = {"depth": max(space["depth"]), "width": 4, "act": "relu", "norm": "none", "pool": pool}
        try:
            candidate_spec(params).build(data.channels, data.num_classes, data.image_size)
        except UserError as exc:
            raise UserError(f"search space does not fit {data.image_size[0]}x{data.image_size[1]} "
                            f"images: {exc}") from None


def _load_whole_results(path: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """Whole-data results made elsewhere: csv or json rows with the five space keys (or a
    ``candidate`` name) and ``test_acc`` (``val_acc`` optional)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"nas.whole_results file {p} does not exist")
    if p.suffix == ".json":
        blob = json.loads(p.read_text())
        rows = blob["rows"] if isinstance(blob, dict) else blob
    else:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "test_acc" not in r:
            raise UserError(f"{p}: every row needs test_acc (and candidate or {', '.join(KEYS)})")
        name = r.get("candidate") or candidate_name({k: r[k] for k in KEYS})
        out[name] = {"test_acc": float(r["test_acc"]), "val_acc": float(r.get("val_acc") or "nan")}
    missing = [n for n in names if n not in out]
    if missing:
        raise UserError(f"{p} lacks {len(missing)} candidates of the space, e.g. {missing[0]}")
    return out


def run_study(label: str, cond: Any, key: dict[str, Any], cfg: NASConfig, cache: Path, device: torch.device,
              force: bool, quiet: bool) -> dict[str, dict[str, Any]]:
    """Train every candidate under ``cond`` in a (cached, resumable, shareable) study."""
    from tqdm import tqdm

    from nas.study import finished, open_storage, open_study, recover, results_table, run_worker, running
    from nas.train import train_candidate
    from nas.worker import to_device, worker_main

    space = get_space(cfg.space)
    art = Artifact(cache, "nas", label, key, "results.json")
    if art.complete and not force:
        rows = json.loads(art.result_path.read_text())["rows"]
        print(f"  {label}: reused {len(rows)} candidates from {art.path}")
        return rows
    folder = art.open(force=force)
    journal = folder / "study.journal"
    storage = open_storage(cfg.storage, journal)
    name = f"{label}-{art.key}"
    study = open_study(name, storage, space)
    if not cfg.storage:
        queued = recover(study, space)
        if queued:
            print(f"  {label}: resuming; {queued} interrupted candidate(s) queued again")
    total = len(grid(space))
    bar = tqdm(total=total, desc=f"nas {label}", disable=quiet, dynamic_ncols=True)

    def progress(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    if cfg.workers == 1:
        dev_cond = to_device(cond, device)
        run_worker(study, space, lambda p, i: train_candidate(p, i, dev_cond, cfg, device), progress)
    else:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        procs = [ctx.Process(target=worker_main, args=(cfg.storage, str(journal), name, cond, cfg,
                                                       f"cuda:{i % gpus}" if gpus else "cpu", threads))
                 for i in range(cfg.workers)]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            progress(len(finished(study)), total)
            time.sleep(1.0)
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            raise UserError(f"{len(bad)} NAS worker(s) failed (exit codes {bad}); run the same command "
                            "again to resume the study")
    rows = results_table(study)
    while len(rows) < total and running(study):  # other machines are still training candidates
        progress(len(rows), total)
        time.sleep(5.0)
        rows = results_table(study)
    progress(len(rows), total)
    bar.close()
    if len(rows) < total:
        raise UserError(f"study {name} finished only {len(rows)} of {total} candidates; run the command "
                        "again to resume it")
    atomic_text(art.result_path, json.dumps({"study": name, "seconds": time.perf_counter() - t0,
                                           "rows": rows}, indent=1))
    return rows


def cmd_nas(args: argparse.Namespace, run: RunContext) -> int:
    from nas.report import scatter, summary_row
    from nas.train import Condition, early_epochs, val_split

    specs = [s.strip() for s in (args.proxy or "").split(",") if s.strip()]
    if not specs:
        raise UserError("give at least one --proxy: a name like atom_ipc50 or a synset.pt path")
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
    check_space_fits(space, data)
    names = [candidate_name(p) for p in grid(space)]
    out = run.folder_for(args.out, f"nas-{data.name}-{cfg.space}")
    write_yaml(out / "config.yaml", {"dataset": to_dict(job.dataset), "nas": to_dict(cfg), "proxies": specs,
                                     "distill": to_dict(job.distill), "device": str(device),
                                     "cache": str(args.cache), "versions": library_versions()})
    print(f"NAS on {data.name} ({data.image_size[0]}x{data.image_size[1]}): {len(names)} candidates "
          f"({cfg.space} space), proxies {', '.join(specs)}, proxy {cfg.proxy_epochs} / whole "
          f"{cfg.whole_epochs} epochs, {cfg.workers} worker(s), on {device} -> {out}")

    # proxies first: a missing file or a set from another dataset fails before any training
    proxies: dict[str, tuple[SyntheticSet, str, Any]] = {}  # set, identity, test images in its space
    maker = BufferMaker(job.dataset, data, device, args.cache, args.force, progress=not args.quiet)
    for spec, p in parsed.items():
        if p is None:
            synset = SyntheticSet.load(spec)
            proxies[file_label(spec)] = (synset, "file:" + file_digest(spec), eval_inputs(synset, data))
    for spec, p in parsed.items():
        if p is not None:
            dcfg = maker.resolve(p.method, p.ipc, p.distill_config(job.distill))
            synset, path, reused = maker.get(dcfg)
            print(f"  proxy {spec}: {'reused' if reused else 'made'} {path}")
            proxies[spec] = (synset, "buffer:" + maker.artifact(dcfg).key, eval_inputs(synset, data))

    train_idx, val_idx = val_split(data.train_y, data.num_classes, cfg.val_fraction, cfg.val_seed)
    prep = prepare(data, job.dataset.zca, "cpu")
    k = data.num_classes
    base = {"dataset": job.dataset.identity(data), "space": cfg.space, "val": [cfg.val_fraction, cfg.val_seed],
            "recipe": [cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch, cfg.dsa, cfg.init], "seed": cfg.seed}
    whole_cond = Condition("whole", prep.train_x[train_idx], data.train_y[train_idx], prep.train_x[val_idx],
                           data.train_y[val_idx], prep.test_x, data.test_y, k, int(cfg.whole_epochs or 100))
    if cfg.whole_results:
        whole = _load_whole_results(cfg.whole_results, names)
    else:
        whole = run_study(f"{data.name}_whole", whole_cond, {**base, "epochs": cfg.whole_epochs}, cfg,
                          Path(args.cache), device, args.force, args.quiet)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for label, (synset, identity, test_x) in proxies.items():
        val_x = synset.preprocess(data.train_x[val_idx])
        cond = Condition("proxy", synset.images, synset.labels, val_x, data.train_y[val_idx],
                         test_x, data.test_y, k, int(cfg.proxy_epochs or 200))
        results[label] = run_study(f"{data.name}_{label}", cond, {**base, "proxy": identity,
                                                                  "epochs": cfg.proxy_epochs},
                                   cfg, Path(args.cache), device, args.force, args.quiet)
        if cfg.early_stopping:
            steps = int(cfg.proxy_epochs or 200) * steps_per_epoch(len(synset.labels), cfg.batch)
            ecnd = Condition("early", whole_cond.x, whole_cond.y, whole_cond.val_x, whole_cond.val_y,
                             whole_cond.test_x, whole_cond.test_y, k,
                             early_epochs(steps, len(whole_cond.x), cfg.batch), max_steps=steps)
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
                   f"{data.name}: {len(names)} ConvNets ({cfg.space} space)")
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
                    "are Optuna grid studies in a journal file under --cache (or --storage URL); an "
                    "interrupted search resumes. Writes nas.{md,csv,json} and nas_scatter.png.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python pipelines/run.py nas --proxy atom_ipc50                    # CIFAR-10, 720 ConvNets\n"
               "  python pipelines/run.py nas --proxy random_ipc10_digits --space small   # offline, CPU\n"
               "  python pipelines/run.py nas --proxy atom_ipc50,dm_ipc50 --workers 4\n"
               "  python pipelines/run.py nas --proxy atom_ipc50 --storage postgresql://u:p@host/nas")
    n.add_argument("--proxy", help="comma-separated proxies: <method>_ipc<N>[_<dataset>] (made once, cached) "
                                   "or synset.pt paths")
    n.add_argument("--dataset", help="dataset (default cifar10, or the one a proxy name gives)")
    n.add_argument("--data-root", help="data folder (default: data)")
    n.add_argument("--space", help="full (720, default), small (48) or tiny (4)")
    n.add_argument("--workers", type=int, help="local worker processes per study (default 1)")
    n.add_argument("--storage", help="Optuna RDB URL shared by workers on several machines "
                                     "(default: a journal file in the cache)")
    n.add_argument("--whole-results", help="csv/json of whole-data results made elsewhere")
    n.add_argument("--proxy-epochs", type=int, help="epochs on the proxy (default 200; digits 100)")
    n.add_argument("--whole-epochs", type=int, help="epochs on the whole data (default 100; digits 50)")
    n.add_argument("--seed", type=int, help="candidate initialisation seed (default 0)")
    n.add_argument("--cache", default="artifacts", help="artifact cache folder (default: artifacts)")
    n.add_argument("--force", action="store_true", help="recompute cached proxies and studies")
    common(n)
    n.set_defaults(func=cmd_nas)
