"""A behaviour fingerprint for refactors: record it before a change, compare it after.

Prints one JSON document with

- every registered method's resolved config under both presets (32 px and 8 px) and its
  buffer cache key;
- a SHA-256 of the images of every method's set on digits (tiny settings, both presets);
- the artifact folders (stage/name-key) and the tables of small ``continual``, ``nas`` and
  ``reproduce`` runs through the real command line (digits, and fabricated Fashion-MNIST files).

Everything is written under a temporary folder; nothing lands in the checkout.

    python benchmarks/fingerprint.py > /tmp/before.json
    ... change the code ...
    python benchmarks/fingerprint.py > /tmp/after.json && diff /tmp/before.json /tmp/after.json

``--only configs`` skips the runs (seconds instead of about two minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _digest(t: Any) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def configs() -> dict[str, Any]:
    from distill.config import to_dict
    from distill.methods import METHODS
    from pipelines.cache import config_key
    from pipelines.sets import set_key_config
    from distill.settings import SetConfig, resolve

    out: dict[str, Any] = {}
    for method in METHODS:
        for preset in ("paper", "reference_code"):
            for size, dataset in ((32, "cifar10"), (8, "digits")):
                cfg = resolve(SetConfig(method=method, ipc=10, preset=preset), size, dataset)
                data_id = {"name": dataset, "image_size": [size, size], "zca": False}
                out[f"{method}/{preset}/{size}"] = {"config": to_dict(cfg),
                                                    "key": config_key(set_key_config(data_id, cfg))}
    return out


def set_hashes() -> dict[str, str]:
    from distill.datasets import load_dataset
    from distill.loop import distill
    from distill.prepare import prepare
    from distill.settings import NetConfig, SetConfig, resolve
    from distill.methods import METHODS

    prep = prepare(load_dataset("digits", resolution=8))
    out = {}
    for method in METHODS:
        for preset in ("paper", "reference_code"):
            cfg = resolve(SetConfig(method=method, ipc=2, preset=preset, iterations=3, batch_real=8,
                                        embed_epochs=1, net=NetConfig(width=16)), 8, "digits")
            out[f"{method}/{preset}"] = _digest(distill(prep, cfg, progress=False).images)
    return out


def _cli(argv: list[str]) -> None:
    from pipelines.run import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"fingerprint: {' '.join(argv)} exited {code}")


def _tables(path: Path, drop: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = json.loads(path.read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def runs(tmp: Path) -> dict[str, Any]:
    from distill.fixtures import write_mnist

    cache = tmp / "cache"
    small = ["--set", "distill.iterations=2", "--set", "distill.embed_epochs=1", "--set", "distill.batch_real=8",
             "--set", "distill.net.width=16"]
    _cli(["continual", "--dataset", "digits", "--steps", "5", "--ipc", "2", "--models", "1", "--orders", "0",
          "--epochs", "2", "--memories", "random,herding,dm,atom", "--cache", str(cache), "--out",
          str(tmp / "cl"), "--quiet", *small])
    _cli(["nas", "--dataset", "digits", "--space", "tiny", "--proxy", "random_ipc2,atom_ipc2", "--proxy-epochs", "2",
          "--whole-epochs", "1", "--cache", str(cache), "--out", str(tmp / "nas"), "--quiet", *small])
    root = tmp / "fm"
    write_mnist(root, train=300, test=60, seed=3, gz=True)
    _cli(["reproduce", "--table", "fashionmnist", "--budget", "smoke", "--methods", "random,herding,dm,atom",
          "--ipc", "1", "--models", "1", "--data-root", str(root), "--cache", str(cache), "--out", str(tmp / "rep"),
          "--quiet"])
    timing = ("seconds", "minutes", "wall_seconds", "distill_seconds", "eval_seconds", "cells", "candidates")
    return {
        "artifacts": sorted(str(p.relative_to(cache)) for p in cache.glob("*/*") if p.is_dir()),
        "continual": _tables(tmp / "cl" / "continual.json", timing),
        "nas": _tables(tmp / "nas" / "nas.json", timing),
        "reproduce": _tables(tmp / "rep" / "reproduce.json", timing),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("configs", "all"), default="all")
    args = ap.parse_args()
    from distill.runtime import keep_host_memory

    keep_host_memory()
    doc: dict[str, Any] = {"configs": configs()}
    if args.only == "all":
        doc["set_hashes"] = set_hashes()
        with tempfile.TemporaryDirectory() as tmp:
            doc["runs"] = runs(Path(tmp))
    print(json.dumps(doc, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
