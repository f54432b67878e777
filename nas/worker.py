"""One search worker process: open the shared study and train candidates until none is left."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from workers.claims import open_storage, open_study, run_worker

from .config import NASConfig
from .space import get_space, space_cells
from .train import Condition, train_candidate


def to_device(cond: Condition, device: torch.device) -> Condition:
    return replace(cond, **{k: getattr(cond, k).to(device) for k in ("x", "y", "val_x", "val_y", "test_x", "test_y")})


def worker_main(storage_url: str | None, journal: str, study_name: str, cond: Condition, cfg: NASConfig,
                device: str, threads: int) -> None:
    """Entry point of a spawned worker (``run.py nas --workers N``)."""
    torch.set_num_threads(max(1, threads))
    dev = torch.device(device)
    cond = to_device(cond, dev)
    study = open_study(study_name, open_storage(storage_url, Path(journal), cfg.heartbeat))
    run_worker(study, space_cells(get_space(cfg.space)), lambda params, index: train_candidate(params, index, cond, cfg, dev))
