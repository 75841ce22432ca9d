"""Training curves of the adapt and pretrain cells: their result rows and the optional loggers.

Every training run of a cell (core.trainlog) becomes rows ``rows.train_epoch(epoch, run)``
with metrics ``train_loss`` (mean loss of the epoch's steps) and ``val_acc`` (accuracy on
the validation part after the epoch, when there is one); ``training_rows`` builds them.

``[logging] tensorboard = true`` in the spec also writes the same scalars, per cell, under
``<out>/tensorboard/<cell key>`` through ``torch.utils.tensorboard.SummaryWriter`` (tags
``train_loss`` / ``val_acc``, ``run<r>/...`` for a cell's later runs; the step is the
epoch). It needs the ``tensorboard`` package: a spec asking for it where it does not import
fails at load (``check_tensorboard``).

``[logging] mlflow = true`` logs each cell as one MLflow run in the local file store
``<out>/mlruns`` (tracking URI ``file:<out>/mlruns``, experiment ``ribench``; nothing leaves
the machine): the run is named by the cell key, its params are the cell's labels (kind,
method label, task, seed, ...) and hyperparameters (``params.<name>``), its metrics the
same scalars as TensorBoard's with step = epoch. A cell computed again replaces its run.
It needs ``mlflow`` (``mlflow-skinny`` is enough); ``check_mlflow`` fails the spec at load
where it does not import. MLflow's usage telemetry is turned off before it is imported,
and its file store, kept by MLflow for existing users, is allowed
(``MLFLOW_ALLOW_FILE_STORE``) while ribench writes or reads it (``mlflow_client``).

``write_loggers`` writes a cell's curves to every logger the spec asks for.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..core import rows
from ..core.errors import ConfigError
from ..core.trainlog import TrainingLog

TENSORBOARD_PIP = "pip install tensorboard"
MLFLOW_PIP = "pip install mlflow-skinny"
MLFLOW_EXPERIMENT = "ribench"


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


def _scalars(log: TrainingLog) -> Iterator[tuple[str, float, int]]:
    """(tag, value, epoch) of every scalar of ``log``: ``train_loss`` / ``val_acc``, ``run<r>/`` before
    the tags of a cell's later runs."""
    for run, epochs in enumerate(log.runs):
        prefix = f"run{run}/" if run else ""
        for r in epochs:
            yield prefix + rows.TRAIN_LOSS, r.train_loss, r.epoch
            if r.val_acc is not None and math.isfinite(r.val_acc):
                yield prefix + rows.VAL_ACC, r.val_acc, r.epoch


def write_tensorboard(log_dir: str | Path, log: TrainingLog) -> None:
    """The scalars of ``log`` as TensorBoard events under ``log_dir`` (module docstring)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for tag, value, epoch in _scalars(log):
            writer.add_scalar(tag, value, epoch)
    finally:
        writer.close()


# ------------------------------------------------------------------------------ MLflow


def _import_mlflow():
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no usage reports leave the machine
    import mlflow

    return mlflow


def mlflow_error() -> str | None:
    """Why ``mlflow`` does not import here (with the pip command), or None when it does."""
    try:
        _import_mlflow()
    except ImportError as e:
        return f"needs the mlflow package, which does not import here ({e}); install it with `{MLFLOW_PIP}`"
    return None


def check_mlflow(field: str = "logging.mlflow") -> None:
    """ConfigError naming ``field`` and the pip command unless MLflow imports."""
    error = mlflow_error()
    if error is not None:
        raise ConfigError(field, error)


@contextlib.contextmanager
def mlflow_client(store: str | Path):
    """An ``mlflow.tracking.MlflowClient`` on the file store at ``store`` (a folder, made when
    missing), with the file store allowed while the block runs."""
    _import_mlflow()
    from mlflow.tracking import MlflowClient

    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield MlflowClient(tracking_uri=Path(store).resolve().as_uri())
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


def _flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(_flat_params(v, f"{prefix}{k}."))
        elif v is not None:
            out[f"{prefix}{k}"] = str(v)
    return out


def cell_params(cell) -> dict[str, str]:
    """A cell's logged params: ``kind``, its labels (method label, task, seed, ...) and its
    hyperparameters as ``params.<name>`` (nested ones dotted), all as strings."""
    params = cell.config.get("params") if isinstance(cell.config.get("params"), Mapping) else {}
    return {"kind": cell.kind, **_flat_params(cell.labels), **_flat_params(params, "params.")}


def write_mlflow(store: str | Path, run_name: str, log: TrainingLog, params: Mapping[str, str]) -> str:
    """The scalars of ``log`` as the metrics (step = epoch) of an MLflow run named ``run_name``
    with ``params``, in the file store ``store``; an earlier run of that name is deleted first.
    Returns the run id."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    with mlflow_client(store) as client:
        exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if exp is None:
            try:
                experiment_id = client.create_experiment(MLFLOW_EXPERIMENT)
            except MlflowException:  # another worker made it first
                experiment_id = client.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id
        else:
            experiment_id = exp.experiment_id
        for old in client.search_runs([experiment_id], filter_string=f"attributes.run_name = '{run_name}'"):
            client.delete_run(old.info.run_id)  # the cell computed again: one run per cell
        run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(value), now, int(epoch)) for tag, value, epoch in _scalars(log)]
        plist = [Param(k, v) for k, v in params.items()]
        for i in range(0, max(len(metrics), len(plist)), 100):  # MLflow's batch limit is 100 params
            client.log_batch(run_id, metrics=metrics[i:i + 100], params=plist[i:i + 100])
        client.set_terminated(run_id)
    return run_id


# ----------------------------------------------------------------------------- all loggers


def write_loggers(logging_spec, out: str | Path, cell, log: TrainingLog) -> None:
    """``log`` of ``cell`` to every logger ``logging_spec`` (the spec's ``[logging]``) turns on,
    under the run folder ``out`` (module docstring); nothing when the log has no run."""
    if not log.runs:
        return
    out = Path(out)
    if logging_spec.tensorboard:
        write_tensorboard(out / "tensorboard" / cell.key, log)
    if logging_spec.mlflow:
        write_mlflow(out / "mlruns", cell.key, log, cell_params(cell))
