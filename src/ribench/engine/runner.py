"""The driver: schedules the cells of a run on an executor and records what they return.

The driver walks the DAG: a cell is ready when every dependency is done; it is claimed
in the results store (so that a second driver on the same folder leaves it alone), run
on the executor (serial, pool or Ray), and recorded in one transaction when it returns.
A failing cell is retried ``retries`` times with exponential backoff, then recorded as
failed with its error and traceback; the cells that depend on it are skipped and the
rest of the grid goes on. Cells recorded as failed by an earlier run are skipped unless
``retry_failed`` (``ribench retry``), except those whose worker process died (failure
``worker``): every run tries them again, and so does a run whose ``OUTCOME_FLAGS`` (such
as ``trust_checkpoint``) differ from those of the run the cell failed in. Every skipped
cell is reported (``RunOutcome.skipped_cells``) with the failed cell it waits on. Killing the driver at any moment, even with
SIGKILL, loses at most the cells in flight: their claims go stale, the pool workers die
with the driver, and the next run on the same folder does exactly the missing cells.

When a pool worker dies, the pool is rebuilt and the cells that were in flight are
submitted again without counting an attempt against them, except the cell that was
running in the dead worker, which is charged one attempt. When that cell cannot be
told, none is charged, and a cell in flight during ``MAX_WORKER_LOSSES`` such deaths is
recorded as failed. A finished cell whose artifact is missing or damaged (its size, and
its SHA-256 when a pending cell is about to read it) is computed again.

Finished cells take the labels of the current plan: a method's label is no part of a
cell's key (engine/names.py), so a relabelled method reuses its cells under its new name.
Every event is appended to ``events.jsonl`` in the output folder.
"""

from __future__ import annotations

import importlib.util
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
from typing import Any

import torch

from .. import __version__
from ..core.errors import ConfigError, DataError, UnknownNameError
from ..core.registry import METHODS
from ..core.runtime import resolve_device
from ..core.types import Suite
from ..methods.heads import check_head_for_suite
from .artifacts import ArtifactStore
from .execute import CellResult, build_run_suite
from .executors import Outcome, PoolExecutor, RayExecutor, SerialExecutor, WorkerContext, clean_markers
from .plan import Cell, plan
from .progress import CellTimes, format_eta, make_progress
from .spec import RunSpec
from .store import ResultsStore

RUNNERS = ("serial", "pool", "ray")
# spec fields that are no part of any cell key but decide whether a cell can succeed: a run
# that changes one retries the cells that failed under the other value
OUTCOME_FLAGS = ("trust_checkpoint",)
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
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise ConfigError("threads", "must be between 1 and 1024")
        if self.runner == "ray" and importlib.util.find_spec("ray") is None:  # before the grid is planned
            raise ConfigError("runner", "the ray runner needs Ray: pip install 'ribench[ray]'")


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
    # every skipped cell and why: "waits on <the failed cell>: <its error>"
    skipped_cells: list[tuple[Cell, str]] = field(default_factory=list)

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


def check_out_dir(out: Path) -> None:
    """Raise DataError unless ``out`` can become (or already is) a run's folder: not a file, under
    no file, in a writable folder. Checked before anything is computed."""
    if out.exists() and not out.is_dir():
        raise DataError(f"cannot write the run into {out}: it is a file, not a folder (give --out a new folder, or "
                        "the folder of an earlier run to resume it)")
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"cannot write the run into {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"cannot write the run into {out}: folder {parent} is not writable")


def environment(device: torch.device) -> dict[str, str]:
    return {"ribench": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "device": str(device), "threads": str(torch.get_num_threads())}


def plan_run(spec: RunSpec) -> tuple[Suite, list[Cell]]:
    """(suite, cells) of a spec."""
    suite = build_run_suite(spec)
    check_heads_for_suite(spec, suite)
    suite_id = {"name": suite.name, "version": suite.version, "data_seed": spec.data_seed}
    return suite, plan(spec, select_tasks(spec, list(suite.tasks)), suite_id)


def check_heads_for_suite(spec: RunSpec, suite: Suite) -> None:
    """Every method's head policy is one ``suite`` can give (methods.heads.check_head_for_suite):
    found when the run is planned, naming the method entry."""
    if not suite.separate_pretrain_labels:
        return
    for i, entry in enumerate(spec.methods):
        head = getattr(getattr(METHODS.create(entry.name, **entry.params), "config", None), "head", None)
        if isinstance(head, str):
            check_head_for_suite(head, suite, f"methods[{i}].params.head")


def suite_layout(suite: Suite, cells: list[Cell]) -> dict[str, Any]:
    """The run's data as recorded with it: pretraining domain, tasks, eval sets and corruption sets
    (the engine's corruption sets, when the run makes them, in place of the suite's built-in ones)."""
    corruptions = {k: list(v) for k, v in suite.corruptions.items()}
    eval_sets = list(suite.eval_sets)
    made = [c for c in cells if c.kind == "corrupt"]
    if made:
        eval_sets = [e for e in eval_sets if e not in corruptions]
        corruptions = {c.labels["task"]: [c.config["corruption"], c.config["severity"]] for c in made}
        eval_sets += list(corruptions)
    layout = {"pretrain": suite.pretrain.name, "tasks": list(suite.tasks), "eval_sets": eval_sets,
              "corruptions": corruptions}
    if suite.separate_pretrain_labels:
        layout.update(pretrain_classes=list(suite.pretrain_label_space), classes=list(suite.classes),
                      class_map=None if suite.class_map is None else list(suite.class_map))
    return layout


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


def _executor(opts: RunOptions, ctx: WorkerContext, suite: Suite):
    if opts.runner == "serial":
        return SerialExecutor(ctx, suite)
    if opts.runner == "pool":
        return PoolExecutor(ctx, opts.workers)
    return RayExecutor(ctx, opts.address, opts.workers, gpus_per_cell=1.0 if ctx.device.startswith("cuda") else 0.0)


class _Heartbeat:
    """A thread that keeps this driver's claims alive, on its own connection to the store."""

    def __init__(self, db: Path, owner: str, stale_after: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(db, owner, min(10.0, stale_after / 4)), daemon=True)
        self._thread.start()

    def _beat(self, db: Path, owner: str, every: float) -> None:
        hb = ResultsStore(db)
        while not self._stop.wait(every):
            with suppress(DataError):  # e.g. a full disk: the run's own next write reports it
                hb.heartbeat(owner)
        hb.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()  # its connection closes before ours: no WAL files change after run() returns


def run(spec: RunSpec, out_dir: str | Path, quiet: bool = False, options: RunOptions | None = None) -> RunOutcome:
    """Run (or resume) ``spec`` with results in ``out_dir``; returns counts and failures."""
    opts = options or RunOptions(quiet=quiet)
    quiet = opts.quiet or quiet
    if opts.threads:  # the same as the spec's `threads` (every runner computes each cell with it)
        spec = spec.model_copy(update={"threads": opts.threads})
    t_start = time.perf_counter()
    out = Path(out_dir)
    check_out_dir(out)
    device = resolve_device(spec.device)
    suite, cells = plan_run(spec)  # a bad spec fails here, before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write the run into {out}: {e.strerror or e}") from None
    # the whole plan, whatever part runs now: what this folder's results are made of (store.shown_keys)
    planned = {c.key: {"kind": c.kind, "labels": c.labels, "deps": list(c.deps)} for c in cells}
    if opts.kinds is not None:
        cells = [c for c in cells if c.kind in opts.kinds]
    (out / "spec.json").write_text(json.dumps(spec.model_dump(), indent=2))
    store = ResultsStore(out / "results.sqlite")
    reopened = _failed_under_other_flags(spec, store)
    store.record_run(spec.model_dump(), {**environment(device), "suite": suite_layout(suite, cells),
                                         "runner": opts.runner, "workers": str(opts.workers),
                                         "threads_per_cell": str(spec.threads),
                                         "precision": spec.precision, "compile": str(spec.compile),
                                         "loader_workers": str(spec.loader_workers)}, planned)
    relabelled = store.relabel({c.key: c.labels for c in reversed(cells)})  # the first cell of a key wins
    ctx = WorkerContext(spec, str(out.resolve()), str(device))
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    events = EventLog(out / "events.jsonl")
    events("run_start", runner=opts.runner, workers=opts.workers, cells=len(cells), owner=owner)
    artifacts = ArtifactStore(out / "artifacts")
    # what killed writers left behind; every writer is on this host unless cells run on a Ray cluster
    removed = artifacts.clean_temporary(local_writers=not (opts.runner == "ray" and opts.address))
    clean_markers(out / ".workers")
    if removed:
        events("cleaned", files=[str(p) for p in removed])
    if relabelled:  # a method's label changed, not what it computes (engine/names.py)
        events("relabelled", cells=len(relabelled))

    def end() -> None:
        result.seconds = time.perf_counter() - t_start
        events("run_end", ran=result.ran, cached=result.cached, failed=len(result.failed), skipped=result.skipped,
               seconds=round(result.seconds, 3))

    heartbeat = _Heartbeat(out / "results.sqlite", owner, opts.stale_after)
    executor = None
    result = RunOutcome(out, len(cells))
    ended_by_error = True
    try:
        executor = _executor(opts, ctx, suite)
        with make_progress(quiet) as prog:
            _drive(cells, store, executor, opts, owner, result, events, prog, artifacts, reopened)
        ended_by_error = False
    finally:
        # every step runs even if one before it fails, and none hides the error that ended the run
        _shut_down([heartbeat.stop, executor.close if executor else (lambda: None),
                    lambda: store.release_claims(owner), store.close, end, events.close],
                   raise_errors=not ended_by_error)
    return result


def _failed_under_other_flags(spec: RunSpec, store: ResultsStore) -> dict[str, str]:
    """Failed cell -> the ``OUTCOME_FLAGS`` this run changes from the run it failed in
    (e.g. ``"trust_checkpoint false -> true"``); those cells are tried again."""
    now = spec.model_dump()
    out = {}
    for key, then in store.failure_specs().items():
        if then is None:
            continue
        changed = [f"{f} {_flag(then.get(f, type(spec).model_fields[f].default))} -> {_flag(now[f])}"
                   for f in OUTCOME_FLAGS if then.get(f, type(spec).model_fields[f].default) != now[f]]
        if changed:
            out[key] = ", ".join(changed)
    return out


def _flag(v: Any) -> str:
    return json.dumps(v)


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


class Scheduler:
    """Which cells of a run's DAG can run now, and what became of the others.

    Made from the cells (in plan order) and the keys already done. ``ready()`` hands out
    the next runnable cell: requeued cells and retries whose backoff is over first, the
    others in the order their last dependency finished. ``finished`` marks a cell done and
    readies the children it completes; ``fail`` and ``skip`` end a cell, and ``block``
    skips every pending cell downstream of it, recording in ``waits_on`` the cell that
    each skipped one waits for. ``outcome`` keeps the counts (ran, cached, failed,
    skipped, retried). O(1) work per cell and per finished dependency.
    """

    def __init__(self, cells: list[Cell], done: set[str], outcome: RunOutcome):
        self.by_key = {c.key: c for c in cells}
        self.children: dict[str, list[Cell]] = {k: [] for k in self.by_key}
        for c in cells:
            for d in c.deps:
                self.children.setdefault(d, []).append(c)
        self.done = set(done)
        self.missing = {c.key: sum(d not in self.done for d in c.deps) for c in cells if c.key not in self.done}
        self.ended: set[str] = set()  # failed or skipped
        self.waits_on: dict[str, str] = {}  # skipped cell -> the cell that failed (or was skipped) before it
        self.outcome = outcome
        outcome.cached += len(self.done)
        self._ready = deque(c for c in cells if self.missing.get(c.key) == 0)
        self._delayed: list[tuple[float, Cell]] = []  # (not before, cell) waiting out a retry backoff

    @property
    def pending(self) -> bool:
        """Whether some cell is neither done nor ended."""
        return bool(self.missing)

    @property
    def has_ready(self) -> bool:
        return bool(self._ready)

    @property
    def has_delayed(self) -> bool:
        return bool(self._delayed)

    def ready(self, now: float | None = None) -> Cell | None:
        """The next runnable cell (retries whose backoff ended by ``now`` first), or None."""
        now = time.time() if now is None else now
        for item in [d for d in self._delayed if d[0] <= now]:
            self._delayed.remove(item)
            self._ready.appendleft(item[1])
        while self._ready:
            cell = self._ready.popleft()
            if cell.key in self.missing:
                return cell
        return None

    def requeue(self, cell: Cell, first: bool = True) -> None:
        """Hand ``cell`` out again (it did not run, or it ran elsewhere and was given up)."""
        if first:
            self._ready.appendleft(cell)
        else:
            self._ready.append(cell)

    def retry(self, cell: Cell, not_before: float) -> None:
        """Hand ``cell`` out again once ``not_before`` (unix seconds) has passed."""
        self._delayed.append((not_before, cell))
        self.outcome.retried += 1

    def finished(self, key: str, cached: bool = False) -> list[Cell]:
        """Mark ``key`` done (``cached``: by an earlier run or another driver); returns the cells it made ready."""
        self.done.add(key)
        self.missing.pop(key, None)
        if cached:
            self.outcome.cached += 1
        else:
            self.outcome.ran += 1
        now_ready = []
        for child in self.children.get(key, ()):
            if child.key in self.missing:
                self.missing[child.key] -= 1
                if self.missing[child.key] == 0:
                    self._ready.append(child)
                    now_ready.append(child)
        return now_ready

    def fail(self, cell: Cell, error: str) -> list[Cell]:
        """Record ``cell`` as failed; returns the cells skipped because of it."""
        self._end(cell.key)
        self.outcome.failed.append((cell, error))
        return self.block(cell.key)

    def skip(self, cell: Cell) -> list[Cell]:
        """Skip ``cell`` without running it (e.g. it failed in an earlier run); returns the cells
        skipped because of it."""
        self._end(cell.key)
        self.outcome.skipped += 1
        return self.block(cell.key)

    def block(self, key: str) -> list[Cell]:
        """Skip every pending cell downstream of ``key``, which cannot finish in this run; returns them."""
        skipped = []
        stack = list(self.children.get(key, ()))
        while stack:
            c = stack.pop()
            if c.key in self.ended or c.key not in self.missing:
                continue
            self._end(c.key)
            self.outcome.skipped += 1
            self.waits_on[c.key] = key
            skipped.append(c)
            stack.extend(self.children.get(c.key, ()))
        return skipped

    def _end(self, key: str) -> None:
        self.ended.add(key)
        self.missing.pop(key, None)


def _drive(cells, store, executor, opts, owner, result, events, prog, artifacts, reopened=None) -> None:
    """Run ``cells`` on ``executor`` until none can run, recording each in ``store``. ``reopened``:
    cells failed in an earlier run that this one tries again (key -> why)."""
    _Driver(cells, store, executor, opts, owner, result, events, prog, artifacts, reopened).loop()


class _Driver:
    """The driver's event loop: a Scheduler, and the executor, store, event log and progress around it."""

    def __init__(self, cells: list[Cell], store: ResultsStore, executor, opts: RunOptions, owner: str,
                 result: RunOutcome, events: EventLog, prog, artifacts: ArtifactStore,
                 reopened: dict[str, str] | None = None):
        self.store, self.executor, self.opts, self.owner, self.events, self.prog = \
            store, executor, opts, owner, events, prog
        self.result = result
        done = _reusable(cells, store.statuses(), artifacts, store, events, prog)
        self.sched = Scheduler(cells, done, result)
        self.grid = prog.add_task(f"grid ({executor.name})", total=len(cells))
        prog.advance(self.grid, len(done))
        # a cell whose worker died is tried again by every run; one that failed by itself waits for `ribench retry`
        reopened = dict(reopened or {})
        self.failed_before = set() if opts.retry_failed else {k for k, f in store.failures().items()
                                                               if f != "worker" and k not in reopened}
        self.errors_before = {c["key"]: c["error"] for c in store.cells("failed")} if self.failed_before else {}
        for c in cells:
            if c.key in reopened and c.key not in done and not opts.retry_failed:
                self.events("reopened", c, reason=reopened[c.key])
                prog.log(f"[yellow]retrying[/yellow] {c.describe()}, failed in an earlier run: {reopened[c.key]}")
        self.elsewhere: set[str] = set()  # claimed by another live driver
        self.running: dict[Future, tuple[Cell, int, int]] = {}  # future -> (cell, attempt, progress task)
        self.attempts: dict[str, int] = {}
        self.losses: dict[str, int] = {}  # deaths of an unknown worker while the cell was in flight
        self.records: dict[str, CellResult] = {}
        self.times = CellTimes()  # the grid's ETA: measured seconds of the cells finished in this run

    def loop(self) -> None:
        sched = self.sched
        while sched.pending:
            self._submit_ready()
            if self.running:
                self._collect()
                continue
            if sched.has_ready:
                continue
            if not self.elsewhere and not sched.has_delayed:
                break  # nothing runnable is left (everything else is blocked)
            time.sleep(self.opts.poll)  # wait for other drivers' cells, or a retry backoff
            if self.elsewhere:
                self._look_elsewhere()

    def _deps_of(self, cell: Cell) -> dict[str, CellResult]:
        for d in cell.deps:
            if d not in self.records:
                self.records[d] = CellResult(self.store.cell_metrics(d), self.store.cell_info(d))
        return {d: self.records[d] for d in cell.deps}

    def _finished(self, key: str, cached: bool) -> None:
        self.sched.finished(key, cached)
        self.prog.advance(self.grid)
        self._show_eta()

    def eta(self) -> float | None:
        """Seconds the cells that will still run should take (``CellTimes.eta``): the pending ones
        of this driver, not those that failed in an earlier run or that another driver holds."""
        left = (self.sched.by_key[k].kind for k in self.sched.missing
                if k not in self.failed_before and k not in self.elsewhere)
        return self.times.eta(left, self.executor.slots)

    def _show_eta(self) -> None:
        self.prog.update(self.grid, status=format_eta(self.eta()))

    def _skipped(self, cells: list[Cell], reason: str) -> None:
        for c in cells:
            self.events("skipped", c, reason=reason, waits_on=self.sched.waits_on.get(c.key))
            self.prog.advance(self.grid)
            self.result.skipped_cells.append((c, self._why_skipped(c.key)))

    def _why_skipped(self, key: str) -> str:
        """Why a cell is skipped: it failed in an earlier run (with that error), or it waits on
        the named failed cell (following the chain of skips; its error is reported with it)."""
        root = key
        while root in self.sched.waits_on:
            root = self.sched.waits_on[root]
        if root == key:  # it failed in an earlier run itself
            return (f"failed in an earlier run (`ribench retry` reruns it): "
                    f"{self.errors_before.get(key) or 'no error recorded'}")
        when = ", which failed in an earlier run" if root in self.failed_before else ", which failed"
        return f"waits on {self.sched.by_key[root].describe()}{when}"

    def _submit_ready(self) -> None:
        while len(self.running) < self.executor.slots:
            cell = self.sched.ready()
            if cell is None:
                return
            if cell.key in self.failed_before:
                self.events("skipped", cell, reason="failed in an earlier run (ribench retry reruns it)")
                self.prog.advance(self.grid)
                self.result.skipped_cells.append((cell, self._why_skipped(cell.key)))
                self._skipped(self.sched.skip(cell), "a dependency failed in an earlier run")
                continue
            if not self.store.claim(cell.key, self.owner, self.opts.stale_after):
                if self.store.status(cell.key) == "done":
                    self._finished(cell.key, cached=True)
                else:
                    self.elsewhere.add(cell.key)
                continue
            attempt = self.attempts[cell.key] = self.attempts.get(cell.key, 0) + 1
            task = self.prog.add_task(cell.describe(), total=1.0)
            self.events("start", cell, attempt=attempt)
            try:
                fut = self.executor.submit(cell, self._deps_of(cell),
                                           lambda f, msg, t=task: self.prog.update(t, completed=f, status=msg))
            except BrokenProcessPool as e:  # a worker died while the pool was idle: it took no cell down
                self.prog.remove_task(task)
                self.attempts[cell.key] -= 1
                self.sched.requeue(cell)
                self.events("requeued", cell, reason=str(e))
                self._on_pool_break()
                return
            self.running[fut] = (cell, attempt, task)

    def _collect(self) -> None:
        complete, _ = wait(list(self.running), timeout=self.opts.poll, return_when=FIRST_COMPLETED)
        if any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool) for f in complete):
            self._on_pool_break()
            return
        for fut in complete:
            cell, attempt, task = self.running.pop(fut)
            self.prog.remove_task(task)
            try:
                outcome: Outcome = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. a Ray worker or node lost mid-cell
                outcome = Outcome(False, error=f"{type(e).__name__}: {e}", failure="worker")
            self._on_outcome(cell, attempt, outcome)

    def _on_outcome(self, cell: Cell, attempt: int, outcome: Outcome) -> None:
        if outcome.ok:
            self.store.finish_cell(cell.key, cell.kind, cell.labels, cell.config, time.time() - outcome.seconds,
                                   outcome.result.metrics, {**outcome.result.info, "worker": outcome.worker,
                                                            "attempts": attempt})
            self.events("done", cell, attempt=attempt, seconds=round(outcome.seconds, 3), worker=outcome.worker)
            self.times.record(cell.kind, outcome.seconds)
            self._finished(cell.key, cached=False)
        elif attempt <= self.opts.retries:
            delay = self.opts.backoff * 2 ** (attempt - 1)
            self.sched.retry(cell, time.time() + delay)
            self.events("retry", cell, attempt=attempt, error=outcome.error, delay=delay)
            self.prog.log(f"[yellow]retrying[/yellow] {cell.describe()} in {delay:g} s: {outcome.error}")
        else:
            self._fail(cell, attempt, outcome)

    def _fail(self, cell: Cell, attempt: int, outcome: Outcome) -> None:
        self.store.fail_cell(cell.key, cell.kind, cell.labels, cell.config, time.time() - outcome.seconds,
                             outcome.error, outcome.traceback, failure=outcome.failure)
        skipped = self.sched.fail(cell, outcome.error)
        self.events("failed", cell, attempt=attempt, error=outcome.error, worker=outcome.worker,
                    failure=outcome.failure)
        self.prog.log(f"[red]failed[/red] {cell.describe()}: {outcome.error}")
        self.prog.advance(self.grid)
        self._skipped(skipped, f"dependency {cell.describe()} failed")

    def _on_pool_break(self) -> None:
        """A worker died, and every cell in flight is lost with its pool. The cell that ran in the
        dead worker is charged that attempt; the others go back to the queue as if never started."""
        lost = dict(self.running)
        self.running.clear()
        wait(list(lost), timeout=60)  # a broken pool fails all its futures at once
        death = self.executor.recover({cell.key for cell, _, _ in lost.values()})
        self.events("worker_died", message=death.message, culprit=death.culprit)
        self.prog.log(f"[yellow]worker pool rebuilt[/yellow]: {death.message}")
        for fut, (cell, attempt, task) in lost.items():
            self.prog.remove_task(task)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._on_outcome(cell, attempt, fut.result())  # it finished just before the death
            elif cell.key == death.culprit:
                self._on_outcome(cell, attempt, Outcome(False, error=death.message, failure="worker"))
            elif not death.attributed and self.losses.get(cell.key, 0) + 1 >= MAX_WORKER_LOSSES:
                self._fail(cell, attempt, Outcome(False, error=f"a worker process died {MAX_WORKER_LOSSES} times "
                                                  f"while this cell ran; the last time: {death.message}",
                                                  failure="worker"))
            else:
                if not death.attributed:
                    self.losses[cell.key] = self.losses.get(cell.key, 0) + 1
                self.attempts[cell.key] -= 1  # not its fault: this attempt does not count
                self.sched.requeue(cell)
                self.events("requeued", cell, reason=death.message)

    def _look_elsewhere(self) -> None:
        """Cells claimed by other drivers: done ones count as cached, abandoned ones are taken over."""
        status = self.store.statuses()
        live = self.store.live_claims(self.opts.stale_after, exclude_owner=self.owner)
        for key in list(self.elsewhere):
            if status.get(key) == "done":
                self.elsewhere.discard(key)
                self._finished(key, cached=True)
            elif key not in live:  # the other driver died or gave up on it: take it over
                self.elsewhere.discard(key)
                self.sched.requeue(self.sched.by_key[key], first=False)
