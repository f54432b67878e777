"""Time per distillation iteration and peak memory: our batched loop vs a per-class loop.

The per-class reference is written here the way the public reference code does it: a fresh
network built every iteration, a Python loop over classes, indices drawn with numpy on the
host, one DSA call and one forward per class for real and synthetic images, and
``torch.cuda.empty_cache()`` after every step. Both compute the same loss
(``distill.matching``) on CIFAR-shaped random tensors (speed does not depend on content).

    python benchmarks/distill_step.py                    # all shapes, on cuda if present
    python benchmarks/distill_step.py --device cpu --iters 2 --shapes c10-b128-ipc10

Prints a markdown table; copy it into benchmarks/RESULTS.md with the device and versions.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill import augment  # noqa: E402
from distill.data import ClassIndex  # noqa: E402
from distill.settings import SetConfig, resolve  # noqa: E402
from distill.step import bound, loss_and_grad, matching_net  # noqa: E402
from distill.nets import build_net  # noqa: E402
from distill.runtime import keep_host_memory  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    classes: int
    per_class: int  # real training images per class
    batch_real: int
    ipc: int
    channels: int = 3
    size: int = 32


SHAPES = [
    Shape("c10-b128-ipc1", 10, 5000, 128, 1),
    Shape("c10-b128-ipc10", 10, 5000, 128, 10),
    Shape("c10-b128-ipc50", 10, 5000, 128, 50),
    Shape("c10-b256-ipc1", 10, 5000, 256, 1),
    Shape("c10-b256-ipc10", 10, 5000, 256, 10),
    Shape("c10-b256-ipc50", 10, 5000, 256, 50),
    Shape("c100-b128-ipc20", 100, 500, 128, 20),
    Shape("fm-b128-ipc1", 10, 6000, 128, 1, channels=1, size=28),  # Fashion-MNIST / MNIST shapes
    Shape("fm-b128-ipc10", 10, 6000, 128, 10, channels=1, size=28),
]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reference_step(train_x: torch.Tensor, classes_idx: list[np.ndarray], syn: torch.Tensor,
                   opt: torch.optim.Optimizer, cfg: SetConfig, k: int) -> float:
    """One iteration, per-class, as the reference code is written."""
    dev = train_x.device
    size = tuple(train_x.shape[2:])
    net = build_net("convnet", train_x.shape[1], k, size, norm=cfg.net.norm).to(dev)  # fresh every step
    for p in net.parameters():
        p.requires_grad_(False)
    method, hp = bound(cfg)
    loss = torch.zeros((), device=dev)
    for c in range(k):
        idx = np.random.permutation(classes_idx[c])[: cfg.batch_real]
        img_real = train_x[torch.from_numpy(idx).to(dev)]
        img_syn = syn[c * cfg.ipc:(c + 1) * cfg.ipc]
        p = augment.sample_params(1, size, None, cfg.dsa, dev)
        img_real = augment.apply(img_real, p.index(torch.zeros(len(img_real), dtype=torch.long, device=dev)))
        img_syn = augment.apply(img_syn, p.index(torch.zeros(len(img_syn), dtype=torch.long, device=dev)))
        f_real, e_real = net.forward_features(img_real)
        f_real, e_real = [f.detach() for f in f_real], e_real.detach()
        f_syn, e_syn = net.forward_features(img_syn)
        loss = loss + method.loss(hp, method.statistics(hp, f_real, e_real, 1, None),
                                  method.statistics(hp, f_syn, e_syn, 1, None))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return loss.item()


def ours_factory(train_x, labels, syn, cfg, k):
    dev = train_x.device
    net = matching_net(cfg, train_x.shape[1], k, tuple(train_x.shape[2:]), dev)  # as distill() builds it
    method, p = bound(cfg)
    index = ClassIndex.from_labels(labels, k)
    gen = torch.Generator(device=dev).manual_seed(0)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_and_grad(net, train_x, index, syn, cfg, method, p, gen)
        opt.step()

    return step


def measure(fns: dict[str, object], dev: torch.device, warmup: int, iters: int) -> dict[str, tuple[float, float]]:
    """Median ms per call and peak MiB (CUDA) of each function, interleaving them call by call
    so that drift (clocks, allocator, other load) hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, float] = {name: float("nan") for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times[name].append((time.perf_counter() - t0) * 1000)
            if dev.type == "cuda":
                peak = torch.cuda.max_memory_allocated(dev) / 2**20
                peaks[name] = peak if np.isnan(peaks[name]) else max(peaks[name], peak)
    return {name: (float(np.median(times[name])), peaks[name]) for name in fns}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--method", default="atom", help="a matching method: dm, datadam, atom, atom_channel, m3d")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 20 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 5 on GPU, 1 on CPU)")
    ap.add_argument("--shapes", default=",".join(s.name for s in SHAPES),
                    help="comma-separated subset of: " + ", ".join(s.name for s in SHAPES))
    ap.add_argument("--no-reference", action="store_true", help="time only our loop")
    ap.add_argument("--host-memory", choices=("keep", "default"), default="keep",
                    help="keep: reuse freed CPU memory as the command line does (distill.runtime.keep_host_memory); "
                         "default: glibc's defaults, to measure what that buys")
    args = ap.parse_args()
    if args.host_memory == "keep":
        keep_host_memory()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    iters = args.iters or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    wanted = args.shapes.split(",")
    unknown = [w for w in wanted if w not in {s.name for s in SHAPES}]
    if unknown:
        sys.exit(f"error: unknown shape {unknown[0]!r}; allowed: {', '.join(s.name for s in SHAPES)}")

    name = torch.cuda.get_device_name(dev) if gpu else platform.processor() or platform.machine()
    print(f"device: {dev} ({name}); torch {torch.__version__}; method {args.method}; host memory {args.host_memory}; "
          f"{warmup} warm-up + {iters} timed iterations each, interleaved; median\n")
    print("| shape | ours ms/it | reference ms/it | speed-up | ours peak MiB | reference peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        if shape.name not in wanted:
            continue
        k = shape.classes
        g = torch.Generator(device=dev).manual_seed(0)
        image = (shape.channels, shape.size, shape.size)
        train_x = torch.randn(k * shape.per_class, *image, generator=g, device=dev)
        labels = torch.arange(k, device=dev).repeat_interleave(shape.per_class)
        cfg = resolve(SetConfig(method=args.method, ipc=shape.ipc, batch_real=shape.batch_real), shape.size)
        syn = torch.randn(k * shape.ipc, *image, generator=g, device=dev).requires_grad_(True)
        fns = {"ours": ours_factory(train_x, labels, syn, cfg, k)}
        if not args.no_reference:
            np.random.seed(0)
            classes_idx = [np.arange(c * shape.per_class, (c + 1) * shape.per_class) for c in range(k)]
            syn_ref = syn.detach().clone().requires_grad_(True)
            opt = torch.optim.SGD([syn_ref], lr=cfg.lr_img, momentum=cfg.momentum)
            fns["reference"] = lambda tx=train_x: reference_step(tx, classes_idx, syn_ref, opt, cfg, k)
        res = measure(fns, dev, warmup, iters)
        ours_ms, ours_peak = res["ours"]
        ref_ms, ref_peak = res.get("reference", (float("nan"), float("nan")))
        print(f"| {shape.name} | {ours_ms:.1f} | {ref_ms:.1f} | {ref_ms / ours_ms:.2f}x | "
              f"{ours_peak:.0f} | {ref_peak:.0f} |", flush=True)
        del train_x, syn
        if gpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
