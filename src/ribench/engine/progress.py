"""Progress display: rich bars for the grid and the current cell, or nothing when quiet;
and ``CellTimes``, the grid's ETA from the measured times of finished cells."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _Silent:
    """The subset of rich.Progress the runner uses, doing nothing."""

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        pass

    advance = remove_task = log = update


@contextmanager
def make_progress(quiet: bool) -> Iterator[Any]:
    if quiet:
        yield _Silent()
        return
    console = Console(stderr=True)
    prog = Progress(
        TextColumn("{task.description}", style="bold"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=False,
    )

    class _P:
        def add_task(self, desc: str, total: float) -> int:
            return prog.add_task(desc, total=total, status="")

        def update(self, task: int, **k: Any) -> None:
            prog.update(task, **k)

        def advance(self, task: int, amount: float = 1) -> None:
            prog.advance(task, amount)

        def remove_task(self, task: int) -> None:
            prog.remove_task(task)

        def log(self, msg: str) -> None:
            prog.console.print(msg)

    with prog:
        yield _P()


class CellTimes:
    """Measured seconds of finished cells per kind, and what the cells left should take.

    ``eta(kinds, slots)``: the seconds the cells of ``kinds`` (one entry per cell that will
    run) should take on ``slots`` parallel workers: each cell the mean time of its kind, a
    kind not measured yet the mean of every measured cell; None before any cell is measured.
    """

    def __init__(self) -> None:
        self._sum: dict[str, float] = {}
        self._n: dict[str, int] = {}

    def record(self, kind: str, seconds: float) -> None:
        self._sum[kind] = self._sum.get(kind, 0.0) + max(0.0, float(seconds))
        self._n[kind] = self._n.get(kind, 0) + 1

    def mean(self, kind: str) -> float | None:
        if kind in self._n:
            return self._sum[kind] / self._n[kind]
        n = sum(self._n.values())
        return sum(self._sum.values()) / n if n else None

    def eta(self, kinds: Iterable[str], slots: int = 1) -> float | None:
        total = 0.0
        for kind in kinds:
            m = self.mean(kind)
            if m is None:
                return None
            total += m
        return total / max(1, slots)


def format_eta(seconds: float | None) -> str:
    """"ETA 1h02m", "ETA 3m05s", "ETA 12s"; "" when unknown."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"ETA {s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"ETA {s // 60}m{s % 60:02d}s"
    return f"ETA {s}s"
