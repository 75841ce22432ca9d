"""Helpers for tests that write cells into a run folder by hand."""

from __future__ import annotations

from typing import Iterable

from ribench.engine.store import ResultsStore


def plan_also(store: ResultsStore, keys: Iterable[str]) -> None:
    """Record a run whose plan is the latest run's plus ``keys``: cells a test writes by hand
    into a folder ``run`` made count among its results, as the engine's planned cells do
    (a folder shows the cells its runs planned: engine/store.py)."""
    last = store.last_run()
    if last is None or last["planned"] is None:
        return
    store.record_run(last["spec"], last["env"], {**last["planned"], **{k: {} for k in keys}})
