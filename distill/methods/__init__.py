"""The method registry: every method is an object that owns its hyperparameters and its behaviour.

- A **matching** method (:class:`MatchingMethod`) optimises synthetic images. From the features
  of a class-major batch it computes per-class statistics (:meth:`~MatchingMethod.statistics`,
  every tensor ``[K, ...]``), and from the real and the synthetic statistics its loss
  (:meth:`~MatchingMethod.loss`). The loop (``distill.loop``) knows no method by name: it chunks
  the classes, concatenates real statistics and back-propagates each synthetic chunk's loss,
  which is valid for any loss that is a sum over classes.
- A **selection** method (:class:`SelectionMethod`) picks real images per class
  (:meth:`~SelectionMethod.pick`), on trained-network embeddings where ``needs_embeddings``.

Each method declares

- ``Params``: a dataclass of ITS hyperparameters, every field a :func:`param` with its
  documentation, its default (fixed, per preset, or a size rule) and its range. They are flat
  keys of the ``distill`` section (``--set distill.lam=0.02``); a name several methods declare
  is one key with one meaning;
- ``reads``: the shared settings (``distill.settings.DistillSettings``) its sets depend on;
- ``settings``: its own defaults for shared settings (DM: 20,000 iterations, 256 real images).

A set's identity (its cache key) is its method, IPC, the shared settings the method reads and
the method's own resolved parameters (``distill.settings.set_identity``): DM never reads
``lam``, so changing ``lam`` does not distil a DM set again.

Every module of this package registers its methods when imported (the package imports them
all), so adding a method is one new file plus its test.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import UserError, check_range, choice_error
from ..matching import MatchWeights, class_statistics, statistics_loss
from ..registry import add, find, import_modules

Stats = dict[str, list[Tensor]]  # per-class statistics: every tensor has the classes as dim 0


@dataclass(frozen=True)
class Default:
    """How an unset parameter is filled: a fixed ``value``, a value per preset, or a ``rule`` of
    the task (``rule(ipc, image_size)``, described by ``rule_doc``)."""

    value: Any = None
    presets: Mapping[str, Any] | None = None
    rule: Callable[[int, int], Any] | None = None
    rule_doc: str = ""

    def describe(self) -> str:
        if self.presets:
            return ", ".join(f"{v:g} ({k})" if isinstance(v, float) else f"{v} ({k})" for k, v in self.presets.items())
        if self.rule is not None:
            return self.rule_doc
        return f"{self.value:g}" if isinstance(self.value, float) else str(self.value)

    def fill(self, preset: str, ipc: int, image_size: int) -> tuple[Any, str]:
        """``(value, source)`` for a set of ``ipc`` images per class at ``image_size`` px."""
        if self.presets:
            return self.presets[preset], f"preset {preset}"
        if self.rule is not None:
            return self.rule(ipc, image_size), f"size rule ({self.rule_doc})"
        return self.value, "method default"


def param(doc: str, *, value: Any = None, presets: Mapping[str, Any] | None = None,
          rule: Callable[[int, int], Any] | None = None, rule_doc: str = "", low: float | None = None,
          high: float | None = None, low_open: bool = False, high_open: bool = False,
          choices: tuple[str, ...] | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
    """A method hyperparameter: a dataclass field whose ``None`` is filled by :class:`Default`
    and then checked against ``[low, high]`` (``*_open``: bound excluded), ``choices``, or
    ``check(value)`` (a problem described, or None)."""
    return dataclasses.field(default=None, metadata={
        "doc": doc, "default": Default(value, presets, rule, rule_doc),
        "range": (low, high, low_open, high_open), "choices": choices, "check": check})


class Method:
    """A registered method; subclasses set the class attributes and the behaviour."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "match" | "select"
    paper: ClassVar[str] = ""
    Params: ClassVar[type | None] = None  # a dataclass of param() fields
    reads: ClassVar[tuple[str, ...]] = ()  # shared settings its sets depend on
    settings: ClassVar[Mapping[str, Any]] = {}  # its defaults for shared settings, in every preset

    def param_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.Params)) if self.Params is not None else []

    def param_names(self) -> list[str]:
        return [f.name for f in self.param_fields()]

    def resolve_params(self, given: Mapping[str, Any], preset: str, ipc: int, image_size: int,
                       record: Callable[[str, str], None] = lambda key, source: None) -> dict[str, Any]:
        """Every parameter of this method: the value in ``given`` (keys of other methods are
        ignored here), else its default; checked; ``record(name, source)`` for each filled one."""
        out = {}
        for f in self.param_fields():
            value = given.get(f.name)
            if value is None:
                value, source = f.metadata["default"].fill(preset, ipc, image_size)
                record(f.name, source if source != "method default" else f"method {self.name}")
            low, high, low_open, high_open = f.metadata["range"]
            check_range(f"distill.{f.name}", value, low, high, low_open=low_open, high_open=high_open)
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise choice_error(f"distill.{f.name}", value, f.metadata["choices"])
            problem = f.metadata["check"](value) if f.metadata["check"] else None
            if problem:
                raise UserError(f"distill.{f.name} {problem}, got {value!r}")
            out[f.name] = value
        return out

    def typed(self, params: Mapping[str, Any]) -> Any:
        """The resolved parameters as this method's ``Params`` dataclass."""
        return self.Params(**{k: params[k] for k in self.param_names()}) if self.Params is not None else None


class MatchingMethod(Method):
    """Optimises synthetic images so that their per-class statistics match the real ones."""

    kind = "match"
    # the shared settings every matching set depends on (factor: multi-formation, docs/protocols.md section 2)
    reads: ClassVar[tuple[str, ...]] = ("preset", "iterations", "lr_img", "momentum", "batch_real", "layers",
                                        "init", "dsa", "embed_epochs", "net", "seed", "factor")

    def statistics(self, p: Any, feats: list[Tensor], emb: Tensor, num_classes: int,
                   layers: tuple[int, ...] | None) -> Stats:  # pragma: no cover - abstract
        """Per-class statistics of a class-major batch (``K`` classes, equal counts)."""
        raise NotImplementedError

    def loss(self, p: Any, real: Stats, syn: Stats) -> Tensor:  # pragma: no cover - abstract
        """The loss between real and synthetic statistics of the same classes: a sum over them."""
        raise NotImplementedError


class AttentionMatching(MatchingMethod):
    """``scale * sum_k (sum of the maps' terms + last_weight * last-layer term)``
    (``distill.matching``; DataDAM Eq. 5, ATOM Eq. 6, DM with no maps)."""

    def maps(self, p: Any) -> tuple[tuple[str, float], ...]:
        """The attention maps matched at every chosen layer, with their exponents."""
        return ()

    def last_weight(self, p: Any) -> float:
        """The weight of the last-layer (embedding mean) term: lambda."""
        return float(p.lam)

    def weights(self, p: Any, layers: tuple[int, ...] | None = None) -> MatchWeights:
        return MatchWeights(maps=self.maps(p), last_weight=self.last_weight(p), scale=float(p.loss_scale),
                            layers=layers)

    def statistics(self, p: Any, feats: list[Tensor], emb: Tensor, num_classes: int,
                   layers: tuple[int, ...] | None) -> Stats:
        return class_statistics(feats, emb, num_classes, self.weights(p, layers))

    def loss(self, p: Any, real: Stats, syn: Stats) -> Tensor:
        return statistics_loss(real, syn, self.weights(p))[0]


class SelectionMethod(Method):
    """Picks ``k`` real images of each class."""

    kind = "select"
    needs_embeddings: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("seed",)

    def pick(self, embeddings: Tensor | None, count: int, k: int,
             generator: torch.Generator) -> Tensor:  # pragma: no cover - abstract
        """``min(k, count)`` indices into one class's ``count`` images (its embeddings
        ``[count, D]`` where ``needs_embeddings``)."""
        raise NotImplementedError


# -- parameters every attention method shares: one key, one meaning ---------------------------

def lam_rule(_ipc: int, image_size: int) -> float:
    """lambda = 0.01 up to 32 px, 0.02 above (DataDAM / ATOM)."""
    return 0.01 if image_size <= 32 else 0.02


def p_spatial() -> Any:
    return param("power p_s of spatial attention sum_c |f_c|^p (DataDAM Eq. 2)",
                 presets={"paper": 4.0, "reference_code": 1.0}, low=0, low_open=True)


def p_channel() -> Any:
    return param("power p_c of channel attention sum_hw |f|^p (ATOM Eq. 3)",
                 presets={"paper": 4.0, "reference_code": 1.0}, low=0, low_open=True)


def lam() -> Any:
    return param("weight lambda of the last-layer (embedding mean) term", rule=lam_rule,
                 rule_doc="0.01 at <= 32 px, 0.02 above", low=0)


def loss_scale(value: float = 100.0) -> Any:
    return param("every loss term multiplied by this (the DataDAM code: 100; the papers' text: 1)",
                 value=value, low=0, low_open=True)


# -- the registry ------------------------------------------------------------------------------

METHODS: dict[str, Method] = {}


def register_method(m: Method) -> Method:
    """Add a method (each module of this package calls it at import); a parameter name another
    method already declares must have the same type."""
    if m.kind not in ("match", "select"):
        raise ValueError(f"method {m.name!r}: kind must be match or select, got {m.kind!r}")
    if m.Params is not None and not dataclasses.is_dataclass(m.Params):
        raise ValueError(f"method {m.name!r}: Params must be a dataclass")
    table = param_table()
    for f in m.param_fields():
        tp = typing.get_type_hints(m.Params)[f.name]
        if f.name in table and table[f.name].type != tp:
            raise ValueError(f"method {m.name!r}: parameter {f.name!r} is {tp}, another method declares it "
                             f"as {table[f.name].type}")
    return add(METHODS, m.name, m, "method")


def get_method(name: str) -> Method:
    return find(METHODS, name, "method")


@dataclass
class ParamInfo:
    """A flat ``distill.<name>`` key: its type, documentation and the methods that read it."""

    name: str
    type: Any
    doc: str
    defaults: dict[str, str]  # method -> its default, described

    def comment(self) -> str:
        """``doc; default d1 (m1, m2), d2 (m3)`` for the generated YAML."""
        groups: dict[str, list[str]] = {}
        for method, default in self.defaults.items():
            groups.setdefault(default, []).append(method)
        return f"{self.doc}; " + "; ".join(f"default {d}: {', '.join(ms)}" for d, ms in groups.items())


def param_table() -> dict[str, ParamInfo]:
    """Every method parameter by name, in registration order."""
    out: dict[str, ParamInfo] = {}
    for m in METHODS.values():
        hints = typing.get_type_hints(m.Params) if m.Params is not None else {}
        for f in m.param_fields():
            info = out.setdefault(f.name, ParamInfo(f.name, hints[f.name], f.metadata["doc"], {}))
            info.defaults[m.name] = f.metadata["default"].describe()
    return out


def check_params_read(given: Mapping[str, Any], methods: list[Method], where: str = "distill") -> None:
    """A parameter set for none of ``methods`` would not act: one error line naming who reads it."""
    table = param_table()
    for name, value in given.items():
        if value is None or any(name in m.param_names() for m in methods):
            continue
        readers = ", ".join(table[name].defaults) if name in table else "no method"
        raise UserError(f"{where}.{name} is a parameter of {readers}, not of {', '.join(m.name for m in methods)}; "
                        f"remove it or choose a method that reads it")


# the papers' order in listings and --help first, then any other method file
import_modules(__name__, __path__, first=("dm", "datadam", "atom", "m3d", "coresets"))
