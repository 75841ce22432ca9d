"""Crash-safe training: where and how often the training loop saves what it needs to resume.

The engine wraps each adapt and pretrain cell in ``checkpointing(folder, ...)``; inside it,
every call of ``models.training.train_classifier`` asks ``next_run()`` for its own
``RunCheckpoint`` (the i-th call of the block writes ``<folder>/run-<i>.pt``), saves its
whole state there every ``every_steps`` optimiser steps or every ``every_seconds``
seconds of wall time, and, when it starts and finds that file, resumes from it: the
trained weights are then the same bits as an uninterrupted run's (models/training.py
says what is saved). The engine removes the folder once the cell's result is saved
(``discard``). Outside any block (a library user calling the loop by hand) nothing is
saved. The setting is held in a context variable, like core.timing's clock, so threads
and tasks each see their own.

Checkpointing changes how a cell runs, never what it computes: nothing it does draws
from a generator or changes a weight, so its interval is not part of any cell key.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

StepHook = Callable[[int, int], None]
"""``hook(run, step)``: called after optimiser step ``step`` (1-based) of the ``run``-th call
(0-based) of the block, once any checkpoint of that step is written (tests raise from it)."""


@dataclass
class Checkpointing:
    """The setting of one ``checkpointing`` block and the number of training calls made in it."""

    folder: Path
    every_steps: int = 0
    every_seconds: float = 0.0
    after_step: StepHook | None = None
    calls: int = field(default=0)

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0 or self.every_seconds > 0


@dataclass
class RunCheckpoint:
    """The checkpoint of one training call: its file and when to write it."""

    path: Path
    run: int
    every_steps: int = 0
    every_seconds: float = 0.0
    after_step: StepHook | None = None
    _last_write: float = field(default_factory=time.monotonic)

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0 or self.every_seconds > 0

    def due(self, step: int) -> bool:
        """Whether to write after optimiser step ``step`` (1-based)."""
        if self.every_steps > 0 and step % self.every_steps == 0:
            return True
        return self.every_seconds > 0 and time.monotonic() - self._last_write >= self.every_seconds

    def load(self) -> dict[str, Any] | None:
        """The saved state (``torch.load(weights_only=True)``: tensors, numbers, strings, lists and
        dicts only), or None when there is none or it cannot be read (then the call starts over).
        A checkpoint is resumed even when the block's intervals are 0 (it was written by an earlier
        run with checkpoints on)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged checkpoint only costs the steps it held
            return None
        return state if isinstance(state, dict) else None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (a temporary file in the same folder, then renamed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()
        self._last_write = time.monotonic()

    def stepped(self, step: int) -> None:
        if self.after_step is not None:
            self.after_step(self.run, step)


_CKPT: ContextVar[Checkpointing | None] = ContextVar("ribench_checkpointing", default=None)


@contextmanager
def checkpointing(folder: str | Path, every_steps: int = 0, every_seconds: float = 0.0,
                  after_step: StepHook | None = None) -> Iterator[Checkpointing]:
    """Training calls inside the block checkpoint into ``folder`` every ``every_steps`` steps or
    ``every_seconds`` seconds (both 0: never; ``after_step`` is still called)."""
    if every_steps < 0 or every_seconds < 0:
        raise ValueError("checkpoint intervals must be >= 0")
    setting = Checkpointing(Path(folder), int(every_steps), float(every_seconds), after_step)
    token = _CKPT.set(setting)
    try:
        yield setting
    finally:
        _CKPT.reset(token)


def current() -> Checkpointing | None:
    """The setting of the enclosing ``checkpointing`` block, or None."""
    return _CKPT.get()


def next_run() -> RunCheckpoint | None:
    """The checkpoint of the next training call of the enclosing block (None outside any)."""
    setting = _CKPT.get()
    if setting is None:
        return None
    run = setting.calls
    setting.calls += 1
    return RunCheckpoint(setting.folder / f"run-{run}.pt", run, setting.every_steps, setting.every_seconds,
                         setting.after_step)


def discard(folder: str | Path) -> None:
    """Remove a cell's checkpoint folder (its result is saved: nothing left to resume)."""
    shutil.rmtree(folder, ignore_errors=True)
