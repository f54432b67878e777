"""Training N evaluation networks on a synthetic set: ensembled (torch.func vmap) vs sequential.

CIFAR-10-shaped IPC-50 set (500 random 3x32x32 images; speed does not depend on content),
ConvNet-3 width 128 instance norm, the evaluation recipe (batch 256, DSA), both paths in the same
run. Times a few epochs after a warm-up epoch and extrapolates to the protocol's 1000 epochs.

    python benchmarks/evaluate_speed.py                       # 20 models, on cuda if present
    python benchmarks/evaluate_speed.py --device cpu --epochs 2 --models 20
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.evaluate import parse_arch  # noqa: E402
from distill.train import TrainRecipe, train_group  # noqa: E402


def timed(fn, dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs (default 20 on GPU, 2 on CPU)")
    ap.add_argument("--ipc", type=int, default=50)
    ap.add_argument("--arch", default="convnet")
    args = ap.parse_args()
    dev = torch.device(args.device)
    epochs = args.epochs or (20 if dev.type == "cuda" else 2)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(10 * args.ipc, 3, 32, 32, generator=g, device=dev)
    y = torch.arange(10, device=dev).repeat_interleave(args.ipc)
    spec = parse_arch(args.arch)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine()
    print(f"device: {dev} ({name}); torch {torch.__version__}; {args.models} x {args.arch} on "
          f"{len(x)} images; 1 warm-up + {epochs} timed epochs, extrapolated to 1000\n")
    rows = {}
    for label, ens in (("ensembled", True), ("sequential", False)):
        def run(n_epochs: int) -> None:
            cfg = TrainRecipe(models=args.models, epochs=n_epochs)
            train_group(spec, args.models, x, y, 10, cfg, torch.Generator(device=dev).manual_seed(1), ens)

        run(1)  # warm-up (allocator, kernels)
        per_epoch = timed(lambda: run(epochs), dev) / epochs
        rows[label] = per_epoch
    print("| path | s/epoch (all models) | 1000 epochs (min) | speed-up |")
    print("|---|---:|---:|---:|")
    for label, sec in rows.items():
        print(f"| {label} | {sec:.3f} | {sec * 1000 / 60:.1f} | {rows['sequential'] / sec:.2f}x |")


if __name__ == "__main__":
    main()
