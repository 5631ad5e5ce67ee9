"""Typed errors raised by the library.

The CLI turns any :class:`ClipAuditError` into one line on stderr and its ``exit_code``;
library users catch the specific subclass they care about.
"""

from __future__ import annotations

import difflib
import errno
import inspect
import os
from collections.abc import Callable, Iterable
from functools import partial, wraps
from typing import Any


class ClipAuditError(Exception):
    """Base class: a problem the user can fix (bad input, bad settings), never a bug."""

    exit_code = 2


class Stopped(BaseException):
    """SIGTERM (what Slurm, Kubernetes and ``kill`` send before they kill) while a run folder is
    open, raised in the main thread and taken as Ctrl-C is: the run is recorded as stopped, its
    lock released, its finished work kept for the same command to resume. Its text is the
    reason recorded ("stopped by SIGTERM"). Not a KeyboardInterrupt, which typer turns into exit
    code 130 unseen: the CLI exits 143 (128 + SIGTERM), as a shell does."""


# what writing a run's files meets when its disk is full or read-only: never the inputs' errors
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def cannot_write(where: str, exc: OSError) -> str:
    """The message for a write that a full or read-only disk refused (see :data:`WRITE_ERRNOS`),
    with the fix: runs resume after what they finished."""
    return (
        f"cannot write {where} ({os.strerror(exc.errno) if exc.errno else exc}); free space on its "
        "disk or make it writable, then run the same command again: it resumes after what finished"
    )


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
    """A run folder cannot be written or read back: it holds another run (or none, or a damaged
    one), another process is writing it, its run is not complete, or its disk refuses writes."""


class RunFailedError(ClipAuditError):
    """A run finished without a usable result (every unit failed); its manifest says why."""


class EngineError(ClipAuditError):
    """The engine that runs the work cannot be used: Ray missing or unreachable, a worker lost."""


def one_line(exc: BaseException) -> str:
    """A foreign exception (pyarrow's, Ray's, the network's) as one line for a message: its type
    and the first line of its text."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    name = type(exc).__name__
    return (f"{name}: {lines[0].strip()}" if lines else name)[:300]


def whole_line(exc: BaseException, limit: int = 300) -> str:
    """A foreign exception's whole text on one line, cut to ``limit`` characters: arrow's and
    torch's messages span lines, and their reason is often past the first
    (:func:`one_line` keeps the type and the first line)."""
    return " ".join(str(exc).split())[:limit]


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, ahead: Iterable[str] = ()) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choices, or ``""`` when none is close.

    ``ahead``: choices known to fit in another way (a name holding the word), named first, the
    closest of them first; spelling alone ranks "office" above "police officer" for "police"."""
    by_lower = {c.lower(): c for c in choices}
    lowered = word.lower()
    first = sorted(
        dict.fromkeys(ahead),
        key=lambda c: -difflib.SequenceMatcher(None, lowered, c.lower()).ratio(),
    )
    close = difflib.get_close_matches(lowered, list(by_lower), n=n, cutoff=0.6)
    names = list(dict.fromkeys([*first, *(by_lower[c] for c in close)]))[:n]
    if not names:
        return ""
    return f" (did you mean {' or '.join(map(repr, names))}?)"


def check_arguments(paths: dict[str, Any], switches: dict[str, Any], echo: Any) -> None:
    """Refuse, in words, a path that is no path (a number, None: os.fspath's bare TypeError
    later), a switch that is no bool ("no" would count as on) and an ``echo`` that cannot be
    called. ``paths`` maps what each is to its value."""
    for what, value in paths.items():
        if not isinstance(value, (str, os.PathLike)):
            raise SettingsError(
                f"{what} must be a path (a str or an os.PathLike), got "
                f"{type(value).__name__} {value!r:.60}"
            )
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be True or False, got {value!r:.60}")
    if not callable(echo):
        raise SettingsError(
            f"echo must be a function taking one line of text (e.g. print), got {echo!r:.60}"
        )


def keyword_checked(
    function: Callable[..., Any] | None = None, *, elsewhere: Callable[[str], str] | None = None
) -> Any:
    """``function``, whose call with arguments that do not fit its signature is a
    :class:`SettingsError` naming the closest parameters (Python's TypeError says only
    "unexpected keyword argument", and is no error of this library). ``elsewhere`` (used as
    ``@keyword_checked(elsewhere=...)``) gives, for an option the function lacks, words on where
    it goes instead ("" when nowhere)."""
    if function is None:
        return partial(keyword_checked, elsewhere=elsewhere)
    signature = inspect.signature(function)
    names = list(signature.parameters)
    by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [n for n, p in signature.parameters.items() if p.kind in by_position]

    @wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            unknown = [name for name in kwargs if name not in signature.parameters]
            if not unknown:  # too many positional arguments, a required one missing
                taken = ", ".join(positional) or "no argument"
                others = ", the other options by name" if len(positional) < len(names) else ""
                raise SettingsError(
                    f"{function.__name__}(): {exc}; it takes {taken} by position{others}"
                ) from None
            hint = elsewhere(unknown[0]) if elsewhere is not None else ""
            raise SettingsError(
                f"{function.__name__}() has no option {unknown[0]!r}"
                f"{did_you_mean(unknown[0], names)}; its options are {', '.join(names)}{hint}"
            ) from None
        return function(*args, **kwargs)

    return checked


class CheckedFields:
    """Base of frozen settings dataclasses: a field they do not have (``TrainSettings(stpes=10)``,
    or through ``dataclasses.replace``) is a :class:`SettingsError` naming the closest; Python's
    own TypeError says only "unexpected keyword argument"."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        import dataclasses

        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for name in kwargs:
            if name not in names:
                raise SettingsError(
                    f"{cls.__name__} has no setting {name!r}{did_you_mean(name, names)}; its "
                    f"settings are {', '.join(names)}"
                )
        return super().__new__(cls)
