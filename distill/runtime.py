"""How work runs on this machine, never what it computes: optional ``torch.compile`` with a
fallback to eager execution, and glibc's handling of large host allocations. Both are measured in
benchmarks/RESULTS.md."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import torch


COMPILE_MODES = ("auto", "on", "off")
# graphs one compiled function may hold (one per input shape: a continual run has a new last
# batch at every step, ``--arch all`` a function per architecture sharing one code object);
# the compiler's own limit, 8, would silently run the rest eagerly
RECOMPILE_LIMIT = 64


def wants_compile(mode: str, device: torch.device) -> bool:
    """``auto``: compile on CUDA only (where it pays, measured in benchmarks/RESULTS.md; on the
    CPU the compilation costs more than it saves); ``on`` / ``off``: always / never."""
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


@functools.cache
def keep_host_memory() -> bool:
    """Make glibc's ``malloc`` keep freed large blocks for reuse (``mallopt``: mmap threshold
    1 GiB, trim threshold 2 GiB, top pad 256 MiB), once per process. By default every CPU tensor
    above 32 MiB is a fresh ``mmap`` whose pages the kernel must fault in and zero, and it is
    unmapped again on free, which dominated a CPU distillation step and made its time vary by
    tens of percent from run to run (benchmarks/RESULTS.md). Results are unchanged (only where
    the memory comes from). A process-wide setting: the command line calls it at start-up, and
    ``distill.loop.distill`` and ``distill.train.train_group`` call it on their first CPU run, so
    library users get it too (a freed block then stays with the process; its resident memory does
    not shrink after a large run). Returns ``False`` where it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    return all(mallopt(opt, value) == 1 for opt, value in
               ((m_mmap_threshold, 1 << 30), (m_trim_threshold, 1 << 31), (m_top_pad, 1 << 28)))
