"""Results store: one SQLite file in WAL mode; one transaction per finished cell.

Tables:
- ``cells``: key, kind, status (done | failed), labels (JSON), config (JSON), error,
  traceback, started/finished (unix seconds), duration (s), info (JSON), and for a
  failed cell what failed (``failure``): ``cell`` (the cell itself raised) or ``worker``
  (the process running it died or was lost; a later run retries these by itself).
- ``metrics``: one row per (cell, eval_set, metric) with the cell's labels
  (backbone, recipe, method, task, seed) copied for easy querying. Summary numbers
  (id_acc, R, dR, dP, corr_acc, mCE...) are stored with ``eval_set = '*'``.
- ``runs``: one row per `ribench run` invocation (spec and environment as JSON, and
  ``planned``: every cell its spec plans, key -> kind, labels and the keys of its inputs,
  JSON). A folder's numbers are those of the cells ``shown_keys`` picks: every cell of the
  latest run's plan, and the cells of earlier plans that no later plan replaced, so that
  specs run one after the other into one folder add up (a second spec with other methods,
  tasks or recipes) while nothing mixes: an earlier cell is left out when a later plan has
  a cell of its kind and labels (one label given other hyperparameters), and so is every
  earlier cell that rests on a left-out one (the models of a pretrained model whose
  pretraining changed). Left-out cells stay stored, reused when a spec plans them again.
- ``claims``: which driver is running which cell, with a heartbeat, so two drivers on
  one output folder never run the same cell; a claim whose heartbeat is older than
  ``stale_after`` seconds, or whose process is gone (same host), is stale and may be
  taken over. A finished or failed cell's claim is dropped in the same transaction
  that records it.

Every SQLite error comes out as a ``DataError`` that names the file and says what to do
(a damaged file, a full disk, a lock held too long); a transaction whose COMMIT fails is
rolled back, so the connection stays usable and nothing half-written is kept.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager, suppress
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from ..core.errors import DataError
from ..core.rows import SUMMARY  # noqa: F401  (summary rows' eval_set, for the readers of this module)
from .artifacts import pid_alive

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
    labels TEXT NOT NULL, config TEXT NOT NULL, info TEXT,
    error TEXT, traceback TEXT, started REAL, finished REAL, duration REAL, failure TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    cell TEXT NOT NULL, backbone TEXT, recipe TEXT, method TEXT, task TEXT, seed INTEGER,
    eval_set TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (cell, eval_set, metric)
);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL, spec TEXT, env TEXT,
                                 planned TEXT);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT, pid INTEGER,
                                   heartbeat REAL NOT NULL);
"""

LABELS = ("backbone", "recipe", "method", "task", "seed")
CELL_COLUMNS = ("key", "kind", "status", "labels", "config", "info", "error", "traceback", "started", "finished",
                "duration", "failure")
FAILURES = ("cell", "worker")  # what failed: the cell's own code, or the process that ran it

_F = TypeVar("_F", bound=Callable[..., Any])


def explain_sqlite_error(path: Path, e: sqlite3.Error) -> str:
    """A one-line message for an SQLite error on the results store ``path``: what happened and what to do."""
    msg = str(e)
    low = msg.lower()
    if "full" in low or "disk i/o" in low or "readonly" in low or "read-only" in low:
        return (f"results store {path}: cannot write ({msg}); free disk space (or make the folder writable) and "
                "run again: every cell recorded before this is kept, the cells in flight are redone")
    if "locked" in low or "busy" in low:
        return (f"results store {path} stayed locked by another process for too long ({msg}); stop the other "
                "process using it (another `ribench run` on this folder is fine, an open SQLite shell is not) "
                "and run again")
    damaged = "malformed" in low or "not a database" in low or "corrupt" in low
    if damaged or (isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError)):
        return (f"results store {path} is damaged ({msg}); recover what it holds with "
                f"`sqlite3 {path} .recover | sqlite3 {path}.recovered` and move the recovered file in its place, "
                "or move it aside and run again to recompute the grid (artifacts on disk are reused where intact)")
    return f"results store {path}: SQLite error ({msg})"


def _guarded(fn: _F) -> _F:
    """Turn SQLite errors of a ResultsStore method into a DataError naming the file."""

    @wraps(fn)
    def inner(self: "ResultsStore", *a: Any, **k: Any) -> Any:
        try:
            return fn(self, *a, **k)
        except sqlite3.Error as e:
            raise DataError(explain_sqlite_error(self.path, e)) from e

    return inner  # type: ignore[return-value]


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            self._migrate()
        except sqlite3.Error as e:
            raise DataError(explain_sqlite_error(self.path, e)) from e

    def _migrate(self) -> None:
        """Add the columns later versions introduced to a store an older version wrote."""
        for table, column in (("cells", "failure"), ("runs", "planned")):
            have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as e:  # another driver added it a moment ago
                    if "duplicate column" not in str(e).lower():
                        raise

    def close(self) -> None:
        """Close the connection; an error closing it is not worth hiding the caller's own error for."""
        with suppress(sqlite3.Error):
            self.conn.close()

    # --- writing -------------------------------------------------------------
    @_guarded
    def record_run(self, spec: Mapping[str, Any], env: Mapping[str, Any],
                   planned: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None) -> None:
        """Record a run: its spec, environment and every cell it plans, in the plan's order: key ->
        ``{"kind", "labels", "deps"}`` (bare keys: cells that replace nothing and rest on
        nothing). None: not recorded, as by versions before the field."""
        if planned is not None and not isinstance(planned, Mapping):
            planned = {k: {} for k in planned}
        self.conn.execute("INSERT INTO runs (started, spec, env, planned) VALUES (?, ?, ?, ?)",
                          (time.time(), json.dumps(spec), json.dumps(env),
                           None if planned is None else json.dumps(dict(planned), default=str)))

    @_guarded
    def shown_keys(self) -> set[str] | None:
        """The cells a folder's results are made of (module docstring), or None for every cell
        (the latest run recorded no plan: a store of an earlier version). Earlier runs that
        recorded none stand for every stored cell, with no inputs known: those whose kind and
        labels no later plan has are kept."""
        plans = [json.loads(p) if p is not None else None
                 for (p,) in self.conn.execute("SELECT planned FROM runs ORDER BY id DESC")]
        if not plans or plans[0] is None:
            return None
        shown: set[str] = set()
        claimed: set[str] = set()  # kind and labels of the cells shown
        legacy_done = False
        for i, plan in enumerate(plans):
            if plan is None:
                if legacy_done:
                    continue
                legacy_done = True
                plan = {k: {"kind": kind, "labels": json.loads(lab)} for k, kind, lab in self.conn.execute(
                    "SELECT key, kind, labels FROM cells WHERE status = 'done' ORDER BY finished")}
            if isinstance(plan, list):  # bare keys
                plan = {k: {} for k in plan}
            for key, c in plan.items():
                ident = json.dumps([c.get("kind"), c.get("labels")], sort_keys=True) if c.get("kind") else None
                if key in shown:
                    continue
                if i and ((ident is not None and ident in claimed) or not all(d in shown for d in c.get("deps", ()))):
                    continue
                shown.add(key)
                if ident is not None:
                    claimed.add(ident)
        return shown

    @_guarded
    def finish_cell(
        self,
        key: str,
        kind: str,
        labels: Mapping[str, Any],
        config: Mapping[str, Any],
        started: float,
        metrics: Mapping[str, Mapping[str, float]] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a finished cell and all its metrics atomically."""
        now = time.time()
        lab = [labels.get(k) for k in LABELS]
        rows = [
            (key, *lab, eval_set, metric, float(value))
            for eval_set, values in (metrics or {}).items()
            for metric, value in values.items()
        ]
        with self._tx() as c:
            c.execute("DELETE FROM claims WHERE key = ?", (key,))
            c.execute("DELETE FROM metrics WHERE cell = ?", (key,))
            c.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", rows)
            c.execute(_INSERT_CELL, (key, kind, "done", json.dumps(dict(labels)), json.dumps(config, default=str),
                                     json.dumps(dict(info or {}), default=str), None, None, started, now,
                                     now - started, None))

    @_guarded
    def fail_cell(self, key: str, kind: str, labels: Mapping[str, Any], config: Mapping[str, Any],
                  started: float, error: str, tb: str, failure: str = "cell") -> None:
        """Record a failed cell; ``failure`` says what failed (FAILURES): ``worker`` cells are retried by a later run."""
        if failure not in FAILURES:
            raise ValueError(f"failure must be one of {FAILURES}, got {failure!r}")
        now = time.time()
        with self._tx() as c:
            c.execute("DELETE FROM claims WHERE key = ?", (key,))
            c.execute(_INSERT_CELL, (key, kind, "failed", json.dumps(dict(labels)), json.dumps(config, default=str),
                                     None, error, tb, started, now, now - started, failure))

    @_guarded
    def relabel(self, labels: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Give the recorded cells of ``labels`` (key -> labels) those labels, in the cell record and
        its metric rows, where they differ (a method's label is no part of its key); returns those keys."""
        stored = dict(self.conn.execute("SELECT key, labels FROM cells"))
        changed = [k for k, lab in labels.items() if k in stored and json.loads(stored[k]) != dict(lab)]
        if changed:
            with self._tx() as c:
                for k in changed:
                    c.execute("UPDATE cells SET labels = ? WHERE key = ?", (json.dumps(dict(labels[k])), k))
                    c.execute(f"UPDATE metrics SET {', '.join(f'{n} = ?' for n in LABELS)} WHERE cell = ?",
                              (*[labels[k].get(n) for n in LABELS], k))
        return changed

    @_guarded
    def forget_cell(self, key: str) -> None:
        """Drop the record and metrics of ``key`` (its artifact was found damaged: the cell is computed again)."""
        with self._tx() as c:
            c.execute("DELETE FROM metrics WHERE cell = ?", (key,))
            c.execute("DELETE FROM cells WHERE key = ?", (key,))

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A failing COMMIT (a full disk) is rolled back and its own error re-raised."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with suppress(sqlite3.Error):  # the first error is the one worth reporting
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            with suppress(sqlite3.Error):  # SQLite may have rolled back by itself already
                conn.execute("ROLLBACK")
            raise

    # --- claims ----------------------------------------------------------------
    @_guarded
    def claim(self, key: str, owner: str, stale_after: float) -> bool:
        """Take ``key`` for ``owner`` unless it is done or held by a live claim of another owner."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT status FROM cells WHERE key = ?", (key,)).fetchone()
            if row and row[0] == "done":
                return False
            held = c.execute("SELECT owner, host, pid, heartbeat FROM claims WHERE key = ?", (key,)).fetchone()
            if held and held[0] != owner and not _stale(held[1], held[2], held[3], now, stale_after):
                return False
            c.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?)",
                      (key, owner, socket.gethostname(), os.getpid(), now))
            return True

    @_guarded
    def heartbeat(self, owner: str) -> None:
        self.conn.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), owner))

    @_guarded
    def release_claims(self, owner: str) -> None:
        self.conn.execute("DELETE FROM claims WHERE owner = ?", (owner,))

    @_guarded
    def live_claims(self, stale_after: float, exclude_owner: str | None = None) -> set[str]:
        now = time.time()
        rows = self.conn.execute("SELECT key, owner, host, pid, heartbeat FROM claims").fetchall()
        return {k for k, o, h, p, hb in rows if o != exclude_owner and not _stale(h, p, hb, now, stale_after)}

    # --- reading -------------------------------------------------------------
    @_guarded
    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, status FROM cells"))

    @_guarded
    def failures(self) -> dict[str, str]:
        """What failed (FAILURES) for every failed cell; records of older versions count as ``cell``."""
        return {k: f or "cell" for k, f in self.conn.execute("SELECT key, failure FROM cells WHERE status = 'failed'")}

    @_guarded
    def failure_specs(self) -> dict[str, dict[str, Any] | None]:
        """Failed cell -> the spec of the run it failed in (the last run started before the cell;
        None when no run was recorded before it)."""
        rows = self.conn.execute("SELECT c.key, (SELECT r.spec FROM runs r WHERE r.started <= c.started ORDER BY r.id "
                                 "DESC LIMIT 1) FROM cells c WHERE c.status = 'failed'")
        return {k: json.loads(spec) if spec else None for k, spec in rows}

    @_guarded
    def status(self, key: str) -> str | None:
        row = self.conn.execute("SELECT status FROM cells WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_guarded
    def cell_metrics(self, key: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for es, m, v in self.conn.execute("SELECT eval_set, metric, value FROM metrics WHERE cell = ?", (key,)):
            out.setdefault(es, {})[m] = v
        return out

    @_guarded
    def cell_info(self, key: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT info FROM cells WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    @_guarded
    def cells(self, status: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT key, kind, status, labels, info, error, traceback, duration, failure FROM cells"
        args: Iterable = ()
        if status:
            q += " WHERE status = ?"
            args = (status,)
        out = []
        for key, kind, st, labels, info, err, tb, dur, failure in self.conn.execute(q + " ORDER BY finished", args):
            out.append({"key": key, "kind": kind, "status": st, "labels": json.loads(labels),
                        "info": json.loads(info) if info else {}, "error": err, "traceback": tb, "duration": dur,
                        "failure": (failure or "cell") if st == "failed" else None})
        return out

    @_guarded
    def cell_configs(self, kind: str | None = None, planned_only: bool = True) -> dict[str, dict[str, Any]]:
        """Key -> {kind, labels, config} as recorded, for every finished cell (of ``kind`` only, when
        given; ``planned_only``: of the cells ``shown_keys`` picks, as ``snapshot``)."""
        q = "SELECT key, kind, labels, config FROM cells WHERE status = 'done'"
        rows = self.conn.execute(q + (" AND kind = ?" if kind else ""), (kind,) if kind else ()).fetchall()
        planned = self.shown_keys() if planned_only else None
        return {k: {"kind": kd, "labels": json.loads(lab), "config": json.loads(cfg)} for k, kd, lab, cfg in rows
                if planned is None or k in planned}

    @_guarded
    def metric_rows(self) -> list[dict[str, Any]]:
        """Every stored number as a flat row (labels, eval_set, metric, value)."""
        cur = self.conn.execute(
            "SELECT m.backbone, m.recipe, m.method, m.task, m.seed, m.eval_set, m.metric, m.value, m.cell "
            "FROM metrics m JOIN cells c ON c.key = m.cell WHERE c.status = 'done' "
            "ORDER BY m.backbone, m.recipe, m.method, m.task, m.seed, m.eval_set, m.metric"
        )
        cols = (*LABELS, "eval_set", "metric", "value", "cell")
        return [dict(zip(cols, r)) for r in cur]

    @_guarded
    def last_run(self) -> dict[str, Any] | None:
        """The latest run: spec, env, started, and ``planned`` (its plan: key -> kind, labels, deps;
        None when it recorded none)."""
        row = self.conn.execute("SELECT spec, env, started, planned FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if not row:
            return None
        planned = None if row[3] is None else json.loads(row[3])
        if isinstance(planned, list):
            planned = {k: {} for k in planned}
        return {"spec": json.loads(row[0]), "env": json.loads(row[1]), "started": row[2], "planned": planned}

    @_guarded
    def snapshot(self, planned_only: bool = True) -> dict[str, Any]:
        """``metric_rows()``, ``last_run()`` and ``cells()`` read in one read transaction, so
        that they agree even while another process is recording cells (what a report reads).
        ``planned_only``: only the rows and cells of the cells ``shown_keys`` picks (all, for a
        store whose runs did not record their plan); ``unplanned`` counts the cells left out."""
        self.conn.execute("BEGIN")
        try:
            run, rows, cells = self.last_run(), self.metric_rows(), self.cells()
            planned = self.shown_keys() if planned_only else None
            if planned is None:
                return {"rows": rows, "run": run, "cells": cells, "unplanned": 0}
            kept = [c for c in cells if c["key"] in planned]
            return {"rows": [r for r in rows if r["cell"] in planned], "run": run, "cells": kept,
                    "unplanned": len(cells) - len(kept)}
        finally:
            with suppress(sqlite3.Error):
                self.conn.execute("COMMIT")


_INSERT_CELL = (f"INSERT OR REPLACE INTO cells ({', '.join(CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(CELL_COLUMNS))})")


def _stale(host: str | None, pid: int | None, heartbeat: float, now: float, stale_after: float) -> bool:
    if now - heartbeat > stale_after:
        return True
    return host == socket.gethostname() and pid is not None and not pid_alive(pid)
