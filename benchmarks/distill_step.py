"""Time per distillation iteration and peak memory: our batched loop vs a reference loop.

Two references are written here the way public code runs an iteration, both with a fresh
network built every iteration, indices drawn with numpy on the host, one DSA call per class
and ``torch.cuda.empty_cache()`` after every step: ``per_class`` (the DC / DM code) forwards
each class's real and synthetic images on their own; ``datadam`` (the DataDAM code)
concatenates every class into one real and one synthetic pass. Both compute the same loss
(``distill.matching``) on CIFAR-shaped random tensors (speed does not depend on content).

    python benchmarks/distill_step.py                    # all shapes, on cuda if present
    python benchmarks/distill_step.py --device cpu --iters 2 --shapes c10-b128-ipc10
    python benchmarks/distill_step.py --device cpu --isolate --method datadam --preset reference_code \
        --shapes c10-b64-ipc1,c10-b64-ipc10,c10-b64-ipc50   # each loop as it runs out of the box

Prints a markdown table; copy it into benchmarks/RESULTS.md with the device and versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
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
    Shape("c10-b64-ipc1", 10, 5000, 64, 1),  # the public DataDAM code's 64 real images per class
    Shape("c10-b64-ipc10", 10, 5000, 64, 10),
    Shape("c10-b64-ipc50", 10, 5000, 64, 50),
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


def _fresh_net(train_x: torch.Tensor, cfg: SetConfig, k: int) -> torch.nn.Module:
    """A new frozen ConvNet, as the public code builds one every iteration."""
    net = build_net("convnet", train_x.shape[1], k, tuple(train_x.shape[2:]), norm=cfg.net.norm).to(train_x.device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _class_batch(train_x: torch.Tensor, classes_idx: list[np.ndarray], syn: torch.Tensor, cfg: SetConfig,
                 c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ``c``'s real batch (a numpy draw) and synthetic images, augmented with one shared DSA draw."""
    dev = train_x.device
    idx = np.random.permutation(classes_idx[c])[: cfg.batch_real]
    img_real = train_x[torch.from_numpy(idx).to(dev)]
    img_syn = syn[c * cfg.ipc:(c + 1) * cfg.ipc]
    p = augment.sample_params(1, tuple(train_x.shape[2:]), None, cfg.dsa, dev)
    return (augment.apply(img_real, p.index(torch.zeros(len(img_real), dtype=torch.long, device=dev))),
            augment.apply(img_syn, p.index(torch.zeros(len(img_syn), dtype=torch.long, device=dev))))


def _update(loss: torch.Tensor, opt: torch.optim.Optimizer, dev: torch.device) -> float:
    """One SGD step on the synthetic images, then the cache emptied, as the public code does."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return loss.item()


def reference_step(train_x: torch.Tensor, classes_idx: list[np.ndarray], syn: torch.Tensor,
                   opt: torch.optim.Optimizer, cfg: SetConfig, k: int) -> float:
    """One iteration, per-class, as the DC / DM code is written: a forward per class and side."""
    net = _fresh_net(train_x, cfg, k)
    method, hp = bound(cfg)
    loss = torch.zeros((), device=train_x.device)
    for c in range(k):
        img_real, img_syn = _class_batch(train_x, classes_idx, syn, cfg, c)
        f_real, e_real = net.forward_features(img_real)
        f_real, e_real = [f.detach() for f in f_real], e_real.detach()
        f_syn, e_syn = net.forward_features(img_syn)
        loss = loss + method.loss(hp, method.statistics(hp, f_real, e_real, 1, None),
                                  method.statistics(hp, f_syn, e_syn, 1, None))
    return _update(loss, opt, train_x.device)


def datadam_step(train_x: torch.Tensor, classes_idx: list[np.ndarray], syn: torch.Tensor,
                 opt: torch.optim.Optimizer, cfg: SetConfig, k: int) -> float:
    """One iteration structured as the public DataDAM loop is: every class's batch drawn and
    augmented on its own, then all classes' real images concatenated into one forward pass and
    all synthetic images into another, the class-major statistics of each pass compared."""
    net = _fresh_net(train_x, cfg, k)
    method, hp = bound(cfg)
    reals, syns = zip(*(_class_batch(train_x, classes_idx, syn, cfg, c) for c in range(k)))
    with torch.no_grad():
        f_real, e_real = net.forward_features(torch.cat(reals))
    f_syn, e_syn = net.forward_features(torch.cat(syns))
    loss = method.loss(hp, method.statistics(hp, f_real, e_real, k, None), method.statistics(hp, f_syn, e_syn, k, None))
    return _update(loss, opt, train_x.device)


REFERENCES = {"per_class": reference_step, "datadam": datadam_step}


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


def measure(fns: dict[str, object], dev: torch.device, warmup: int,
            iters: int) -> dict[str, tuple[float, float, float, float]]:
    """Median ms per call, peak MiB (CUDA), fastest and slowest ms of each function, interleaving them call by call
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
    return {name: (float(np.median(times[name])), peaks[name], min(times[name]), max(times[name])) for name in fns}


def shape_fns(shape: Shape, args: argparse.Namespace, dev: torch.device, impls: tuple[str, ...]) -> dict:
    """The step functions of ``impls`` (``ours``, ``reference``) on one shape's random data."""
    k = shape.classes
    g = torch.Generator(device=dev).manual_seed(0)
    image = (shape.channels, shape.size, shape.size)
    train_x = torch.randn(k * shape.per_class, *image, generator=g, device=dev)
    labels = torch.arange(k, device=dev).repeat_interleave(shape.per_class)
    cfg = resolve(SetConfig(method=args.method, ipc=shape.ipc, batch_real=shape.batch_real, preset=args.preset),
                  shape.size)
    syn = torch.randn(k * shape.ipc, *image, generator=g, device=dev).requires_grad_(True)
    fns = {}
    if "ours" in impls:
        fns["ours"] = ours_factory(train_x, labels, syn, cfg, k)
    if "reference" in impls:
        np.random.seed(0)
        classes_idx = [np.arange(c * shape.per_class, (c + 1) * shape.per_class) for c in range(k)]
        syn_ref = syn.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([syn_ref], lr=cfg.lr_img, momentum=cfg.momentum)
        ref = REFERENCES[args.reference]
        fns["reference"] = lambda: ref(train_x, classes_idx, syn_ref, opt, cfg, k)
    return fns


# --isolate: each column is a fresh process with the allocator setting it names
ISOLATED = (("ours", "keep"), ("ours", "default"), ("reference", "default"), ("reference", "keep"))


def isolated(shape: Shape, args: argparse.Namespace) -> dict[tuple[str, str], tuple[float, ...]]:
    """``measure``'s numbers for each ``ISOLATED`` column, each measured in its own process."""
    out = {}
    for impl, memory in ISOLATED:
        cmd = [sys.executable, __file__, "--one", f"{shape.name}:{impl}", "--device", args.device,
               "--method", args.method, "--preset", args.preset, "--host-memory", memory, "--reference", args.reference,
               "--iters", str(args.iters), "--warmup", str(args.warmup)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"error: {shape.name} {impl} failed:\n{res.stderr}")
        out[(impl, memory)] = tuple(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--method", default="atom", help="a matching method: dm, datadam, atom, atom_channel, m3d")
    ap.add_argument("--preset", default="paper", choices=("paper", "reference_code"),
                    help="the set's preset (paper: instance norm, p = 4; reference_code: the public DataDAM "
                         "code's batch norm and p = 1); each shape sets its own real batch")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 20 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 5 on GPU, 1 on CPU)")
    ap.add_argument("--shapes", default=",".join(s.name for s in SHAPES),
                    help="comma-separated subset of: " + ", ".join(s.name for s in SHAPES))
    ap.add_argument("--no-reference", action="store_true", help="time only our loop")
    ap.add_argument("--reference", choices=tuple(REFERENCES), default="per_class",
                    help="per_class: a forward per class for real and synthetic images (the DC / DM code's loop); "
                         "datadam: every class concatenated into one real and one synthetic pass (the DataDAM "
                         "code's loop)")
    ap.add_argument("--host-memory", choices=("keep", "default"), default="keep",
                    help="keep: reuse freed CPU memory as the toolkit does (distill.runtime.keep_host_memory); "
                         "default: glibc's defaults, to measure what that buys")
    ap.add_argument("--isolate", action="store_true",
                    help="time every loop in a fresh process of its own (not interleaved): ours as the toolkit "
                         "runs (keep), the reference as the public code runs (glibc's defaults) and, to separate "
                         "the two gains, ours with glibc's defaults and the reference with keep; each cell is "
                         "the median (fastest-slowest) ms per iteration; --host-memory is then ignored")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # SHAPE:IMPL, a worker of --isolate
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.host_memory == "keep":
        keep_host_memory()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    args.iters = args.iters or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    by_name = {s.name: s for s in SHAPES}
    if args.one:
        shape_name, impl = args.one.split(":")
        fns = shape_fns(by_name[shape_name], args, dev, (impl,))
        print(json.dumps(measure(fns, dev, args.warmup, args.iters)[impl]))
        return
    wanted = args.shapes.split(",")
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        sys.exit(f"error: unknown shape {unknown[0]!r}; allowed: {', '.join(by_name)}")

    name = torch.cuda.get_device_name(dev) if gpu else platform.processor() or platform.machine()
    how = ("each loop in its own process" if args.isolate
           else f"host memory {args.host_memory}; interleaved in one process")
    print(f"device: {dev} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"method {args.method}; preset {args.preset}; reference {args.reference}; {how}; {args.warmup} warm-up + {args.iters} timed "
          "iterations each; median\n")
    if args.isolate:
        print("| shape | ours, keep (as shipped) | ours, glibc default | reference, glibc default (as public code "
              "runs) | reference, keep | speed-up as each runs | speed-up, same allocator |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    else:
        print("| shape | ours ms/it | reference ms/it | speed-up | ours peak MiB | reference peak MiB |")
        print("|---|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        if shape.name not in wanted:
            continue
        if args.isolate:
            res = isolated(shape, args)
            cells = " | ".join(f"{res[c][0]:.0f} ({res[c][2]:.0f}-{res[c][3]:.0f})" for c in ISOLATED)
            ours, ref, ref_keep = res[("ours", "keep")][0], res[("reference", "default")][0], res[("reference", "keep")][0]
            print(f"| {shape.name} | {cells} | {ref / ours:.2f}x | {ref_keep / ours:.2f}x |", flush=True)
            continue
        fns = shape_fns(shape, args, dev, ("ours",) if args.no_reference else ("ours", "reference"))
        res = measure(fns, dev, args.warmup, args.iters)
        ours_ms, ours_peak = res["ours"][:2]
        ref_ms, ref_peak = res["reference"][:2] if "reference" in res else (float("nan"), float("nan"))
        print(f"| {shape.name} | {ours_ms:.1f} | {ref_ms:.1f} | {ref_ms / ours_ms:.2f}x | "
              f"{ours_peak:.0f} | {ref_peak:.0f} |", flush=True)
        del fns
        if gpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
