"""``run.py import``: a set released by another repository as a validated ``synset.pt``
(``distill.importers``; the layouts and their preprocessing: docs/protocols.md section 8)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import to_dict
from distill.evaluate import labels_used
from distill.datasets import get_dataset
from distill.importers import FORMATS, check_release, read_release, to_synset
from distill.synset import library_versions

from ..common import DataConfig
from . import Job, register_job

ZCA_CHOICES = {"auto": None, "on": True, "off": False}


@dataclass
class ImportConfig:
    """``run.py import``: the real dataset the release was made from."""

    dataset: DataConfig = field(default_factory=DataConfig)


class ImportJob(Job):
    name = "import"
    help = "read a set released by another repository into a synset.pt"
    description = ("Read a released synthetic set (" + "; ".join(f"{k}: {v.description}" for k, v in FORMATS.items()) +
                   ") and write a validated synset.pt and grid.png to --out, with the source format, files and "
                   "SHA-256 in its metadata. The preprocessing of the release's input space (the dataset's "
                   "mean/std; ZCA with kornia's eps 0.1 fitted on the whole training set where the release is "
                   "whitened) is refitted on the real training set, so evaluate --synset, continual --memories "
                   "and nas --proxy take the file like any other. Files are read with weights_only: one that "
                   "needs code to unpickle is refused.")
    examples = ("python pipelines/run.py import res_DM_CIFAR10_ConvNet_10ipc.pt --format dc --dataset cifar10 "
                "--out runs/dm10",
                "python pipelines/run.py import datm_cifar10_ipc10/ --format mtt --dataset cifar10 --out runs/datm10",
                "python pipelines/run.py evaluate --synset runs/dm10/synset.pt")
    Config = ImportConfig
    options = ("dataset", "data_root", *Job.options)
    option_help = {"dataset": "the dataset the release was made from (default cifar10)",
                   "data_root": "data folder (default: data)", "out": "output folder (default: a fresh runs/import-<time>/)"}
    flags = {"dataset": ("dataset.name", None), "data_root": ("dataset.root", None)}
    result = "synset.pt"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("file", metavar="FILE", help="the released file (mtt: its folder or images_best.pt; "
                                                    "imagefolder: the tree)")
        p.add_argument("--format", required=True, choices=tuple(FORMATS), metavar="NAME",
                       help="one of: " + ", ".join(FORMATS))
        p.add_argument("--index", type=int, help="dc: which experiment (default 0); dm-cl: which step (default: "
                                                 "all steps joined)")
        p.add_argument("--zca", choices=tuple(ZCA_CHOICES), default="auto",
                       help="whether the release's images are ZCA-whitened (default auto: datadam and mtt on CIFAR, "
                            "never for dc, dm-cl and ncfm)")

    def resolve(self) -> None:
        self.data = self.config.dataset.load()
        self.release = read_release(self.args.file, self.args.format, self.data, self.args.index,
                                    ZCA_CHOICES[self.args.zca])
        size = int(self.release.images.shape[-1])
        if (size != self.data.image_size[1] and self.config.dataset.resolution is None
                and get_dataset(self.data.name).resizable):  # the data at the release's size
            self.data = self.config.dataset.load(size)
        check_release(self.release, self.data)

    def record(self) -> dict[str, Any]:
        return {"dataset": to_dict(self.config.dataset), "file": str(self.args.file), "format": self.args.format,
                "index": self.args.index, "zca": self.args.zca, "versions": library_versions()}

    def run(self) -> int:
        out, _ = self.open_folder(f"import-{self.args.format}")
        synset = to_synset(self.release, self.args.format, self.data,
                           {"data_config": {**to_dict(self.config.dataset), "root": str(Path(self.config.dataset.root).resolve())}})
        path, grid = synset.save(out / "synset.pt"), synset.save_grid(out / "grid.png")
        prov = synset.meta["provenance"]
        print(f"imported {len(synset.labels)} images ({synset.ipc} per class, {synset.num_classes} classes"
              f"{f', factor {synset.factor}' if synset.factor != 1 else ''}; {prov['space']} space; "
              f"{labels_used(synset)}{'; ' + prov['note'] if prov['note'] else ''}) from {self.args.file}")
        print(f"  synthetic set: {path}\n  image grid:    {grid}\n  sha256:        {prov['sha256']}")
        return 0


register_job(ImportJob)
