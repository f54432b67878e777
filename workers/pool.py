"""Local worker processes of one study (``--workers N``): spawned, each on its own device (one
per GPU round-robin) or with an equal share of the CPU threads, watched until they return, and
stopped with the caller on Ctrl-C or a kill (their unfinished cells are claimed again on
resume, ``workers.claims``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import torch

from distill.errors import UserError


def worker_devices(device: torch.device, workers: int, threads: int | None = None) -> tuple[list[str], int]:
    """Each worker's device (``cuda:i mod #GPUs`` for a CUDA device, else ``cpu``) and the
    torch threads each gets (``threads``, else the CPU cores split evenly, at least one)."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    return [f"cuda:{i % gpus}" if gpus else "cpu" for i in range(workers)], threads


def stop_workers(procs: list[Any], grace: float = 30.0) -> None:
    """Interrupt live worker processes as Ctrl-C in a terminal would (SIGINT), then terminate
    those still alive after ``grace`` seconds."""
    for p in procs:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join()


def run_pool(target: Callable[..., None], args: tuple[Any, ...], workers: int, device: torch.device,
             done: Callable[[], int], total: int, label: str,
             progress: Callable[[int, int], None] = lambda done, total: None, threads: int | None = None,
             poll: float = 1.0) -> None:
    """Run ``target(*args, device, threads)`` in ``workers`` spawned processes (threads as
    :func:`worker_devices` gives them) until all return,
    reporting ``progress(done(), total)``. Workers that died are tolerated when the others
    finished every cell (``done() == total``); otherwise the run stops with one error line."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    devices, each = worker_devices(device, workers, threads)
    procs = [ctx.Process(target=target, args=(*args, dev, each)) for dev in devices]
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            progress(done(), total)
            time.sleep(poll)
    except BaseException:  # Ctrl-C or a kill of this process alone: stop the workers with it
        stop_workers(procs)
        raise
    bad = [p.exitcode for p in procs if p.exitcode]
    finished = done()
    progress(finished, total)
    if bad and finished == total:  # the survivors finished the dead workers' cells
        print(f"  {label}: {len(bad)} worker(s) stopped (exit codes {bad}); the others finished their cells")
    elif bad:
        raise UserError(f"{len(bad)} worker(s) of {label} failed (exit codes {bad}); run the same command "
                        "again to resume")
