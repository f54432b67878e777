"""Class-incremental learning end to end, offline: digits in 5 steps of 2 classes, with memories
of 20 images per class from every method, through the same pipeline as
``run.py continual`` (so the same table and plot), then a check that the distilled memories
beat the random one on final accuracy.

    python benchmarks/continual_digits.py               # about 25 minutes on a 2-core CPU
    python benchmarks/continual_digits.py --memories random,dm --orders 0,1

Memories are cached under --cache, so a second run only redraws the outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.run import main as run_main  # noqa: E402

DISTILLED = ("dm", "datadam", "atom", "atom_channel")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memories", default="random,herding,dm,datadam,atom,atom_channel")
    p.add_argument("--orders", default="0,1,2,3,4", help="class-order seeds (DM's 5 by default)")
    p.add_argument("--models", type=int, default=1)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--cache", default="artifacts")
    p.add_argument("--out", default="benchmarks/results/continual_digits")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    code = run_main(["continual", "--dataset", "digits", "--steps", "5", "--ipc", "20",
                     "--memories", a.memories, "--orders", a.orders, "--models", str(a.models),
                     "--epochs", str(a.epochs), "--cache", a.cache, "--out", a.out, "--device", a.device])
    if code:
        return code
    rows = {r["memory"]: r for r in json.loads((Path(a.out) / "continual.json").read_text())["rows"]}
    if "random" in rows:
        base = rows["random"]["final_mean"]
        print("\nfinal accuracy vs the random memory:")
        for name, r in rows.items():
            if name in DISTILLED:
                diff = 100 * (r["final_mean"] - base)
                print(f"  {name:<13} {100 * r['final_mean']:6.2f}  ({diff:+.2f} points) "
                      f"{'beats random' if diff > 0 else 'does NOT beat random'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
