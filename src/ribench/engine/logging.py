"""Training curves of the adapt and pretrain cells: their result rows and the optional loggers.

Every training run of a cell (core.trainlog) becomes rows ``rows.train_epoch(epoch, run)``
with metrics ``train_loss`` (mean loss of the epoch's steps) and ``val_acc`` (accuracy on
the validation part after the epoch, when there is one); ``training_rows`` builds them.

``[logging] tensorboard = true`` in the spec also writes the same scalars, per cell, under
``<out>/tensorboard/<cell key>`` through ``torch.utils.tensorboard.SummaryWriter`` (tags
``train_loss`` / ``val_acc``, ``run<r>/...`` for a cell's later runs; the step is the
epoch). It needs the ``tensorboard`` package: a spec asking for it where it does not import
fails at load (``check_tensorboard``).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core import rows
from ..core.errors import ConfigError
from ..core.trainlog import TrainingLog

TENSORBOARD_PIP = "pip install tensorboard"


def training_rows(log: TrainingLog) -> dict[str, dict[str, float]]:
    """Row name -> {train_loss, val_acc} for every epoch of every run in ``log`` (val_acc only when
    measured and finite)."""
    out: dict[str, dict[str, float]] = {}
    for run, epochs in enumerate(log.runs):
        for r in epochs:
            row = {rows.TRAIN_LOSS: r.train_loss}
            if r.val_acc is not None and math.isfinite(r.val_acc):
                row[rows.VAL_ACC] = r.val_acc
            out[rows.train_epoch(r.epoch, run)] = row
    return out


def tensorboard_error() -> str | None:
    """Why ``torch.utils.tensorboard`` does not import here (with the pip command), or None when it does."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        return f"needs the tensorboard package, which does not import here ({e}); install it with `{TENSORBOARD_PIP}`"
    return None


def check_tensorboard(field: str = "logging.tensorboard") -> None:
    """ConfigError naming ``field`` and the pip command unless TensorBoard's writer imports."""
    error = tensorboard_error()
    if error is not None:
        raise ConfigError(field, error)


def write_tensorboard(log_dir: str | Path, log: TrainingLog) -> None:
    """The scalars of ``log`` as TensorBoard events under ``log_dir`` (module docstring)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for run, epochs in enumerate(log.runs):
            prefix = f"run{run}/" if run else ""
            for r in epochs:
                writer.add_scalar(prefix + rows.TRAIN_LOSS, r.train_loss, r.epoch)
                if r.val_acc is not None and math.isfinite(r.val_acc):
                    writer.add_scalar(prefix + rows.VAL_ACC, r.val_acc, r.epoch)
    finally:
        writer.close()
