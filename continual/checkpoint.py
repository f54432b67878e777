"""Step-boundary checkpoints of an experience-replay run (docs/protocols.md section 4).

After every step the learner's whole state goes to one file, written atomically
(``distill.files.atomic_save``): the network's and the optimiser's ``state_dict``, torch's global
random state (Avalanche's loaders shuffle with it), the seconds spent so far, and the state of
every plugin of the strategy: the storage policy's exemplars, the evaluation plugin's metric
history (the forgetting needs every step's first accuracy), the clock, the DSA generator.

Avalanche's own ``save_checkpoint`` pickles the whole strategy with ``dill``; on this stack it
fails (a ``typing_extensions`` sentinel cannot be pickled), writes the file in place, and a
storage policy's exemplars would drag the whole training set into every file (a buffer is a
subset of the stream's dataset). So the plugins are pickled here with three things replaced by
references: the network (the new strategy's), the exemplar-selection strategy (the new
policy's, which wraps the new network) and the synthetic set (the new memory's). Every dataset
is stored as its samples' tensors and rebuilt as a plain tensor dataset, which yields the same
samples in the same order, and every tensor is stored beside the pickle as a plain tensor. The
file itself is read with ``weights_only``; the plugins' pickle inside it is rebuilt by an
unpickler that constructs objects of avalanche and of this package, torch devices and
generators, and a few builtin containers only (:data:`ALLOWED_NAMES`).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.storage_policy import ExemplarsSelectionStrategy

from distill.errors import UserError
from distill.files import atomic_save, read_plain
from distill.synset import SyntheticSet

from .benchmark import task_dataset

FORMAT = "attention-distill/er-checkpoint"
# what the plugins' pickle may build: avalanche's and this package's classes, and these
ALLOWED_PACKAGES = ("avalanche", "continual")
ALLOWED_NAMES = {("torch", "device"), ("torch._C", "Generator"), ("collections", "defaultdict"),
                 ("collections", "OrderedDict"), *(("builtins", n) for n in ("set", "frozenset", "dict", "list", "tuple",
                                                                             "slice", "range", "complex", "object"))}


def _samples(ds: AvalancheDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset's ``(x, y)`` samples in order, stacked."""
    if len(ds) == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)


class _Pickler(pickle.Pickler):
    """Pickles with references for the network, the selection strategy and the synthetic set,
    and every tensor (a dataset's samples too) put aside in ``tensors``, to be stored as plain
    tensors beside the pickle: the pickle itself then holds no tensor storage to rebuild."""

    def __init__(self, file: io.BytesIO, model: torch.nn.Module):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.model = model
        self.tensors: list[torch.Tensor] = []

    def _aside(self, t: torch.Tensor) -> int:
        self.tensors.append(t.detach().cpu() if t.device.type != "cpu" else t.detach())
        return len(self.tensors) - 1

    def persistent_id(self, obj: Any) -> Any:
        if obj is self.model:
            return ("model",)
        if isinstance(obj, ExemplarsSelectionStrategy):
            return ("selection",)
        if isinstance(obj, SyntheticSet):
            return ("synset",)
        if isinstance(obj, AvalancheDataset):
            x, y = _samples(obj)
            return ("data", self._aside(x), self._aside(y))
        if isinstance(obj, torch.Tensor):
            return ("tensor", self._aside(obj), str(obj.device))
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, refs: dict[str, Any], tensors: list[torch.Tensor]):
        super().__init__(file)
        self.refs, self.tensors = refs, tensors

    def persistent_load(self, pid: Any) -> Any:
        if pid[0] == "tensor":
            return self.tensors[pid[1]].to(pid[2])
        if pid[0] == "data":
            x, y = self.tensors[pid[1]], self.tensors[pid[2]]
            return task_dataset(x, y) if len(y) else task_dataset(torch.empty(0, 1), y)
        if pid[0] not in self.refs:
            raise pickle.UnpicklingError(f"the checkpoint refers to a {pid[0]} this run does not have")
        return self.refs[pid[0]]

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_NAMES or module.split(".")[0] in ALLOWED_PACKAGES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a step checkpoint may not build {module}.{name}")


def _policy(strategy: Any) -> Any:
    return next(p.storage_policy for p in strategy.plugins if hasattr(p, "storage_policy"))


def save_step(strategy: Any, path: Path, steps_done: int, seconds: list[float]) -> Path:
    """Write the learner's state after ``steps_done`` steps to ``path`` atomically."""
    buf = io.BytesIO()
    pickler = _Pickler(buf, strategy.model)
    pickler.dump(list(strategy.plugins))
    blob: dict[str, Any] = {
        "format": FORMAT, "version": 1, "steps_done": int(steps_done), "seconds": [float(s) for s in seconds],
        "model": strategy.model.state_dict(), "optimizer": strategy.optimizer.state_dict(),
        "plugins": torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), "tensors": pickler.tensors,
        "rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.device(strategy.device).type == "cuda":
        blob["cuda_rng"] = torch.cuda.get_rng_state(strategy.device)
    return atomic_save(blob, path)


def load_step(strategy: Any, path: Path) -> tuple[int, list[float]]:
    """Restore ``strategy`` (freshly built with the same network, policy and plugins) from the
    checkpoint at ``path``; returns ``(steps done, seconds per step so far)``."""
    blob = read_plain(path, "step checkpoint")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{path} is not a step checkpoint of experience replay")
    policy = _policy(strategy)
    refs = {"model": strategy.model, "selection": getattr(policy, "selection_strategy", None),
            "synset": getattr(policy, "synset", None)}
    refs = {k: v for k, v in refs.items() if v is not None}
    try:
        plugins = _Unpickler(io.BytesIO(blob["plugins"].numpy().tobytes()), refs, blob["tensors"]).load()
    except (pickle.UnpicklingError, AttributeError, EOFError) as exc:
        raise UserError(f"{path} cannot be restored: {exc}") from None
    if [type(p) for p in plugins] != [type(p) for p in strategy.plugins]:
        raise UserError(f"{path} was written by a strategy with other plugins")
    for mine, theirs in zip(strategy.plugins, plugins):
        mine.__dict__.update(theirs.__dict__)  # keeps each plugin object, so strategy.clock and .evaluator stay
    strategy.model.load_state_dict(blob["model"])
    strategy.optimizer.load_state_dict(blob["optimizer"])
    # Avalanche resets the optimiser's state on its first step only (when it has no parameter
    # map yet); the map of this network makes the resumed step keep the momentum as before
    strategy.optimized_param_id = dict(strategy.model.named_parameters())
    torch.set_rng_state(blob["rng"])
    if "cuda_rng" in blob:
        torch.cuda.set_rng_state(blob["cuda_rng"], strategy.device)
    return int(blob["steps_done"]), list(blob["seconds"])
