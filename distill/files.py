"""Writing result files atomically: the content goes to a temporary file in the same folder,
which then replaces the target in one rename. A crash, a kill or a full disk never leaves half
a file behind, and readers see either the old file or the new one. Every result, checkpoint,
table and cache file of the toolkit is written through these functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file next to ``path`` (named after this process,
    so two processes never share one), then rename it onto ``path``; on failure the temporary
    file is removed and the error raised. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_plain(path: str | os.PathLike[str], what: str, map_location: str = "cpu") -> Any:
    """A torch file read with ``weights_only`` (tensors, lists, dicts, numbers and strings: no code
    runs), or one error line saying what the file is not: missing, a folder, empty, damaged, not a
    torch file, or a pickle of Python objects that only running code could rebuild. Torch's own
    advice to load such a file without ``weights_only`` is never passed on."""
    import pickle
    import warnings

    import torch

    from .errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a {what} file")
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty, not a {what} file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise UserError(f"{path} is not a {what} file: it holds Python objects that only running code could "
                            "rebuild (a pickle, not plain tensors), and this toolkit never runs code from a file") from None
        raise UserError(f"{path} is not a {what} file (not a readable torch file)") from None
    except RuntimeError as exc:
        if "zip archive" in str(exc) or "PytorchStreamReader" in str(exc):
            raise UserError(f"{path} is damaged or truncated: not a complete {what} file") from None
        raise UserError(f"{path} could not be read as a {what} file") from None
    except Exception:  # EOFError, KeyError ... from a text or foreign binary file
        raise UserError(f"{path} is not a {what} file (not a torch file)") from None
