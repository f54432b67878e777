"""The full-length Fashion-MNIST table on a GPU, in sittings of a few minutes each.

The table the toolkit exists to reproduce at the papers' length: every matching method (DM,
DataDAM, ATOM, M3D) at multi-formation factor 1 and 2, IPC 1 and 10, each cell distilled for
the method's own iterations (8,000 for DataDAM and ATOM, 20,000 for DM and M3D; docs/protocols.md
section 2) and evaluated by 20 ConvNets x 1000 epochs (section 3). It is far more work than one
lent GPU session holds, so it is run in sittings:

- every cell is one ``pipelines/run.py reproduce --table fashionmnist --methods L --ipc I``
  process (the product's own code path), ``jobs`` of them at once on the one device, taken in
  :data:`CELLS` order (the attention-vs-DM comparison first, the longest cells early);
- at the deadline every running cell gets SIGTERM, which the command handles as Ctrl-C: the
  distillation writes its checkpoint and the process exits (143);
- the cache's sets and cells (checkpoints included) are packed into ``fidelity_state.tar.gz``.
  Committed to the repository and named by ``state`` at the next sitting, it is unpacked into
  a fresh cache first, so finished cells are reused and stopped ones continue from their
  checkpoint (a set's cache key holds no device or execution setting);
- ``fidelity.{md,csv,json}`` list every cell: its result where finished, else the iteration
  it stopped at, and ``fidelity.log`` holds each cell's output.

``budget`` ``smoke`` runs the same machinery at 1/4000 of the iterations for a CPU check.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "benchmarks" / "results" / "gpu_fidelity" / "fidelity_state.tar.gz"
TABLE = "fashionmnist"
STATE_STAGES = ("sets", "reproduce")  # the cache stages a sitting hands to the next

# (row label of pipelines/configs/tables/fashionmnist.yaml, IPC), in the order cells start: the
# papers' claim (attention matching vs DM) at IPC 10 and 1 first, then kernel matching, then
# multi-formation; within each group the 20,000-iteration DM and M3D cells first, since the
# longest jobs started early finish a set of parallel jobs soonest.
CELLS: tuple[tuple[str, int], ...] = (
    ("dm", 10), ("atom", 10), ("datadam", 10),
    ("dm", 1), ("atom", 1), ("datadam", 1),
    ("m3d", 10), ("m3d", 1),
    ("dm_f2", 10), ("m3d_f2", 10), ("atom_f2", 10), ("datadam_f2", 10),
    ("dm_f2", 1), ("m3d_f2", 1), ("atom_f2", 1), ("datadam_f2", 1),
)


@dataclass
class Cell:
    """One table cell's sitting: how its process ended and what it reported."""

    label: str
    ipc: int
    status: str = "not started"  # done | reused | stopped | failed | not started
    exit: int | None = None
    seconds: float = 0.0
    iterations: int | None = None  # the set's distillation length, as the command announced it
    resumed_from: int = 0  # the checkpoint's iteration its distillation continued from
    stopped_at: int | None = None  # the iteration its checkpoint holds, where stopped
    record: dict[str, Any] = field(default_factory=dict)  # reproduce's cell record, where finished
    row: dict[str, Any] = field(default_factory=dict)  # reproduce's table row (paper, ours, difference)
    error: str = ""

    @property
    def name(self) -> str:
        return f"{self.label}_ipc{self.ipc}"


def parse_cells(text: str | None) -> list[tuple[str, int]]:
    """``"dm:10,atom:1"`` -> ``[("dm", 10), ("atom", 1)]``; None: every cell of :data:`CELLS`."""
    if not text:
        return list(CELLS)
    out = []
    for item in text.split(","):
        label, _, ipc = item.strip().partition(":")
        if not label or not ipc.isdigit():
            raise ValueError(f"cell {item.strip()!r} is not LABEL:IPC (for example atom:10)")
        out.append((label, int(ipc)))
    return out


def check_cells(cells: list[tuple[str, int]]) -> None:
    """Every cell is an implemented row of the table at one of its IPCs (one error line if not)."""
    from pipelines.tables import load_table, select_cells

    table = load_table(TABLE)
    for label, ipc in cells:
        select_cells(table, [label], [ipc])


def check_state(tar: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """The members of a state archive, refused (ValueError) unless every one is a plain file or
    folder under one of :data:`STATE_STAGES` (no link, no absolute path, no ``..``)."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        inside = bool(parts) and parts[0] in STATE_STAGES and ".." not in parts
        if not inside or not (m.isfile() or m.isdir()):
            raise ValueError(f"state archive {path} holds {m.name!r}, which is not a file or folder under "
                             f"{' or '.join(STATE_STAGES)}/")
    return members


def unpack_state(path: Path, cache: Path) -> int:
    """Unpack a state archive into ``cache`` (checked whole first, :func:`check_state`; then
    ``tarfile``'s ``data`` filter as well); the number of finished cells it holds."""
    with tarfile.open(path, "r:gz") as tar:
        members = check_state(tar, path)
        tar.extractall(cache, members=members, filter="data")
    return sum(1 for m in members if m.name.startswith("reproduce/") and m.name.endswith("/cell.json"))


def pack_state(cache: Path, path: Path) -> int:
    """Pack the cache's sets and cells into ``path``; its size in bytes. Left out: lock files,
    and beside a finished set (its ``synset.pt``) its final optimiser state and picture, which
    only a longer run of that set would use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for stage in STATE_STAGES:
            folder = cache / stage
            for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
                finished_extra = f.name in ("state.pt", "grid.png") and (f.parent / "synset.pt").is_file()
                if f.is_file() and not f.name.endswith(".lock") and not finished_extra:
                    tar.add(f, arcname=str(f.relative_to(cache)), recursive=False)
    os.replace(tmp, path)
    return path.stat().st_size


def cell_command(cell: Cell, *, budget: str, data_root: Path, cache: Path, out: Path, device: str,
                 threads: int, models: int, sets: int, extra: list[str]) -> list[str]:
    """The product command that computes one cell (distil or continue its set, evaluate it)."""
    return [sys.executable, str(ROOT / "pipelines" / "run.py"), "reproduce", "--table", TABLE, "--budget", budget,
            "--methods", cell.label, "--ipc", str(cell.ipc), "--sets", str(sets), "--models", str(models),
            "--data-root", str(data_root), "--cache", str(cache), "--out", str(out), "--device", device,
            "--threads", str(threads), "--quiet", *[a for kv in extra for a in ("--set", kv)]]


def read_outcome(cell: Cell, code: int, log: str, out: Path) -> None:
    """Fill ``cell`` from its process: the exit code, its log and its reproduce.json."""
    cell.exit = code
    length = re.search(r"\((\d+) iterations x", log)
    cell.iterations = int(length.group(1)) if length else None
    resumed = re.search(r"continuing from its checkpoint at iteration (\d+)", log)
    cell.resumed_from = int(resumed.group(1)) if resumed else 0
    stopped = re.findall(r"from iteration (\d+)", log)
    if code == 0 and (out / "reproduce.json").is_file():
        res = json.loads((out / "reproduce.json").read_text())
        cell.record = res["cells"].get(cell.name, {})
        cell.row = next((r for r in res["rows"] if r["method"] == cell.label and r["ipc"] == cell.ipc), {})
        cell.status = "reused" if re.search(rf"{re.escape(cell.label)} ipc {cell.ipc}: .*\[cached\]", log) else "done"
    elif code in (130, 143, -signal.SIGTERM, -signal.SIGKILL):
        cell.status, cell.stopped_at = "stopped", int(stopped[-1]) if stopped else None
    else:
        cell.status = "failed"
        lines = [ln for ln in log.splitlines() if ln.strip()]
        cell.error = (lines[-1] if lines else "")[:300]


def run_cells(cells: list[Cell], command: Any, jobs: int, deadline: float, work: Path, log: io.TextIOBase,
              grace: float = 90.0, poll: float = 0.5) -> None:
    """Run the cells' processes ``jobs`` at a time in list order until all ended or
    ``deadline`` (``time.monotonic()``) passed; then SIGTERM the running ones, wait up to
    ``grace`` seconds for their checkpoints, and SIGKILL any still alive. ``command(cell, out)``
    gives a cell's argv (``out``: its folder under ``work``); each cell's output is appended to
    ``log`` when it ends."""
    pending = list(cells)
    running: dict[subprocess.Popen, tuple[Cell, Path, Any, float]] = {}
    work.mkdir(parents=True, exist_ok=True)

    def reap(p: subprocess.Popen, code: int) -> None:
        cell, out, fh, t0 = running.pop(p)
        fh.close()
        text = (out.parent / f"{cell.name}.log").read_text(errors="replace")
        cell.seconds = time.monotonic() - t0
        read_outcome(cell, code, text, out)
        log.write(f"\n===== {cell.name}: {cell.status} (exit {code}, {cell.seconds:.0f} s) =====\n{text}")
        log.flush()
        print(f"  fidelity {cell.name}: {cell.status}" + (f" at iteration {cell.stopped_at}" if cell.stopped_at else "")
              + (f" {cell.row.get('ours')}" if cell.row else "") + f" ({cell.seconds:.0f} s)", flush=True)

    def stop_all() -> None:
        stop(list(running), grace)
        for p in list(running):
            reap(p, p.returncode)

    try:
        while pending or running:
            for p in [p for p in running if p.poll() is not None]:
                reap(p, p.returncode)
            late = time.monotonic() >= deadline
            while pending and len(running) < jobs and not late:
                cell = pending.pop(0)
                out = work / cell.name
                fh = open(work / f"{cell.name}.log", "w")
                # stopped with SIGTERM, which the command handles whatever this process inherited
                p = subprocess.Popen(command(cell, out), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
                running[p] = (cell, out, fh, time.monotonic())
            if late:
                stop_all()
                break
            time.sleep(poll)
    except BaseException:  # Ctrl-C or a kill of this process: the cells stop with their checkpoints
        stop_all()
        raise


def stop(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM every live process (the command checkpoints and exits), then SIGKILL those still
    alive after ``grace`` seconds."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rows_of(cells: list[Cell]) -> list[dict[str, Any]]:
    """The report's rows: one per cell, its result where finished, else its state."""
    rows = []
    for c in cells:
        rec, total = c.record, c.iterations
        state = {"done": "done in this sitting", "reused": "done in an earlier sitting",
                 "stopped": f"stopped at iteration {c.stopped_at} of {total}" if c.stopped_at is not None
                 else "stopped outside the distillation (starting, or evaluating)",
                 "failed": f"failed (exit {c.exit}): {c.error}", "not started": "not started"}[c.status]
        ran = (rec.get("iterations") or 0) - c.resumed_from  # iterations distilled in this sitting
        ms = 1000 * rec["distill_seconds"] / ran if c.status == "done" and ran > 0 and rec.get("distill_seconds") \
            else None
        rows.append({"method": c.label, "ipc": c.ipc, "paper": c.row.get("paper"), "ours": c.row.get("ours"),
                     "difference": c.row.get("difference"), "networks": rec.get("networks"),
                     "iterations": rec.get("iterations", total), "state": state,
                     "distill_s": rec.get("distill_seconds") if c.status == "done" else None,
                     "eval_s": rec.get("eval_seconds") if c.status == "done" else None,
                     "ms_per_iteration": None if ms is None else round(ms, 1),
                     "ours_mean": c.row.get("ours_mean"), "ours_std": c.row.get("ours_std"),
                     "paper_mean": c.row.get("paper_mean"), "accuracies": rec.get("accuracies"),
                     "status": c.status, "stopped_at": c.stopped_at, "wall_s": round(c.seconds, 1)})
    return rows


def run_fidelity(*, device: str, data_root: Path | None, out: Path, minutes: float, jobs: int, budget: str = "full",
                 state: Path | None = STATE, cells: list[tuple[str, int]] | None = None, models: int = 20,
                 sets: int = 1, extra: list[str] | None = None, threads: int | None = None,
                 grace: float = 90.0) -> dict[str, Any]:
    """One sitting (see the module doc); returns the report's numbers and writes
    ``fidelity.{md,csv,json,log}`` and ``fidelity_state.tar.gz`` to ``out``."""
    from distill.report import write_tables
    from pipelines.cache import CODE_VERSION

    t0 = time.monotonic()
    deadline = t0 + 60 * minutes
    extra = list(extra or [])
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    todo = [Cell(label, ipc) for label, ipc in (cells or CELLS)]
    with tempfile.TemporaryDirectory(prefix="fidelity_") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        reused = unpack_state(state, cache) if state is not None and state.is_file() else 0
        if data_root is None:  # a CPU check without the Debian package: random images in the idx layout
            from distill.fixtures import write_mnist

            data_root = Path(tmp) / "fabricated"
            write_mnist(data_root, train=2000, test=1000, seed=0, gz=True)
        print(f"  fidelity: {len(todo)} cells, {jobs} at a time on {device}, {minutes:g} min; "
              f"state {state if reused else 'none'} ({reused} finished cells)", flush=True)

        def command(cell: Cell, cell_out: Path) -> list[str]:
            return cell_command(cell, budget=budget, data_root=data_root, cache=cache, out=cell_out, device=device,
                                threads=threads, models=models, sets=sets, extra=extra)

        with open(out / "fidelity.log", "w") as log:
            run_cells(todo, command, jobs, deadline, Path(tmp) / "cells", log, grace)
        size = pack_state(cache, out / "fidelity_state.tar.gz")
    from pipelines.tables import BUDGETS, load_table

    title = f"{load_table(TABLE).title}; {replace(BUDGETS[budget], sets=sets, models=models).describe()}"
    rows = rows_of(todo)
    summary = {"cells": len(todo), "finished": sum(c.status in ("done", "reused") for c in todo),
               "this_sitting": sum(c.status == "done" for c in todo),
               "stopped": sum(c.status == "stopped" for c in todo),
               "failed": sum(c.status == "failed" for c in todo), "state_bytes": size,
               "seconds": round(time.monotonic() - t0, 1), "jobs": jobs, "threads_per_job": threads,
               "minutes": minutes, "budget": budget, "code_version": CODE_VERSION}
    write_tables(rows, ["method", "ipc", "paper", "ours", "difference", "networks", "iterations", "state",
                        "distill_s", "eval_s", "ms_per_iteration"], out, "fidelity", title=title,
                 extra={"title": title, "summary": summary, "cells": [asdict(c) for c in todo]})
    return {"title": title, "rows": rows, "summary": summary}
