"""Small helpers around single networks: the LR schedule of the evaluation recipe (docs/protocols.md
section 3), embeddings, and optional compilation. Training itself lives in
``distill.evaluate.train_group``."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor


def lr_at(epoch: int, epochs: int, lr: float) -> float:
    """Step schedule of the reference code: ``lr`` for the first half, ``lr / 10`` after."""
    return lr if epoch < epochs // 2 else lr * 0.1


@torch.no_grad()
def embed_all(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    """Final embeddings of ``x`` (eval mode)."""
    net.eval()
    return torch.cat([net.embed(x[i : i + batch]) for i in range(0, len(x), batch)])


def derived_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (e.g. run seed, class order, step) with numpy's
    ``SeedSequence``: distinct tuples give independent streams, none depends on another."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


COMPILE_MODES = ("auto", "on", "off")
# graphs one compiled function may hold (one per input shape: a continual run has a new last
# batch at every step, ``--arch all`` a function per architecture sharing one code object);
# the compiler's own limit, 8, would silently run the rest eagerly
RECOMPILE_LIMIT = 64


def wants_compile(mode: str, device: torch.device) -> bool:
    """``auto``: compile on CUDA only (on the H100 it took a distillation step from 22 to 14 ms
    and a 20-model training step from 89 to 33 ms, benchmarks/RESULTS.md; on the CPU the
    compilation costs more than it saves in our runs); ``on`` / ``off``: always / never."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def compiled(fn: Callable[..., Any], enabled: bool, dynamic: bool | None = None) -> Callable[..., Any]:
    """``torch.compile(fn, dynamic=dynamic)`` when ``enabled``, falling back to ``fn`` itself
    (with one warning) if compilation fails on this machine, so a missing compiler never stops a
    run. The compiled function computes the same values up to float rounding (different kernel
    fusion). While it runs, up to ``RECOMPILE_LIMIT`` graphs (input shapes) are compiled
    instead of the compiler's default 8; the setting is restored after every call."""
    if not enabled:
        return fn
    fast = torch.compile(fn, dynamic=dynamic)
    state = {"ok": True}
    config = torch._dynamo.config  # noqa: SLF001 - the documented way to scope compiler settings
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6

    def call(*args: Any, **kwargs: Any) -> Any:
        if state["ok"]:
            try:
                with config.patch(**{limit: max(RECOMPILE_LIMIT, getattr(config, limit))}):
                    return fast(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly instead
                state["ok"] = False
                warnings.warn(f"torch.compile failed ({type(exc).__name__}); running without it", stacklevel=2)
        return fn(*args, **kwargs)

    return call
