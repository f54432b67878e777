"""What a synthetic set is made with: the shared settings, the presets, one resolve step, the
set's identity.

- :class:`DistillSettings`: the settings every method shares (iterations, image learning rate,
  real batch, network, seed, ...) plus, as flat keys, every registered method's own
  hyperparameters (``distill.methods``). It is the ``distill`` section of the jobs that make
  several sets (continual memories, NAS proxies, reproduce cells).
- :class:`SetConfig`: one synthetic set, i.e. a method and an IPC with those settings: the
  ``distill`` section of ``run.py distill``.
- :func:`resolve`: fills every ``None`` (the user's value wins, then the dataset's quick
  defaults, then the method's own settings, then the preset and the size rules) and records
  each value's source.
- :func:`set_identity`: what a set depends on, for its cache key and the finished-output check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import augment
from .config import Sources, execution_free
from .datasets import quick_defaults
from .errors import UserError, check_range, choice_error
from .methods import METHODS, Method, check_params_read, get_method, param_table
from .nets import INITS, NetSpec

# Every preset's value for the shared settings left None (docs/protocols.md section 2): the
# papers' choices and those of the public DataDAM code; ``net.*`` keys fill the NetConfig. The
# methods' own hyperparameters carry their preset values themselves (``distill.methods``).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 8000, "batch_real": 128, "net.norm": "instancenorm", "net.init": "he"},
    "reference_code": {"iterations": 20000, "batch_real": 64, "net.norm": "batchnorm", "net.init": "default"},
}
INITS_SYN = ("real", "noise", "kcenter")


def lr_rule(ipc: int) -> float:
    """The image learning rate in every preset: 1 for IPC <= 50, 10 above (DataDAM / ATOM)."""
    return 1.0 if ipc <= 50 else 10.0


@dataclass
class NetConfig:
    """The network used for matching (and for coreset embeddings)."""

    arch: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: 3 up to 32 px, 4 at 64 px, 5 at 128 px
    act: str = "relu"
    norm: str | None = None  # None: instancenorm (paper) / batchnorm (reference_code)
    pool: str = "avgpooling"
    init: str | None = None  # None: he (paper) / default (reference_code)

    def spec(self) -> NetSpec:
        return NetSpec(arch=self.arch, width=self.width, depth=self.depth, act=self.act,
                       norm=self.norm, pool=self.pool)


@dataclass
class DistillSettings:
    """How any set is distilled (``None``: filled by :func:`resolve`), and the methods' own
    hyperparameters as flat keys (``params``; see ``distill.methods``)."""

    OPEN_FIELD = "params"

    preset: str = "paper"  # paper | reference_code (the public DataDAM code's choices)
    iterations: int | None = None  # None: 8000 (papers), 20000 (reference_code; DM in every preset)
    lr_img: float | None = None  # None: 1.0 for IPC <= 50, 10.0 above (DM: 1.0)
    momentum: float = 0.5
    batch_real: int | None = None  # None: 128 (ATOM supplementary), 64 (reference_code), 256 (DM)
    layers: list[int] | None = None  # 1-based attention taps of the network (Net.taps); None: 1..L-1
    init: str = "real"  # real | noise | kcenter
    dsa: str = augment.DEFAULT_STRATEGY
    factor: int = 1  # multi-formation (IDC): each stored image holds factor x factor images; 1 = off
    chunk: int | None = None  # real images per forward pass; None: 4096 on GPU, 128 on CPU
    syn_chunk: int | None = None  # synthetic images per forward+backward; None: 512 on GPU, 128 on CPU
    compile: str = "auto"  # torch.compile the matching network: auto (on CUDA) | on | off
    embed_epochs: int = 10  # ConvNet training epochs for herding / kcenter embeddings
    net: NetConfig = field(default_factory=NetConfig)
    seed: int = 0
    checkpoint_every: int = 500  # iterations between checkpoints (0: by time only)
    checkpoint_minutes: float = 5.0  # also checkpoint when this many minutes passed since the last one
    snapshots: list[int] | None = None  # also keep the set at these iterations (learning curves)
    eval_every: int = 0  # >0: train a quick model on the current set every N iterations
    eval_epochs: int = 300
    params: dict[str, Any] = field(default_factory=dict)  # the methods' hyperparameters (flat keys)

    @classmethod
    def open_keys(cls) -> dict[str, Any]:
        """Every registered method's hyperparameters: name -> type."""
        return {name: info.type for name, info in param_table().items()}


@dataclass
class SetConfig(DistillSettings):
    """One synthetic set: a method and its IPC with the shared settings."""

    method: str = "atom"  # dm | datadam | atom | atom_channel | m3d | random | herding | kcenter
    ipc: int = 10  # images per class (stored; multi-formation decodes factor^2 training images from each)

    @staticmethod
    def of(method: str, ipc: int, settings: DistillSettings | None = None) -> "SetConfig":
        """``settings`` (default: all defaults) for one method and IPC."""
        s = settings or DistillSettings()
        return SetConfig(method=method, ipc=ipc, **{f.name: getattr(s, f.name) for f in fields(DistillSettings)})


# (name, low, low excluded) of every shared number; momentum is also < 1
_RANGES = (("iterations", 0, False), ("batch_real", 1, False), ("lr_img", 0, True), ("momentum", 0, False),
           ("factor", 1, False), ("chunk", 1, False), ("syn_chunk", 1, False), ("embed_epochs", 1, False),
           ("checkpoint_every", 0, False), ("checkpoint_minutes", 0, True), ("eval_every", 0, False),
           ("eval_epochs", 1, False))


def resolve(cfg: SetConfig, image_size: int, dataset: str | None = None, sources: Sources | None = None,
            prefix: str = "distill") -> SetConfig:
    """Fill every ``None`` of ``cfg`` and validate it. Order: the user's value, the dataset's
    quick defaults (``distill.datasets``; digits), the method's own settings (DM), the preset's
    table and the size rules; then the method's hyperparameters (their own defaults; values of
    other methods' hyperparameters are dropped, see :func:`settings_for`). Each filled value's
    source goes into ``sources`` under ``prefix``."""
    src = sources if sources is not None else Sources()

    def note(key: str, source: str) -> None:
        src.set(f"{prefix}.{key}", source)

    method = get_method(cfg.method)
    if cfg.preset not in PRESETS:
        raise choice_error("preset", cfg.preset, PRESETS)
    if cfg.init not in INITS_SYN:
        raise choice_error("init", cfg.init, INITS_SYN)
    if cfg.ipc < 1:
        raise UserError(f"ipc must be at least 1, got {cfg.ipc}")
    augment.parse_strategy(cfg.dsa)
    layers = [(dict(quick_defaults(dataset, "distill")), f"dataset {dataset} (quick defaults)"),
              (dict(method.settings), f"method {method.name}"),
              (PRESETS[cfg.preset], f"preset {cfg.preset}"),
              ({"lr_img": lr_rule(cfg.ipc)}, "size rule (1 for IPC <= 50, 10 above)")]
    filled: dict[str, Any] = {}
    for table, source in layers:
        for key, value in table.items():
            obj, name = (cfg.net, key[4:]) if key.startswith("net.") else (cfg, key)
            if getattr(obj, name) is None and key not in filled:
                filled[key] = value
                note(key, source)
    net = replace(cfg.net, **{k[4:]: v for k, v in filled.items() if k.startswith("net.")})
    if net.init not in INITS:
        raise choice_error("net.init", net.init, INITS)
    from .runtime import COMPILE_MODES

    if cfg.compile not in COMPILE_MODES:
        raise choice_error("compile", cfg.compile, COMPILE_MODES)
    params = method.resolve_params(cfg.params, cfg.preset, cfg.ipc, image_size, note)
    out = replace(cfg, method=method.name, net=net, params=params,
                  **{k: v for k, v in filled.items() if not k.startswith("net.")})
    for name, low, low_open in _RANGES:
        check_range(f"{prefix}.{name}", getattr(out, name), low, low_open=low_open,
                    high=1 if name == "momentum" else None, high_open=name == "momentum")
    check_range(f"{prefix}.net.width", out.net.width, 1)
    check_range(f"{prefix}.net.depth", out.net.depth, 1)
    for s in out.snapshots or []:
        check_range(f"{prefix}.snapshots", s, 1)
    if method.kind == "match" and image_size % out.factor:
        raise UserError(f"{prefix}.factor {out.factor} does not divide the image size {image_size}: every "
                        "stored image is split into factor x factor equal patches")
    return out


def settings_for(methods: list[str], settings: DistillSettings) -> None:
    """A job that makes sets of ``methods`` with one ``distill`` section (``run.py distill``: one
    method): a hyperparameter none of them reads would not act, so it is an error (before any
    work)."""
    check_params_read(settings.params, [get_method(m) for m in methods])


# the settings keys whose default leaves older cache keys as they were (added after those keys)
_OMITTED_AT_DEFAULT = {"factor": 1}


def set_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a set depends on (a resolved config in ``to_dict`` form): its method, IPC, the shared
    settings the method reads and the method's own hyperparameters. Execution keys (chunking,
    compilation, checkpoints, snapshots, reporting) never enter. Applied to its own output it
    gives the same dict. A damaged file's unknown method keeps every key but those."""
    d = execution_free(dict(config))
    method: Method | None = METHODS.get(str(d.get("method")))
    if method is None:
        return d
    out = {}
    for k in ("method", "ipc", *method.reads, *method.param_names()):
        value = d.get(k, _OMITTED_AT_DEFAULT.get(k))
        if k not in _OMITTED_AT_DEFAULT or value != _OMITTED_AT_DEFAULT[k]:
            out[k] = value
    return out


def describe(cfg: SetConfig) -> str:
    """``atom ipc 10`` (``x factor 2`` with multi-formation), for progress bars and messages."""
    return f"{cfg.method} ipc{cfg.ipc}" + (f" factor {cfg.factor}" if cfg.factor != 1 else "")

