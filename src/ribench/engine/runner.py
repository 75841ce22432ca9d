"""The driver: schedules the cells of a run on an executor and records what they return.

The driver walks the DAG: a cell is ready when every dependency is done; it is claimed
in the results store (so that a second driver on the same folder leaves it alone), run
on the executor (serial, pool or Ray), and recorded in one transaction when it returns.
A failing cell is retried ``retries`` times with exponential backoff, then recorded as
failed with its error and traceback; the cells that depend on it are skipped and the
rest of the grid goes on. Cells recorded as failed by an earlier run are skipped unless
``retry_failed`` (``ribench retry``). Killing the driver at any moment, even with
SIGKILL, loses at most the cells in flight: their claims go stale and the next run on
the same folder does exactly the missing cells. Every event is appended to
``events.jsonl`` in the output folder.
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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..core.errors import ConfigError, UnknownNameError
from ..core.runtime import resolve_device
from ..data import build_suite
from .artifacts import ArtifactStore
from .execute import CellResult
from .executors import Outcome, PoolExecutor, RayExecutor, SerialExecutor, WorkerContext
from .plan import Cell, plan
from .progress import make_progress
from .spec import RunSpec
from .store import ResultsStore

RUNNERS = ("serial", "pool", "ray")


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
        self._f = open(path, "a", buffering=1)

    def __call__(self, event: str, cell: Cell | None = None, **extra) -> None:
        rec = {"t": round(time.time(), 3), "event": event}
        if cell is not None:
            rec.update(key=cell.key, kind=cell.kind, labels=cell.labels)
        rec.update(extra)
        self._f.write(json.dumps(rec, default=str) + "\n")

    def close(self) -> None:
        self._f.close()


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
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    suite, cells = plan_run(spec)
    if opts.kinds is not None:
        cells = [c for c in cells if c.kind in opts.kinds]
    (out / "spec.json").write_text(json.dumps(spec.model_dump(), indent=2))
    ArtifactStore(out / "artifacts")
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
    ctx = WorkerContext(spec.model_dump(), str(out.resolve()), str(device), spec.threads)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    events = EventLog(out / "events.jsonl")
    events("run_start", runner=opts.runner, workers=opts.workers, cells=len(cells), owner=owner)
    stop_beat = threading.Event()

    def beat() -> None:
        hb = ResultsStore(out / "results.sqlite")
        while not stop_beat.wait(min(10.0, opts.stale_after / 4)):
            hb.heartbeat(owner)
        hb.close()

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    executor = _executor(opts, ctx)
    result = RunOutcome(out, len(cells))
    try:
        with make_progress(quiet) as prog:
            _drive(cells, store, executor, opts, owner, result, events, prog, ArtifactStore(out / "artifacts"))
    finally:
        stop_beat.set()
        beater.join()  # its connection closes before ours: no WAL files change after run() returns
        executor.close()
        store.release_claims(owner)
        store.close()
        result.seconds = time.perf_counter() - t_start
        events("run_end", ran=result.ran, cached=result.cached, failed=len(result.failed), skipped=result.skipped,
               seconds=round(result.seconds, 3))
        events.close()
    return result


def _drive(cells, store, executor, opts, owner, result, events, prog, artifacts) -> None:
    """Event loop of the driver: O(1) work per cell and per finished dependency."""
    by_key = {c.key: c for c in cells}
    children: dict[str, list[Cell]] = {k: [] for k in by_key}
    for c in cells:
        for d in c.deps:
            children.setdefault(d, []).append(c)
    status = store.statuses()
    done = {c.key for c in cells
            if status.get(c.key) == "done" and (not c.produces_artifact or artifacts.has(c.key))}
    result.cached = len(done)
    grid = prog.add_task(f"grid ({executor.name})", total=len(cells))
    prog.advance(grid, len(done))
    failed_before = {k for k, v in status.items() if v == "failed"} if not opts.retry_failed else set()
    missing = {c.key: sum(d not in done for d in c.deps) for c in cells if c.key not in done}
    ready = deque(c for c in cells if c.key in missing and missing[c.key] == 0)
    elsewhere: set[str] = set()  # claimed by another live driver
    delayed: list[tuple[float, Cell]] = []  # (not before, cell) waiting out a retry backoff
    running: dict[Future, tuple[Cell, int, int]] = {}  # future -> (cell, attempt, progress task)
    attempts: dict[str, int] = {}
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

    def on_outcome(cell: Cell, attempt: int, outcome: Outcome) -> None:
        started = time.time() - outcome.seconds
        if outcome.ok:
            store.finish_cell(cell.key, cell.kind, cell.labels, cell.config, started, outcome.result.metrics,
                              {**outcome.result.info, "worker": outcome.worker, "attempts": attempt})
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
            store.fail_cell(cell.key, cell.kind, cell.labels, cell.config, started, outcome.error, outcome.traceback)
            broken.add(cell.key)
            missing.pop(cell.key, None)
            result.failed.append((cell, outcome.error))
            events("failed", cell, attempt=attempt, error=outcome.error, worker=outcome.worker)
            prog.log(f"[red]failed[/red] {cell.describe()}: {outcome.error}")
            prog.advance(grid)
            block(cell.key, f"dependency {cell.describe()} failed")

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
            fut = executor.submit(cell, deps_of(cell), lambda f, msg, t=task: prog.update(t, completed=f, status=msg))
            running[fut] = (cell, attempt, task)
        if running:
            complete, _ = wait(list(running), timeout=opts.poll, return_when=FIRST_COMPLETED)
            for fut in complete:
                cell, attempt, task = running.pop(fut)
                prog.remove_task(task)
                try:
                    outcome: Outcome = fut.result()
                except BrokenProcessPool as e:
                    outcome = Outcome(False, error=f"worker process died: {e}")
                    executor.reset()
                except Exception as e:  # noqa: BLE001 - e.g. a Ray worker lost mid-cell
                    outcome = Outcome(False, error=f"{type(e).__name__}: {e}")
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


