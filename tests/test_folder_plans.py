"""A folder's results are the cells its runs planned that no later plan replaced: specs run one
after another add up, cells an earlier spec made under a label a later one redefines (or that
rest on such a cell) stay stored as a cache but never mix into the numbers."""

from __future__ import annotations

import sqlite3

from ribench.engine import parse_spec, run
from ribench.engine.store import ResultsStore
from ribench.report.rundata import load_run


def _spec(epochs: int, methods=None, seeds=(0,), pretrain_epochs: int = 1):
    return parse_spec({"name": "plans", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
                       "methods": methods or [{"name": "ft", "label": "ft", "params": {"epochs": epochs}}],
                       "seeds": list(seeds), "device": "cpu", "pretrain": {"epochs": pretrain_epochs},
                       "eval": {"val_fraction": 0.2, "pretrain_sample": 20}, "diagnostics": {"enabled": False},
                       "analysis": {"enabled": False}})


def _numbers(rows):
    """Every stored number but wall times (which differ between two runs of one cell)."""
    return sorted((repr(r["method"]), repr(r["task"]), r["eval_set"], r["metric"], r["value"]) for r in rows
                  if "seconds" not in r["metric"])


def _stored_cells(out):
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute("SELECT COUNT(*) FROM cells WHERE kind = 'adapt'").fetchone()[0]
    finally:
        con.close()


def test_a_second_spec_with_one_label_and_other_hyperparameters_does_not_mix(tmp_path):
    alone = tmp_path / "alone"
    run(_spec(2), alone, quiet=True)
    shared = tmp_path / "shared"
    run(_spec(1), shared, quiet=True)
    run(_spec(2), shared, quiet=True)
    assert _stored_cells(shared) == 4  # both specs' ft cells are kept (2 tasks each)
    got = load_run(shared)
    assert _numbers(got.rows) == _numbers(load_run(alone).rows)  # only the latest spec's numbers
    ft_id = [r for r in got.rows if r["method"] == "ft" and r["eval_set"] == "*" and r["metric"] == "id_acc"]
    assert len(ft_id) == 2  # one per task, not one per task and spec
    # going back to the first spec reuses its cells and shows their numbers again
    back = run(_spec(1), shared, quiet=True)
    assert back.ran == 0
    first = tmp_path / "first"
    run(_spec(1), first, quiet=True)
    assert _numbers(load_run(shared).rows) == _numbers(load_run(first).rows)


def test_a_store_without_recorded_plans_shows_every_cell(tmp_path):
    out = tmp_path / "old"
    run(_spec(1), out, quiet=True)
    run(_spec(2), out, quiet=True)
    con = sqlite3.connect(out / "results.sqlite")
    con.execute("UPDATE runs SET planned = NULL")  # as a version before the plan was recorded wrote it
    con.commit()
    con.close()
    store = ResultsStore(out / "results.sqlite")
    try:
        snap, every = store.snapshot(), store.snapshot(planned_only=False)
    finally:
        store.close()
    assert snap["unplanned"] == 0 and len(snap["rows"]) == len(every["rows"])
    ids = [r for r in snap["rows"] if r["method"] == "ft" and r["eval_set"] == "*" and r["metric"] == "id_acc"]
    assert len(ids) == 4


def test_an_old_store_gains_the_column(tmp_path):
    path = tmp_path / "results.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL, spec TEXT, env TEXT)")
    con.execute("INSERT INTO runs (started, spec, env) VALUES (1, '{}', '{}')")
    con.commit()
    con.close()
    store = ResultsStore(path)
    try:
        assert store.last_run()["planned"] is None
        store.record_run({}, {}, ["b", "a"])
        assert set(store.last_run()["planned"]) == {"a", "b"} and store.shown_keys() == {"a", "b"}
    finally:
        store.close()


def test_the_python_api_reads_the_latest_plan_too(tmp_path):
    import ribench

    out = tmp_path / "api"
    run(_spec(1), out, quiet=True)
    run(_spec(2), out, quiet=True)
    r = ribench.open(out)
    assert len(r.models().query("method == 'ft'")) == 2  # not 4
    params = set(r.results().query("method == 'ft'")["params"].dropna())
    assert params and all('"epochs": 2' in p for p in params)
    m = r.model(backbone="mlp", method="ft", task="t1", seed=0)
    alone = tmp_path / "alone"
    run(_spec(2), alone, quiet=True)
    import torch

    other = ribench.open(alone).model(backbone="mlp", method="ft", task="t1", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), other.state_dict().values()))


def test_specs_run_one_after_another_add_up(tmp_path):
    """A second spec with another method (the findings' WiSE-FT and rich specs after the main grid)
    adds its cells to the folder's results; the first spec's stay."""
    both = tmp_path / "both"
    run(_spec(1), both, quiet=True)
    run(_spec(1, methods=[{"name": "ft", "label": "ft", "params": {"epochs": 1}}, "lp"]), tmp_path / "ref", quiet=True)
    run(_spec(1, methods=["lp"]), both, quiet=True)
    assert _numbers(load_run(both).rows) == _numbers(load_run(tmp_path / "ref").rows)


def test_cells_resting_on_a_replaced_model_are_left_out(tmp_path):
    """A changed pretraining budget replaces m0: the earlier spec's models of other seeds rest on the
    old m0, so they leave the results too, though no later cell has their labels."""
    out = tmp_path / "out"
    run(_spec(1, seeds=(0, 1)), out, quiet=True)
    run(_spec(1, seeds=(0,), pretrain_epochs=2), out, quiet=True)
    run(_spec(1, seeds=(0,), pretrain_epochs=2), tmp_path / "alone", quiet=True)
    got = load_run(out)
    assert {r["seed"] for r in got.rows if r["method"] == "ft"} == {0}
    assert _numbers(got.rows) == _numbers(load_run(tmp_path / "alone").rows)


def test_a_folder_of_an_earlier_version_keeps_its_cells_when_a_new_spec_is_added(tmp_path):
    out = tmp_path / "old"
    run(_spec(1), out, quiet=True)
    con = sqlite3.connect(out / "results.sqlite")
    con.execute("UPDATE runs SET planned = NULL")  # written before plans were recorded
    con.commit()
    con.close()
    run(_spec(1, methods=["lp"]), out, quiet=True)
    run(_spec(1, methods=[{"name": "ft", "label": "ft", "params": {"epochs": 1}}, "lp"]), tmp_path / "ref", quiet=True)
    assert _numbers(load_run(out).rows) == _numbers(load_run(tmp_path / "ref").rows)
