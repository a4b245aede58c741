"""How a sweep's tasks run: one after another here (`LocalBackend`, "local") or as Ray tasks (`RayBackend`, "ray"),
both on the `BACKENDS` registry (`lungsound sweep --backend` reads its names), and `execute`, which submits every task,
resubmits a failed one once (the same for every backend; Ray's own retries are off, `max_retries=0`, so a task runs at
most twice) and reports what failed twice.

A backend is made as `Backend(cpus_per_run, gpus_per_run)` and has `submit(fn, item)`,
`next_done() -> (handle, ok, result or one-line error)`, `cancel()` and `close()`; `adapt(cfg)` fits a task's config
to where it runs, `in_process` says whether tasks run in this process (their progress bars can show) and
`fills_cache_first` whether the feature cache should be filled here before tasks start (parallel tasks on this
machine would otherwise each compute the same arrays). A new backend is one more class registered here.

`RayBackend` joins the cluster at `$RAY_ADDRESS` (after checking that it answers: `ray.init` retries a dead address for
minutes) or starts a local Ray on all of the machine's cores; each task gets `num_cpus`/`num_gpus` and the driver's
MLflow tracking URI, cache folders and working directory (`worker_env`), so every task logs to the same store.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import deque
from typing import Any, Callable

from lungsound.errors import LungsoundError, one_line
from lungsound.registry import Registry
from lungsound.tracking import tracking_uri

ATTEMPTS = 2  # a failed task is run once more
# Environment a task needs to see what the driver sees (the tracking URI is always passed).
PASSED_ENV = ("LUNGSOUND_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MPLBACKEND")
BACKENDS: Registry[type] = Registry("backend")


def describe(exc: BaseException) -> str:
    """One line for a task's failure: the original exception of a Ray task error, its type and first line."""
    cause = getattr(exc, "cause", None) or exc
    return one_line(cause, with_type=True)


@BACKENDS.register("local")
class LocalBackend:
    """Runs each submitted task in this process, in submission order, when the next result is asked for (one at a
    time: the per-run sizes mean nothing here)."""

    in_process = True
    fills_cache_first = False  # one task at a time fills the cache as it goes

    def __init__(self, cpus_per_run: float = 1, gpus_per_run: float = 0):
        self._queue: deque = deque()
        self._count = itertools.count()

    def adapt(self, cfg) -> None:
        """A task here runs as `lungsound train` would: its config as it is."""

    def submit(self, fn: Callable, item: Any) -> int:
        handle = next(self._count)
        self._queue.append((handle, fn, item))
        return handle

    def next_done(self) -> tuple[Any, bool, Any]:
        handle, fn, item = self._queue.popleft()
        try:
            return handle, True, fn(item)
        except Exception as exc:  # a failed task is reported and retried by `execute`, not raised
            return handle, False, describe(exc)

    def cancel(self) -> None:
        self._queue.clear()

    def close(self) -> None:
        pass


def run_task(fn: Callable, item: Any, env: dict[str, str], cwd: str) -> Any:
    """A Ray task's body: the driver's environment and working directory (where it exists here), then `fn(item)`."""
    os.environ.update(env)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(item)


def worker_env() -> dict[str, str]:
    """What a task on another process (or machine) needs to log where the driver does."""
    return {"MLFLOW_TRACKING_URI": tracking_uri(), **{k: os.environ[k] for k in PASSED_ENV if k in os.environ}}


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A one-line error when `RAY_ADDRESS` (host:port or ray://host:port) does not answer on TCP within `timeout`
    seconds; `ray.init` itself retries an unreachable address for minutes."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise LungsoundError(f"RAY_ADDRESS={address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise LungsoundError(f"the Ray cluster at RAY_ADDRESS={address} does not answer ({exc.strerror or exc}); "
                             "is it running and reachable from here?") from None


@BACKENDS.register("ray")
class RayBackend:
    """Each task is one Ray task with `num_cpus`/`num_gpus`; Ray is started here on all cores unless `RAY_ADDRESS`
    names a cluster or Ray is already initialised (then that one is used and left running)."""

    in_process = False

    def __init__(self, cpus_per_run: float = 1, gpus_per_run: float = 0):
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        # A Ray started here runs its tasks on this machine, side by side.
        self.fills_cache_first = not os.environ.get("RAY_ADDRESS")
        try:
            import ray
        except ImportError:
            raise LungsoundError("--backend ray needs the ray package (pip install ray)") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            try:
                if address:
                    _check_reachable(address)
                    ray.init(address=address, logging_level="warning")
                else:
                    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="warning")
            except Exception as exc:  # ConnectionError, a version mismatch, ...
                where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
                raise LungsoundError(f"cannot start or join {where}: {describe(exc)}") from None
            self.started = True
        total = ray.cluster_resources()
        for name, need in (("CPU", cpus_per_run), ("GPU", gpus_per_run)):
            if need and total.get(name, 0) < need:
                self.close()
                raise LungsoundError(f"each run asks for {need:g} {name}(s) but the Ray cluster has "
                                     f"{total.get(name, 0):g}: lower --{name.lower()}s-per-run")
        self.remote = ray.remote(run_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        self.env, self.cwd = worker_env(), os.getcwd()
        if os.environ.get("RAY_ADDRESS") and self.env["MLFLOW_TRACKING_URI"].startswith("sqlite"):
            print(f"sweep: warning: the MLflow store is a sqlite file ({self.env['MLFLOW_TRACKING_URI']}); that is safe "
                  "only when every Ray node is this machine: set MLFLOW_TRACKING_URI to an MLflow server "
                  "(docs/sweeps.md)", file=sys.stderr)
        self.pending: list = []

    def adapt(self, cfg) -> None:
        """A task's torch threads are its CPUs, unless the config sets them; a task given no GPU runs on the CPU (Ray
        leaves every GPU visible to a task: it must not take one it was not given)."""
        cfg.train.threads = cfg.train.threads or max(1, int(self.cpus_per_run))
        if not self.gpus_per_run and cfg.train.device == "auto":
            cfg.train.device = "cpu"

    def submit(self, fn: Callable, item: Any):
        ref = self.remote.remote(fn, item, self.env, self.cwd)
        self.pending.append(ref)
        return ref

    def next_done(self) -> tuple[Any, bool, Any]:
        (ref,), _ = self.ray.wait(self.pending, num_returns=1)
        self.pending.remove(ref)
        try:
            return ref, True, self.ray.get(ref)
        except Exception as exc:  # RayTaskError (wrapping the task's exception), a dead worker, ...
            return ref, False, describe(exc)

    def cancel(self) -> None:
        """Interrupt the tasks still running (their runs end KILLED) and give them a moment to say so."""
        for ref in self.pending:
            self.ray.cancel(ref)
        if self.pending:
            self.ray.wait(self.pending, num_returns=len(self.pending), timeout=30)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def execute(fn: Callable, items: list, backend, labels: list[str] | None = None,
            progress: bool = True) -> tuple[dict[int, Any], dict[int, str]]:
    """`fn(item)` for every item on `backend`; an item that fails is submitted once more (`ATTEMPTS`). Returns the
    results and the failures (one line each), both by item index."""
    from tqdm.auto import tqdm

    labels = labels or [f"task {i}" for i in range(len(items))]
    pending = {backend.submit(fn, item): (i, 1) for i, item in enumerate(items)}
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    with tqdm(total=len(items), desc="sweep runs", unit="run", disable=not progress) as bar:
        try:
            while pending:
                handle, ok, value = backend.next_done()
                i, attempt = pending.pop(handle)
                if ok:
                    results[i] = value
                elif attempt < ATTEMPTS:
                    tqdm.write(f"sweep: {labels[i]} failed ({value}); retrying once", file=sys.stderr)
                    pending[backend.submit(fn, items[i])] = (i, attempt + 1)
                    continue
                else:
                    errors[i] = value
                    tqdm.write(f"sweep: {labels[i]} failed again ({value}); reported", file=sys.stderr)
                bar.update()
        except KeyboardInterrupt:
            backend.cancel()
            raise
    return results, errors
