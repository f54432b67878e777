"""What the full CIFAR protocols cost, from measured per-epoch training times (no CIFAR needed:
speed does not depend on image content, so random tensors of the right shapes stand in).

- **continual**: CIFAR-100, 10 steps; step t trains on 200*t memory images, 100-way head,
  ConvNet-3 w128 instance norm, DSA, 1000 epochs; 3 models x 5 orders per step. Measured per
  step size for our path (the 15 models of a step trained together, ensembled) and the
  reference path (one model after another, as DM's script), then summed over the protocol.
- **nas**: CIFAR-10, a seeded random sample of the 720 candidates, one proxy epoch (500 images) and one
  whole-data epoch (45,000 images; measured on --whole-sample images and scaled linearly),
  extrapolated to 720 x 200 proxy epochs and 720 x 100 whole-data epochs.

    python benchmarks/protocol_cost.py                 # on cuda if present
    python benchmarks/protocol_cost.py --device cpu --epochs 1 --whole-sample 1024
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.evaluate import parse_arch  # noqa: E402
from distill.train import TrainRecipe, can_ensemble, train_group  # noqa: E402
from nas.space import SPACES, candidate_name, candidate_spec, grid  # noqa: E402


def per_epoch(spec, n_models, x, y, k, epochs, ensemble, dev) -> float:
    def run(e: int) -> None:
        cfg = TrainRecipe(models=n_models, epochs=e)
        train_group(spec, n_models, x, y, k, cfg, torch.Generator(device=dev).manual_seed(1), ensemble)

    run(1)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    run(epochs)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) / epochs


def continual_cost(dev: torch.device, epochs: int, steps: int, models: int,
                   classes: int = 100, per_class: int = 20, size: int = 32) -> dict:
    """Per-step seconds per epoch (ours: the step's models ensembled when possible; reference:
    one model after another) and the full protocol's minutes at 1000 epochs."""
    spec = parse_arch("convnet")
    g = torch.Generator(device=dev).manual_seed(0)
    ens_ok = can_ensemble(spec, 3, classes, (size, size), dev)
    rows = []
    per = classes // steps
    for t in range(1, steps + 1):
        n = per_class * per * t
        x = torch.randn(n, 3, size, size, generator=g, device=dev)
        y = torch.arange(per * t, device=dev).repeat_interleave(per_class)
        ours = per_epoch(spec, models, x, y, classes, epochs, ens_ok, dev)
        ref = per_epoch(spec, 1, x, y, classes, epochs, False, dev) * models
        rows.append({"step": t, "images": n, "ours_s_per_epoch": ours, "reference_s_per_epoch": ref})
    return {"steps": steps, "models": models, "ensembled": ens_ok, "rows": rows,
            "ours_min": sum(r["ours_s_per_epoch"] for r in rows) * 1000 / 60,
            "reference_min": sum(r["reference_s_per_epoch"] for r in rows) * 1000 / 60}


def print_continual(res: dict) -> None:
    print(f"\n## continual: CIFAR-100, {res['steps']} steps x 20 images/class, {res['models']} models per step "
          f"(3 x 5 orders), 1000 epochs\n")
    print("| step | images | ours s/epoch (15 models) | reference s/epoch (15 models) |")
    print("|---:|---:|---:|---:|")
    for r in res["rows"]:
        print(f"| {r['step']} | {r['images']} | {r['ours_s_per_epoch']:.3f} | {r['reference_s_per_epoch']:.3f} |")
    print(f"\nfull protocol (sum over steps x 1000 epochs): ours {res['ours_min']:.1f} min "
          f"({'ensembled' if res['ensembled'] else 'sequential'}), reference {res['reference_min']:.1f} min")


def nas_cost(dev: torch.device, epochs: int, sample: int, whole_sample: int, size: int = 32,
             proxy_images: int = 500, whole_images: int = 45000) -> dict:
    """Per-candidate seconds per proxy epoch and per whole-data epoch (measured on
    ``whole_sample`` images, scaled linearly to ``whole_images``), extrapolated to 720 x 200
    proxy epochs and 720 x 100 whole-data epochs."""
    g = torch.Generator(device=dev).manual_seed(0)
    cands = grid(SPACES["full"])
    picked = random.Random(0).sample(cands, min(sample, len(cands)))  # spread over every dimension
    xp = torch.randn(proxy_images, 3, size, size, generator=g, device=dev)
    yp = torch.arange(10, device=dev).repeat_interleave(proxy_images // 10)
    xw = torch.randn(whole_sample, 3, size, size, generator=g, device=dev)
    yw = torch.randint(0, 10, (whole_sample,), generator=g, device=dev)
    rows = []
    for p in picked:
        a = per_epoch(candidate_spec(p), 1, xp, yp, 10, epochs, False, dev)
        b = per_epoch(candidate_spec(p), 1, xw, yw, 10, epochs, False, dev) * whole_images / whole_sample
        rows.append({"candidate": candidate_name(p), "proxy_s_per_epoch": a, "whole_s_per_epoch": b})
    mp = sum(r["proxy_s_per_epoch"] for r in rows) / len(rows)
    mw = sum(r["whole_s_per_epoch"] for r in rows) / len(rows)
    return {"sample": len(rows), "whole_sample": whole_sample, "rows": rows,
            "proxy_min": 720 * 200 * mp / 60, "whole_min": 720 * 100 * mw / 60}


def print_nas(res: dict) -> None:
    print(f"\n## nas: CIFAR-10, {res['sample']} of 720 candidates (random sample, seed 0), proxy 500 images x 200 "
          f"epochs, whole 45,000 images x 100 epochs (measured on {res['whole_sample']}, scaled)\n")
    print("| candidate | proxy s/epoch | whole s/epoch (45k) |")
    print("|---|---:|---:|")
    for r in res["rows"]:
        print(f"| {r['candidate']} | {r['proxy_s_per_epoch']:.3f} | {r['whole_s_per_epoch']:.1f} |")
    print(f"\nextrapolated to 720 candidates: proxy search {res['proxy_min']:.1f} min, "
          f"whole-data ground truth {res['whole_min']:.0f} min (papers: ~206 and ~5169 min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs (default 5 on GPU, 1 on CPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--models", type=int, default=15)
    ap.add_argument("--sample", type=int, default=12, help="NAS candidates to time")
    ap.add_argument("--whole-sample", type=int, default=None, help="images timed for one whole-data epoch "
                                                                   "(default 45000 on GPU, 1024 on CPU)")
    ap.add_argument("--only", choices=("continual", "nas"), default=None)
    a = ap.parse_args()
    dev = torch.device(a.device)
    epochs = a.epochs or (5 if dev.type == "cuda" else 1)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine()
    print(f"device: {dev} ({name}); torch {torch.__version__}; {epochs} timed epoch(s) after 1 warm-up")
    if a.only in (None, "continual"):
        print_continual(continual_cost(dev, epochs, a.steps, a.models))
    if a.only in (None, "nas"):
        print_nas(nas_cost(dev, epochs, a.sample, a.whole_sample or (45000 if dev.type == "cuda" else 1024)))


if __name__ == "__main__":
    main()
