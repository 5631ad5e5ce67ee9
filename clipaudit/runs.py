"""One run-folder contract for every kind of run: coverage, zero-shot, theory, world, demo, audit, report.

A run folder holds the outputs of one run and ``manifest.json``::

    kind          what wrote it (coverage, zeroshot, theory, world, demo, audit, report)
    contract      the version of this contract
    status        running | complete | failed, with ``reason`` when failed
    settings      everything the results depend on (a resumed run must have the same)
    clipaudit_version, git_hash, versions, platform, command   where it came from
    inputs, timings, outputs, counts ...   what each kind adds

and ``units/``, one record per finished unit of work (a coverage shard, a zero-shot model, a theory
scenario) written atomically the moment it finishes, with the identity of what it read and a
digest of the record (one edited or cut short by hand is redone, never merged). So:

- **resume**: the same command on the same folder redoes only units without a record, or whose
  inputs changed (a shard fixed, removed or added changes only its own unit);
- **refuse**: other settings are refused with the differences, unless ``overwrite`` (then the
  folder is emptied first); a run that failed before any unit finished restarts with the new ones
  (whatever its kind), one that failed after is refused saying so, with its reason;
- **lock**: one writer at a time (``.lock``, released and removed on every exit path; a run
  killed with ``kill -9`` leaves a file no process holds, which the next run takes); a folder
  still being written is read back as that, not as a run to resume;
- **status**: ``failed`` with the reason on any error or interrupt (SIGTERM, which Slurm and
  Kubernetes send before they kill, is taken as Ctrl-C: :class:`Stopped`; its reason says so,
  and messages name it stopped, to resume: :func:`stopped_by`), ``complete`` only at the end,
  and a run where every unit failed is ``failed`` (:class:`RunFailedError`), never
  complete. A complete run opened again stays as it was unless the session changes it: before
  it writes its manifest, or changes a run inside it (an audit's stage), it is marked
  ``running``, so that no kill leaves it complete over a stage that changed. One whose stage is
  not complete all the same (that stage's own command killed in it) is read back as unfinished,
  with the stage named, and the same command finishes it.

:func:`load_run` reads any run folder back into its typed result, whatever command wrote it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from clipaudit.errors import (
    WRITE_ERRNOS,
    ClipAuditError,
    InputError,
    RunFolderError,
    SettingsError,
    Stopped,
    cannot_write,
    keyword_checked,
)
from clipaudit.provenance import base_manifest, now_iso, write_json
from clipaudit.text import slug

CONTRACT = 1
STATUSES = ("running", "complete", "failed")
MANIFEST = "manifest.json"
UNITS = "units"
_LOCK = ".lock"
# a stopped run (Ctrl-C, SIGTERM) is "failed" with this reason, which stopped_by reads back:
# "interrupted; ..." or "stopped by SIGTERM; ..." (Stopped's text)
_INTERRUPTED = "interrupted"
_STOPPED_BY = "stopped by "
_RESUME = "run the same command again to resume"
# a manifest that cannot be read says nothing of the run's settings: nothing in the folder can be
# trusted, and the folder may not be clipaudit's (so --overwrite does not empty it either)
_DAMAGED_FIX = "delete the folder or choose another --out, and run the command again"
# what a notebook's caller passes for the options the messages name
_OVERWRITE = "--overwrite (overwrite=True in Python)"
_ANOTHER_OUT = "another --out (out= in Python)"

# kind -> "module:function" that turns a complete run folder into its typed result; imported only
# when such a folder is loaded, so this bottom-layer module imports nothing above it
LOADERS: dict[str, str] = {
    "coverage": "clipaudit.coverage:load_coverage_run",
    "zeroshot": "clipaudit.zeroshot:load_zeroshot_run",
    "theory": "clipaudit.theory.sweep:load_theory_run",
    "world": "clipaudit.world.world:load_world_run",
    "demo": "clipaudit.audit:load_audit_run",
    "audit": "clipaudit.audit:load_audit_run",
    "report": "clipaudit.report:load_report_run",
}
_KIND_ALIASES = {"theory-run": "theory", "theory-check": "theory"}  # manifests before the contract


def differences(
    before: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    ignore: Sequence[str] = (),
    prefix: str = "",
) -> list[str]:
    """What changed between two settings records, as ``"a.b: old -> new"`` lines (nested mappings
    are compared key by key; ``ignore`` names dotted keys that may change freely)."""
    found = []
    for key in dict.fromkeys([*before, *now]):
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        old, new = before.get(key, _ABSENT), now.get(key, _ABSENT)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found += differences(old, new, ignore=ignore, prefix=f"{name}.")
        elif _plain(old) != _plain(new):
            found.append(f"{name}: {_shown(old)} -> {_shown(new)}")
    return found


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _plain(value: Any) -> Any:
    """JSON's view of a value, so that a tuple read back as a list compares equal."""
    return value if value is _ABSENT else json.loads(json.dumps(value, default=str))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def fingerprint(record: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-able record (unit identities, file names)."""
    text = json.dumps(_plain(record), sort_keys=True)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()[:length]


def _stop_on_sigterm() -> Callable[[int, Any], None] | None:
    """Make SIGTERM raise :class:`Stopped` where it would end the process at once (the default
    handler) and can be handled (the main thread); returns the handler set, None when none was:
    a handler of the program embedding clipaudit, or of a run around this one, is kept."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    owner = os.getpid()

    def stop(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:  # a worker forked while the run was open: ends as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    return stop


def unit_key(label: str, identity: Any) -> str:
    """A unit's file name from a user-facing label and its identity: readable, never colliding
    (the hash), never leaving the folder (the slug)."""
    return f"{slug(label)[:60]}-{fingerprint(identity, 12)}"


# the run folders open in this process, by resolved path: a stage finds the run around it here
_OPEN: dict[Path, RunFolder] = {}


class RunFolder:
    """A run folder opened for writing (a context manager): locked, checked against the run it
    holds, marked ``failed`` with the reason when the block raises.

    ``settings`` is what the results depend on; ``compare`` (default :func:`differences`) lists
    what changed from the settings stored in an existing folder.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        kind: str,
        settings: Mapping[str, Any],
        *,
        overwrite: bool = False,
        libraries: Sequence[str] = (),
        compare: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]] | None = None,
        units_dir: str = UNITS,
    ):
        if not isinstance(overwrite, bool):  # "no" would count as yes, and empty the folder
            raise SettingsError(f"overwrite must be True or False, got {overwrite!r:.60}")
        self.path = Path(path)
        self.kind = kind
        self.settings = _plain(dict(settings))
        self.overwrite = overwrite
        self.libraries = tuple(libraries)
        self.compare = compare or differences
        self.units = self.path / units_dir
        self.previous: dict[str, Any] | None = None  # the manifest found, when resuming
        self.restarted: str | None = None  # why an existing folder was emptied, if it was
        self._was_complete = False
        self._key: Path | None = None  # the resolved path, while open (in _OPEN)
        self.manifest: dict[str, Any] = {}
        self._lock: Any = None
        self._on_sigterm: Callable[[int, Any], None] | None = None  # set while open, if any
        self._written = False  # whether this session has written the manifest
        self._clock = time.perf_counter()

    # ------------------------------------------------------------------ opening and closing

    def __enter__(self) -> RunFolder:
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(
                f"{self.path} is a file, not a folder; give --out a new folder, or the folder of "
                "the run to resume"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file on the way, a read-only or missing mount
            raise RunFolderError(
                f"cannot make the run folder {self.path} ({exc.strerror or exc}); give --out a "
                "folder that can be written"
            ) from None
        self._on_sigterm = _stop_on_sigterm()
        try:
            self._lock = _acquire_lock(self.path)
            self._key = self.path.resolve()
            _OPEN[self._key] = self
            self._check()
            # atomic writes' temporary files left by a killed run, anywhere in the folder (the
            # merged tables' in the run's root, the units'): we hold the lock
            for stale in self.path.rglob(".*.tmp"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)
            self.manifest = {
                **base_manifest(self.kind, self.libraries),
                "contract": CONTRACT,
                "status": "running",
                "settings": self.settings,
                "started": now_iso(),
            }
            # a finished run stays as it was until this session changes something
            if not self.was_complete:
                self.write_manifest()
        except BaseException as error:
            self.__exit__(type(error), error, None)
            raise
        return self

    @property
    def was_complete(self) -> bool:
        """Whether the folder held this very run, complete, when it was opened: with every
        output its manifest lists (one deleted is made again from the finished units)."""
        return self._was_complete

    def __exit__(self, kind: type | None, error: BaseException | None, _: Any) -> None:
        try:
            if error is not None and self._written and self.manifest.get("status") == "running":
                if isinstance(error, (KeyboardInterrupt, Stopped)):  # Ctrl-C, or SIGTERM
                    stopped = str(error) if isinstance(error, Stopped) else _INTERRUPTED
                    reason = f"{stopped}; {_RESUME}"
                elif isinstance(error, ClipAuditError):
                    reason = str(error)
                else:
                    reason = f"{type(error).__name__}: {error}"
                # a full or failing disk must not put its error in place of the one that stopped
                # the run; left "running", the folder resumes as after a kill
                with contextlib.suppress(OSError):
                    self.fail(reason)
        finally:
            self._release()

    def _changing(self) -> None:
        """Called before this session first changes its folder: the run around it (an audit,
        around this stage), complete and kept as it was so far, is marked running first. A kill
        from here on leaves no chance to mark it afterwards, and it must not say complete over
        a stage that changed (a zero-shot stage with a model its report does not show yet)."""
        outer = _OPEN.get(self._key.parent) if self._key is not None else None
        if outer is not None and not outer._written:
            outer.write_manifest()

    def _release(self) -> None:
        if self._key is not None:
            _OPEN.pop(self._key, None)
            self._key = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (self.path / _LOCK).unlink()
            self._lock.close()
            self._lock = None
        if self._on_sigterm is not None:
            # the default again, unless the program set a handler of its own since
            if signal.getsignal(signal.SIGTERM) is self._on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._on_sigterm = None

    def _check(self) -> None:
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            # never emptied, even with --overwrite: it may be any folder (a typo for --out)
            if any(not _ignorable(p) for p in self.path.iterdir()):
                raise RunFolderError(
                    f"{self.path} is not empty but holds no clipaudit run (no {MANIFEST}); "
                    "choose a new or empty --out folder"
                )
            return
        previous = read_manifest(self.path)
        kind = run_kind(previous)  # a hand-edited manifest may hold any JSON value here
        if kind != self.kind:
            held = a_run(kind) if isinstance(kind, str) else "a run of unknown kind"
            raise RunFolderError(
                f"{self.path} holds {held}, not {a_run(self.kind)}; choose another --out folder"
            )
        stored = previous.get("settings") or {}
        changed = [f"settings: {_shown(stored)} -> a record of settings"]
        if isinstance(stored, Mapping):
            # a record edited by hand may hold values of other shapes than a kind's own
            # ``compare`` expects: no run this one can resume, as when it is no mapping at all
            with contextlib.suppress(TypeError, AttributeError, KeyError, ValueError):
                changed = self.compare(stored, self.settings)
        if not changed:
            self.previous = previous
            # decided once: this session's own outputs must not make it complete part-way
            # nor a run with a stage left unfinished (see unfinished_stage)
            self._was_complete = (
                previous.get("status") == "complete"
                and not missing_outputs(self.path, previous)
                and unfinished_stage(self.path) is None
            )
            return
        if self.overwrite:
            self._empty("--overwrite")
        elif previous.get("status") != "complete" and not self._holds_finished_work():
            # nothing of it to keep: the corrected command of a run that failed at once
            self._empty(f"the earlier run stopped before any unit finished ({'; '.join(changed)})")
        elif previous.get("status") == "failed":
            # "run the same command" would be this one, refused again; the earlier one resumes
            # it, but may fail again for the same reason: said, with both ways out
            cause = stopped_by(previous)
            ended = (
                f"that was stopped ({cause}) after finishing part of its work"
                if cause is not None
                else f"that failed after finishing part of its work ({previous.get('reason')})"
            )
            raise RunFolderError(
                f"{self.path} holds {a_run(self.kind)} with other settings "
                f"({'; '.join(changed)}) {ended}; pass {_OVERWRITE} to start again with these "
                "settings (its finished work is deleted), run the earlier command again to "
                f"resume it, or choose {_ANOTHER_OUT}"
            )
        else:
            raise RunFolderError(
                f"{self.path} holds a different {self.kind} run ({'; '.join(changed)}); run the "
                f"same command to resume it, pass {_OVERWRITE} to replace it, or choose "
                f"{_ANOTHER_OUT}"
            )

    def _holds_finished_work(self) -> bool:
        """A finished unit, here or in a run inside (an audit's or a demo's stage, finished or
        not), or a finished run inside."""
        if self.finished_units() or next(self.path.glob(f"*/{UNITS}/*.json"), None) is not None:
            return True
        for manifest in self.path.glob(f"*/{MANIFEST}"):
            # a damaged one (not JSON, not an object, unreadable) holds no finished run
            with contextlib.suppress(RunFolderError):
                if read_manifest(manifest.parent).get("status") == "complete":
                    return True
        return False

    def _empty(self, why: str) -> None:
        self._changing()
        # the manifest last: emptying cut short (Ctrl-C in a big store) leaves a folder that still
        # holds a clipaudit run, which the same command empties again
        for entry in sorted(self.path.iterdir(), key=lambda entry: entry.name == MANIFEST):
            if entry.name == _LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.restarted = why

    # ------------------------------------------------------------------ manifest

    def write_manifest(self) -> None:
        if not self._written:
            self._changing()
        write_json(self.path / MANIFEST, self.manifest)
        self._written = True

    def update(self, **fields: Any) -> None:
        """Add fields to the manifest and write it."""
        self.manifest.update(fields)
        self.write_manifest()

    def complete(self, **fields: Any) -> dict[str, Any]:
        """Mark the run complete, with its final fields and this session's wall time."""
        timings = fields.pop("timings", {})
        self.manifest.update(fields)
        self.manifest["timings"] = {
            **timings,
            "session_started": self.manifest["started"],
            "session_finished": now_iso(),
            "session_seconds": round(time.perf_counter() - self._clock, 3),
        }
        self.manifest["status"] = "complete"
        self.manifest.pop("reason", None)
        self.write_manifest()
        return self.manifest

    def fail(self, reason: str) -> None:
        self.manifest.update(status="failed", reason=reason, failed=now_iso())
        self.write_manifest()

    # ------------------------------------------------------------------ units of work

    def unit_path(self, key: str, suffix: str = ".json") -> Path:
        return self.units / f"{key}{suffix}"

    def finished_units(self) -> list[str]:
        """Keys of the units with a record (whatever their identity)."""
        return sorted(p.name[: -len(".json")] for p in self.units.glob("*.json"))

    def load_unit(self, key: str, identity: Any) -> dict[str, Any] | None:
        """A unit's record when it finished with this identity; None when it must be (re)done."""
        path = self.unit_path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        # cannot happen with atomic writes, unless edited by hand (nested past the parser's
        # recursion limit included)
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict) or record.get("identity") != _plain(identity):
            return None
        # a record edited by hand is redone, never merged (units written before digests have none)
        digest = record.pop("digest", None)
        body = {name: value for name, value in record.items() if name != "identity"}
        return record if digest is None or digest == fingerprint(body) else None

    def save_unit(self, key: str, identity: Any, record: Mapping[str, Any]) -> None:
        write_unit(self.units, key, identity, record)

    def prune_units(self, keep: Sequence[str]) -> list[str]:
        """Remove records (and their files) of units no longer in the run: a removed or changed
        input's old unit. Returns the removed keys."""
        wanted = set(keep)
        removed = []
        for key in self.finished_units():
            if key not in wanted:
                for path in [self.units / key, *self.units.glob(f"{key}.*")]:
                    if not path.exists():
                        continue
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                removed.append(key)
        return removed


def write_unit(units: Path, key: str, identity: Any, record: Mapping[str, Any]) -> None:
    """Record a finished unit atomically (also from worker processes, which hold no RunFolder),
    with a digest of the record that :meth:`RunFolder.load_unit` checks."""
    body = _plain(dict(record))
    write_json(
        units / f"{key}.json", {"identity": _plain(identity), **body, "digest": fingerprint(body)}
    )


def _ignorable(path: Path) -> bool:
    """Entries that do not make a folder 'not empty': the lock, hidden files, empty folders."""
    if path.name == _LOCK or path.name.startswith("."):
        return True
    return path.is_dir() and not any(path.iterdir())


# what flock answers when another process holds the lock (the other errors: no locks at all)
_BUSY = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


def _acquire_lock(path: Path) -> Any:
    """An exclusive lock on the run folder; released by the OS if the process dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no guard against two runs writing into one folder
        return open(os.devnull, "w")
    lock_path = path / _LOCK
    for _ in range(3):
        try:
            handle = open(lock_path, "a")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:  # the run's first write: a read-only or full disk says so here
            if exc.errno in WRITE_ERRNOS or exc.errno in (errno.EACCES, errno.EPERM):
                raise RunFolderError(cannot_write(f"into the run folder {path}", exc)) from None
            raise
        try:
            _lock_soon(handle, fcntl)
        except OSError as exc:
            handle.close()
            if exc.errno not in _BUSY:
                # ENOLCK (NFS without its lock daemon), EOPNOTSUPP: no wait would end; and no
                # other run holds the file made here
                lock_path.unlink(missing_ok=True)
                raise RunFolderError(
                    f"cannot lock the run folder {path} ({exc.strerror or exc}): its file system "
                    "keeps no file locks; give --out a folder on a disk that does (a local one)"
                ) from None
            raise RunFolderError(
                f"another clipaudit run is writing into {path}; wait for it, or choose another --out"
            ) from None
        # the previous holder may have removed the file between our open and our lock
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()
    raise RunFolderError(
        f"could not lock {path}: other clipaudit runs keep starting and ending there; wait for "
        "them to finish, or choose another --out"
    )


def _lock_soon(handle: Any, fcntl: ModuleType) -> None:
    """Lock ``handle`` exclusively (``fcntl``: the module, POSIX only), trying again for a moment
    while it is busy: a reader (:func:`_locked`) holds it shared for an instant, a run for hours."""
    for wait in (0.01, 0.05, 0.1, None):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _BUSY or wait is None:
                raise
            time.sleep(wait)


def _locked(path: Path) -> bool:
    """Whether a process holds the run folder's lock (:func:`_acquire_lock`) now. Never makes
    the lock file: a run killed with ``kill -9`` leaves one that nothing holds."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock to ask
        return False
    try:
        handle = open(path / _LOCK, "rb")  # noqa: SIM115 - closed below
    except OSError:  # none, or unreadable: no writer to wait for that this reader can see
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:  # held, or a file system that keeps no locks (no writer either)
            return exc.errno in _BUSY
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


# ---------------------------------------------------------------------- reading runs back


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a run folder, or :class:`RunFolderError` saying why there is none."""
    if not isinstance(path, (str, os.PathLike)):
        raise SettingsError(
            f"a run folder is a path (a str or an os.PathLike), got {type(path).__name__} "
            f"{path!r:.60}"
        )
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise RunFolderError(f"{path} {what}; expected a run folder (the --out of a run)")
    if not manifest_path.is_file():
        raise RunFolderError(
            f"{path} holds no clipaudit run (no {MANIFEST}); expected a folder written by "
            "clipaudit (coverage count, zeroshot, theory, demo, audit or report)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as exc:  # another user's run on a shared disk, a failing disk
        raise RunFolderError(
            f"cannot read {manifest_path} ({exc.strerror or exc}); make it readable, or give "
            "another run folder"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFolderError(
            f"{manifest_path} is not valid JSON ({exc}); the folder is damaged: {_DAMAGED_FIX}"
        ) from None
    except RecursionError:  # a hostile or damaged file: no manifest nests that deep
        raise RunFolderError(
            f"{manifest_path} is nested too deeply to be a manifest; the folder is damaged: "
            f"{_DAMAGED_FIX}"
        ) from None
    if not isinstance(manifest, dict):
        raise RunFolderError(
            f"{manifest_path} is not a JSON object; the folder is damaged: {_DAMAGED_FIX}"
        )
    return manifest


def missing_outputs(path: str | os.PathLike, manifest: Mapping[str, Any]) -> list[str]:
    """The files the manifest's ``outputs`` lists (paths relative to the run folder) that the
    folder no longer holds."""
    listed = manifest.get("outputs")
    if not isinstance(listed, list):  # kinds that list none, or a manifest edited by hand
        return []
    return [name for name in listed if isinstance(name, str) and not (Path(path) / name).is_file()]


def unfinished_stage(path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """The first run inside the run folder ``path`` (an audit's or a demo's stage) that is not
    complete, as its folder's name and manifest; None when there is none. A run is marked running
    before its session changes a stage, but a stage's own command killed in it, or a clipaudit
    before that marking, leaves it saying complete: this is what tells."""
    for manifest in sorted(Path(path).glob(f"*/{MANIFEST}")):
        try:
            stage = read_manifest(manifest.parent)
        except RunFolderError:  # damaged: the stage's own reading names it, with the fix
            continue
        if stage.get("status", "complete") != "complete":
            return manifest.parent.name, stage
    return None


def not_complete(
    what: str,
    manifest: Mapping[str, Any],
    folder: str | os.PathLike | None = None,
    *,
    stage: str | None = None,
) -> str:
    """Why the run ``what`` names cannot be read (its manifest's status and reason), and the fix:
    a failed run's reason says its own (an empty corpus is not fixed by resuming), a run killed
    while running resumes, and one still running in ``folder`` (its lock held) is waited for.
    With ``stage``, ``manifest`` is that of the run's stage of that name (:func:`unfinished_stage`)."""
    status = manifest.get("status")
    reason = manifest.get("reason")
    if status == "running" and folder is not None and _locked(Path(folder)):
        return (
            f"{what} that another clipaudit process is writing now; wait for it to finish, then "
            "read it"
        )
    subject = f"whose {stage} stage" if stage else "that"
    cause = stopped_by(manifest)
    if cause is not None:  # its reason is only how it stopped: the fix is to resume it
        return (
            f"{what} {subject} was stopped ({cause}), not complete; run the same command again "
            "to resume it"
        )
    if status == "failed" and reason:
        return f"{what} {subject} failed ({reason}), not complete; do what its reason says"
    why = f" ({reason})" if reason else ""
    return (
        f"{what} {subject} is {status}{why}, not complete; run the command that wrote it again "
        "to resume it"
    )


def stopped_by(manifest: Mapping[str, Any]) -> str | None:
    """How a failed run was stopped, when it was (``"interrupted"``: Ctrl-C; ``"by SIGTERM"``),
    read from the reason :class:`RunFolder` records; None for a run that failed of an error, or
    did not fail. Its status stays ``failed``: what reads statuses takes it as one that did not
    finish, and a new status would be one more for each of them to know."""
    reason = manifest.get("reason")
    if manifest.get("status") != "failed" or not isinstance(reason, str):
        return None
    cause = reason.split(";", 1)[0].strip()
    if cause.startswith(_STOPPED_BY):
        return cause.removeprefix("stopped ")
    return cause if cause == _INTERRUPTED else None


def a_run(kind: str) -> str:
    """``"a coverage run"``, ``"an audit run"``: a kind named in a message."""
    return f"{'an' if kind.startswith(tuple('aeiou')) else 'a'} {kind} run"


def run_given_as_captions(spec: str, kind: str) -> InputError:
    """The error for a clipaudit run folder named as captions: its tables would be read as
    caption files (and refused for a column they lack)."""
    return InputError(
        f"{spec!r} is a clipaudit run folder ({a_run(kind)}), not captions; give the caption "
        "files or folder the run should count"
    )


def run_kind(manifest: Mapping[str, Any]) -> Any:
    """The manifest's run kind (an old name mapped to today's); whatever it holds when that is
    not a name."""
    kind = manifest.get("kind")
    return _KIND_ALIASES.get(kind, kind) if isinstance(kind, str) else kind


def run_folder_kind(folder: str | os.PathLike) -> str | None:
    """The kind of the clipaudit run ``folder`` holds (``"coverage"``, ``"audit"``, ...), or None
    when it holds none: no manifest, or one that is no run's (another tool's ``manifest.json``,
    even one whose ``kind`` is a run's name: every run's manifest names its clipaudit version)."""
    try:
        text = (Path(folder) / MANIFEST).read_bytes()
    except OSError:
        return None
    return manifest_run_kind(text)


def manifest_run_kind(text: str | bytes) -> str | None:
    """The run kind a ``manifest.json``'s text names, or None when it is no clipaudit run's, as
    :func:`run_folder_kind` reads it (for a manifest read from elsewhere than a local folder)."""
    try:
        manifest = json.loads(text)
        kind = run_kind(manifest)
        ours = isinstance(manifest.get("clipaudit_version"), str)
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return kind if ours and isinstance(kind, str) and kind in LOADERS else None


@keyword_checked
def load_run(path: str | os.PathLike) -> Any:
    """The typed result of a complete run folder (coverage, zero-shot, theory, world, demo, audit,
    report), with its tables as DataFrames. Raises :class:`~clipaudit.errors.RunFolderError` for
    a folder that is missing, holds no run, an incomplete or failed one, one of a newer run
    contract, or misses one of its files; :class:`~clipaudit.errors.SettingsError` for a path of
    another type."""
    manifest = read_manifest(path)  # first: it refuses a path of another type
    path = Path(path)
    kind = run_kind(manifest)
    if not isinstance(kind, str) or kind not in LOADERS:
        raise RunFolderError(
            f"{path} holds a run of unknown kind {kind!r}; expected one of {', '.join(LOADERS)}; "
            "a newer clipaudit may have written it: read it with that version"
        )
    what = f"{path} holds {a_run(kind)}"
    contract = manifest.get("contract")
    if isinstance(contract, int) and not isinstance(contract, bool) and contract > CONTRACT:
        # its tables may mean what this version cannot know
        version = manifest.get("clipaudit_version")
        raise RunFolderError(
            f"{what} written by clipaudit {version} (run contract {contract}); this clipaudit "
            f"reads run contract {CONTRACT} at most: upgrade clipaudit (pip install -U "
            f"clipaudit), or read it with clipaudit {version}"
        )
    status = manifest.get("status", "complete")  # manifests before the contract: complete
    # a run stopped (or said complete) while a stage of it was unfinished: the stage named, unless
    # the run's own reason for failing says more
    unfinished = unfinished_stage(path) if status != "failed" else None
    if unfinished is not None:
        if _locked(path):  # a session changing it now
            raise RunFolderError(not_complete(what, {**manifest, "status": "running"}, path))
        stage, stage_manifest = unfinished
        raise RunFolderError(not_complete(what, stage_manifest, path / stage, stage=stage))
    if status != "complete":
        raise RunFolderError(not_complete(what, manifest, path))
    missing = missing_outputs(path, manifest)
    if missing:  # deleted by hand: the same command writes them again (RunFolder.was_complete)
        raise RunFolderError(
            f"{path} holds a complete {kind} run whose output {missing[0]!r} is gone "
            f"({len(missing)} of its files missing); run the command that wrote it again to "
            "write them anew"
        )
    module, _, function = LOADERS[kind].partition(":")
    loader = getattr(importlib.import_module(module), function)
    try:
        return loader(path, manifest)
    # pyarrow's and pandas' parse errors included; a TypeError or AttributeError is a manifest
    # field of another type (edited by hand), named in the message. Not "--overwrite": with the
    # same settings it empties nothing, and the same command alone writes the outputs anew
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunFolderError(
            f"{path} holds a complete {kind} run whose files cannot be read "
            f"({type(exc).__name__}: {str(exc)[:200]}); the folder is damaged: run the command "
            "that wrote it again, which writes them anew from its finished work"
        ) from None
