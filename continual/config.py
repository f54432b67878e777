"""The continual-learning protocol's configuration (importable without avalanche)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from distill.datasets import quick_defaults
from distill.errors import UserError, choice_error
from distill.evaluate import resolve_eval
from distill.train import TrainRecipe
from distill.methods import METHODS

from .benchmark import step_classes

DM_ORDERS = [0, 1, 2, 3, 4]
PROTOCOLS = ("gdumb", "er")
# Avalanche storage policies of real exemplars (er only)
REAL_MEMORIES = ("reservoir", "class_balanced", "herding_buffer")
# experience replay's results changed (revision 2: Avalanche's forgetting, the herding buffer);
# part of its cells' cache identity
ER_REVISION = 2
DEFAULT_MEMORIES = ["random", "herding", "dm", "datadam", "atom"]


@dataclass
class ContinualConfig(TrainRecipe):
    """The CL protocol plus the training recipe of each step's models (the TrainRecipe fields)."""

    protocol: str = "gdumb"  # gdumb (DM's: fresh networks on the memory alone) | er (experience replay)
    models: int | None = None  # networks per step and order (DM: 3; digits: 1)
    steps: int = 10  # 5 or 10 on CIFAR-100
    ipc: int = 20  # memory images per class
    orders: list[int] | None = None  # class-order seeds (DM: 0..4; digits: 0..2)
    memories: list[str] | None = None  # method names (made once, cached) or synset.pt paths
    tensorboard: bool = False  # also log the per-step accuracies for TensorBoard


def resolve_continual(cfg: ContinualConfig, dataset: str, num_classes: int) -> ContinualConfig:
    """Fill the ``None`` fields (the dataset's quick defaults, ``distill.datasets``, then the
    papers') and validate."""
    quick = quick_defaults(dataset, "continual")
    cfg = replace(cfg,
                  models=cfg.models if cfg.models is not None else quick.get("models", 3),
                  orders=list(cfg.orders if cfg.orders is not None else quick.get("orders", DM_ORDERS)),
                  memories=list(cfg.memories if cfg.memories is not None
                                else quick.get("memories", DEFAULT_MEMORIES)),
                  epochs=cfg.epochs if cfg.epochs is not None else quick.get("epochs"))
    if cfg.protocol not in PROTOCOLS:
        raise choice_error("continual.protocol", cfg.protocol, PROTOCOLS)
    real = [m for m in cfg.memories or [] if m in REAL_MEMORIES]
    if real and cfg.protocol != "er":
        raise UserError(f"memories {', '.join(real)} are real-exemplar storage policies of experience replay: "
                        "give --protocol er")
    base = resolve_eval(cfg, dataset)
    cfg = replace(cfg, epochs=base.epochs, archs=base.archs)
    if len(cfg.archs) != 1:
        raise UserError(f"the continual protocol trains one architecture, got {cfg.archs}")
    step_classes(list(range(num_classes)), cfg.steps)
    if cfg.ipc < 1:
        raise UserError(f"continual.ipc must be at least 1, got {cfg.ipc}")
    if not cfg.orders:
        raise UserError("continual.orders is empty; give class-order seeds, e.g. [0, 1, 2, 3, 4]")
    if not cfg.memories:
        raise UserError(f"continual.memories is empty; give method names ({', '.join(METHODS)}) "
                        "or synset.pt paths")
    return cfg


