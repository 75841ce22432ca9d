"""Engine: spec validation, cell keys, end-to-end run, caching, resume, failures."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import pytest

from ribench.core import ConfigError, UnknownNameError, register_method
from ribench.core.registry import METHODS
from ribench.engine import parse_spec, plan, run
from ribench.engine import execute as execute_mod
from ribench.engine.store import ResultsStore
from ribench.methods.base import Method

SUITE_ID = {"name": "tiny", "version": "1", "data_seed": 0}
TASKS = ["t1", "t2"]


def tiny_spec(**over):
    data = {
        "name": "tiny", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
        "methods": [{"name": "ft", "params": {"epochs": 1}}, "lp", {"name": "lpft", "params": {"epochs": 1}}],
        "seeds": [0], "device": "cpu", "pretrain": {"epochs": 2},
        "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
        "diagnostics": {"enabled": False},  # test_diagnose_cells_* cover them
    }
    data.update(over)
    return parse_spec(data)


def keys_by(cells):
    return {(c.kind, c.labels.get("backbone"), c.labels.get("recipe"), c.labels.get("method"), c.labels.get("task"),
             c.labels.get("seed")): c.key for c in cells}


# --- spec -------------------------------------------------------------------------
def test_malformed_spec_names_the_field():
    with pytest.raises(ConfigError, match=r"pretrain\.epochs"):
        tiny_spec(pretrain={"epochs": -1})
    with pytest.raises(ConfigError, match=r"eval\.bogus.*unknown field"):
        tiny_spec(eval={"bogus": 1})
    with pytest.raises(ConfigError, match=r"seeds"):
        tiny_spec(seeds="zero")
    with pytest.raises(ConfigError, match=r"methods\[0\]\.name"):
        tiny_spec(methods=[{"params": {}}])


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnot'.*resnet"):
        plan(tiny_spec(backbones=["resnot"]), TASKS, SUITE_ID)
    with pytest.raises(UnknownNameError, match=r"Valid methods: .*ft.*lp"):
        plan(tiny_spec(methods=["fine-tune"]), TASKS, SUITE_ID)
    with pytest.raises(ConfigError, match=r"methods\.ft\.params\.epochz"):
        plan(tiny_spec(methods=[{"name": "ft", "params": {"epochz": 1}}]), TASKS, SUITE_ID)


def test_spec_files_toml_and_yaml(tmp_path):
    from ribench.engine import load_spec

    (tmp_path / "a.toml").write_text('suite = "tiny"\nbackbones = ["mlp"]\nmethods = ["lp"]\n')
    (tmp_path / "b.yaml").write_text("suite: tiny\nbackbones: [mlp]\nmethods: [lp]\n")
    assert load_spec(tmp_path / "a.toml") == load_spec(tmp_path / "b.yaml")
    (tmp_path / "bad.toml").write_text("backbones = [\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_spec(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


# --- keys -------------------------------------------------------------------------
def test_plan_adds_required_methods_and_orders_dependencies():
    cells = plan(tiny_spec(methods=["lpft"]), TASKS, SUITE_ID)
    seen = set()
    for c in cells:
        assert all(d in seen for d in c.deps), c.describe()
        seen.add(c.key)
    methods = {c.labels.get("method") for c in cells if c.kind == "adapt"}
    assert methods == {"lp", "lpft"}
    # pretrain + eval_pretrained + analysis per task, (adapt + evaluate) x 2 methods x 2 tasks
    assert len(cells) == 2 + 2 + 2 * 2 * 2


def test_same_config_same_keys_and_changes_touch_only_dependents():
    base = keys_by(plan(tiny_spec(), TASKS, SUITE_ID))
    assert base == keys_by(plan(tiny_spec(), TASKS, SUITE_ID))

    # a changed ft hyperparameter changes ft's cells only
    ft2 = keys_by(plan(tiny_spec(methods=[{"name": "ft", "params": {"epochs": 2}}, "lp",
                                          {"name": "lpft", "params": {"epochs": 1}}]), TASKS, SUITE_ID))
    changed = {k for k in base if base[k] != ft2[k]}
    assert changed and all(k[3] == "ft" for k in changed)
    assert len(changed) == 2 * 2  # adapt + evaluate for each task

    # a changed lp hyperparameter changes lp and lpft (which requires lp), not ft
    lp2 = keys_by(plan(tiny_spec(methods=[{"name": "ft", "params": {"epochs": 1}}, {"name": "lp", "params": {"max_iter": 50}},
                                          {"name": "lpft", "params": {"epochs": 1}}]), TASKS, SUITE_ID))
    changed = {k[3] for k in base if base[k] != lp2[k]}
    assert changed == {"lp", "lpft"}

    # pretraining changes everything downstream of it
    pt2 = keys_by(plan(tiny_spec(pretrain={"epochs": 3}), TASKS, SUITE_ID))
    assert all(base[k] != pt2[k] for k in base)

    # a new seed adds cells and leaves the old ones alone
    s2 = keys_by(plan(tiny_spec(seeds=[0, 1]), TASKS, SUITE_ID))
    assert all(s2[k] == v for k, v in base.items())
    assert len(s2) > len(base)


# --- running ------------------------------------------------------------------------
def metric_values(out):
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT backbone, recipe, method, task, seed, eval_set, metric, value FROM metrics").fetchall()
    con.close()
    return {r[:7]: r[7] for r in rows if r[6] != "train_seconds"}  # wall time is not a result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = run(tiny_spec(), out, quiet=True)
    return out, res


def test_run_end_to_end_stores_every_number(finished_run):
    out, res = finished_run
    assert res.ok and res.ran == res.total == 2 + 2 + 3 * 2 * 2
    vals = metric_values(out)
    eval_sets = {"pre", "t1", "t2", "extra", "pre-c/noise/1", "pre-c/noise/2"}
    for m in ("ft", "lp", "lpft"):
        for t in TASKS:
            for es in eval_sets:
                for metric in ("accuracy", "ece", "nll"):
                    assert ("mlp", "narrow", m, t, 0, es, metric) in vals
            for metric in ("id_acc", "R", "dR", "dP", "corr_acc", "mCE", "id_ece", "id_nll", "trainable_params"):
                assert ("mlp", "narrow", m, t, 0, "*", metric) in vals
            s = {k[6]: v for k, v in vals.items() if k[2] == m and k[3] == t and k[5] == "*"}
            assert s["id_acc"] == vals[("mlp", "narrow", m, t, 0, t, "accuracy")]
            other = "t2" if t == "t1" else "t1"
            p0 = vals[("mlp", "narrow", "pretrained", None, None, other, "accuracy")]
            assert s["dR"] == pytest.approx(vals[("mlp", "narrow", m, t, 0, other, "accuracy")] - p0)
    # the task is learnable: adapting beats chance on the task
    assert vals[("mlp", "narrow", "ft", "t1", 0, "*", "id_acc")] > 0.6
    # lp trains the head only
    lp_params = vals[("mlp", "narrow", "lp", "t1", 0, "*", "trainable_params")]
    ft_params = vals[("mlp", "narrow", "ft", "t1", 0, "*", "trainable_params")]
    assert lp_params < ft_params
    assert (out / "report.md").exists() is False  # the engine writes no report; the CLI does


def test_second_run_recomputes_nothing(finished_run):
    out, first = finished_run
    before = metric_values(out)
    again = run(tiny_spec(), out, quiet=True)
    assert again.ran == 0 and again.cached == first.total
    assert metric_values(out) == before


def test_changed_config_recomputes_only_dependents(finished_run, tmp_path):
    import shutil

    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    spec = tiny_spec(methods=[{"name": "ft", "params": {"epochs": 2}}, "lp", {"name": "lpft", "params": {"epochs": 1}}])
    res = run(spec, copy, quiet=True)
    assert res.ran == 2 * 2  # ft adapt + evaluate on 2 tasks


def test_resume_after_crash_gives_same_numbers(finished_run, tmp_path, monkeypatch):
    out_ref, first = finished_run
    calls = {"n": 0}
    real = execute_mod.Workspace.run_cell

    def crashing(self, cell, deps, progress):
        calls["n"] += 1
        if calls["n"] == 7:
            raise SystemExit("simulated crash")  # not an Exception: stops the whole run
        return real(self, cell, deps, progress)

    monkeypatch.setattr(execute_mod.Workspace, "run_cell", crashing)
    out = tmp_path / "crash"
    with pytest.raises(SystemExit):
        run(tiny_spec(), out, quiet=True)
    monkeypatch.setattr(execute_mod.Workspace, "run_cell", real)
    res = run(tiny_spec(), out, quiet=True)
    assert res.cached == 6 and res.ran == first.total - 6
    assert metric_values(out) == metric_values(out_ref)


@dataclass(frozen=True)
class _BoomConfig:
    pass


class Boom(Method):
    """Always fails."""

    name = "boom"
    Config = _BoomConfig

    def adapt(self, pretrained, task, ctx):
        raise RuntimeError("kaboom")


def test_failing_cell_is_recorded_and_grid_goes_on(tmp_path):
    if "boom" not in METHODS:
        register_method("boom")(Boom)
    res = run(tiny_spec(methods=["boom", "lp"]), tmp_path, quiet=True)
    assert not res.ok and len(res.failed) == 2 and res.skipped == 2
    store = ResultsStore(tmp_path / "results.sqlite")
    failed = store.cells("failed")
    assert {c["labels"]["method"] for c in failed} == {"boom"}
    assert all("kaboom" in c["error"] and "Traceback" in c["traceback"] for c in failed)
    done = {(c["kind"], c["labels"].get("method")) for c in store.cells("done")}
    assert ("evaluate", "lp") in done
    store.close()


def test_nan_loss_raises_training_error(tiny):
    import torch

    from ribench.core import TrainingError
    from ribench.models import create_model
    from ribench.models.training import TrainConfig, train_classifier

    model = create_model("mlp", num_classes=3)
    with pytest.raises(TrainingError, match="loss became nan at epoch 1, step 1"):
        train_classifier(model, tiny.pretrain.train, TrainConfig(epochs=1), generator=torch.Generator(),
                         penalty=lambda m: torch.tensor(float("nan")))


def test_attacks_in_the_spec_store_robust_accuracy(tmp_path):
    spec = tiny_spec(methods=["lp"], attacks=[{"name": "fgsm", "eps": [0.05, 0.3], "subset": 30, "transfer": True}])
    res = run(spec, tmp_path, quiet=True)
    assert res.ok, res.failed
    vals = metric_values(tmp_path)
    for t in TASKS:
        for eps in ("0.05", "0.3"):
            row = {k[6]: v for k, v in vals.items() if k[2] == "lp" and k[3] == t and k[5] == f"attack/fgsm/eps={eps}"}
            assert 0 <= row["robust_acc"] <= row["clean_acc"] <= 1 and row["n"] == 30
            ref = vals[("mlp", "narrow", "pretrained", None, None, f"attack/fgsm/eps={eps}/{t}", "robust_acc")]
            assert row["delta_robust_acc"] == pytest.approx(row["robust_acc"] - ref)
            assert ("mlp", "narrow", "lp", t, 0, f"transfer/fgsm/eps={eps}", "robust_acc") in vals
        small = vals[("mlp", "narrow", "lp", t, 0, "attack/fgsm/eps=0.05", "robust_acc")]
        large = vals[("mlp", "narrow", "lp", t, 0, "attack/fgsm/eps=0.3", "robust_acc")]
        assert large <= small  # a larger budget never helps the model
        summary = vals[("mlp", "narrow", "lp", t, 0, "*", "robust_acc")]
        assert summary == pytest.approx((small + large) / 2)
        # the gradient-masking checks ran once per model; a plain mlp raises no warning
        assert vals[("mlp", "narrow", "lp", t, 0, "masking/fgsm", "warnings")] == 0
    # the stored number is robust_accuracy of the stored model on the seeded subset of the whole test split
    from ribench.data import build_suite
    from ribench.engine.artifacts import ArtifactStore
    from ribench.evaluate.attacks import robust_accuracy
    from ribench.models.checkpoint import load_model

    store = ResultsStore(tmp_path / "results.sqlite")
    key = next(c["key"] for c in store.cells() if c["kind"] == "adapt" and c["labels"]["task"] == "t1")
    store.close()
    model = load_model(ArtifactStore(tmp_path / "artifacts").path(key))
    test = build_suite("tiny", seed=0).tasks["t1"].test
    direct = robust_accuracy(model, test.images, test.labels, "fgsm", 0.3, subset=30, seed=0)
    assert vals[("mlp", "narrow", "lp", "t1", 0, "attack/fgsm/eps=0.3", "robust_acc")] == direct.robust_acc


def test_analysis_cells_store_predictors(finished_run):
    from ribench.core.registry import ESTIMATORS

    out, _ = finished_run
    vals = metric_values(out)
    for t in TASKS:
        row = {k[6]: v for k, v in vals.items() if k[2] == "analysis" and k[3] == t and k[5] == "*"}
        assert {"otdd", "otdd_features", *ESTIMATORS.names()} <= set(row)
        assert row["otdd"] > 0 and 0 <= row["knn"] <= 1
    # t2 (column bars in colour) is further from the pretraining data than t1 (shifted rows)
    assert vals[("mlp", "narrow", "analysis", "t2", None, "*", "otdd")] > vals[("mlp", "narrow", "analysis", "t1", None, "*", "otdd")]


def test_corruption_sets_are_cells_made_once(tmp_path):
    corr = {"names": ["mnist-c/shot_noise", "imagenet-c/contrast"], "severities": [1, 5], "subset": 40}
    spec = tiny_spec(methods=["lp"], tasks=["t1"], corruptions=corr)
    res = run(spec, tmp_path, quiet=True)
    assert res.ok, res.failed
    vals = metric_values(tmp_path)
    sets = {k[5] for k in vals if k[2] == "lp" and k[6] == "accuracy"}
    made = {"mnist-c/shot_noise/1", "mnist-c/shot_noise/5", "imagenet-c/contrast/1", "imagenet-c/contrast/5"}
    assert made <= sets and not any(s.startswith("pre-c/") for s in sets)  # built-in sets replaced
    summary = {k[6]: v for k, v in vals.items() if k[2] == "lp" and k[5] == "*"}
    accs = [vals[("mlp", "narrow", "lp", "t1", 0, s, "accuracy")] for s in made]
    assert summary["corr_acc"] == pytest.approx(sum(accs) / 4)
    assert "mCE" in summary
    assert all(vals[("mlp", "narrow", "lp", "t1", 0, s, "n")] == 40 for s in made)
    # one more severity: only its two corruption cells and the evaluations that use them run again
    spec2 = tiny_spec(methods=["lp"], tasks=["t1"], corruptions={**corr, "severities": [1, 3, 5]})
    res2 = run(spec2, tmp_path, quiet=True)
    assert res2.ran == 2 + 2  # two new corrupt cells, eval_pretrained, evaluate
    with pytest.raises(ConfigError, match="corruptions.names"):
        plan(tiny_spec(corruptions={"names": ["nope/*"]}), TASKS, SUITE_ID)


@pytest.mark.parametrize("preset", ["quick", "methods", "full"])
def test_presets_parse_and_plan(preset):
    from ribench.data import build_suite
    from ribench.engine.spec import load_preset

    spec = load_preset(preset)
    tasks = list(build_suite(spec.suite, seed=spec.data_seed).tasks)
    cells = plan(spec, tasks, {"name": spec.suite, "version": "x", "data_seed": spec.data_seed})
    seen = set()
    for c in cells:
        assert all(d in seen for d in c.deps), c.describe()
        seen.add(c.key)
    if preset in ("methods", "full"):  # every method the package registers, side by side
        builtin = {n for n in METHODS.names() if METHODS.get(n).__module__.startswith("ribench.")}
        assert {m.name for m in spec.methods} == builtin


def test_the_ray_runner_without_ray_fails_before_anything_is_planned(monkeypatch):
    import importlib.util

    from ribench.engine.runner import RunOptions

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^runner: the ray runner needs Ray: pip install 'ribench\[ray\]'"):
        RunOptions(runner="ray")
    assert RunOptions(runner="pool").runner == "pool"
