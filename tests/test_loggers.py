"""The optional MLflow logger of the training curves (engine/logging.py): the error at spec load
where the package is missing, and the runs read back through MLflow's own client against the
curve rows the results store holds."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from test_training_curves import SPEC, _rows


def test_mlflow_without_the_package_fails_at_load_naming_field_and_pip():
    from ribench.core import ConfigError
    from ribench.engine import parse_spec
    from ribench.engine.logging import mlflow_error

    assert parse_spec(SPEC).logging.mlflow is False
    if mlflow_error() is None:
        pytest.skip("mlflow is installed here")
    with pytest.raises(ConfigError, match=r"logging\.mlflow.*pip install mlflow-skinny"):
        parse_spec({**SPEC, "logging": {"mlflow": True}})
    # a stored run is read without its optional packages
    assert parse_spec({**SPEC, "logging": {"mlflow": True}}, check_packages=False).logging.mlflow


def test_cell_params_are_the_labels_and_the_dotted_hyperparameters():
    from ribench.engine.logging import cell_params

    cell = SimpleNamespace(kind="adapt", labels={"method": "ft[lr=0.1]", "task": "t1", "seed": 0, "note": None},
                           config={"params": {"lr": 0.1, "sched": {"name": "cos", "warmup": 2}}, "task": "t1"})
    assert cell_params(cell) == {"kind": "adapt", "method": "ft[lr=0.1]", "task": "t1", "seed": "0",
                                 "params.lr": "0.1", "params.sched.name": "cos", "params.sched.warmup": "2"}
    assert cell_params(SimpleNamespace(kind="pretrain", labels={}, config={"epochs": 2})) == {"kind": "pretrain"}


def _needs_mlflow() -> None:
    """The extras lane (`make test-extras`, RIBENCH_EXTRAS=1) installs mlflow-skinny: there a missing
    package is a failure; in the default lane these tests wait for that lane."""
    if os.environ.get("RIBENCH_EXTRAS") == "1":
        import mlflow  # noqa: F401
    else:
        pytest.importorskip("mlflow", reason="mlflow is optional; `make test-extras` runs these tests")


def _history(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
            for name in run.data.metrics}


@pytest.mark.extras
def test_mlflow_run_holds_the_scalars_and_params(tmp_path):
    _needs_mlflow()
    from ribench.core.trainlog import EpochRecord, TrainingLog
    from ribench.engine.logging import MLFLOW_EXPERIMENT, check_mlflow, mlflow_client, write_mlflow

    check_mlflow()  # importable: no error
    allowed_before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    log = TrainingLog(runs=[[EpochRecord(1, 4, 1.25, 0.5), EpochRecord(2, 4, 0.75, 0.625)],
                            [EpochRecord(1, 2, 0.5)]])
    first = write_mlflow(tmp_path / "mlruns", "cellkey1", log, {"method": "ft", "params.lr": "0.001"})
    again = write_mlflow(tmp_path / "mlruns", "cellkey1", log, {"method": "ft", "params.lr": "0.001"})
    with mlflow_client(tmp_path / "mlruns") as client:
        exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        (run,) = client.search_runs([exp.experiment_id])  # the run written again replaced the first
        assert run.info.run_id == again != first and run.info.run_name == "cellkey1"
        assert run.info.status == "FINISHED"
        assert run.data.params == {"method": "ft", "params.lr": "0.001"}
        assert _history(client, again) == {"train_loss": [(1, 1.25), (2, 0.75)], "val_acc": [(1, 0.5), (2, 0.625)],
                                           "run1/train_loss": [(1, 0.5)]}
    assert os.environ.get("MLFLOW_ALLOW_FILE_STORE") == allowed_before  # allowed only while ribench uses the store


@pytest.mark.extras
def test_mlflow_run_logs_one_run_per_trained_cell_matching_the_stored_rows(tmp_path):
    _needs_mlflow()
    from ribench.core import rows
    from ribench.engine import parse_spec, run
    from ribench.engine.logging import MLFLOW_EXPERIMENT, mlflow_client

    spec = parse_spec({**SPEC, "methods": [{"name": "ft", "params": {"epochs": 1, "lr": 0.002}}],
                       "logging": {"mlflow": True}})
    assert run(spec, tmp_path, quiet=True).ok
    stored: dict[str, dict[str, list[tuple[int, float]]]] = {}
    methods: dict[str, str | None] = {}
    for kind in ("adapt", "pretrain"):
        for key, method, eval_set, metric, value in _rows(tmp_path, kind):
            run_epoch = rows.parse_train_epoch(eval_set)
            if run_epoch is None:
                continue
            r, epoch = run_epoch
            name = (f"run{r}/" if r else "") + metric
            stored.setdefault(key, {}).setdefault(name, []).append((epoch, value))
            methods[key] = method
    assert len(stored) == 2  # the pretrain cell and the ft cell
    with mlflow_client(tmp_path / "mlruns") as client:
        exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        logged = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
        assert set(logged) == set(stored)
        for key, curves in stored.items():
            assert _history(client, logged[key].info.run_id) == {n: sorted(v) for n, v in curves.items()}, key
        params = {key: r.data.params for key, r in logged.items()}
    ft_key = next(k for k, m in methods.items() if m == "ft")
    assert params[ft_key]["method"] == "ft" and params[ft_key]["kind"] == "adapt"
    assert float(params[ft_key]["params.lr"]) == 0.002 and params[ft_key]["params.epochs"] == "1"
    assert {p["kind"] for p in params.values()} == {"adapt", "pretrain"}
