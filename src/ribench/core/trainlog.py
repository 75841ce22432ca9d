"""Training curves: what the shared training loop records per epoch, collected per cell.

``models.training.train_classifier`` records one ``EpochRecord`` per epoch (the mean
training loss over the epoch's steps and, when it is given a validation split, the
accuracy on it after the epoch) and hands the run's list to ``add_run``. Inside
``recording()`` (the engine wraps each adapt and pretrain cell in one), those lists are
collected in a ``TrainingLog``, one list per call of the loop, in call order; outside it
(a library user calling the loop by hand) nothing is kept. ``recording(val=split)`` also
names the validation split of the calls inside it that pass none themselves (the engine
gives an adapt cell's task validation part, so every method's curve has ``val_acc``). The log is held in a context
variable, like core.timing's clock, so threads and tasks each see their own.

Recording never changes a trained number: the loss is summed from values the loop
computes anyway, and the validation pass runs under ``torch.inference_mode`` in eval
mode and draws from no generator.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one training run. ``epoch``: 1-based (a fractional last epoch is the
    next whole number); ``steps``: optimiser steps in it; ``train_loss``: mean over those
    steps of the loss optimised (cross-entropy plus any penalty or extra loss); ``val_acc``:
    top-1 accuracy in [0, 1] on the validation split after the epoch, None without one."""

    epoch: int
    steps: int
    train_loss: float
    val_acc: float | None = None


@dataclass
class TrainingLog:
    """The runs of the training loop inside one ``recording()``: ``runs[i]`` is the i-th call's epochs."""

    runs: list[list[EpochRecord]] = field(default_factory=list)
    val: Any = None  # the default validation split (core.types.Split) of the runs inside, or None

    def add_run(self, epochs: list[EpochRecord]) -> None:
        self.runs.append(list(epochs))


_LOG: ContextVar[TrainingLog | None] = ContextVar("ribench_training_log", default=None)


@contextmanager
def recording(val: Any = None) -> Iterator[TrainingLog]:
    """A fresh log for the block; every training run inside it is added to it. ``val``: the
    validation split of the runs that are given none."""
    log = TrainingLog(val=val)
    token = _LOG.set(log)
    try:
        yield log
    finally:
        _LOG.reset(token)


def current() -> TrainingLog | None:
    """The log of the enclosing ``recording``, or None."""
    return _LOG.get()


def default_val() -> Any:
    """The validation split the current log names (``recording(val=...)``), or None."""
    log = _LOG.get()
    return None if log is None else log.val


def add_run(epochs: list[EpochRecord]) -> None:
    """Add one run's epochs to the current log (none: do nothing)."""
    log = _LOG.get()
    if log is not None:
        log.add_run(epochs)
