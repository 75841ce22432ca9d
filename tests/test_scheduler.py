"""The driver's Scheduler on hand-made DAGs, without executors, store or processes: ready
order, a failure blocking exactly its dependents (each skipped cell naming the cell it
waits on), retries and requeues, and the outcome counts."""

from __future__ import annotations

from pathlib import Path

from ribench.engine.plan import Cell
from ribench.engine.runner import RunOutcome, Scheduler


def dag(edges: dict[str, str]) -> dict[str, Cell]:
    """Cells by name, in the given order; ``edges``: name -> the names it depends on (letters)."""
    cells: dict[str, Cell] = {}
    for name, deps in edges.items():
        cells[name] = Cell("evaluate", {"name": name}, tuple(cells[d].key for d in deps), {"method": name})
    return cells


def names(cells, found) -> list[str]:
    by_key = {c.key: n for n, c in cells.items()}
    return [by_key[c.key] for c in found]


def drain(sched: Scheduler, now: float = 0.0) -> list[Cell]:
    out = []
    while (c := sched.ready(now)) is not None:
        out.append(c)
    return out


# a -> b -> d, a -> c -> d, e alone, f (done before) -> g
EDGES = {"a": "", "e": "", "b": "a", "c": "a", "d": "bc", "f": "", "g": "f"}


def test_ready_order_failure_blocks_dependents_and_outcome_counts():
    cells = dag(EDGES)
    outcome = RunOutcome(Path("."), len(cells))
    sched = Scheduler(list(cells.values()), {cells["f"].key}, outcome)
    assert outcome.cached == 1 and sched.pending
    # every cell whose dependencies are done, in plan order
    assert names(cells, drain(sched)) == ["a", "e", "g"]
    assert names(cells, sched.finished(cells["a"].key)) == ["b", "c"]
    assert names(cells, drain(sched)) == ["b", "c"]
    # b fails: d (which needs b) is skipped and waits on b; c is not touched
    assert names(cells, sched.fail(cells["b"], "boom")) == ["d"]
    assert sched.waits_on == {cells["d"].key: cells["b"].key}
    assert outcome.failed == [(cells["b"], "boom")]
    assert sched.finished(cells["c"].key) == []  # d stays skipped, never becomes ready
    assert drain(sched) == []
    for n in ("e", "g"):
        sched.finished(cells[n].key)
    assert not sched.pending
    assert (outcome.ran, outcome.cached, len(outcome.failed), outcome.skipped) == (4, 1, 1, 1)
    assert outcome.ran + outcome.cached + len(outcome.failed) + outcome.skipped == outcome.total


def test_a_failure_skips_everything_downstream_each_waiting_on_it():
    cells = dag({"a": "", "b": "a", "c": "b", "d": "c", "x": ""})
    outcome = RunOutcome(Path("."), len(cells))
    sched = Scheduler(list(cells.values()), set(), outcome)
    assert names(cells, drain(sched)) == ["a", "x"]
    assert sorted(names(cells, sched.fail(cells["a"], "e"))) == ["b", "c", "d"]
    assert set(sched.waits_on.values()) == {cells["a"].key} and len(sched.waits_on) == 3
    sched.finished(cells["x"].key)
    assert not sched.pending and (outcome.ran, outcome.skipped, len(outcome.failed)) == (1, 3, 1)


def test_a_cell_with_two_failed_parents_is_skipped_once():
    cells = dag({"a": "", "b": "", "c": "ab"})
    outcome = RunOutcome(Path("."), 3)
    sched = Scheduler(list(cells.values()), set(), outcome)
    drain(sched)
    assert names(cells, sched.fail(cells["a"], "e1")) == ["c"]
    assert sched.fail(cells["b"], "e2") == []  # already skipped
    assert sched.waits_on == {cells["c"].key: cells["a"].key} and outcome.skipped == 1


def test_skip_of_a_cell_failed_before_counts_it_and_blocks_its_dependents():
    cells = dag({"a": "", "b": "a"})
    outcome = RunOutcome(Path("."), 2)
    sched = Scheduler(list(cells.values()), set(), outcome)
    (a,) = drain(sched)
    assert names(cells, sched.skip(a)) == ["b"]
    assert not sched.pending and outcome.skipped == 2 and outcome.failed == []


def test_retries_wait_for_their_time_and_requeued_cells_come_first():
    cells = dag({"a": "", "b": "", "c": ""})
    outcome = RunOutcome(Path("."), 3)
    sched = Scheduler(list(cells.values()), set(), outcome)
    a = sched.ready(0.0)
    sched.retry(a, not_before=10.0)
    assert outcome.retried == 1 and sched.has_delayed
    b = sched.ready(0.0)
    sched.requeue(b)  # e.g. its worker died before it ran: it goes first
    assert names(cells, [sched.ready(0.0)]) == ["b"]
    sched.requeue(b, first=False)  # e.g. taken over from another driver: it goes last
    assert names(cells, drain(sched, now=5.0)) == ["c", "b"]  # a's backoff is not over
    assert names(cells, drain(sched, now=10.0)) == ["a"] and not sched.has_delayed


def test_cells_done_elsewhere_count_as_cached_and_stale_queue_entries_are_dropped():
    cells = dag({"a": "", "b": "a"})
    outcome = RunOutcome(Path("."), 2)
    sched = Scheduler(list(cells.values()), set(), outcome)
    a = sched.ready(0.0)
    sched.requeue(a)
    sched.finished(a.key, cached=True)  # another driver finished it meanwhile
    assert names(cells, drain(sched)) == ["b"]  # the requeued a is not handed out again
    sched.finished(cells["b"].key)
    assert (outcome.ran, outcome.cached) == (1, 1)


def test_a_dependency_outside_the_cells_keeps_its_dependents_waiting():
    """`ribench predict` runs some kinds only: a cell whose input is not planned never becomes ready."""
    outside = Cell("adapt", {"x": 1}, (), {})
    waiting = Cell("evaluate", {"y": 1}, (outside.key,), {})
    alone = Cell("analysis", {"z": 1}, (), {})
    sched = Scheduler([waiting, alone], set(), RunOutcome(Path("."), 2))
    assert drain(sched) == [alone]
    sched.finished(alone.key)
    assert sched.pending and drain(sched) == []
