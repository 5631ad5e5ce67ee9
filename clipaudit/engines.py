"""Where units of work run: this machine's processes (``local``), or a Ray cluster (``ray``).

Both are executors with the interface of :class:`concurrent.futures.ProcessPoolExecutor`:
``submit(fn, *args)`` returns a :class:`concurrent.futures.Future`, ``shutdown(wait,
cancel_futures)`` stops; and both set up each worker once with an ``initializer(*initargs)``
before it runs anything. So the code that plans, submits, waits for and records units of work
(``clipaudit.coverage._Dispatch``) is one piece of code for both, and knows nothing of Ray.

:class:`RayExecutor` adds no scheduling of its own: every ``submit`` is one Ray task (one CPU) that
Ray places, queues, and retries when its worker process or node dies (``max_retries``; an
exception raised by the function itself is not retried: it is the function's answer). A task
that finished on a later attempt is said (one warning line, logger ``clipaudit.engines``) and
counted (``ray_tasks_retried`` of :meth:`RayExecutor.describe`): its result is whole, but a lost
worker is news to whoever runs the cluster (a killed process, a flaky node). The
initializer and its arguments (for coverage, the built matcher, about 1 MB) are put in Ray's
object store once (``ray.put``) and handed to tasks by reference: a worker process fetches and
runs them once, on its first task of the run, not once per task. Any function of any module
installed on the workers can be submitted.

Not built yet, a design note: GPU work (encoding captions or images for semantic coverage) would
fit the same adapter with Ray actors instead of tasks: an actor class with ``num_gpus=1`` loading
its encoder once in ``__init__``, a pool of them (one per GPU, ``ray.util.ActorPool`` or round
robin over the handles) taking ``submit(fn, shard)`` as ``actor.run.remote(fn, shard)``, whose
ObjectRef's ``.future()`` is the same Future; retries would come from ``max_restarts`` and
``max_task_retries`` of the actor.

Where Ray comes from: ``address`` (``--ray-address``), else ``RAY_ADDRESS``, else a Ray started
for the run on this machine (no dashboard; its CPUs are ``workers``, default all) and shut down
after. When the calling process has already connected to Ray (``ray.init``), that connection is
used and left open. Before connecting, the address is checked, so that a mistake is one line in
seconds where ``ray.init`` would wait (minutes, or without end): something listens there, in gRPC,
and, for a HOST:PORT, takes this process's token (Ray's clusters ask for one by default; Ray sends
it to an explicit address only under ``RAY_AUTH_MODE=token``); ``auto`` finds a Ray here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

from clipaudit import __version__
from clipaudit.errors import ClipAuditError, EngineError, one_line

ENGINES = ("local", "ray")
RAY_MAX_RETRIES = 3  # attempts after the first when a worker process or node dies
INSTALL_HINT = "pip install 'clipaudit[ray]'"
_CONNECT_TIMEOUT_S = 5.0
# an HTTP/2 client's connection preface, then its (empty) SETTINGS frame
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4  # the frame type a server's preface starts with
# for a Ray started for one run, unless the user set it: no usage statistics sent anywhere
_LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
# Ray warns, on every start, that it turned its default token authentication on: not news here
_QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup",)
_LOG = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module, or :class:`EngineError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineError(
            f"--engine ray needs Ray, which is not installed here; {INSTALL_HINT} "
            "(or count with --engine local)"
        ) from None
    return ray


def check_ray(address: str | None) -> None:
    """Fail before any work when Ray is not installed, or a cluster address is unreachable."""
    ray = import_ray()
    target = ray_address(address)
    if target is None or ray.is_initialized():
        return
    if target.startswith("ray://"):
        try:
            import grpc  # noqa: F401  (what Ray Client needs beyond Ray itself)
        except ImportError:
            raise EngineError(
                f"Ray address {target!r} is a Ray Client address, which needs pip install "
                "'ray[client]'; or run clipaudit on the cluster (ray job submit) with its "
                "HOST:PORT address"
            ) from None
    _check_cluster(target)


def ray_address(address: str | None) -> str | None:
    """The cluster to connect to: ``address``, else ``RAY_ADDRESS``; None (or ``local``): start
    one here, for the run."""
    found = address or os.environ.get("RAY_ADDRESS") or None
    return None if found == "local" else found


class RayExecutor:
    """Runs ``submit(fn, *args)`` as Ray tasks; see the module docstring.

    ``workers``: for a Ray started for the run, its CPUs; on a cluster, the most tasks submitted
    at once (None: all the cluster's CPUs). ``parallelism`` is how many run at once, ``window``
    how many the caller should keep submitted (twice that where Ray itself caps the running ones,
    so that none waits for the driver).
    """

    def __init__(
        self,
        initializer: Callable[..., Any],
        initargs: tuple[Any, ...],
        *,
        address: str | None = None,
        workers: int | None = None,
        max_retries: int = RAY_MAX_RETRIES,
    ):
        ray = import_ray()
        self._ray = ray
        self.max_retries = max_retries
        self.started = False  # a Ray started here, for this run
        self.connected = False  # a connection opened here (closed by shutdown)
        self._saved_env: dict[str, str | None] = {}
        self._refs: dict[Future, Any] = {}
        self._lock = threading.Lock()
        if ray.is_initialized():  # the manifest names the cluster, not just "already connected"
            self.address = _connected_address(ray)
        else:
            self.address = ray_address(address) or "(a Ray started for this run)"
            self._connect(ray_address(address), workers)
            if self.address == "auto":  # the manifest names the cluster found
                self.address = _connected_address(ray)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if self.started or workers is None:
                self.parallelism = max(1, cpus if workers is None else min(workers, cpus))
                self.window = 2 * self.parallelism
            else:  # a shared cluster: at most ``workers`` tasks of this run at once
                self.parallelism = self.window = workers
            self._described: dict[str, Any] = {
                "engine": "ray",
                "ray_address": self.address,
                "ray_version": ray.__version__,
                "cluster_cpus": cpus,
                "ray_tasks_retried": 0,  # None where this Ray does not say a task's attempt
            }
            self._context = ray.put((initializer, initargs, __version__))
            self._task = _remote_task(ray).options(
                num_cpus=1, max_retries=max_retries, retry_exceptions=False
            )
        except BaseException:
            self.shutdown(wait=False)
            raise

    def _connect(self, address: str | None, workers: int | None) -> None:
        ray = self._ray
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:
            for name, value in _LOCAL_RAY_ENV.items():
                self._saved_env[name] = os.environ.get(name)
                os.environ.setdefault(name, value)
            try:
                with _quiet(_QUIET_LOGGERS):
                    ray.init(address="local", num_cpus=workers, include_dashboard=False, **options)
            except Exception as exc:
                self._restore_env()
                raise EngineError(f"could not start Ray on this machine: {one_line(exc)}") from None
            self.started = True
        else:
            _check_cluster(address)
            try:
                ray.init(address=address, **options)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError...
                raise EngineError(
                    f"could not connect to the Ray cluster at {address!r}: {one_line(exc)}; "
                    "expected the address of a running head node (ray start --head prints it)"
                ) from None
        self.connected = True

    # ------------------------------------------------------------------ executor interface

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` as a Ray task on a worker set up by the initializer. The Future is
        running from the start (Ray, not the caller, decides when the task starts), so, as for a
        process pool's running task, ``cancel()`` returns False and the result is awaited."""
        ref = self._task.remote([self._context], fn, *args)
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._refs[future] = ref
        ref.future().add_done_callback(lambda done: self._settle(done, future))
        return future

    def _settle(self, done: Future, future: Future) -> None:
        with self._lock:
            self._refs.pop(future, None)
        try:
            attempt, result = done.result()
        except CancelledError as exc:
            future.set_exception(exc)
        except BaseException as exc:
            future.set_exception(self._plain_error(exc))
        else:
            if attempt is None:
                self._described["ray_tasks_retried"] = None
            elif attempt:  # said before the caller has the result: a run's record counts it
                self._retried(attempt)
            future.set_result(result)

    def _retried(self, attempt: int) -> None:
        with self._lock:  # Ray's callbacks may run on more than one thread
            self._described["ray_tasks_retried"] += 1
        from tqdm import tqdm

        with tqdm.external_write_mode():  # above a progress bar, not through it
            _LOG.warning(
                "a Ray worker was lost (its process killed, or its node down) while running a "
                "task; Ray ran the task again and it finished, whole (attempt %d of at most %d); "
                "the run's manifest counts these in timings.ray_tasks_retried",
                attempt + 1,
                self.max_retries + 1,
            )

    def _plain_error(self, exc: BaseException) -> BaseException:
        """The function's own error when it raised one of clipaudit's (one line, as a local
        worker's would be); a worker lost more often than retried, or one that cannot import
        what its task needs, as an :class:`EngineError`; anything else as Ray reports it (with
        the worker's traceback)."""
        errors = self._ray.exceptions
        cause = getattr(exc, "cause", None)
        if isinstance(exc, errors.RayTaskError) and isinstance(cause, ClipAuditError):
            return cause
        missing = _not_importable(cause) if isinstance(exc, errors.RayTaskError) else None
        if missing is not None:
            return EngineError(
                f"a Ray worker cannot import what its task needs ({missing}); install clipaudit "
                f"{__version__} on every node, with any module the task's arguments come from "
                "(a filesystem registered for a URL scheme), or run with --engine local"
            )
        if isinstance(exc, errors.TaskCancelledError):
            return CancelledError(str(exc))
        lost = (
            errors.WorkerCrashedError,
            errors.NodeDiedError,
            errors.LocalRayletDiedError,
            errors.OutOfMemoryError,
            errors.ObjectLostError,
        )
        if isinstance(exc, lost):
            return EngineError(
                f"a Ray task failed after {self.max_retries} retries ({one_line(exc)}); "
                "finished shards are kept: run the same command again"
            )
        return exc

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Cancel the tasks still running when ``cancel_futures`` (their workers are killed:
        an interrupt, a failed run), then disconnect, and stop the Ray started for the run."""
        ray = self._ray
        if cancel_futures:
            with self._lock:
                refs = list(self._refs.values())
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if self.connected:
            self.connected = False
            ray.shutdown()
        self._restore_env()

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    def describe(self) -> dict[str, Any]:
        """What the manifest records about where the run ran: always the same dict, whose
        ``ray_tasks_retried`` (tasks that finished on a later attempt, after their worker was
        lost) grows as they finish, so that a record of it taken before the run is right after."""
        return self._described


def _connected_address(ray: Any) -> str:
    """The address of the cluster this process is connected to (its GCS), where Ray says it."""
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # a Ray Client connection has no GCS address to give
        return "(this process's Ray)"


def _not_importable(cause: Any) -> str | None:
    """What a Ray worker failed to import, in one line, when that is why its task failed: a
    module the task imports, an argument that cannot be unpickled there (Ray's RaySystemError
    around the ImportError), or the task's own function, clipaudit's, which Ray reports as a
    RuntimeError in these words."""
    inner = getattr(cause, "client_exc", cause)
    if isinstance(inner, ImportError):
        return one_line(inner)
    if isinstance(cause, RuntimeError) and "remote function failed to import" in str(cause):
        return "clipaudit.engines: clipaudit is not installed there"
    return None


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Any:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_cluster(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a cluster address, something else
    does, or its head wants a token this process does not send."""
    _check_reachable(address)
    if address == "auto":
        _check_found()
    elif address != "local" and "://" not in address:
        _check_token(address)


def _check_found() -> None:
    """Refuse ``auto`` where it finds no Ray on this machine, before a run folder is made, in
    clipaudit's words (Ray's point to its own CLI's ``--address``)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die  # Ray's, not public
    except ImportError:
        return
    try:
        canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as exc:
        found = str(exc).split(". Please", 1)[0]
        raise EngineError(
            f"--ray-address auto found no Ray running on this machine to join ({found}); start "
            "one (ray start --head), or give the head node's HOST:PORT as --ray-address, or drop "
            "--ray-address and RAY_ADDRESS to start Ray on this machine for the run"
        ) from None


def _check_token(address: str) -> None:
    """Ask the head's GCS for the cluster's id, as ``ray.init`` does first. Ray's clusters want a
    token by default, but Ray sends one to an explicit address only under RAY_AUTH_MODE=token;
    without it (or with another token) ``ray.init`` retries for 20 s, a warning each second, and
    then says only that it could not connect."""
    try:
        from ray._raylet import GcsClient  # what ray.init asks with; Ray's own, not public
        from ray.exceptions import AuthenticationError
    except ImportError:  # a Ray of before tokens, or one that asks otherwise: ray.init will tell
        return
    try:
        GcsClient(address=address)
    except AuthenticationError:
        token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
        sent = "sent another" if token_mode else "sent none (RAY_AUTH_MODE is not token)"
        raise EngineError(
            f"the Ray cluster at {address!r} asks for its authentication token, and this process "
            f"{sent}; set RAY_AUTH_MODE=token and the cluster's token (ray get-auth-token prints "
            "it on the head node) in RAY_AUTH_TOKEN, or in ~/.ray/auth_token or the file "
            "RAY_AUTH_TOKEN_PATH names (Ray sends it to an explicit --ray-address or RAY_ADDRESS "
            "only then; --ray-address auto, on a node, finds it there itself)"
        ) from None
    except Exception:  # anything else is ray.init's to report, in its words
        return


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a cluster address."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(
            f"Ray address {address!r} is not HOST:PORT; expected e.g. 10.0.0.1:6379 (ray start "
            "--head prints it), ray://10.0.0.1:10001 for Ray Client, or auto"
        )
    try:
        connection = socket.create_connection(
            (host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S
        )
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {_CONNECT_TIMEOUT_S:.0f} s"
        else:
            reason = exc.strerror or type(exc).__name__
        raise EngineError(
            f"cannot reach the Ray cluster at {address!r} ({reason}); expected a running head "
            "node there (ray start --head), or drop --ray-address and RAY_ADDRESS to start Ray "
            "on this machine"
        ) from None
    with connection:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # a TLS handshake first: not checked here
        problem = _not_grpc(connection)
    if problem is not None:
        raise EngineError(
            f"something answers at the Ray address {address!r} but not as a Ray cluster does "
            f"({problem}); expected the address of a head node's GCS (ray start --head prints "
            "it; port 6379 unless --port), not the dashboard's (8265) or another service's, or "
            "drop --ray-address and RAY_ADDRESS to start Ray on this machine"
        )


def _not_grpc(connection: socket.socket) -> str | None:
    """Why the server of an open connection is no gRPC server (Ray's GCS and Ray Client both
    are), or None. ``ray.init`` waits without end on an address where something else listens (the
    dashboard's HTTP port, a silent service), so the server is asked first: an HTTP/2 server
    answers a client's connection preface with a SETTINGS frame."""
    try:
        connection.sendall(_HTTP2_PREFACE)
        answer = b""
        while len(answer) < 9:  # a frame header: length (3), type (1), flags (1), stream (4)
            chunk = connection.recv(9 - len(answer))
            if not chunk:
                return "it closed the connection" if not answer else "it answered too little"
            answer += chunk
    except TimeoutError:
        return f"no answer within {_CONNECT_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if answer[3] != _SETTINGS_FRAME:
        return f"it answered {answer[:9]!r}..., not in gRPC"
    return None


# --------------------------------------------------------------------------- worker side

_REMOTE: dict[str, Any] = {}
_WORKER: dict[str, Any] = {}


def _remote_task(ray: Any) -> Any:
    if "task" not in _REMOTE:
        _REMOTE["task"] = ray.remote(_run_task)
    return _REMOTE["task"]


def _run_task(context: list[Any], fn: Callable[..., Any], *args: Any) -> tuple[int | None, Any]:
    """A Ray task: set this worker process up on its first task of a run (the context, wrapped in
    a list so that Ray hands over the reference and not the value, is fetched only then), then
    run the function; returns which attempt of the task this is (0: the first) and its result."""
    (ref,) = context
    key = ref.hex()
    if _WORKER.get("context") != key:
        import ray

        initializer, initargs, version = ray.get(ref)
        if version != __version__:
            raise EngineError(
                f"clipaudit {__version__} is installed on a Ray worker but the driver runs "
                f"clipaudit {version}; install the same version on every node"
            )
        initializer(*initargs)
        _WORKER["context"] = key
    return _attempt_number(), fn(*args)


def _attempt_number() -> int | None:
    """Which attempt of its task this worker runs (0: the first), or None where Ray does not say.
    Ray's public API does not (its state API needs the dashboard, which a Ray started for a run
    has not); its core worker does (Ray 2.60 has it)."""
    try:
        from ray._private.worker import global_worker  # Ray's own, not public

        return int(global_worker.core_worker.get_current_task_attempt_number())
    except (ImportError, AttributeError):
        return None
