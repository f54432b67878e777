"""The toolkit's command line: ``python pipelines/run.py {distill,evaluate,export,continual,nas} [options]``.

Every subcommand takes ``--config FILE.yaml`` (keys documented in ``pipelines/configs/``),
``--set key=value`` overrides (repeatable), ``--out DIR`` (default: a fresh directory under
``runs/``) and ``--device`` (default: cuda when available, else cpu). A bad input prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # running as a script from a checkout without installing the package
    import distill  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from distill.config import to_dict
from distill.data import ImageData
from distill.datasets import DATASETS
from distill.interrupts import Terminated, raise_terminated
from distill.loop import distill
from distill.prepare import check_ipc, prepare
from distill.settings import SetConfig, resolve, set_identity, settings_for
from distill.errors import UserError
from distill.evaluate import ALL_ARCHS, combine_sets, eval_inputs, evaluate_set, resolve_eval
from distill.train import TrainRecipe, keep_host_memory
from distill.report import markdown_table, pct, write_tables
from distill.methods import METHODS, get_method
from distill.synset import SyntheticSet, library_versions
from pipelines import continual_cmd, nas_cmd, reproduce_cmd, scaleout
from pipelines.artifacts import config_key, list_artifacts
from pipelines.buffers import BufferMaker
from pipelines.registry import BUFFERS_FILE, dataset_base, file_label, lookup, registry
from pipelines.common import DataConfig, RunContext, Tee, build_config, check_writable, pick_device, write_yaml


@dataclass
class DistillJob:
    """``run.py distill``: dataset + distillation hyperparameters."""

    dataset: DataConfig = field(default_factory=DataConfig)
    distill: SetConfig = field(default_factory=SetConfig)


# --------------------------------------------------------------------------------------
# distill


def finished_here(args: argparse.Namespace, cfg: SetConfig, data: ImageData) -> bool:
    """A finished set in ``--out`` is never overwritten without ``--force``: True (nothing to
    do, said) when it was made from the same data with the same config, else one error line."""
    done = Path(args.out) / "synset.pt" if args.out else None
    if args.force or done is None or not done.is_file():
        return False
    old = SyntheticSet.load(done)
    same = (old.meta.get("dataset") == data.name and list(old.meta.get("image_size") or []) == list(data.image_size)
            and set_identity(old.meta.get("config") or {}) == set_identity(to_dict(cfg)))
    if not same:
        raise UserError(f"--out {args.out} already holds a finished synthetic set made with another config or "
                        "data; give another --out, or --force to replace it")
    print(f"{done} is already finished with this config; nothing to do (--force distils it again)")
    return True


def cmd_distill(args: argparse.Namespace, run: RunContext) -> int:
    named = lookup(args.buffer) if args.buffer else None
    if args.buffer and named is None:
        raise UserError(f"--buffer takes a buffer name (e.g. atom_ipc50), not a file: {args.buffer}")
    base = {"dataset": dataset_base([named]), "distill": dict(named.distill)} if named else None
    job: DistillJob = build_config(DistillJob, args, {
        "dataset.name": args.dataset, "dataset.root": args.data_root,
        "distill.method": args.method, "distill.ipc": args.ipc,
        "distill.iterations": args.iterations, "distill.seed": args.seed,
    }, base)
    d = scaleout.from_env()
    device = pick_device(args.device)
    if d.active and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    if d.active and not args.out:
        raise UserError("under torchrun give --out DIR, the folder every rank writes to")
    settings_for([job.distill.method], job.distill)  # a typo or a hyperparameter it ignores: before any data
    data = job.dataset.load()
    cfg = resolve(job.distill, data.image_size[0], data.name)
    check_ipc(data, cfg.ipc)
    lead = d.rank == 0
    if finished_here(args, cfg, data):
        return 0
    out = run.folder_for(args.out, f"distill-{data.name}-{cfg.method}-ipc{cfg.ipc}", record=lead)
    if lead:
        resolved = {"dataset": to_dict(job.dataset), "distill": to_dict(cfg), "device": str(device),
                    "processes": d.world, "versions": library_versions()}
        write_yaml(out / "config.yaml", resolved)
        print(f"distilling {data.name} ({data.num_classes} classes, {len(data.train_y)} train images) "
              f"with {cfg.method}, ipc {cfg.ipc}, on {device}"
              f"{f' x {d.world} processes (class shards)' if d.active else ''} -> {out}")
    if named is not None and not d.active:
        # a named buffer is a cached artifact: made once per resolved config, reused after
        # (the same cache that continual and nas use); --out receives a copy
        maker = BufferMaker(job.dataset, data, device, args.cache, args.force, progress=not args.quiet)
        synset, cached, reused = maker.get(cfg)
        path, grid = synset.save(out / "synset.pt"), synset.save_grid(out / "grid.png")
        print(f"\n{cfg.method} ipc {cfg.ipc} on {data.name}: {len(synset.labels)} images "
              f"{tuple(synset.image_shape)}, " + (f"reused from the cache ({cached})" if reused else
                                                   f"made in {synset.meta.get('seconds', 0):.1f} s, cached at {cached}"))
        print(f"  synthetic set: {path}\n  image grid:    {grid}\n  config:        {out / 'config.yaml'}")
        return 0
    shard = None
    if d.active and get_method(cfg.method).kind != "select":
        scaleout.start(d, device)
        shard = scaleout.shard_of(data.num_classes, d.rank, d.world)
    prep = prepare(data, job.dataset.zca, device)
    ckpt = out / (f"checkpoint.rank{d.rank}.pt" if d.active else "checkpoint.pt")
    if args.force and ckpt.exists():
        ckpt.unlink()
    synset = distill(prep, cfg, checkpoint=ckpt, resume=not args.force, progress=not args.quiet and lead,
                     shard=shard, extra_meta={"data_config": to_dict(job.dataset),
                                              **({"processes": d.world} if shard is not None else {})})
    if shard is not None:
        synset = synset.with_images(scaleout.gather_shards(synset.images, data.num_classes, cfg.ipc, d, device))
        scaleout.stop(d)
    if not lead:
        ckpt.unlink(missing_ok=True)
        return 0
    path = synset.save(out / "synset.pt")
    grid = synset.save_grid(out / "grid.png")
    if ckpt.exists():
        ckpt.unlink()
    print(f"\n{cfg.method} ipc {cfg.ipc} on {data.name}: {len(synset.labels)} images "
          f"{tuple(synset.image_shape)} in {synset.meta.get('seconds', 0):.1f} s")
    print(f"  synthetic set: {path}\n  image grid:    {grid}\n  config:        {out / 'config.yaml'}")
    return 0


# --------------------------------------------------------------------------------------
# evaluate


@dataclass
class EvaluateJob:
    """``run.py evaluate``: which real test set, and how to train the networks."""

    dataset: DataConfig = field(default_factory=DataConfig)
    eval: TrainRecipe = field(default_factory=TrainRecipe)


def evaluation_defaults(device: torch.device) -> dict[str, Any]:
    """The device's defaults under every config file and flag: on a GPU the papers' 20 networks
    per set (docs/protocols.md section 3); on the CPU ``TrainRecipe``'s 5."""
    return {"eval": {"models": 20}} if device.type == "cuda" else {}


def cmd_evaluate(args: argparse.Namespace, _run: RunContext) -> int:
    files = [s.strip() for s in args.synset.split(",") if s.strip()]
    if not files:
        raise UserError("--synset needs at least one synset.pt path")
    labels = [file_label(f) for f in files]
    if len(set(labels)) < len(labels):  # two files called alike: label them by path
        labels = files
    if len(set(labels)) < len(labels):
        raise UserError(f"--synset names a file twice: {args.synset}")
    sets = [SyntheticSet.load(f) for f in files]  # every file is checked before any training
    synset = sets[0]
    device = pick_device(args.device)
    job: EvaluateJob = build_config(EvaluateJob, args, {
        "dataset.name": args.dataset or synset.meta.get("dataset"), "dataset.root": args.data_root,
        "eval.models": args.models, "eval.epochs": args.epochs, "eval.seed": args.seed,
        "eval.archs": args.arch.split(",") if args.arch else None,
    }, evaluation_defaults(device))
    cfg = resolve_eval(job.eval, job.dataset.name)
    data = job.dataset.load(synset.image_shape[1])  # the real data at the set's size
    test_xs = [eval_inputs(s, data) for s in sets]
    out = Path(args.out) if args.out else Path(files[0]).parent
    check_writable(out, "--out (default: the set's folder)")
    print(f"evaluating {', '.join(files)} ({synset.meta.get('method', '?')}, ipc {synset.ipc}, "
          f"{len(synset.labels)} images{f', {len(sets)} sets' if len(sets) > 1 else ''}) on {data.name} test "
          f"({len(data.test_y)} images): {cfg.models} models x {len(cfg.archs)} architectures"
          f"{f' x {len(sets)} sets' if len(sets) > 1 else ''}, {cfg.epochs} epochs, on {device}")
    results = combine_sets({lb: evaluate_set(s, tx, data.test_y, cfg, device, progress=not args.quiet, set_index=i)
                            for i, (lb, s, tx) in enumerate(zip(labels, sets, test_xs))})
    rows = [{**r.row(), "accuracy": pct(r.mean, r.std, len(r.accuracies))} for r in results]
    columns = ["arch", "models", "sets", "accuracy", "seconds", "ensembled"]
    synset_field = files if len(files) > 1 else files[0]
    stem = evaluation_stem(out, to_dict(cfg), synset_field)
    if stem != "evaluation":
        print(f"\n  {out / 'evaluation.json'} holds another configuration's results; keeping it and writing {stem}.*")
    paths = write_tables(rows, columns, out, stem,
                         extra={"synset": synset_field, "dataset": data.name,
                                "device": str(device),
                                "config": to_dict(cfg), "versions": library_versions()})
    print("\n" + markdown_table(rows, columns))
    print(f"\n  results: {paths['md']}, {paths['csv'].name}, {paths['json'].name}")
    return 0


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


# --------------------------------------------------------------------------------------
# export


def cmd_export(args: argparse.Namespace, _run: RunContext) -> int:
    synset = SyntheticSet.load(args.synset)
    out = Path(args.out) if args.out else Path(args.synset).with_suffix("")
    if args.format == "npz":
        path = synset.export_npz(out.with_suffix(".npz"))
    elif args.format == "png":
        path = synset.export_png(out if args.out else out.parent / (out.name + "_png"))
    elif args.format == "avalanche":
        from continual.memory import export_buffers

        path = export_buffers(synset, out.with_suffix(".buffers.pt"))
    else:  # grid
        path = synset.save_grid(out.with_suffix(".png"))
    print(f"exported {len(synset.labels)} images ({synset.num_classes} classes) to {path}")
    return 0


# --------------------------------------------------------------------------------------
# list


def cmd_list(args: argparse.Namespace, _run: RunContext) -> int:
    rows = list_artifacts(args.cache)
    if rows:
        print(f"cached artifacts under {args.cache}/:\n")
        print(markdown_table(rows, ["stage", "name", "key", "status", "mb", "path"]))
    else:
        print(f"no cached artifacts under {args.cache}/")
    defs = registry()
    print(f"\nnamed buffers ({BUFFERS_FILE}):\n")
    print(markdown_table([{"name": d.name, "dataset": d.dataset.get("name", "(the job's)"), "method": d.method,
                           "ipc": d.ipc} for d in defs.values()], ["name", "dataset", "method", "ipc"]))
    return 0


# --------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file (see pipelines/configs/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set distill.lam=0.02 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: a fresh runs/<job>-<time>/)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="Attention-matching dataset distillation toolkit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python pipelines/run.py distill --dataset digits --method atom --ipc 10\n"
               "  python pipelines/run.py distill --dataset cifar10 --method datadam --ipc 50\n"
               "  python pipelines/run.py evaluate --synset runs/x/synset.pt --models 20 --arch convnet,resnet18\n"
               "  python pipelines/run.py export --synset runs/x/synset.pt --format npz\n"
               "  python pipelines/run.py continual --steps 5 --dataset digits\n"
               "  python pipelines/run.py nas --proxy random_ipc10_digits --space small")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("distill", help="condense a dataset into a synthetic set (or a coreset)",
                       description="Distil a dataset with dm, datadam, atom or atom_channel, or select "
                                   "a coreset (random, herding, kcenter). Writes synset.pt, grid.png and "
                                   "the resolved config.yaml to --out. An interrupted run continues from "
                                   "its checkpoint when started again with the same --out.")
    d.add_argument("--buffer", help="a named buffer (pipelines/configs/buffers.yaml, e.g. atom_ipc50): its "
                                    "dataset, method and IPC; other flags still override")
    d.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (default cifar10)")
    d.add_argument("--data-root", help="data folder (default: data)")
    d.add_argument("--method", help=f"one of: {', '.join(METHODS)} (default atom)")
    d.add_argument("--ipc", type=int, help="images per class (default 10)")
    d.add_argument("--iterations", type=int,
                   help="optimisation steps (default: DataDAM/ATOM 8000, DM 20000, as the papers; digits 300). "
                        "MNIST, Fashion-MNIST and SVHN keep the papers' values: on a 2-core CPU an iteration takes "
                        "about 2 s there (8000: 4-5 h), so give fewer, or use `reproduce --budget cpu`")
    d.add_argument("--seed", type=int, help="random seed (default 0)")
    d.add_argument("--force", action="store_true", help="ignore an existing checkpoint in --out (with --buffer: "
                                                        "recompute the cached buffer)")
    d.add_argument("--cache", default="artifacts", help="artifact cache for --buffer sets (default: artifacts)")
    _common(d)
    d.set_defaults(func=cmd_distill)

    v = sub.add_parser("evaluate", help="train networks on a synthetic set and test them",
                       description="Train --models fresh networks of each --arch on a synthetic set "
                                   "(SGD 0.01, momentum 0.9, wd 5e-4, batch 256, LR x0.1 at half, DSA) and "
                                   "test on the real test set, preprocessed with the set's own stored "
                                   "transform. Writes evaluation.{md,csv,json} next to the set (or --out).")
    v.add_argument("--synset", required=True,
                   help="a synset.pt path, or several, comma-separated (e.g. one per distillation seed): "
                        "the papers' protocol, one mean +- std over every network of every set")
    v.add_argument("--models", type=int, help="networks per architecture (default: 20 on a GPU, as the papers; 5 on the CPU)")
    v.add_argument("--arch", help="comma-separated: convnet, alexnet, vgg11, resnet18, vit, a norm variant "
                                  "like resnet18-batchnorm, or all (= " + ", ".join(ALL_ARCHS) + ")")
    v.add_argument("--epochs", type=int, help="training epochs (default 1000; digits 300)")
    v.add_argument("--dataset", help="real dataset for testing (default: the one the set was made from)")
    v.add_argument("--data-root", help="data folder (default: data)")
    v.add_argument("--seed", type=int, help="random seed (default 0)")
    _common(v)
    v.set_defaults(func=cmd_evaluate)

    e = sub.add_parser("export", help="export a synthetic set for other code",
                       description="Export a synthetic-set file to .npz (numpy), a PNG folder per class "
                                   "(ImageFolder layout), per-class replay buffers (.buffers.pt) or one "
                                   "image-grid PNG.")
    e.add_argument("--synset", required=True, help="path of a synset.pt file")
    e.add_argument("--format", choices=("npz", "png", "avalanche", "grid"), default="npz",
                   help="npz: numpy arrays; png: ImageFolder tree; avalanche: per-class buffers "
                        "(class id -> images) for continual-learning code, see the README; grid: one PNG")
    e.add_argument("--out", help="output path (default: next to the set)")
    e.set_defaults(func=cmd_export)

    li = sub.add_parser("list", help="show cached artifacts and the named buffers",
                        description="List the artifact cache (stage, name, key, complete or partial, size) "
                                    "and the buffer names defined in pipelines/configs/buffers.yaml.")
    li.add_argument("--cache", default="artifacts", help="artifact cache folder (default: artifacts)")
    li.set_defaults(func=cmd_list)

    continual_cmd.add_parser(sub, _common)
    nas_cmd.add_parser(sub, _common)
    reproduce_cmd.add_parser(sub, _common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    keep_host_memory()  # large CPU tensors reuse freed memory instead of fresh page-faulted mmaps
    run = RunContext(argv)
    tee = Tee(sys.stdout)
    code = 1
    on_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal needs it
    previous = signal.signal(signal.SIGTERM, raise_terminated) if on_main_thread else None
    try:
        for flag in ("out", "cache"):  # where results go, before any work (list only reads the cache)
            if getattr(args, flag, None) and args.command != "list":
                check_writable(getattr(args, flag), f"--{flag}")
        with contextlib.redirect_stdout(tee):
            code = int(args.func(args, run))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"\n{'terminated' if terminated else 'interrupted'}; {run.resume_hint()}", file=sys.stderr)
        code = 143 if terminated else 130
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        run.finish(code, tee.copy.getvalue())
    return code


if __name__ == "__main__":
    sys.exit(main())
