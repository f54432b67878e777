"""``run.py list``: what the artifact cache holds (complete or partial) and the named sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import UserError
from distill.report import markdown_table

from ..cache import list_artifacts
from ..named_sets import SETS_FILE, named_sets
from . import Job, register_job


@dataclass
class ListConfig:
    """``run.py list`` has no config keys."""


class ListJob(Job):
    name = "list"
    help = "show cached artifacts and the named sets"
    description = ("List the artifact cache (stage, name, key, complete or partial, size) and the set names "
                   f"defined in pipelines/configs/{SETS_FILE.name}.")
    Config = ListConfig
    options = ("cache",)
    option_help = {"cache": "artifact cache folder to list (default: artifacts)"}

    def resolve(self) -> None:
        root = self.env.cache.root
        if root.exists() and not root.is_dir():
            raise UserError(f"--cache {root} is a file, not an artifact cache folder")

    def record(self) -> dict[str, Any]:
        return {"cache": str(self.env.cache.root)}

    def run(self) -> int:
        root = self.env.cache.root
        rows = list_artifacts(root)
        if rows:
            print(f"cached artifacts under {root}/:\n")
            print(markdown_table(rows, ["stage", "name", "key", "status", "mb", "path"]))
        else:
            print(f"no cached artifacts under {root}/" + ("" if root.exists() else " (the folder does not exist yet)"))
        print(f"\nnamed sets ({Path(SETS_FILE)}):\n")
        print(markdown_table([{"name": d.name, "dataset": d.dataset.get("name", "(the job's)"), "method": d.method,
                               "ipc": d.ipc} for d in named_sets().values()], ["name", "dataset", "method", "ipc"]))
        return 0


register_job(ListJob)
