"""Interruptions: SIGTERM (a batch scheduler's stop, ``kill``) is handled as Ctrl-C is, and short
critical sections (an optimizer step: a half-applied update would corrupt the state a checkpoint
saves) hold both signals back until they are done."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt, so checkpoints, resume hints
    and worker processes are dealt with the same way; the command then exits 143 (128 + 15)."""


def raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs, then deliver the first one that came
    (through the handler that was installed). Only the main thread receives signals; elsewhere
    the block simply runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])  # through the restored handler
