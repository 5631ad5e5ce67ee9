"""Typed errors raised by the library.

The CLI turns any :class:`ClipAuditError` into one line on stderr and its ``exit_code``;
library users catch the specific subclass they care about.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ClipAuditError(Exception):
    """Base class: a problem the user can fix (bad input, bad settings), never a bug."""

    exit_code = 2


class RegistryError(ClipAuditError):
    """A concept registry file is malformed or refers to something that does not exist."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None):
        where = (
            f"{path}:{line}: "
            if path is not None and line is not None
            else (f"{path}: " if path is not None else "")
        )
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class InputError(ClipAuditError):
    """A data input (captions, images, gold labels) is missing, unreadable or has the wrong shape."""


class SettingsError(ClipAuditError):
    """Run settings are invalid or inconsistent (checked before any work starts)."""


class ModelError(ClipAuditError):
    """A model or checkpoint cannot be resolved or loaded."""


class RunFolderError(ClipAuditError):
    """A run folder holds results of a different run and cannot be resumed into."""


class EngineError(ClipAuditError):
    """The engine that runs the work cannot be used: Ray missing or unreachable, a worker lost."""


def one_line(exc: BaseException) -> str:
    """A foreign exception (pyarrow's, Ray's, the network's) as one line for a message: its type
    and the first line of its text."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    name = type(exc).__name__
    return (f"{name}: {lines[0].strip()}" if lines else name)[:300]


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choices, or ``""`` when none is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)
    if not close:
        return ""
    names = " or ".join(repr(by_lower[c]) for c in close)
    return f" (did you mean {names}?)"
