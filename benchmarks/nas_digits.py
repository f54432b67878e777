"""Neural architecture search end to end, offline: the 48-ConvNet "small" space on digits (8x8),
with IPC-10 proxies from every method, early stopping and the whole-data ground truth, through the
same pipeline as ``run.py nas`` (so the same table and scatter plot).

    python benchmarks/nas_digits.py                    # about 10 minutes on a 2-core CPU
    python benchmarks/nas_digits.py --proxies random_ipc10_digits,atom_ipc10_digits --workers 2

Proxies and studies are cached under --cache, so a second run only redraws the outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.run import main as run_main  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", default="random_ipc10_digits,dm_ipc10_digits,datadam_ipc10_digits,"
                                        "atom_ipc10_digits")
    p.add_argument("--space", default="small")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache", default="artifacts")
    p.add_argument("--out", default="benchmarks/results/nas_digits")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    return run_main(["nas", "--dataset", "digits", "--space", a.space, "--proxy", a.proxies,
                     "--workers", str(a.workers), "--cache", a.cache, "--out", a.out, "--device", a.device])


if __name__ == "__main__":
    sys.exit(main())
