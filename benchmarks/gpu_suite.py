"""GPU validation suite: every GPU number the project reports, from one command.

    python benchmarks/gpu_suite.py --out benchmarks/results/gpu_h100        # every part, on cuda
    python benchmarks/gpu_suite.py --parts distill,evaluate                 # some parts
    python benchmarks/gpu_suite.py --device cpu --smoke                     # every part, tiny, CPU
    python benchmarks/gpu_suite.py --parts fidelity --data-root .fm --minutes 8 --out $OUT

Parts (``--parts``, default all):

- ``distill``: ms per distillation iteration and peak memory, ours vs the per-class reference
  of ``distill_step.py`` (CIFAR-10 shapes at IPC 1 / 10 / 50 with 128 and 256 real images per
  class, CIFAR-100 at IPC 20); then variants of ours at CIFAR-10 IPC 50 and CIFAR-100 IPC 20
  (forward chunk size, channels_last, bf16 autocast, torch.compile), each with the relative
  difference of its image gradient to the default path (and the default path against itself:
  the run-to-run noise floor).
- ``evaluate``: 20 ConvNets trained on 500 / 100 / 10 images (CIFAR-10 IPC 50 / 10 / 1) with
  ``train_group``, ensembled vs sequential, seconds per epoch; then one training step of the
  20 models in variants (channels_last, bf16 autocast, torch.compile, CUDA graphs) and the
  share of the step that DSA takes.
- ``protocol``: the full continual (10 steps x 15 models x 1000 epochs) and NAS (720 x 200
  proxy epochs, 720 x 100 whole-data epochs) protocols, extrapolated from measured epochs
  (``protocol_cost.py``).
- ``e2e``: distill -> evaluate -> export -> continual -> nas through ``pipelines/run.py`` on
  fabricated CIFAR-10 / CIFAR-100 archives (python-pickle format), tiny settings: catches what
  fails only on one device (generators and tensors on different devices, dtype mixes, vmap).
- ``profile``: the kernels that dominate one distillation step and one training step.
- ``fidelity`` (only when named): the full-length Fashion-MNIST table in sittings of
  ``--minutes`` (``fidelity.py``): every matching method at factor 1 and 2, IPC 1 and 10, the
  papers' iterations, 20 ConvNets x 1000 epochs per cell, ``--jobs`` cells at a time; what is
  unfinished at the deadline is checkpointed into ``fidelity_state.tar.gz``, which the next
  sitting continues from (``--state``, default the committed
  ``benchmarks/results/gpu_fidelity/fidelity_state.tar.gz``). ``--data-root`` names the folder
  of the four idx files; with ``--smoke`` and no ``--data-root``, random images in that layout.

Writes ``gpu_suite.md`` (the report) and ``gpu_suite.json`` (raw numbers) to ``--out``. Speed
does not depend on image content, so random tensors of the right shapes stand in for CIFAR.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import distill_step  # noqa: E402
import fidelity  # noqa: E402
import protocol_cost  # noqa: E402
from distill import augment  # noqa: E402
from distill.data import ClassIndex  # noqa: E402
from distill.settings import SetConfig, resolve  # noqa: E402
from distill.step import _matching_net, bound, loss_and_grad, matching_net  # noqa: E402
from distill.evaluate import parse_arch  # noqa: E402
from distill.train import ModelGroup, TrainRecipe, stacked_call, stacked_forward, train_group  # noqa: E402
from distill.fixtures import accept_fabricated_cifar, write_cifar  # noqa: E402
from distill.nets import init_weights  # noqa: E402
from distill.datasets.mnist import IDX_FILES as MNIST_IDX  # noqa: E402
from distill.errors import UserError  # noqa: E402

PARTS = ("distill", "evaluate", "protocol", "e2e", "profile", "fidelity")
DEFAULT_PARTS = PARTS[:-1]  # fidelity runs only when named: it takes every minute it is given


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fresh_compile() -> None:
    """Forget every compiled graph and the per-process network caches, so the next variant is
    compiled from scratch: the compiler's recompile limit (8 graphs per function) would
    otherwise be reached within the suite and later variants would silently run eagerly."""
    torch._dynamo.reset()  # noqa: SLF001
    _matching_net.cache_clear()
    stacked_forward.cache_clear()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _tried(fn: Callable[[], Any], verbose: bool = False) -> tuple[Any, str | None]:
    """Run ``fn``; a failure becomes a one-line reason (the suite reports it and goes on;
    ``verbose``: the traceback is printed too)."""
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the suite
        if verbose:
            traceback.print_exc()
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


# --------------------------------------------------------------------------------------
# (a) distillation step


def distill_variant(train_x, labels, syn0, cfg, k, *, channels_last=False, bf16=False):
    """A step function of our loop (the network as ``distill()`` builds it for ``cfg``) with one
    variant switched on, and a function that returns the image gradient of one iteration from a
    fixed seed (for the difference check)."""
    dev = train_x.device
    net = matching_net(cfg, 3, k, tuple(train_x.shape[2:]), dev)
    if channels_last:
        net = copy.copy(net)  # the shared network keeps its own forward  # NHWC inputs at every forward: cuDNN then runs NHWC kernels; the weights
        # keep their layout, so init_weights draws the same network from the same seed
        plain_forward = net.forward_features
        net.forward_features = lambda x: plain_forward(x.contiguous(memory_format=torch.channels_last))
    method, p = bound(cfg)
    index = ClassIndex.from_labels(labels, k)
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    syn = syn0.detach().clone().requires_grad_(True)
    gen = torch.Generator(device=dev).manual_seed(0)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss_and_grad(net, train_x, index, syn, cfg, method, p, gen)
        opt.step()

    def first_grad() -> torch.Tensor:
        s = syn0.detach().clone().requires_grad_(True)
        with ctx():
            loss_and_grad(net, train_x, index, s, cfg, method, p, torch.Generator(device=dev).manual_seed(123))
        return s.grad.detach().float()

    return step, first_grad


def part_distill(dev: torch.device, smoke: bool) -> dict:
    if smoke:
        shapes = [distill_step.Shape("smoke-c10-b16-ipc2", 10, 40, 16, 2)]
        variant_shapes = shapes
        warmup, iters = 1, 2
    else:
        shapes = distill_step.SHAPES
        variant_shapes = [s for s in shapes if s.name in ("c10-b128-ipc50", "c100-b128-ipc20")]
        warmup, iters = 5, 20
    rows, variants = [], []
    for shape in shapes:
        fresh_compile()
        k = shape.classes
        g = torch.Generator(device=dev).manual_seed(0)
        train_x = torch.randn(k * shape.per_class, 3, 32, 32, generator=g, device=dev)
        labels = torch.arange(k, device=dev).repeat_interleave(shape.per_class)
        cfg = resolve(SetConfig(method="atom", ipc=shape.ipc, batch_real=shape.batch_real), 32)
        syn = torch.randn(k * shape.ipc, 3, 32, 32, generator=g, device=dev).requires_grad_(True)
        np.random.seed(0)
        classes_idx = [np.arange(c * shape.per_class, (c + 1) * shape.per_class) for c in range(k)]
        syn_ref = syn.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([syn_ref], lr=cfg.lr_img, momentum=cfg.momentum)
        fns = {"ours": distill_step.ours_factory(train_x, labels, syn, cfg, k),
               "reference": lambda tx=train_x, s=syn_ref, o=opt: distill_step.reference_step(tx, classes_idx, s, o,
                                                                                               cfg, k)}
        res = distill_step.measure(fns, dev, warmup, iters)
        rows.append({"shape": shape.name, "ours_ms": res["ours"][0], "reference_ms": res["reference"][0],
                     "speedup": res["reference"][0] / res["ours"][0], "ours_peak_mib": res["ours"][1],
                     "reference_peak_mib": res["reference"][1]})
        print(f"  distill {shape.name}: ours {res['ours'][0]:.1f} ms, reference {res['reference'][0]:.1f} ms",
              flush=True)
        if shape in variant_shapes:
            variants += distill_variants(shape, train_x, labels, syn, cfg, k, dev, smoke, warmup, iters)
        del train_x, syn, syn_ref, fns
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "variants": variants, "warmup": warmup, "iters": iters}


def distill_variants(shape, train_x, labels, syn, cfg, k, dev, smoke, warmup, iters) -> list[dict]:
    eager = replace(cfg, compile="off")
    specs: list[tuple[str, SetConfig, dict]] = [
        ("eager (no compile)", eager, {}),
        ("default (compile auto)", cfg, {}),
        ("one pass for all (chunk 4096, syn_chunk 4096)", replace(cfg, chunk=4096, syn_chunk=4096), {}),
        ("syn_chunk 256", replace(cfg, syn_chunk=256), {}),
        ("chunk 512, syn_chunk 128 (least memory)", replace(cfg, chunk=512, syn_chunk=128), {}),
        ("eager, chunk 4096, syn_chunk 4096 (before)", replace(eager, chunk=4096, syn_chunk=4096), {}),
        ("eager + channels_last", eager, {"channels_last": True}),
        ("eager + bf16 autocast", eager, {"bf16": True}),
    ]
    base_step, base_grad = distill_variant(train_x, labels, syn, eager, k)
    g0 = base_grad()
    noise = _rel(base_grad(), g0)
    out = []
    for name, c, kw in specs:
        def run(c=c, kw=kw):
            fresh_compile()
            step, grad = distill_variant(train_x, labels, syn, c, k, **kw)
            t0 = time.perf_counter()
            step()  # first call: compilation for torch.compile
            _sync(dev)
            first = time.perf_counter() - t0
            ms, peak = distill_step.measure({name: step}, dev, warmup, iters)[name][:2]
            return {"shape": shape.name, "variant": name, "ms": ms, "peak_mib": peak, "first_call_s": first,
                    "grad_rel_diff": _rel(grad(), g0), "noise_floor": noise}
        row, err = _tried(run)
        out.append(row or {"shape": shape.name, "variant": name, "error": err})
        print(f"  distill variant {shape.name} {name}: {row['ms']:.1f} ms" if row else f"  {name}: {err}", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------------------
# (b) evaluation: N networks on a synthetic set


def part_evaluate(dev: torch.device, smoke: bool) -> dict:
    models = 3 if smoke else 20
    ipcs = (2,) if smoke else (50, 10, 1)
    epochs = 1 if smoke else 10
    spec = parse_arch("convnet")
    rows = []
    for ipc in ipcs:
        fresh_compile()
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(10 * ipc, 3, 32, 32, generator=g, device=dev)
        y = torch.arange(10, device=dev).repeat_interleave(ipc)
        row: dict[str, Any] = {"ipc": ipc, "images": len(x), "models": models}
        for label, ens in (("ensembled", True), ("sequential", False)):
            def run(e: int, ens=ens) -> None:
                train_group(spec, models, x, y, 10, TrainRecipe(models=models, epochs=e),
                            torch.Generator(device=dev).manual_seed(1), ens)

            run(1)  # warm-up
            _sync(dev)
            t0 = time.perf_counter()
            run(epochs)
            _sync(dev)
            row[f"{label}_s_per_epoch"] = (time.perf_counter() - t0) / epochs
        row["speedup"] = row["sequential_s_per_epoch"] / row["ensembled_s_per_epoch"]
        rows.append(row)
        print(f"  evaluate ipc {ipc}: ensembled {row['ensembled_s_per_epoch']:.3f} s/epoch, "
              f"sequential {row['sequential_s_per_epoch']:.3f}", flush=True)
    steps = train_step_variants(dev, smoke, models)
    check, err = (_tried(lambda: compile_check(dev)) if dev.type == "cuda"
                  else (None, "skipped on the CPU (compile: auto is off there)"))
    return {"rows": rows, "epochs": epochs, "step_variants": steps, "compile_check": check or {"error": err}}


def compile_check(dev: torch.device) -> dict:
    """The ensembled training with and without torch.compile from one seed: relative L2
    difference of the trained parameters (every model) after 3 epochs on 100 images."""
    spec = parse_arch("convnet")
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(100, 3, 32, 32, generator=g, device=dev)
    y = torch.arange(10, device=dev).repeat_interleave(10)
    trained = {}
    for mode in ("off", "on"):
        group = train_group(spec, 4, x, y, 10, TrainRecipe(models=4, epochs=3, compile=mode),
                            torch.Generator(device=dev).manual_seed(1), ensemble=True)
        trained[mode] = torch.cat([p.detach().flatten() for p in group.parameters()])
    again = train_group(spec, 4, x, y, 10, TrainRecipe(models=4, epochs=3, compile="off"),
                        torch.Generator(device=dev).manual_seed(1), ensemble=True)
    return {"param_rel_diff": _rel(trained["on"], trained["off"]),
            "noise_floor": _rel(torch.cat([p.detach().flatten() for p in again.parameters()]), trained["off"])}


def _train_step(group: ModelGroup, opts: list, xb: torch.Tensor, yb: torch.Tensor,
                forward: Callable | None = None) -> None:
    """One SGD step of every model of ``group`` on its own batch ``xb[m]`` (``forward``: a
    replacement for the models' forward, e.g. a compiled one)."""
    if group.ensemble:
        logits = forward(group.params, group.buffers, xb) if forward else group.forward_each(xb)
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum") / xb.shape[1]
        opts[0].zero_grad(set_to_none=False)
        loss.backward()
        opts[0].step()
        return
    for m, net in enumerate(group.nets):
        out = forward(net, xb[m]) if forward else net(xb[m])
        loss = F.cross_entropy(out, yb[m])
        opts[m].zero_grad(set_to_none=False)
        loss.backward()
        opts[m].step()


def _make_group(dev, models, ens):
    spec = parse_arch("convnet")
    gen = torch.Generator(device=dev).manual_seed(5)
    nets = [spec.build(3, 10, (32, 32)).to(dev) for _ in range(models)]
    for net in nets:
        init_weights(net, "he", gen)
    group = ModelGroup(nets, ens)
    params = [group.parameters()] if ens else [list(n.parameters()) for n in nets]
    opts = [torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4) for p in params]
    return group, opts


def _graphed(step: Callable[[], None], dev: torch.device) -> Callable[[], None]:
    """Capture ``step`` (forward, backward and optimizer step on static tensors) in one CUDA
    graph after warm-up on a side stream; replaying it re-runs the whole step."""
    s = torch.cuda.Stream(dev)
    s.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream(dev).wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def train_step_variants(dev: torch.device, smoke: bool, models: int) -> list[dict]:
    """One training step of ``models`` ConvNets on their own 256-image batches, in variants."""
    from torch.func import functional_call

    batch = 16 if smoke else 256
    g = torch.Generator(device=dev).manual_seed(0)
    xb = torch.randn(models, batch, 3, 32, 32, generator=g, device=dev)
    yb = torch.randint(0, 10, (models, batch), generator=g, device=dev)
    warmup, iters = (1, 2) if smoke else (5, 20)
    out = []

    def add(path: str, variant: str, make: Callable[[], Callable[[], None]]) -> None:
        def run():
            fresh_compile()
            step = make()
            t0 = time.perf_counter()
            step()
            _sync(dev)
            first = time.perf_counter() - t0
            ms, peak = distill_step.measure({variant: step}, dev, warmup, iters)[variant][:2]
            return {"path": path, "variant": variant, "ms": ms, "peak_mib": peak, "first_call_s": first}
        row, err = _tried(run)
        out.append(row or {"path": path, "variant": variant, "error": err})
        print(f"  train step {path} {variant}: " + (f"{row['ms']:.2f} ms" if row else err), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    def plain(ens: bool, channels_last: bool = False, bf16: bool = False):
        group, opts = _make_group(dev, models, ens)
        # channels_last inputs (each model's [B, C, H, W] slice NHWC): cuDNN picks NHWC kernels
        x = xb.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3) if channels_last else xb
        ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

        def step():
            with ctx():
                _train_step(group, opts, x, yb)
        return step

    def compiled(ens: bool):
        group, opts = _make_group(dev, models, ens)
        if ens:
            fwd = torch.compile(stacked_call(group.base))
        else:
            base = group.nets[0]
            f = torch.compile(lambda p, b, x: functional_call(base, (p, b), (x,)))

            def fwd(net, x):
                return f(dict(net.named_parameters()), dict(net.named_buffers()), x)
        return lambda: _train_step(group, opts, xb, yb, fwd)

    def graphed(ens: bool):
        group, opts = _make_group(dev, models, ens)
        return _graphed(lambda: _train_step(group, opts, xb, yb), dev)

    for ens, path in ((True, "ensembled"), (False, "sequential")):
        add(path, "eager fp32", lambda ens=ens: plain(ens))
        if not ens:
            add(path, "channels_last", lambda: plain(False, channels_last=True))
        add(path, "bf16 autocast", lambda ens=ens: plain(ens, bf16=True))
        if not smoke:
            add(path, "torch.compile" + (" (default on CUDA)" if ens else ""), lambda ens=ens: compiled(ens))
        if dev.type == "cuda":
            add(path, "CUDA graph", lambda ens=ens: graphed(ens))
    p = augment.sample_params(models * batch, (32, 32), g, augment.DEFAULT_STRATEGY, dev, family_groups=models)
    flat = xb.flatten(0, 1)
    add("shared", "DSA of all models' batches", lambda: lambda: augment.apply(flat, p))
    return out


# --------------------------------------------------------------------------------------
# (c) protocol cost, (e) profile


def part_protocol(dev: torch.device, smoke: bool) -> dict:
    fresh_compile()
    if smoke:
        cont = protocol_cost.continual_cost(dev, 1, steps=2, models=2, classes=10, per_class=2)
        nas = protocol_cost.nas_cost(dev, 1, sample=1, whole_sample=64, proxy_images=20, whole_images=450)
    else:
        cont = protocol_cost.continual_cost(dev, 3, steps=10, models=15)
        nas = protocol_cost.nas_cost(dev, 3, sample=12, whole_sample=45000)
    return {"continual": cont, "nas": nas}


def part_profile(dev: torch.device, smoke: bool) -> dict:
    from torch.profiler import ProfilerActivity, profile

    shape = (distill_step.Shape("smoke", 10, 40, 16, 2) if smoke
             else next(s for s in distill_step.SHAPES if s.name == "c10-b128-ipc50"))
    g = torch.Generator(device=dev).manual_seed(0)
    k = shape.classes
    train_x = torch.randn(k * shape.per_class, 3, 32, 32, generator=g, device=dev)
    labels = torch.arange(k, device=dev).repeat_interleave(shape.per_class)
    cfg = resolve(SetConfig(method="atom", ipc=shape.ipc, batch_real=shape.batch_real), 32)
    syn = torch.randn(k * shape.ipc, 3, 32, 32, generator=g, device=dev).requires_grad_(True)
    models = 3 if smoke else 20
    batch = 16 if smoke else 256
    xb = torch.randn(models, batch, 3, 32, 32, generator=g, device=dev)
    yb = torch.randint(0, 10, (models, batch), generator=g, device=dev)
    steps = {"distill step (c10 ipc50 b128)": distill_step.ours_factory(train_x, labels, syn, cfg, k)}
    for ens, label in ((True, "ensembled"), (False, "sequential")):
        group, opts = _make_group(dev, models, ens)
        steps[f"{label} training step ({models} models)"] = (
            lambda group=group, opts=opts: _train_step(group, opts, xb, yb))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    tables = {}
    for name, step in steps.items():
        for _ in range(3):
            step()
        _sync(dev)
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            _sync(dev)
        tables[name] = prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=60)
    return {"tables": tables}


# --------------------------------------------------------------------------------------
# (d) end to end on fabricated CIFAR archives


def part_e2e(dev: torch.device, smoke: bool, work: Path) -> dict:
    from pipelines import run as cli

    root = work / "data"
    write_cifar(root, "cifar10", per_class=30, test_per_class=10, seed=0)
    write_cifar(root, "cifar100", per_class=6, test_per_class=2, seed=1)
    r, c = str(root), str(work / "cache")
    d = ["--device", str(dev), "--quiet"]
    stages = [
        ("distill atom cifar10", ["distill", "--dataset", "cifar10", "--data-root", r, "--method", "atom",
                                  "--ipc", "2", "--iterations", "20", "--out", str(work / "atom"), "--set",
                                  "distill.batch_real=16", *d]),
        ("distill herding cifar10", ["distill", "--dataset", "cifar10", "--data-root", r, "--method", "herding",
                                     "--ipc", "2", "--out", str(work / "herding"), "--set",
                                     "distill.embed_epochs=1", *d]),
        ("evaluate convnet,resnet18-batchnorm", ["evaluate", "--synset", str(work / "atom" / "synset.pt"),
                                                  "--data-root", r, "--models", "3", "--epochs", "2",
                                                  "--arch", "convnet,resnet18-batchnorm", *d]),
        ("export avalanche", ["export", "--synset", str(work / "atom" / "synset.pt"), "--format", "avalanche"]),
        ("continual cifar100 5 steps", ["continual", "--dataset", "cifar100", "--data-root", r, "--steps", "5",
                                        "--memories", "random,dm", "--ipc", "2", "--models", "2", "--orders", "0",
                                        "--epochs", "2", "--cache", c, "--out", str(work / "continual"),
                                        "--set", "distill.iterations=10", "--set", "distill.batch_real=8", *d]),
        ("nas cifar10 tiny space", ["nas", "--dataset", "cifar10", "--data-root", r, "--proxy", "random_ipc2",
                                    "--space", "tiny", "--proxy-epochs", "2", "--whole-epochs", "1", "--cache", c,
                                    "--out", str(work / "nas"), *d]),
    ]
    rows = []
    with accept_fabricated_cifar():
        for name, argv in stages:
            t0 = time.perf_counter()
            err = io.StringIO()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = cli.main(argv)
            except Exception:  # noqa: BLE001 - a crash is a finding, reported with its traceback tail
                code, tail = 1, traceback.format_exc().strip().splitlines()[-1]
            else:
                lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
                tail = lines[-1] if code and lines else ""
            rows.append({"stage": name, "exit": code, "seconds": time.perf_counter() - t0, "error": tail[:300]})
            print(f"  e2e {name}: exit {code} in {rows[-1]['seconds']:.1f} s {tail[:120]}", flush=True)
    have_reproduce = "reproduce" in cli.make_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    if not have_reproduce:
        rows.append({"stage": "reproduce", "exit": None, "seconds": 0.0,
                     "error": "not run: run.py has no reproduce command yet"})
    return {"rows": rows}


# --------------------------------------------------------------------------------------
# (f) the full-length Fashion-MNIST table, in sittings


def part_fidelity(dev: torch.device, smoke: bool, out: Path, a: argparse.Namespace) -> dict:
    if smoke:  # the machinery at 1/4000 of the iterations, two cells, 2 networks each
        return fidelity.run_fidelity(device=str(dev), data_root=a.data_root, out=out, minutes=a.minutes,
                                     jobs=a.jobs or 2, budget="smoke", state=a.state, models=2,
                                     cells=fidelity.parse_cells(a.cells or "dm:1,atom:1"))
    return fidelity.run_fidelity(device=str(dev), data_root=a.data_root, out=out, minutes=a.minutes, jobs=a.jobs or 4,
                                 state=a.state or fidelity.STATE, cells=fidelity.parse_cells(a.cells))


# --------------------------------------------------------------------------------------
# report


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{nd}f}"
    return str(v)


def _table(rows: list[dict], cols: list[tuple[str, str, int]]) -> list[str]:
    out = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r and r.get("error") and "ms" not in r and "exit" not in r:
            first = cols[0][1]
            out.append(f"| {r.get(first, '')} | " + " | ".join(
                [str(r.get(cols[1][1], ""))] + ["failed: " + r["error"]] + [""] * (len(cols) - 3)) + " |")
            continue
        out.append("| " + " | ".join(_fmt(r.get(k), nd) for _, k, nd in cols) + " |")
    return out


def report(res: dict) -> str:
    env = res["environment"]
    lines = ["# GPU validation suite", "",
             f"device {env['device']} ({env['device_name']}), driver {env.get('driver', 'n/a')}, torch "
             f"{env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, python {env['python']}; "
             f"command `{env['command']}`; {env['seconds']:.0f} s in all.", ""]
    if "distill" in res:
        d = res["distill"]
        lines += ["## Distillation step (ATOM, ConvNet-3 w128 instance norm)", "",
                  f"median of {d['iters']} interleaved iterations after {d['warmup']} warm-up.", ""]
        lines += _table(d["rows"], [("shape", "shape", 0), ("ours ms/it", "ours_ms", 1),
                                    ("reference ms/it", "reference_ms", 1), ("speed-up", "speedup", 2),
                                    ("ours peak MiB", "ours_peak_mib", 0),
                                    ("reference peak MiB", "reference_peak_mib", 0)])
        lines += ["", "Variants of ours (gradient difference: relative L2 of one iteration's image gradient "
                      "to the eager path with the default chunks; noise floor: that path against itself):", ""]
        lines += _table(d["variants"], [("shape", "shape", 0), ("variant", "variant", 0), ("ms/it", "ms", 1),
                                        ("peak MiB", "peak_mib", 0), ("first call s", "first_call_s", 1),
                                        ("gradient diff", "grad_rel_diff", 6), ("noise floor", "noise_floor", 6)])
        lines.append("")
    if "evaluate" in res:
        e = res["evaluate"]
        lines += ["## Evaluation: N ConvNets trained together (`train_group`)", "",
                  f"{e['epochs']} timed epochs after one warm-up epoch; batch 256, DSA.", ""]
        lines += _table(e["rows"], [("IPC", "ipc", 0), ("images", "images", 0), ("models", "models", 0),
                                    ("ensembled s/epoch", "ensembled_s_per_epoch", 3),
                                    ("sequential s/epoch", "sequential_s_per_epoch", 3),
                                    ("speed-up", "speedup", 2)])
        cc = e.get("compile_check", {})
        lines += ["", ("torch.compile vs eager, ensembled training from one seed (4 models, 3 epochs): relative "
                       f"parameter difference {cc['param_rel_diff']:.2e} (eager against itself: "
                       f"{cc['noise_floor']:.2e})") if "param_rel_diff" in cc else
                  f"torch.compile check: {cc.get('error')}"]
        lines += ["", "One training step of all models (each on its own batch), in variants:", ""]
        lines += _table(e["step_variants"], [("path", "path", 0), ("variant", "variant", 0), ("ms", "ms", 2),
                                             ("peak MiB", "peak_mib", 0), ("first call s", "first_call_s", 1)])
        lines.append("")
    if "protocol" in res:
        c, n = res["protocol"]["continual"], res["protocol"]["nas"]
        lines += ["## Full protocols, extrapolated", "",
                  f"- continual, {c['steps']} steps x {c['models']} models x 1000 epochs: ours "
                  f"{c['ours_min']:.1f} min ({'ensembled' if c['ensembled'] else 'sequential'}), reference "
                  f"{c['reference_min']:.1f} min (one model after another)",
                  f"- NAS, 720 candidates from a sample of {n['sample']}: proxy search (200 epochs on 500 "
                  f"images) {n['proxy_min']:.1f} min, whole-data ground truth (100 epochs on 45,000 images) "
                  f"{n['whole_min']:.0f} min", ""]
        lines += _table(c["rows"], [("step", "step", 0), ("images", "images", 0),
                                    ("ours s/epoch", "ours_s_per_epoch", 3),
                                    ("reference s/epoch", "reference_s_per_epoch", 3)])
        lines += [""] + _table(n["rows"], [("candidate", "candidate", 0), ("proxy s/epoch", "proxy_s_per_epoch", 3),
                                           ("whole s/epoch", "whole_s_per_epoch", 1)]) + [""]
    if "e2e" in res:
        lines += ["## End to end on fabricated CIFAR archives", ""]
        lines += _table(res["e2e"]["rows"], [("stage", "stage", 0), ("exit", "exit", 0),
                                             ("seconds", "seconds", 1), ("error", "error", 0)])
        lines.append("")
    if "profile" in res:
        lines += ["## Profile (3 steps each)", ""]
        for name, table in res["profile"]["tables"].items():
            lines += [f"### {name}", "", "```", table.rstrip(), "```", ""]
    if "fidelity" in res:
        f, sm = res["fidelity"], res["fidelity"]["summary"]
        lines += ["## The full-length Fashion-MNIST table (this sitting and the ones before it)", "",
                  f"{f['title']}. {sm['finished']} of {sm['cells']} cells finished ({sm['this_sitting']} in this "
                  f"sitting), {sm['stopped']} stopped at the deadline and continued by the next sitting, "
                  f"{sm['failed']} failed; {sm['jobs']} cells at a time ({sm['threads_per_job']} CPU threads each), "
                  f"{sm['seconds']:.0f} s. Files: fidelity.md/csv/json, fidelity.log, fidelity_state.tar.gz "
                  f"({sm['state_bytes'] / 2**20:.1f} MiB).", ""]
        lines += _table(f["rows"], [("method", "method", 0), ("IPC", "ipc", 0), ("paper", "paper", 0),
                                    ("ours", "ours", 0), ("difference", "difference", 0),
                                    ("iterations", "iterations", 0), ("state", "state", 0),
                                    ("distil s", "distill_s", 0), ("eval s", "eval_s", 0),
                                    ("ms/it", "ms_per_iteration", 1)])
        lines.append("")
    if res.get("failures"):
        lines += ["## Parts that failed", ""] + [f"- {k}: {v}" for k, v in res["failures"].items()] + [""]
    return "\n".join(lines)


def environment(dev: torch.device, argv: list[str]) -> dict:
    env = {"device": str(dev), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "python": platform.python_version(), "command": " ".join(["python benchmarks/gpu_suite.py", *argv]),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine()}
    if dev.type == "cuda":
        import subprocess

        out, _ = _tried(lambda: subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=30).stdout.strip())
        env["driver"] = out
    return env


def fidelity_input_error(a: argparse.Namespace) -> str | None:
    """Why the fidelity part's options cannot run (checked before any part starts), or None."""
    if a.data_root is None and not a.smoke:
        return "the fidelity part needs --data-root: the folder of Fashion-MNIST's four idx files " \
               "(apt-get install dataset-fashion-mnist: /usr/share/datasets/fashion-mnist)"
    if a.data_root is not None:
        names = {p.name.removesuffix(".gz") for p in a.data_root.glob("*")} if a.data_root.is_dir() else set()
        missing = [f for pair in MNIST_IDX.values() for f in pair if f not in names]
        if missing:
            return f"--data-root {a.data_root} lacks {', '.join(missing)} (plain or .gz)"
    if a.minutes <= 0 or (a.jobs is not None and a.jobs < 1):
        return "--minutes must be above 0 and --jobs at least 1"
    state = a.state or (None if a.smoke else fidelity.STATE)
    if a.state is not None and not a.state.is_file():
        return f"--state {a.state} does not exist (a fidelity_state.tar.gz of an earlier sitting)"
    try:
        if state is not None and state.is_file():
            with tarfile.open(state, "r:gz") as tar:
                fidelity.check_state(tar, state)
        fidelity.check_cells(fidelity.parse_cells(a.cells))
    except tarfile.TarError:
        return f"--state {state} is not a gzipped tar archive (a fidelity_state.tar.gz of an earlier sitting)"
    except (ValueError, UserError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and few iterations: every part in a few "
                                                         "CPU minutes (checks that the suite runs, not speed)")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated subset of: {', '.join(PARTS)} (default: all but fidelity)")
    fid = ap.add_argument_group("fidelity part")
    fid.add_argument("--data-root", type=Path, help="folder of the four Fashion-MNIST idx files (plain or .gz)")
    fid.add_argument("--minutes", type=float, default=8.0, help="the sitting's length: cells still running then "
                                                                 "are checkpointed (default 8)")
    fid.add_argument("--jobs", type=int, help="cells computed at once on the device (default 4; 2 with --smoke)")
    fid.add_argument("--state", type=Path,
                     help="the earlier sittings' fidelity_state.tar.gz to continue from (default: the committed "
                          "benchmarks/results/gpu_fidelity/fidelity_state.tar.gz, where present; none with --smoke)")
    fid.add_argument("--cells", help="LABEL:IPC,... of the table (default: all 16, in the order of fidelity.CELLS)")
    ap.add_argument("--out", help="report folder (default: benchmarks/results/gpu_suite; with --smoke a fresh "
                                  "temporary folder, so a check leaves the checkout as it was)")
    a = ap.parse_args(argv)
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        print(f"error: unknown part {bad[0]!r}; allowed: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if "fidelity" in parts:
        why = fidelity_input_error(a)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
    try:
        dev = torch.device(a.device)
    except RuntimeError:
        print(f"error: unknown device {a.device!r}; use cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; use --device cpu --smoke for the CPU check", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else (Path(tempfile.mkdtemp(prefix="gpu_suite_smoke_")) if a.smoke
                                     else Path("benchmarks/results/gpu_suite"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create --out {out}: {exc.strerror}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res: dict[str, Any] = {"environment": environment(dev, argv), "failures": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            print(f"[{part}]", flush=True)
            fn = {"distill": lambda: part_distill(dev, a.smoke), "evaluate": lambda: part_evaluate(dev, a.smoke),
                  "protocol": lambda: part_protocol(dev, a.smoke), "profile": lambda: part_profile(dev, a.smoke),
                  "e2e": lambda: part_e2e(dev, a.smoke, Path(tmp)),
                  "fidelity": lambda: part_fidelity(dev, a.smoke, out, a)}[part]
            value, err = _tried(fn, verbose=True)
            if err:
                res["failures"][part] = err
            else:
                res[part] = value
            res["environment"]["seconds"] = time.perf_counter() - t0
            (out / "gpu_suite.json").write_text(json.dumps(res, indent=1, default=str))
            (out / "gpu_suite.md").write_text(report(res))
    text = report(res)
    print("\n" + text + f"\n\nreport: {out / 'gpu_suite.md'}, raw numbers: {out / 'gpu_suite.json'}")
    e2e_failed = any(r["exit"] not in (0, None) for r in res.get("e2e", {}).get("rows", []))
    cells_failed = res.get("fidelity", {}).get("summary", {}).get("failed", 0)  # stopped cells are not failures
    return 1 if res["failures"] or e2e_failed or cells_failed else 0


if __name__ == "__main__":
    sys.exit(main())
