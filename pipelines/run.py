"""The toolkit's command line: ``python pipelines/run.py COMMAND [options]`` for every job of
``pipelines.jobs`` (distill, evaluate, export, continual, nas, reproduce, list).

Every job that has a config takes ``--config FILE.yaml`` (keys documented in
``pipelines/configs/``), ``--set key=value`` overrides (repeatable), ``--explain`` (every
resolved value with its source, then exit), ``--out DIR`` and ``--device``. A bad input prints
one ``error: ...`` line and exits with status 2, before any long work; Ctrl-C or SIGTERM stops a
job with a checkpoint and says how to continue (exit 130 / 143).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

try:  # running as a script from a checkout without installing the package
    import distill  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.errors import UserError
from distill.interrupts import Terminated, raise_terminated
from distill.runtime import keep_host_memory
from pipelines.cli import wrapped
from pipelines.common import check_writable
from pipelines.jobs import JOBS
from pipelines.outputs import RunContext, Tee


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description=wrapped("Attention-matching dataset distillation toolkit: distil, evaluate and "
                                           "export synthetic sets, and use them in continual learning and "
                                           "architecture search."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python pipelines/run.py distill --dataset digits --method atom --ipc 10 --out runs/atom10\n"
               "  python pipelines/run.py evaluate --synset runs/atom10/synset.pt --models 20 --arch convnet,resnet18\n"
               "  python pipelines/run.py export --synset runs/atom10/synset.pt --format avalanche\n"
               "  python pipelines/run.py continual --steps 5 --dataset digits\n"
               "  python pipelines/run.py nas --proxy random_ipc10_digits --space small\n"
               "  python pipelines/run.py reproduce --table fashionmnist --budget smoke --data-root DIR\n"
               "  python pipelines/run.py COMMAND --help")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for job in JOBS.values():
        job.add_parser(sub)
    return parser


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` (``--threads``) while a job runs, then restored."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    keep_host_memory()  # large CPU tensors reuse freed memory instead of fresh page-faulted mmaps
    run = RunContext(argv)
    tee = Tee(sys.stdout)
    code = 1
    on_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal needs it
    previous = signal.signal(signal.SIGTERM, raise_terminated) if on_main_thread else None
    try:
        for flag in ("out", "cache"):  # where results go, before any work (list only reads the cache)
            if getattr(args, flag, None) and args.command != "list":
                check_writable(getattr(args, flag), f"--{flag}")
        with contextlib.redirect_stdout(tee):
            job = args.job.from_args(args, run)
            with cpu_threads(job.env.threads):
                job.resolve()
                if getattr(args, "explain", False):
                    print(job.explain())
                    code = 0
                else:
                    code = int(job.run())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        run.resume_from = getattr(exc, "resume_from", None)
        print(f"\n{'terminated' if terminated else 'interrupted'}; {run.resume_hint()}", file=sys.stderr)
        code = 143 if terminated else 130
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        run.finish(code, tee.copy.getvalue())
    return code


if __name__ == "__main__":
    sys.exit(main())
