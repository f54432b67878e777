"""``run.py export``: a synthetic-set file in the forms other code reads (numpy arrays, an
ImageFolder tree, per-class replay buffers, a picture)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.synset import SyntheticSet

from . import Job, register_job

FORMATS = {
    "npz": "numpy arrays (images, uint8 pixels, labels, class names, preprocessing)",
    "png": "an ImageFolder tree, one PNG per training image",
    "avalanche": "per-class replay buffers (.buffers.pt, class id -> images) for continual-learning code",
    "grid": "one titled PNG of the stored images",
    "ddranking": "what DD-Ranking's evaluator reads: images.pt, labels.pt (soft labels where present), lr.pt, images/",
}


@dataclass
class ExportConfig:
    """``run.py export`` has no config keys: its flags say everything."""


class ExportJob(Job):
    name = "export"
    help = "export a synthetic set for other code"
    description = ("Write a synthetic-set file as " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()) +
                   ". Multi-formation sets are written decoded: the training images other code consumes.")
    examples = ("python pipelines/run.py export --synset runs/atom10/synset.pt --format avalanche",
                "python pipelines/run.py export --synset runs/atom10/synset.pt --format png --out atom10_png")
    Config = ExportConfig
    options = ("quiet",)

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--synset", required=True, help="path of a synset.pt file")
        p.add_argument("--format", choices=tuple(FORMATS), default="npz", help="the output form (default npz): "
                       + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
        p.add_argument("--out", metavar="PATH", help="output path (default: next to the set, named after it)")

    def resolve(self) -> None:
        self.synset = SyntheticSet.load(self.args.synset)

    def record(self) -> dict[str, Any]:
        return {"synset": self.args.synset, "format": self.args.format, "out": self.args.out}

    def run(self) -> int:
        s, fmt, given = self.synset, self.args.format, self.args.out
        out = Path(given) if given else Path(self.args.synset).with_suffix("")
        if fmt == "npz":
            path = s.export_npz(out.with_suffix(".npz"))
        elif fmt == "png":
            path = s.export_png(out if given else out.parent / (out.name + "_png"))
        elif fmt == "avalanche":
            from continual.memory import export_buffers

            path = export_buffers(s, out.with_suffix(".buffers.pt"))
        elif fmt == "ddranking":
            path = export_ddranking(s, out if given else out.parent / (out.name + "_ddranking"))
        else:
            path = s.save_grid(out.with_suffix(".png"))
        n = len(s.decoded()[1])
        print(f"exported {n} images ({s.num_classes} classes) to {path}")
        return 0


def export_ddranking(synset: SyntheticSet, folder: Path) -> Path:
    """DD-Ranking's inputs (docs/protocols.md section 9): ``images.pt`` (the decoded training
    images, network-input space), ``labels.pt`` (soft labels ``[N, K]`` where the set has them,
    else class ids), ``lr.pt`` (a learned rate, where present) and the PNG tree ``images/``."""
    import torch

    from distill.files import atomic_save

    images, labels = synset.decoded()
    atomic_save(images.detach().cpu().contiguous(), folder / "images.pt")
    atomic_save((synset.targets() if synset.soft_labels is not None else labels).detach().cpu().contiguous(),
                folder / "labels.pt")
    if synset.lr is not None:
        atomic_save(torch.tensor(float(synset.lr)), folder / "lr.pt")
    synset.export_png(folder / "images")
    return folder


register_job(ExportJob)
