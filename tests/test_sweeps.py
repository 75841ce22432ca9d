"""Sweeps: one method listed several times plans one set of cells per entry, each named by its
label; labels are unique, requirements choose among several entries by label, and the label
is no part of a key (relabelled cells are reused and their stored rows renamed)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from ribench.core.errors import ConfigError
from ribench.core.registry import METHODS
from ribench.engine import plan, run
from test_engine import SUITE_ID, TASKS, tiny_spec


def adapt_cells(spec, task="t1"):
    """Label -> adapt cell of task ``task``."""
    return {c.labels["method"]: c for c in plan(spec, TASKS, SUITE_ID) if c.kind == "adapt" and c.labels["task"] == task}


def test_a_method_listed_twice_gives_two_sets_of_cells_labelled_by_what_differs():
    sweep = adapt_cells(tiny_spec(methods=[{"name": "lora", "params": {"r": 4}}, {"name": "lora", "params": {"r": 16}}]))
    assert set(sweep) == {"lora[r=4]", "lora[r=16]"}  # the old planner kept one, r=16
    for r in (4, 16):
        cell = sweep[f"lora[r={r}]"]
        assert cell.config["method"] == "lora" and cell.config["params"] == METHODS.create("lora", r=r).params()
        # the same cell as a spec listing only this entry: the label is no part of the key
        (alone,) = adapt_cells(tiny_spec(methods=[{"name": "lora", "params": {"r": r}}])).values()
        assert cell.key == alone.key
    # every kind of cell of an entry carries its label
    cells = plan(tiny_spec(methods=[{"name": "lp", "params": {"max_iter": 50}}, "lp"]), TASKS, SUITE_ID)
    assert {c.labels.get("method") for c in cells if c.kind in ("adapt", "evaluate")} == \
        {"lp[max_iter=50]", f"lp[max_iter={METHODS.create('lp').params()['max_iter']}]"}


def test_labels_are_given_or_default_and_never_shared():
    spec = tiny_spec(methods=[{"name": "ft", "label": "ft-slow", "params": {"lr": 1e-4}}, "lp"])
    assert set(adapt_cells(spec)) == {"ft-slow", "lp"}
    # a label changes no key
    plain = adapt_cells(tiny_spec(methods=[{"name": "ft", "params": {"lr": 1e-4}}, "lp"]))
    assert adapt_cells(spec)["ft-slow"].key == plain["ft"].key
    with pytest.raises(ConfigError, match=r"^methods\[1\]: its label 'ft' is also the label of methods\[0\]"):
        tiny_spec(methods=["ft", "ft"])
    with pytest.raises(ConfigError, match=r"^methods\[1\]: its label 'a' is also the label of methods\[0\]"):
        tiny_spec(methods=[{"name": "ft", "label": "a"}, {"name": "lp", "label": "a"}])
    with pytest.raises(ConfigError, match=r"^methods\[1\]: 'again' and 'ft' are the same method with the same "
                                          r"parameters and inputs"):
        tiny_spec(methods=["ft", {"name": "ft", "label": "again"}])
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.label: 'lp' is the name of another method"):
        tiny_spec(methods=[{"name": "ft", "label": "lp"}])
    for reserved in ("pretrained", "analysis", "corrupt", " ft", ""):
        with pytest.raises(ConfigError, match=r"^methods\[0\]\.label: "):
            tiny_spec(methods=[{"name": "ft", "label": reserved}])


def test_a_requirement_chooses_among_several_entries_by_label():
    two_ft = [{"name": "ft", "params": {"lr": 1e-4}}, {"name": "ft", "params": {"lr": 1e-3}}]
    with pytest.raises(ConfigError, match=r"^methods\[2\]\.requires: 'wise_ft' requires 'ft', and the spec lists 2 "
                                          r"'ft' entries \(ft\[lr=0\.0001\], ft\[lr=0\.001\]\): choose one with "
                                          r"requires = \{ft = \"ft\[lr=0\.0001\]\"\}"):
        tiny_spec(methods=[*two_ft, "wise_ft"])
    spec = tiny_spec(methods=[*two_ft, {"name": "wise_ft", "requires": {"ft": "ft[lr=0.001]"}}])
    cells = plan(spec, TASKS, SUITE_ID)
    adapt = {c.labels["method"]: c for c in cells if c.kind == "adapt" and c.labels["task"] == "t1"}
    assert adapt["wise_ft"].inputs_of("requires") == (adapt["ft[lr=0.001]"].key,)
    ev = next(c for c in cells if c.kind == "evaluate" and c.labels == adapt["wise_ft"].labels)
    assert ev.inputs_of("extra") == (adapt["ft[lr=0.001]"].key,)  # the WiSE-FT curve of the chosen ft
    # with one ft listed, wise_ft's cells are those of the spec without the sweep
    alone = adapt_cells(tiny_spec(methods=[two_ft[1], "wise_ft"]))
    assert adapt["wise_ft"].key == alone["wise_ft"].key
    # a soup over the chosen ft's models of every seed
    soup = adapt_cells(tiny_spec(methods=[*two_ft, {"name": "soup_uniform", "requires": {"ft": "ft[lr=0.0001]"}}],
                                 seeds=[0, 1]))
    ft_keys = {c.key for c in plan(tiny_spec(methods=two_ft[:1], seeds=[0, 1]), TASKS, SUITE_ID)
               if c.kind == "adapt" and c.labels["task"] == "t1"}
    assert set(soup["soup_uniform"].inputs_of("ingredients")) == ft_keys
    for methods, match in [
        ([*two_ft, {"name": "wise_ft", "requires": {"ft": "ft[lr=9]"}}], r"^methods\[2\]\.requires\.ft: 'ft\[lr=9\]' "
                                                                          r"is no label of a 'ft' entry"),
        ([{"name": "wise_ft", "requires": {"lp": "lp"}}], r"^methods\[0\]\.requires\.lp: 'wise_ft' requires 'ft'"),
        (["lp", {"name": "wise_ft", "requires": {"ft": "lp"}}], r"^methods\[1\]\.requires\.ft: 'lp' is no label"),
    ]:
        with pytest.raises(ConfigError, match=match):
            tiny_spec(methods=methods)


def test_a_required_method_not_listed_is_added_and_one_listed_is_used_whatever_its_label():
    added = plan(tiny_spec(methods=["lpft"]), TASKS, SUITE_ID)
    assert {c.labels["method"] for c in added if c.kind == "adapt"} == {"lp", "lpft"}
    adapt = adapt_cells(tiny_spec(methods=["lpft", {"name": "lp", "label": "probe"}]))
    assert set(adapt) == {"lpft", "probe"} and adapt["lpft"].inputs_of("requires") == (adapt["probe"].key,)
    assert adapt["lpft"].key == {c.labels["method"]: c.key for c in added
                                 if c.kind == "adapt" and c.labels["task"] == "t1"}["lpft"]


def _rows(out):
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT method, task, eval_set, metric, value FROM metrics").fetchall()
    con.close()
    return rows


def test_a_sweep_runs_and_a_relabelled_method_reuses_its_cells(tmp_path, capsys):
    from ribench.cli import main

    base = dict(tasks=["t1"], analysis={"enabled": False}, pretrain={"epochs": 1})
    sweep = [{"name": "lp", "params": {"max_iter": 20}}, {"name": "lp", "params": {"max_iter": 40}}]
    res = run(tiny_spec(methods=sweep, **base), tmp_path, quiet=True)
    assert res.ok and res.ran == 2 + 2 * 2  # pretrain, eval_pretrained, (adapt + evaluate) per entry
    rows = _rows(tmp_path)
    ids = {m: v for m, t, es, metric, v in rows if es == "*" and metric == "id_acc"}
    assert set(ids) == {"lp[max_iter=20]", "lp[max_iter=40]"}
    # each label's full hyperparameters, from its adapt cells' config
    assert main(["results", str(tmp_path), "--methods", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"label": f"lp[max_iter={n}]", "method": "lp",
                       "params": json.loads(json.dumps(METHODS.create("lp", max_iter=n).params()))} for n in (20, 40)]
    assert main(["results", str(tmp_path), "--methods", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["label"], r["method"], json.loads(r["params"])) for r in table] == \
        [(it["label"], it["method"], it["params"]) for it in listed]
    # new labels: nothing recomputes, every stored row takes the new label
    relabelled = [{**sweep[0], "label": "short"}, {**sweep[1], "label": "long"}]
    again = run(tiny_spec(methods=relabelled, **base), tmp_path, quiet=True)
    assert again.ran == 0 and again.cached == res.total
    renamed = {"lp[max_iter=20]": "short", "lp[max_iter=40]": "long"}
    assert sorted(_rows(tmp_path), key=repr) == sorted(((renamed.get(m, m), t, es, metric, v)
                                                        for m, t, es, metric, v in rows), key=repr)  # NULL labels
    assert main(["status", str(tmp_path)]) == 0 and "6 done" in capsys.readouterr().out
