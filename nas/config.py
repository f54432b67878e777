"""The NAS job's configuration (importable without optuna)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from distill import augment
from distill.datasets import quick_defaults
from distill.errors import UserError
from distill.errors import check_range
from distill.train import TrainRecipe, check_recipe

from .space import get_space


def quick_resolution(dataset: str, space: str) -> int | None:
    """The image size for a dataset with quick defaults (digits): the smallest the space fits,
    ``max(8, 2**max depth)`` (8x8 native, 16x16 once a depth-4 pooled ConvNet is in it)."""
    if not quick_defaults(dataset, "nas"):
        return None
    return max(8, 2 ** max(get_space(space)["depth"]))


@dataclass
class NASConfig:
    """Search space, the three training conditions, the validation split and the study."""

    space: str = "full"  # full (720) | small (48) | tiny (4)
    proxy_epochs: int | None = None  # None: 200 (papers); digits 100
    whole_epochs: int | None = None  # None: 100 (papers); digits 50
    early_stopping: bool = True  # also run the whole set for as many steps as the proxy training
    val_fraction: float = 0.1  # held out of the real training set, per class, for ranking
    val_seed: int = 0
    # the training recipe's values (distill.train.TrainRecipe, whose defaults these are)
    lr: float = TrainRecipe.lr
    momentum: float = TrainRecipe.momentum
    weight_decay: float = TrainRecipe.weight_decay
    batch: int = TrainRecipe.batch
    dsa: str = TrainRecipe.dsa
    init: str = TrainRecipe.init
    seed: int = 0  # candidate initialisation (the same candidate starts alike in every condition)
    top_k: list[int] = field(default_factory=lambda: [5, 10, 20, 30])
    workers: int = 1  # local worker processes sharing each study
    storage: str | None = None  # None: a journal file in the cache; or an RDB URL (postgresql+psycopg2://...)
    heartbeat: int = 60  # RDB storage: seconds between a trial's heartbeats; three missed ones = a dead worker
    whole_results: str | None = None  # a csv/json of whole-data results made elsewhere


def resolve_nas(cfg: NASConfig, dataset: str) -> NASConfig:
    quick = quick_defaults(dataset, "nas")
    cfg = replace(cfg,
                  proxy_epochs=cfg.proxy_epochs if cfg.proxy_epochs is not None else quick.get("proxy_epochs", 200),
                  whole_epochs=cfg.whole_epochs if cfg.whole_epochs is not None else quick.get("whole_epochs", 100))
    get_space(cfg.space)
    augment.parse_strategy(cfg.dsa)
    if not 0 < cfg.val_fraction < 1:
        raise UserError(f"nas.val_fraction must lie in (0, 1), got {cfg.val_fraction}")
    if cfg.workers < 1:
        raise UserError(f"nas.workers must be at least 1, got {cfg.workers}")
    check_recipe(recipe(cfg, int(cfg.proxy_epochs)))  # lr, momentum, weight decay, batch: one check
    check_range("nas.whole_epochs", cfg.whole_epochs, 1)
    check_range("nas.heartbeat", cfg.heartbeat, 1)
    for k in cfg.top_k:
        check_range("nas.top_k", k, 1)
    return cfg


def recipe(cfg: NASConfig, epochs: int) -> TrainRecipe:
    """The candidate-training recipe (one model, trained on its own)."""
    return TrainRecipe(models=1, epochs=epochs, lr=cfg.lr, momentum=cfg.momentum,
                      weight_decay=cfg.weight_decay, batch=cfg.batch, dsa=cfg.dsa, init=cfg.init,
                      ensemble="off", seed=cfg.seed)
