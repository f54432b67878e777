"""Quality on real data, offline: distil scikit-learn's digits with every method at IPC 1 and 10,
evaluate each set with 10 ConvNets, print mean +- std test accuracy and distillation time.

Also measures the loss-scale choice of DataDAM/ATOM (docs/protocols.md section 2): the toolkit's
default is the DataDAM code's x100 (the same as a 100x larger image learning rate with plain SGD);
the rows ``datadam x1`` / ``atom x1`` (opt-in through --methods) use the papers' x1 and change only
``loss_scale``. (Tables recorded before the default changed name the x100 rows ``datadam x100``.)

    python benchmarks/quality_digits.py                      # about 25 minutes on a 2-core CPU
    python benchmarks/quality_digits.py --methods "datadam,datadam x1,atom,atom x1"
    python benchmarks/quality_digits.py --ipc 1 --methods random,atom --models 3

Defaults: digits at their native 8x8 (the toolkit's 16x16 default is an upsampling of the same
pixels; 8x8 keeps the run within 30 CPU minutes), ConvNet-3 width 128 instance norm,
distillation 300 iterations with 64 real images per class (digits defaults, paper otherwise),
evaluation 300 epochs (digits default) with the toolkit's initialisation (PyTorch default), seeds 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.datasets import load_dataset  # noqa: E402
from distill.loop import distill  # noqa: E402
from distill.prepare import prepare  # noqa: E402
from distill.settings import SetConfig, resolve  # noqa: E402
from distill.evaluate import evaluate_set, resolve_eval  # noqa: E402
from distill.train import TrainRecipe  # noqa: E402
from distill.report import markdown_table, pct  # noqa: E402

VARIANTS = {
    "random": ("random", {}),
    "herding": ("herding", {}),
    "kcenter": ("kcenter", {}),
    "dm": ("dm", {}),
    "datadam": ("datadam", {}),
    "datadam x1": ("datadam", {"loss_scale": 1.0}),
    "atom": ("atom", {}),
    "atom x1": ("atom", {"loss_scale": 1.0}),
    "atom_channel": ("atom_channel", {}),
}

DEFAULT_METHODS = ("random", "herding", "kcenter", "dm", "datadam", "atom", "atom_channel")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipc", default="1,10", help="comma-separated IPCs (default 1,10)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help="comma-separated subset of: " + ", ".join(VARIANTS) + " (default: the seven "
                         "methods; add 'datadam x1,atom x1' for the loss-scale study)")
    ap.add_argument("--models", type=int, default=10, help="evaluation networks per set (default 10)")
    ap.add_argument("--epochs", type=int, default=None, help="evaluation epochs (default: digits 300)")
    ap.add_argument("--iterations", type=int, default=None, help="distillation iterations (default: digits 300)")
    ap.add_argument("--resolution", type=int, default=None, help="digits resolution (default 8, native)")
    ap.add_argument("--dataset", default="digits",
                    help="digits (default) or another offline dataset, e.g. fashionmnist with "
                         "--data-root /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)")
    ap.add_argument("--data-root", default="data", help="data folder for --dataset (default: data)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--eval-init", default=TrainRecipe.init,
                    help="comma-separated evaluation initialisations, each a column: he (the papers' text) "
                         "and/or default (PyTorch's, as the code behind the published numbers; the "
                         f"toolkit's default: {TrainRecipe.init})")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    names = [m.strip() for m in args.methods.split(",")]
    bad = [m for m in names if m not in VARIANTS]
    if bad:
        sys.exit(f"error: unknown method {bad[0]!r}; allowed: {', '.join(VARIANTS)}")
    dev = torch.device(args.device)

    res = args.resolution or (8 if args.dataset == "digits" else None)
    data = load_dataset(args.dataset, args.data_root, resolution=res, download=False)
    prep = prepare(data, device=dev)
    inits = [i.strip() for i in args.eval_init.split(",") if i.strip()]
    ecfgs = {i: resolve_eval(TrainRecipe(models=args.models, epochs=args.epochs, init=i), data.name) for i in inits}
    ecfg = ecfgs[inits[0]]
    print(f"{data.name} {data.image_size[0]}x{data.image_size[1]}: {len(data.train_y)} train / {len(data.test_y)} test; "
          f"device {dev} ({platform.machine()}); torch {torch.__version__}; "
          f"{ecfg.models} ConvNets x {ecfg.epochs} epochs per set\n", flush=True)
    rows = []
    t_start = time.perf_counter()
    for ipc in [int(i) for i in args.ipc.split(",")]:
        for name in names:
            method, overrides = VARIANTS[name]
            cfg = resolve(SetConfig(method=method, ipc=ipc, iterations=args.iterations, params=dict(overrides)),
                          data.image_size[0], data.name)
            t0 = time.perf_counter()
            synset = distill(prep, cfg, progress=False)
            t_distill = time.perf_counter() - t0
            row = {"ipc": ipc, "method": name, "distill_s": round(t_distill, 1)}
            for i, ec in ecfgs.items():
                res = evaluate_set(synset, prep.test_x, data.test_y, ec, dev)[0]
                tag = "" if len(inits) == 1 else f" ({i})"
                row.update({f"accuracy{tag}": pct(res.mean, res.std, len(res.accuracies)), f"mean{tag}": res.mean, f"std{tag}": res.std,
                            f"eval_s{tag}": round(res.seconds, 1), f"accuracies{tag}": res.accuracies})
            rows.append(row)
            print(f"ipc {ipc:>2} {name:<13} " + "  ".join(v for k, v in row.items() if k.startswith("accuracy ")
                                                        or k == "accuracy") + f"  distill {t_distill:6.1f} s", flush=True)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s\n")
    print(markdown_table(rows, ["ipc", "method", *[k for k in rows[0] if k.startswith("accuracy") and
                                                   not k.startswith("accuracies")], "distill_s"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
