"""User-facing errors.

Every problem a user can fix (a bad option, a missing file, a set that does not fit a
dataset) is raised as a :class:`UserError` with one line that says what was wrong and what
to do. ``pipelines/run.py`` prints it as ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(ValueError):
    """A problem with the user's input, reported as one clear line."""


class ConfigError(UserError):
    """A bad key or value in a config; ``path`` is its dotted location (``distill.lr``), so a
    caller holding the YAML file can point at the line."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def choice_error(what: str, value: object, allowed: Iterable[object]) -> UserError:
    """Build the standard "unknown X 'v'; allowed: a, b, c" error."""
    allowed_s = ", ".join(str(a) for a in allowed)
    return UserError(f"unknown {what} {value!r}; allowed: {allowed_s}")


def check_range(name: str, value: float | int | None, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Reject a number outside ``[low, high]`` (``low_open`` / ``high_open``: the bound itself is
    excluded), NaN or infinite; ``None`` (a default still to be filled) passes."""
    if value is None:
        return
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise UserError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UserError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {value}")


def reason(exc: BaseException, limit: int = 200) -> str:
    """``ClassName: first line of the message`` (or the class name alone), for one-line errors
    that wrap a library's exception."""
    text = str(exc).strip()
    name = exc.__class__.__name__
    return f"{name}: {text.splitlines()[0][:limit]}" if text else name
