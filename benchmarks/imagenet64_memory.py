"""Peak memory of distilling ImageNet-1K at 64 px with the training set kept as uint8 on the host
(``distill.prepare.HostImages``: each class chunk gathered, moved and preprocessed on its own)
against the reference, the whole training set preprocessed to float32 on the device.

Fabricated npz files in the release's exact layout (``distill.fixtures.write_imagenet64``; memory
does not depend on the pixels) with ``--per-class`` training images of each of the 1000 classes.
Each mode runs in its own process, so its peak resident memory (``ru_maxrss``) is its own. On
the CPU host and device memory are the same, so the difference is the float32 copy; on a GPU
(``--device cuda``) the peak device memory (``torch.cuda.max_memory_allocated``) is reported too.

    python benchmarks/imagenet64_memory.py --per-class 20 --iterations 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGE_BYTES = 3 * 64 * 64


def one(root: str, host: bool, iterations: int, batch_real: int, chunk: int, device: str) -> dict:
    """Load, prepare and distil (DataDAM, IPC 1) in this process; its peak memory and times."""
    from dataclasses import replace

    import torch

    from distill.datasets import load_dataset
    from distill.loop import distill
    from distill.prepare import prepare
    from distill.settings import SetConfig, resolve

    t0 = time.perf_counter()
    data = load_dataset("imagenet64", root)
    prep = prepare(data, device=device, host=host)
    loaded = time.perf_counter() - t0
    cfg = replace(resolve(SetConfig.of("datadam", 1), 64, "imagenet64"), iterations=iterations,
                  batch_real=batch_real, chunk=chunk)
    t1 = time.perf_counter()
    distill(prep, cfg, progress=False)
    out = {"mode": "host uint8, class chunks" if host else "device float32 (reference)",
           "train_images": len(data.train_y), "load_s": loaded,
           "s_per_iteration": (time.perf_counter() - t1) / iterations,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=20, help="training images per class (default 20)")
    p.add_argument("--iterations", type=int, default=2, help="distillation iterations (default 2)")
    p.add_argument("--batch-real", type=int, default=8, help="real images per class per iteration (default 8)")
    p.add_argument("--chunk", type=int, default=128, help="real images per forward pass (default 128)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        root, host = a.child.rsplit(":", 1)
        print(json.dumps(one(root, host == "1", a.iterations, a.batch_real, a.chunk, a.device)))
        return
    from distill.fixtures import write_imagenet64

    with tempfile.TemporaryDirectory() as tmp:
        write_imagenet64(Path(tmp) / "imagenet64", a.per_class)
        rows = []
        for host in (False, True):
            cmd = [sys.executable, __file__, "--child", f"{tmp}:{int(host)}", "--iterations", str(a.iterations),
                   "--batch-real", str(a.batch_real), "--chunk", str(a.chunk), "--device", a.device]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    n = rows[0]["train_images"]
    print(f"ImageNet-1K 64x64 (fabricated), {n} training images: uint8 {n * IMAGE_BYTES / 2**20:.0f} MB, float32 "
          f"{4 * n * IMAGE_BYTES / 2**20:.0f} MB; DataDAM IPC 1, batch_real {a.batch_real}, {a.chunk} real images per "
          f"pass ({4 * a.chunk * IMAGE_BYTES / 2**20:.1f} MB of float32 input per class chunk), {a.device}\n")
    cols = [c for c in ("mode", "peak_rss_mb", "peak_device_mb", "load_s", "s_per_iteration") if c in rows[0]]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    saved = rows[0]["peak_rss_mb"] - rows[1]["peak_rss_mb"]
    print(f"\nhost mode saves {saved:.0f} MB of peak memory ({4 * n * IMAGE_BYTES / 2**20:.0f} MB is the float32 copy)")


if __name__ == "__main__":
    main()
