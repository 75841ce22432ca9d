"""The driver: schedules the cells of a run on an executor and records what they return.

The driver walks the DAG: a cell is ready when every dependency is done; it is claimed
in the results store (so that a second driver on the same folder leaves it alone), run
on the executor (serial, pool or Ray), and recorded in one transaction when it returns.
A failing cell is retried ``retries`` times with exponential backoff, then recorded as
failed with its error and traceback; the cells that depend on it are skipped and the
rest of the grid goes on. Cells recorded as failed by an earlier run are skipped unless
``retry_failed`` (``ribench retry``), except those whose worker process died (failure
``worker``): every run tries them again. Killing the driver at any moment, even with
SIGKILL, loses at most the cells in flight: their claims go stale, the pool workers die
with the driver, and the next run on the same folder does exactly the missing cells.

When a pool worker dies, the pool is rebuilt and the cells that were in flight are
submitted again without counting an attempt against them, except the cell that was
running in the dead worker, which is charged one attempt. When that cell cannot be
told, none is charged, and a cell in flight during ``MAX_WORKER_LOSSES`` such deaths is
recorded as failed. A finished cell whose artifact is missing or damaged (its size, and
its SHA-256 when a pending cell is about to read it) is computed again.

Every event is appended to ``events.jsonl`` in the output folder.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..core.errors import ConfigError, DataError, UnknownNameError
from ..core.runtime import resolve_device
from ..data import build_suite
from .artifacts import ArtifactStore
from .execute import CellResult
from .executors import Outcome, PoolExecutor, RayExecutor, SerialExecutor, WorkerContext, clean_markers
from .plan import Cell, plan
from .progress import make_progress
from .spec import RunSpec
from .store import ResultsStore

RUNNERS = ("serial", "pool", "ray")
MAX_WORKER_LOSSES = 3  # deaths of an unknown worker a cell may be in flight for before it is recorded failed


@dataclass
class RunOptions:
    runner: str = "serial"
    workers: int = 2
    threads: int | None = None  # overrides the spec's `threads` (CPU threads every cell computes with)
    retries: int = 0
    backoff: float = 1.0  # seconds before the first retry, doubling each time
    retry_failed: bool = False  # rerun cells an earlier run recorded as failed
    address: str | None = None  # Ray cluster address (None: start a local one)
    stale_after: float = 120.0  # seconds without heartbeat before another driver's claim is stale
    poll: float = 0.5  # seconds between looks at cells claimed by another driver
    quiet: bool = False
    kinds: tuple[str, ...] | None = None  # run only cells of these kinds (e.g. `ribench predict`)

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ConfigError("runner", f"unknown runner {self.runner!r}; valid: {', '.join(RUNNERS)}")
        if self.workers < 1:
            raise ConfigError("workers", "must be at least 1")
        if self.retries < 0:
            raise ConfigError("retries", "must be 0 or more")


@dataclass
class RunOutcome:
    out_dir: Path
    total: int
    ran: int = 0
    cached: int = 0
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped: int = 0
    retried: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def select_tasks(spec: RunSpec, available: list[str]) -> list[str]:
    if spec.tasks == "all":
        return list(available)
    for t in spec.tasks:
        if t not in available:
            raise ConfigError("tasks", str(UnknownNameError(f"task of suite {spec.suite!r}", t, available)))
    return list(spec.tasks)


def environment(device: torch.device) -> dict[str, str]:
    return {"ribench": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "device": str(device), "threads": str(torch.get_num_threads())}


def plan_run(spec: RunSpec):
    """(suite, cells) of a spec."""
    suite = build_suite(spec.suite, seed=spec.data_seed, data_root=spec.data_root, suite_file=spec.suite_file,
                        options=spec.suite_options)
    suite_id = {"name": suite.name, "version": suite.version, "data_seed": spec.data_seed}
    return suite, plan(spec, select_tasks(spec, list(suite.tasks)), suite_id)


class EventLog:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._f = open(path, "a", buffering=1)
        except OSError as e:
            raise DataError(f"event log {path}: cannot open ({e})") from e

    def __call__(self, event: str, cell: Cell | None = None, **extra) -> None:
        rec = {"t": round(time.time(), 3), "event": event}
        if cell is not None:
            rec.update(key=cell.key, kind=cell.kind, labels=cell.labels)
        rec.update(extra)
        try:
            self._f.write(json.dumps(rec, default=str) + "\n")
        except OSError as e:
            raise DataError(f"event log {self.path}: cannot write ({e}); free disk space and run again") from e

    def close(self) -> None:
        with suppress(OSError):
            self._f.close()


def _shut_down(steps: list, raise_errors: bool) -> None:
    """Run every clean-up step. An error in one does not stop the others; the first is raised only
    when ``raise_errors`` (no earlier error is on its way out, which it would otherwise hide)."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - every step runs; the first error is kept
            first = first or e
    if first is not None and raise_errors:
        raise first


def _executor(opts: RunOptions, ctx: WorkerContext):
    if opts.runner == "serial":
        return SerialExecutor(ctx)
    if opts.runner == "pool":
        return PoolExecutor(ctx, opts.workers)
    return RayExecutor(ctx, opts.address, opts.workers, gpus_per_cell=1.0 if ctx.device.startswith("cuda") else 0.0)


def run(spec: RunSpec, out_dir: str | Path, quiet: bool = False, options: RunOptions | None = None) -> RunOutcome:
    """Run (or resume) ``spec`` with results in ``out_dir``; returns counts and failures."""
    opts = options or RunOptions(quiet=quiet)
    quiet = opts.quiet or quiet
    if opts.threads:  # the same as the spec's `threads` (every runner computes each cell with it)
        spec = spec.with_overrides(threads=opts.threads)
    t_start = time.perf_counter()
    out = Path(out_dir)
    device = resolve_device(spec.device)
    suite, cells = plan_run(spec)  # a bad spec fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if opts.kinds is not None:
        cells = [c for c in cells if c.kind in opts.kinds]
    (out / "spec.json").write_text(json.dumps(spec.model_dump(), indent=2))
    store = ResultsStore(out / "results.sqlite")
    corruptions = {k: list(v) for k, v in suite.corruptions.items()}
    eval_sets = list(suite.eval_sets)
    made = [c for c in cells if c.kind == "corrupt"]
    if made:  # the engine's corruption sets replace the suite's built-in ones
        eval_sets = [e for e in eval_sets if e not in corruptions]
        corruptions = {c.labels["task"]: [c.config["corruption"], c.config["severity"]] for c in made}
        eval_sets += list(corruptions)
    layout = {"pretrain": suite.pretrain.name, "tasks": list(suite.tasks), "eval_sets": eval_sets,
              "corruptions": corruptions}
    store.record_run(spec.model_dump(), {**environment(device), "suite": layout, "runner": opts.runner,
                                         "workers": str(opts.workers), "threads_per_cell": str(spec.threads)})
    ctx = WorkerContext(spec.model_dump(), str(out.resolve()), str(device))
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    events = EventLog(out / "events.jsonl")
    events("run_start", runner=opts.runner, workers=opts.workers, cells=len(cells), owner=owner)
    artifacts = ArtifactStore(out / "artifacts")
    # what killed writers left behind; every writer is on this host unless cells run on a Ray cluster
    removed = artifacts.clean_temporary(local_writers=not (opts.runner == "ray" and opts.address))
    clean_markers(out / ".workers")
    if removed:
        events("cleaned", files=[str(p) for p in removed])
    stop_beat = threading.Event()

    def beat() -> None:
        hb = ResultsStore(out / "results.sqlite")
        while not stop_beat.wait(min(10.0, opts.stale_after / 4)):
            with suppress(DataError):  # e.g. a full disk: the run's own next write reports it
                hb.heartbeat(owner)
        hb.close()

    def stop_heartbeat() -> None:
        stop_beat.set()
        beater.join()  # its connection closes before ours: no WAL files change after run() returns

    def end() -> None:
        result.seconds = time.perf_counter() - t_start
        events("run_end", ran=result.ran, cached=result.cached, failed=len(result.failed), skipped=result.skipped,
               seconds=round(result.seconds, 3))

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    executor = None
    result = RunOutcome(out, len(cells))
    ended_by_error = True
    try:
        executor = _executor(opts, ctx)
        with make_progress(quiet) as prog:
            _drive(cells, store, executor, opts, owner, result, events, prog, artifacts)
        ended_by_error = False
    finally:
        # every step runs even if one before it fails, and none hides the error that ended the run
        _shut_down([stop_heartbeat, executor.close if executor else (lambda: None),
                    lambda: store.release_claims(owner), store.close, end, events.close],
                   raise_errors=not ended_by_error)
    return result


def _reusable(cells: list[Cell], status: dict[str, str], artifacts: ArtifactStore, store: ResultsStore,
              events: EventLog, prog) -> set[str]:
    """Keys of the finished cells whose output can be used as it is.

    A finished cell's artifact must have its sealed size; one that a pending cell is about
    to read must also match its SHA-256. A damaged artifact is removed with the cell's
    record, so that the cell is computed again (and logged as ``damaged``), not failed.
    """
    read_now = {d for c in cells if status.get(c.key) != "done" for d in c.deps}
    done = set()
    for c in cells:
        if status.get(c.key) != "done":
            continue
        damage = artifacts.check(c.key, full=c.key in read_now) if c.produces_artifact else None
        if damage is None:
            done.add(c.key)
            continue
        events("damaged", c, reason=damage)
        prog.log(f"[yellow]recomputing[/yellow] {c.describe()}: {damage}")
        artifacts.discard(c.key)
        store.forget_cell(c.key)
    return done


def _drive(cells, store, executor, opts, owner, result, events, prog, artifacts) -> None:
    """Event loop of the driver: O(1) work per cell and per finished dependency."""
    by_key = {c.key: c for c in cells}
    children: dict[str, list[Cell]] = {k: [] for k in by_key}
    for c in cells:
        for d in c.deps:
            children.setdefault(d, []).append(c)
    status = store.statuses()
    done = _reusable(cells, status, artifacts, store, events, prog)
    result.cached = len(done)
    grid = prog.add_task(f"grid ({executor.name})", total=len(cells))
    prog.advance(grid, len(done))
    # a cell whose worker died is tried again by every run; one that failed by itself waits for `ribench retry`
    failed_before = set() if opts.retry_failed else {k for k, f in store.failures().items() if f != "worker"}
    missing = {c.key: sum(d not in done for d in c.deps) for c in cells if c.key not in done}
    ready = deque(c for c in cells if c.key in missing and missing[c.key] == 0)
    elsewhere: set[str] = set()  # claimed by another live driver
    delayed: list[tuple[float, Cell]] = []  # (not before, cell) waiting out a retry backoff
    running: dict[Future, tuple[Cell, int, int]] = {}  # future -> (cell, attempt, progress task)
    attempts: dict[str, int] = {}
    losses: dict[str, int] = {}  # deaths of an unknown worker while the cell was in flight
    records: dict[str, CellResult] = {}
    broken: set[str] = set()

    def deps_of(cell: Cell) -> dict[str, CellResult]:
        for d in cell.deps:
            if d not in records:
                records[d] = CellResult(store.cell_metrics(d), store.cell_info(d))
        return {d: records[d] for d in cell.deps}

    def finished(key: str, cached: bool) -> None:
        done.add(key)
        missing.pop(key, None)
        if cached:
            result.cached += 1
            prog.advance(grid)
        for child in children.get(key, ()):
            if child.key in missing:
                missing[child.key] -= 1
                if missing[child.key] == 0:
                    ready.append(child)

    def block(key: str, reason: str) -> None:
        """Skip everything downstream of a cell that cannot finish in this run."""
        stack = [c for c in children.get(key, ())]
        while stack:
            c = stack.pop()
            if c.key in broken or c.key not in missing:
                continue
            broken.add(c.key)
            missing.pop(c.key)
            result.skipped += 1
            events("skipped", c, reason=reason)
            prog.advance(grid)
            stack.extend(children.get(c.key, ()))

    def fail(cell: Cell, attempt: int, outcome: Outcome) -> None:
        store.fail_cell(cell.key, cell.kind, cell.labels, cell.config, time.time() - outcome.seconds, outcome.error,
                        outcome.traceback, failure=outcome.failure)
        broken.add(cell.key)
        missing.pop(cell.key, None)
        result.failed.append((cell, outcome.error))
        events("failed", cell, attempt=attempt, error=outcome.error, worker=outcome.worker, failure=outcome.failure)
        prog.log(f"[red]failed[/red] {cell.describe()}: {outcome.error}")
        prog.advance(grid)
        block(cell.key, f"dependency {cell.describe()} failed")

    def on_outcome(cell: Cell, attempt: int, outcome: Outcome) -> None:
        if outcome.ok:
            store.finish_cell(cell.key, cell.kind, cell.labels, cell.config, time.time() - outcome.seconds,
                              outcome.result.metrics, {**outcome.result.info, "worker": outcome.worker,
                                                       "attempts": attempt})
            result.ran += 1
            events("done", cell, attempt=attempt, seconds=round(outcome.seconds, 3), worker=outcome.worker)
            prog.advance(grid)
            finished(cell.key, cached=False)
        elif attempt <= opts.retries:
            delay = opts.backoff * 2 ** (attempt - 1)
            delayed.append((time.time() + delay, cell))
            result.retried += 1
            events("retry", cell, attempt=attempt, error=outcome.error, delay=delay)
            prog.log(f"[yellow]retrying[/yellow] {cell.describe()} in {delay:g} s: {outcome.error}")
        else:
            fail(cell, attempt, outcome)

    def on_pool_break() -> None:
        """A worker died, and every cell in flight is lost with its pool. The cell that ran in the
        dead worker is charged that attempt; the others go back to the queue as if never started."""
        lost = dict(running)
        running.clear()
        wait(list(lost), timeout=60)  # a broken pool fails all its futures at once
        death = executor.recover({cell.key for cell, _, _ in lost.values()})
        events("worker_died", message=death.message, culprit=death.culprit)
        prog.log(f"[yellow]worker pool rebuilt[/yellow]: {death.message}")
        for fut, (cell, attempt, task) in lost.items():
            prog.remove_task(task)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                on_outcome(cell, attempt, fut.result())  # it finished just before the death
            elif cell.key == death.culprit:
                on_outcome(cell, attempt, Outcome(False, error=death.message, failure="worker"))
            elif not death.attributed and losses.get(cell.key, 0) + 1 >= MAX_WORKER_LOSSES:
                fail(cell, attempt, Outcome(False, error=f"a worker process died {MAX_WORKER_LOSSES} times while this "
                                            f"cell ran; the last time: {death.message}", failure="worker"))
            else:
                if not death.attributed:
                    losses[cell.key] = losses.get(cell.key, 0) + 1
                attempts[cell.key] -= 1  # not its fault: this attempt does not count
                ready.appendleft(cell)
                events("requeued", cell, reason=death.message)

    while missing:
        now = time.time()
        for item in [d for d in delayed if d[0] <= now]:
            delayed.remove(item)
            ready.appendleft(item[1])
        while ready and len(running) < executor.slots:
            cell = ready.popleft()
            if cell.key not in missing:
                continue
            if cell.key in failed_before:
                broken.add(cell.key)
                missing.pop(cell.key)
                result.skipped += 1
                events("skipped", cell, reason="failed in an earlier run (ribench retry reruns it)")
                prog.advance(grid)
                block(cell.key, "a dependency failed in an earlier run")
                continue
            if not store.claim(cell.key, owner, opts.stale_after):
                if store.status(cell.key) == "done":
                    finished(cell.key, cached=True)
                else:
                    elsewhere.add(cell.key)
                continue
            attempt = attempts[cell.key] = attempts.get(cell.key, 0) + 1
            task = prog.add_task(cell.describe(), total=1.0)
            events("start", cell, attempt=attempt)
            try:
                fut = executor.submit(cell, deps_of(cell),
                                      lambda f, msg, t=task: prog.update(t, completed=f, status=msg))
            except BrokenProcessPool as e:  # a worker died while the pool was idle: it took no cell down
                prog.remove_task(task)
                attempts[cell.key] -= 1
                ready.appendleft(cell)
                events("requeued", cell, reason=str(e))
                on_pool_break()
                break
            running[fut] = (cell, attempt, task)
        if running:
            complete, _ = wait(list(running), timeout=opts.poll, return_when=FIRST_COMPLETED)
            if any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool) for f in complete):
                on_pool_break()
                continue
            for fut in complete:
                cell, attempt, task = running.pop(fut)
                prog.remove_task(task)
                try:
                    outcome: Outcome = fut.result()
                except Exception as e:  # noqa: BLE001 - e.g. a Ray worker or node lost mid-cell
                    outcome = Outcome(False, error=f"{type(e).__name__}: {e}", failure="worker")
                on_outcome(cell, attempt, outcome)
            continue
        if ready:
            continue
        if not elsewhere and not delayed:
            break  # nothing runnable is left (everything else is blocked)
        time.sleep(opts.poll)  # wait for other drivers' cells, or a retry backoff
        if elsewhere:
            status = store.statuses()
            live = store.live_claims(opts.stale_after, exclude_owner=owner)
            for key in list(elsewhere):
                if status.get(key) == "done":
                    elsewhere.discard(key)
                    finished(key, cached=True)
                elif key not in live:  # the other driver died or gave up on it: take it over
                    elsewhere.discard(key)
                    ready.append(by_key[key])
