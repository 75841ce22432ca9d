"""Where a cell's time goes: wall-clock seconds accumulated per named phase.

``measure()`` installs a ``PhaseClock`` for the code it wraps (one cell); inside it,
``with phase("load"): ...`` charges the time of its block to ``"load"``. Phases nest and
the innermost one wins: time spent in an inner phase is charged to it and not to the
phase around it, so the phases never count a second twice and their sum is at most the
wall time of ``measure``. Outside ``measure`` (a runner called by hand, a library user),
``phase`` does nothing. The clock is held in a context variable, so threads and tasks
each see their own.

Phase names used by the engine (engine/execute.py): ``load`` (models read from disk),
``pretrain``, ``train``, ``corrupt``, ``clean_eval`` (the clean eval sets),
``corruption_eval`` (the corruption sets), ``attacks``, ``masking_checks``,
``extra_models`` (a method's extra models, e.g. the WiSE-FT curve), ``analysis``,
``diagnostics``, ``save`` (artifacts written).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

PHASES = ("load", "pretrain", "train", "corrupt", "clean_eval", "corruption_eval", "attacks", "masking_checks",
          "extra_models", "analysis", "diagnostics", "save")
"""The engine's phases, in the order reports list them (others follow, by name)."""


class PhaseClock:
    """Seconds per phase (``seconds``), charged exclusively to the innermost open phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # open phases: [name, seconds charged to phases inside it]

    @property
    def active(self) -> str | None:
        """The innermost open phase, or None."""
        return self._stack[-1][0] if self._stack else None

    def add(self, name: str, seconds: float) -> None:
        """Charge ``seconds`` to ``name`` (and not to the open phase around it)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if self._stack:
            self._stack[-1][1] += seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame = [name, 0.0]
        self._stack.append(frame)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            total = time.perf_counter() - t0
            self._stack.pop()
            self.add(name, max(0.0, total - frame[1]))  # what inner phases took is theirs


_CLOCK: ContextVar[PhaseClock | None] = ContextVar("ribench_phase_clock", default=None)


@contextmanager
def measure() -> Iterator[PhaseClock]:
    """A fresh clock for the block; ``phase`` inside it charges to this clock."""
    clock = PhaseClock()
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)


def current() -> PhaseClock | None:
    """The clock of the enclosing ``measure``, or None."""
    return _CLOCK.get()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the block's time to phase ``name`` of the current clock (none: do nothing)."""
    clock = _CLOCK.get()
    if clock is None:
        yield
        return
    with clock.phase(name):
        yield


def ordered(names) -> list[str]:
    """Phase names in report order: the engine's first (``PHASES``), then any others by name."""
    names = set(names)
    return [p for p in PHASES if p in names] + sorted(names - set(PHASES))
