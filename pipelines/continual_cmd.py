"""``run.py continual``: class-incremental learning with distilled replay memories.

Loads the dataset, makes (or reuses from the artifact cache) every memory it compares, runs
DM's GDumb-like protocol over the Avalanche benchmark for each, and writes the per-step table
(md/csv/json), the accuracy-vs-classes plot and, optionally, TensorBoard scalars. Per-cell
results are cached too: an interrupted run continues where it stopped, and a repeated run
only redraws the outputs.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continual.config import ContinualConfig, resolve_continual
from distill.config import to_dict
from distill.datasets import quick_defaults
from distill.prepare import check_ipc
from distill.settings import DistillSettings, settings_for
from distill.errors import UserError
from distill.files import atomic_text
from distill.methods import METHODS, get_method
from distill.report import publish
from distill.synset import SyntheticSet, library_versions

from .artifacts import Artifact, config_key, file_digest
from .buffers import BufferMaker, buffer_key_config
from .common import DataConfig, build_config, RunContext, pick_device, write_job_config
from .registry import is_path, report_labels


@dataclass
class ContinualJob:
    """``run.py continual``: dataset, protocol, and how memories are distilled when needed."""

    dataset: DataConfig = field(default_factory=lambda: DataConfig(name="cifar100"))
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)  # for memories made here (method, IPC: continual)


# protocol fields that do not change a cell's result
_NOT_IN_KEY = ("memories", "orders", "tensorboard", "ensemble")


def _orders(text: str | None) -> list[int] | None:
    """``--orders 0,1,2`` as a list of class-order seeds."""
    if not text:
        return None
    try:
        return [int(o) for o in text.split(",")]
    except ValueError:
        raise UserError(f"--orders takes comma-separated integers (class-order seeds), e.g. 0,1,2; got {text!r}") from None


def cmd_continual(args: argparse.Namespace, run: RunContext) -> int:
    from tqdm import tqdm

    with warnings.catch_warnings():  # avalanche warns at import that GEM has no QP solver
        warnings.filterwarnings("ignore", message="no QP solver")
        from continual.baselines import is_stepwise, stepwise_coreset
        from continual.memory import check_memory
        from continual.protocol import benchmarks_for, cell_from_dict, cell_to_dict, run_memory, step_stats
        from continual.report import plot_curves, step_rows, tensorboard_log

    job = build_config(ContinualJob, args, {
        "dataset.name": args.dataset, "dataset.root": args.data_root,
        "continual.steps": args.steps, "continual.ipc": args.ipc, "continual.models": args.models,
        "continual.epochs": args.epochs, "continual.seed": args.seed,
        "continual.orders": _orders(args.orders),
        "continual.memories": args.memories.split(",") if args.memories else None,
    })
    device = pick_device(args.device)
    data = job.dataset.load(quick_defaults(job.dataset.name, "continual").get("resolution"))
    cfg = resolve_continual(job.continual, data.name, data.num_classes)
    specs = [m.strip() for m in cfg.memories or [] if m.strip()]
    labels = report_labels(specs, "--memories")
    files = [s for s in specs if is_path(s)]
    for spec in specs:  # every typo before any long work
        if spec not in files:
            get_method(spec)
    settings_for([s for s in specs if s not in files], job.distill)
    out = run.folder_for(args.out, f"continual-{data.name}-{cfg.steps}steps")
    write_job_config(out, {"dataset": to_dict(job.dataset), "continual": to_dict(cfg),
                           "distill": to_dict(job.distill), "device": str(device),
                           "cache": str(args.cache), "versions": library_versions()}, "continual.json", args.force)
    shape = (data.channels, *data.image_size)
    k = data.num_classes
    print(f"continual learning on {job.dataset.describe(data)}: {cfg.steps} steps, "
          f"ipc {cfg.ipc}, {cfg.models} model(s) x {len(cfg.orders or [])} class orders, {cfg.epochs} epochs, "
          f"memories {', '.join(specs)}, on {device} -> {out}")

    # 1. memories: files first (cheap checks), then coresets built per class order and step
    #    (continual.baselines: no image of a later step is used), then cached or new distilled sets
    memories: dict[str, tuple[Any, str]] = {}
    for spec in files:
        synset = SyntheticSet.load(spec)
        check_memory(synset, data.name, k, shape, cfg.ipc, f"memory {spec}")
        memories[labels[spec]] = (synset, "file:" + file_digest(spec))
    maker = BufferMaker(job.dataset, data, device, args.cache, args.force, progress=not args.quiet)
    for spec in [s for s in specs if s not in files and is_stepwise(s)]:
        dcfg = maker.resolve(spec, cfg.ipc, job.distill)
        check_ipc(data, cfg.ipc)

        def per_order(order: int, method: str = spec, dcfg: Any = dcfg) -> SyntheticSet:
            synset = stepwise_coreset(maker.prep, method, order, cfg.steps, dcfg)
            check_memory(synset, data.name, k, shape, cfg.ipc, f"memory {method}")
            return synset

        key = config_key({**buffer_key_config(job.dataset.identity(data), dcfg), "steps": cfg.steps})
        print(f"  memory {spec}: chosen per class order and step (no later data), key {key}")
        memories[spec] = (per_order, "stepwise:" + key)
    for spec in [s for s in specs if s not in files and not is_stepwise(s)]:
        dcfg = maker.resolve(spec, cfg.ipc, job.distill)
        synset, path, reused = maker.get(dcfg)
        print(f"  memory {spec}: {'reused' if reused else 'made'} {path}")
        check_memory(synset, data.name, k, shape, cfg.ipc, f"memory {spec}")
        memories[spec] = (synset, "buffer:" + maker.artifact(dcfg).key)
    ordered = {labels[s]: memories[labels[s]] for s in specs}

    # 2. the protocol, cell by cell, cached per memory
    benchmarks = benchmarks_for(data.train_x, data.train_y, data.test_x, data.test_y, k, cfg)
    proto = {key: v for key, v in to_dict(cfg).items() if key not in _NOT_IN_KEY}
    total = len(ordered) * len(cfg.orders or []) * cfg.steps
    bar = tqdm(total=total, desc="continual", disable=args.quiet, dynamic_ncols=True)
    all_cells: dict[str, dict[str, Any]] = {}
    for name, (memory, identity) in ordered.items():
        art = Artifact(Path(args.cache), "continual", f"{data.name}_{name}_{cfg.steps}steps",
                       {"memory": identity, "dataset": job.dataset.identity(data), "protocol": proto},
                       "cells.json")
        with art.lock():  # another run on the same memory and protocol: wait, then reuse its cells
            folder = art.open(force=args.force)
            # cells land in cells.partial.json as they finish; cells.json, the artifact's result,
            # is written once every cell is there, so `run.py list` tells partial from complete
            partial = folder / "cells.partial.json"
            source = art.result_path if art.complete else partial
            saved = json.loads(source.read_text()) if source.exists() else {}
            done = {key: cell_from_dict(c) for key, c in saved.items()}
            wanted = {f"{o}/{s}" for o in cfg.orders or [] for s in range(cfg.steps)}
            bar.update(len(wanted & set(done)))
            bar.set_description(f"continual {name}")

            def dump(cells: dict) -> str:
                return json.dumps({k2: cell_to_dict(c) for k2, c in cells.items()}, indent=1)

            def save(cell: Any, done: dict = done, path: Path = partial) -> None:
                done[cell.key()] = cell
                atomic_text(path, dump(done))

            test_x = maker.prep.preprocess(data.test_x) if callable(memory) else memory.preprocess(data.test_x)
            cells = run_memory(memory, test_x, data.test_y, benchmarks, cfg, device, done, save, bar)
            if not art.complete and wanted <= set(cells):
                atomic_text(art.result_path, dump(cells))
                partial.unlink(missing_ok=True)
        all_cells[name] = {"cells": cells, "artifact": str(folder)}
    bar.close()

    # 3. outputs
    curves = {name: step_stats(v["cells"], cfg.orders or [], cfg.steps) for name, v in all_cells.items()}
    rows, columns = step_rows(curves)
    for row in rows:
        row["cells"] = {key: cell_to_dict(c) for key, c in all_cells[row["memory"]]["cells"].items()}
    plot = plot_curves(curves, out / "continual.png",
                       f"{job.dataset.describe(data)}: {cfg.steps} steps, {cfg.ipc} images/class, "
                       f"{cfg.models} model(s) x {len(cfg.orders or [])} orders")
    tb = tensorboard_log(curves, out / "tensorboard") if cfg.tensorboard else None
    publish(rows, columns, out, "continual", {"dataset": data.name, "device": str(device),
                                              "config": to_dict(cfg), "versions": library_versions()})
    print(f"  plot:   {plot}" + (f"\n  tensorboard: {tb}" if tb else ""))
    return 0


def add_parser(sub: Any, common: Any) -> None:
    c = sub.add_parser(
        "continual", help="class-incremental learning with distilled replay memories",
        description="DM's class-incremental protocol on Avalanche: at every step, fresh ConvNets are "
                    "trained from scratch on the synthetic memories (ipc images per class) of all classes "
                    "seen so far and tested on those classes' real test images; mean +- std over models "
                    "and class orders. Memories named by method are distilled once and cached "
                    "(--cache); synset.pt paths are used as given. Writes continual.{md,csv,json,png}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python pipelines/run.py continual --steps 10                  # CIFAR-100, paper defaults\n"
               "  python pipelines/run.py continual --steps 5 --dataset digits  # offline, CPU minutes\n"
               "  python pipelines/run.py continual --memories random,runs/x/synset.pt --orders 0,1")
    c.add_argument("--steps", type=int, help="number of experiences (default 10; CIFAR-100 papers: 5 or 10)")
    c.add_argument("--dataset", help="dataset (default cifar100)")
    c.add_argument("--data-root", help="data folder (default: data)")
    c.add_argument("--memories", help=f"comma-separated methods ({', '.join(METHODS)}) or synset.pt paths "
                                      "(default random,herding,dm,datadam,atom; digits: random,herding,dm,datadam)")
    c.add_argument("--ipc", type=int, help="memory images per class (default 20)")
    c.add_argument("--models", type=int, help="models per step and order (default 3; digits 1)")
    c.add_argument("--orders", help="comma-separated class-order seeds (default 0,1,2,3,4; digits 0,1,2)")
    c.add_argument("--epochs", type=int, help="training epochs per model (default 1000; digits 150)")
    c.add_argument("--seed", type=int, help="training seed (default 0)")
    c.add_argument("--cache", default="artifacts", help="artifact cache folder (default: artifacts)")
    c.add_argument("--force", action="store_true", help="recompute cached memories and results")
    common(c)
    c.set_defaults(func=cmd_continual)

