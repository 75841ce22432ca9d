"""Where cells run: in the driver (serial), in local worker processes (pool), or as Ray
tasks on a cluster (ray). Every executor runs the same function, ``execute_cell``, and
returns ``concurrent.futures.Future`` objects holding an ``Outcome``; the driver alone
writes the results store. Artifacts move by key through the shared artifact folder.
Each process holds one Workspace (``workspace``): the serial executor's is made from the
suite the driver built; a worker builds its own once, with ``execute.build_run_suite``.

Pool workers die with their driver (Linux: ``PR_SET_PDEATHSIG``; elsewhere a thread that
watches the parent pid). Each pool worker names the cell it is running in a marker file
(``<out>/.workers/<host>.<pid>``), so that when one dies the driver can tell which cell
was running in it (``PoolExecutor.recover``).
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.errors import ConfigError
from ..core.runtime import resolve_device
from ..core.types import Suite
from .artifacts import ArtifactStore, pid_alive
from .execute import CellResult, Deps, Workspace, build_run_suite
from .plan import Cell
from .spec import RunSpec

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class WorkerContext:
    """What a worker needs to rebuild the run's Workspace (all picklable)."""

    spec: RunSpec
    out_dir: str
    device: str


@dataclass
class Outcome:
    ok: bool
    result: CellResult | None = None
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    worker: str = ""
    failure: str = "cell"  # what failed (store.FAILURES): "cell" (its code raised) or "worker" (its process died)


@dataclass(frozen=True)
class WorkerDeath:
    """What the driver learns when a pool worker died.

    ``attributed``: the dead worker is known. ``culprit``: the key of the cell that was
    running in it (None when it died between cells, or when it cannot be told).
    """

    message: str
    culprit: str | None = None
    attributed: bool = False


_CURRENT: list[tuple[WorkerContext, Workspace]] = []  # this process's Workspace, with the context it was made for


def workspace(ctx: WorkerContext, suite: Suite | None = None) -> Workspace:
    """This process's Workspace for ``ctx``, made once (``suite``: one already built, else built here)."""
    if not _CURRENT or _CURRENT[0][0] != ctx:
        _CURRENT.clear()
        ws = Workspace(ctx.spec, suite if suite is not None else build_run_suite(ctx.spec),
                       ArtifactStore(os.path.join(ctx.out_dir, "artifacts")), resolve_device(ctx.device))
        _CURRENT.append((ctx, ws))
    return _CURRENT[0][1]


def _warm_up(ctx: WorkerContext) -> None:
    workspace(ctx)
    time.sleep(0.2)  # hold this worker a moment so the next warm-up lands on another one


def execute_cell(ctx: WorkerContext, cell: Cell, deps: Deps, progress: Progress | None = None,
                 suite: Suite | None = None) -> Outcome:
    """Run one cell; never raises for a failing cell (its error comes back in the Outcome).

    The artifact of a cell that makes one is sealed (size and SHA-256 recorded) before the
    cell counts as finished. ``suite``: the run's, when this process has it already.
    """
    worker = f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    try:
        ws = workspace(ctx, suite)
        res = ws.run_cell(cell, deps, progress or (lambda f, m: None))  # under the spec's `threads`
        if cell.produces_artifact:
            ws.artifacts.seal(cell.key)
        return Outcome(True, res, seconds=time.perf_counter() - t0, worker=worker)
    except MemoryError as e:
        return Outcome(False, error=f"out of memory: {e}", traceback=traceback.format_exc(),
                       seconds=time.perf_counter() - t0, worker=worker)
    except Exception as e:  # noqa: BLE001 - every failure of a cell is recorded, never fatal to the grid
        kind = "out of memory" if "out of memory" in str(e).lower() else type(e).__name__
        return Outcome(False, error=f"{kind}: {e}", traceback=traceback.format_exc(),
                       seconds=time.perf_counter() - t0, worker=worker)


class SerialExecutor:
    """Runs each cell at submission, in the driver process (progress bars per cell), over the
    driver's ``suite`` when it is given."""

    name = "serial"
    slots = 1

    def __init__(self, ctx: WorkerContext, suite: Suite | None = None):
        self.ctx, self.suite = ctx, suite

    def submit(self, cell: Cell, deps: Deps, progress: Progress | None = None) -> Future:
        fut: Future = Future()
        fut.set_result(execute_cell(self.ctx, cell, deps, progress, self.suite))
        return fut

    def close(self) -> None:
        _CURRENT.clear()


# --- pool workers ---------------------------------------------------------------
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_MARKER_DIR: Path | None = None  # where this pool worker names the cell it runs


def _marker_name(pid: int) -> str:
    return f"{socket.gethostname()}.{pid}"


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (the driver) dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)

    def watch() -> None:  # the portable way, and a second guard on Linux
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="ribench-parent-watch", daemon=True).start()


def _init_pool_worker(parent: int, marker_dir: str) -> None:
    global _MARKER_DIR
    _die_with_parent(parent)
    _MARKER_DIR = Path(marker_dir)
    _MARKER_DIR.mkdir(parents=True, exist_ok=True)
    _mark("")  # registered: this worker runs no cell yet


def _mark(key: str) -> None:
    """Name (atomically) the cell this worker is running, for the driver to read if the worker dies."""
    if _MARKER_DIR is None:
        return
    dest = _MARKER_DIR / _marker_name(os.getpid())
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(key)
    os.replace(tmp, dest)


def _pool_cell(ctx: WorkerContext, cell: Cell, deps: Deps) -> Outcome:
    _mark(cell.key)
    return execute_cell(ctx, cell, deps)


def describe_exit(code: int | None) -> str:
    """'signal 9 (SIGKILL)' for a process killed by a signal, 'exit code 3' otherwise."""
    if code is None:
        return "unknown exit status"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def attribute_death(exit_codes: dict[int, int | None], running: dict[int, str], in_flight: set[str]) -> WorkerDeath:
    """Which cell, if any, took its worker down, from the exit codes of a broken pool's workers.

    When a worker dies, the pool terminates the others with SIGTERM, so the one that died
    on its own is the one whose exit was not SIGTERM. ``running``: pid -> key the worker
    named in its marker (empty: between cells). Exactly one such worker gives an
    attributed death; none or several (e.g. SIGTERM from outside) cannot be told apart.
    """
    dead = {pid: code for pid, code in exit_codes.items() if code not in (None, 0, -signal.SIGTERM)}
    if len(dead) != 1:
        codes = ", ".join(f"{pid}: {describe_exit(c)}" for pid, c in sorted(exit_codes.items())) or "none known"
        return WorkerDeath(f"a worker process died and which one cannot be told (exit status of the workers: {codes})")
    (pid, code), = dead.items()
    key = running.get(pid, "")
    if key in in_flight:
        return WorkerDeath(f"worker process {pid} died ({describe_exit(code)}) while running this cell", key, True)
    return WorkerDeath(f"worker process {pid} died ({describe_exit(code)}) between cells", None, True)


def clean_markers(marker_dir: str | Path) -> None:
    """Remove the markers (and half-written ones) of this host's workers that are gone, as a killed
    driver leaves them behind."""
    host = socket.gethostname()
    for p in [*Path(marker_dir).glob(f"{host}.*"), *Path(marker_dir).glob(f".{host}.*.tmp")]:
        pid = p.name.removeprefix(".").removesuffix(".tmp")[len(host) + 1:]
        if pid.isdigit() and not pid_alive(int(pid)):
            with suppress(FileNotFoundError):
                p.unlink()


class PoolExecutor:
    """Local worker processes (spawned, so no thread state is inherited from the driver).

    The workers die with the driver: at once when they have started, at the end of their
    start-up (imports, a few seconds) when the driver dies during it. Submit from one thread
    (the driver's): on Linux a worker is told of its parent's death when the thread that
    started it ends.
    """

    name = "pool"

    def __init__(self, ctx: WorkerContext, workers: int):
        self.ctx, self.slots = ctx, workers
        self.marker_dir = Path(ctx.out_dir) / ".workers"
        clean_markers(self.marker_dir)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=mp.get_context("spawn"),
                                   initializer=_init_pool_worker, initargs=(os.getpid(), str(self.marker_dir)))
        for _ in range(self.slots):  # start every worker now: imports and data load overlap the first cells
            pool.submit(_warm_up, self.ctx)
        return pool

    def submit(self, cell: Cell, deps: Deps, progress: Progress | None = None) -> Future:
        return self._pool.submit(_pool_cell, self.ctx, cell, deps)

    def recover(self, in_flight: set[str]) -> WorkerDeath:
        """After a worker died (the pool is broken): which cell it was running, and a new pool.

        ``in_flight``: keys of the cells submitted and not finished. Every one of them is
        lost with the broken pool; the driver submits them again.
        """
        # ProcessPoolExecutor keeps its workers in ``_processes`` (pid -> Process); without it, no
        # death can be attributed and every cell in flight is requeued uncharged
        procs = dict(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=True, cancel_futures=True)
        for proc in procs.values():
            proc.join(timeout=30)
        running = {}
        for pid in procs:
            marker = self.marker_dir / _marker_name(pid)
            with suppress(OSError):
                running[pid] = marker.read_text()
                marker.unlink()
        death = attribute_death({pid: proc.exitcode for pid, proc in procs.items()}, running, in_flight)
        self._pool = self._new_pool()
        return death

    def close(self) -> None:
        procs = dict(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=True, cancel_futures=True)
        for pid in procs:
            with suppress(FileNotFoundError):
                (self.marker_dir / _marker_name(pid)).unlink()


RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # Ray's token authentication


def ray_token_available(environ: dict[str, str] | os._Environ, home: Path) -> bool:
    """Whether Ray would find an authentication token: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``
    names, or ``~/.ray/auth_token`` (the places Ray 2.5x+ reads, in that order)."""
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser().is_file() if path else (home / ".ray" / "auth_token").is_file()


def _use_ray_token_if_available() -> None:
    """Send this user's Ray token to the cluster when there is one and ``RAY_AUTH_MODE`` is unset.

    Ray turns token authentication on by itself only for clusters it finds locally; joining
    an address, a driver sends no token unless ``RAY_AUTH_MODE=token``. A token sent to a
    cluster without authentication is ignored, so sending one is always safe. An explicit
    ``RAY_AUTH_MODE`` (e.g. ``disabled``) is left alone.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None or not ray_token_available(os.environ, Path.home()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    with suppress(ImportError, AttributeError):
        from ray._raylet import Config

        Config.initialize("")  # Ray caches its configuration: make this process read the mode again


def _loopback_cluster(ray, workers: int) -> None:
    """Start a local Ray cluster whose servers listen on 127.0.0.1 only.

    Ray binds its servers to the node's IP address; it takes the loopback address only
    when multi-node clusters are off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once
    when Ray is imported), so that switch is set for the start of the cluster.
    """
    constants = importlib.import_module("ray._private.ray_constants")
    var = getattr(constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    before_env, before = os.environ.get(var), getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[var] = "0"
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    finally:
        constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = before_env
    ip = ray.util.get_node_ip_address()  # a Ray that ignored the switch is caught here
    if ip not in ("127.0.0.1", "::1"):
        ray.shutdown()
        raise ConfigError("runner", f"the local Ray cluster would listen on {ip}, not only on 127.0.0.1; start a "
                          "cluster yourself (`ray start --head`) and pass its --address")


class RayExecutor:
    """Each cell is a Ray task with the resources its kind declares.

    ``address``: a running cluster (``ray://...`` or ``host:port``), or None to start a
    local one, which listens on 127.0.0.1 only. Joining an address, the user's Ray token
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) is sent when
    there is one. Every node must see ``out_dir`` (the artifact store) at the same path.
    """

    name = "ray"

    def __init__(self, ctx: WorkerContext, address: str | None, workers: int, gpus_per_cell: float = 0.0):
        try:
            import ray
        except ImportError:
            raise ConfigError("runner", "the ray runner needs Ray: pip install 'ribench[ray]'") from None
        self.ray = ray
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            if address:
                _use_ray_token_if_available()
                try:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
                    raise ConfigError("address", f"cannot join the Ray cluster at {address} ({e}); check the address "
                                      "and, if the cluster uses token authentication, that its token is in "
                                      "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token") from e
            else:
                _loopback_cluster(ray, workers)
        self.ctx, self.slots = ctx, max(1, int(ray.cluster_resources().get("CPU", workers)))
        self._remote = ray.remote(execute_cell)
        self.gpus_per_cell = gpus_per_cell

    def submit(self, cell: Cell, deps: Deps, progress: Progress | None = None) -> Future:
        res = cell.resources()
        ref = self._remote.options(num_cpus=res["cpus"], num_gpus=self.gpus_per_cell if res["gpu"] else 0,
                                   memory=res["memory"], max_retries=2).remote(self.ctx, cell, deps)
        return ref.future()

    def close(self) -> None:
        """Disconnect (and stop the local cluster this executor started); a connection made by the caller stays."""
        if self._owns_connection:
            self.ray.shutdown()
