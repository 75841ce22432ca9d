"""The Python API (ribench.api, docs/api.md): runs, their tables and models, live backbones,
evaluate_model against the engine's stored numbers, and the docs' example."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

import fixtures_models
import ribench
from ribench import api
from ribench.core import CheckpointError, ConfigError, DataError, InputSpec, RibenchError, UnknownNameError
from ribench.core import rows as rows_mod
from ribench.core.registry import METHODS
from ribench.data import build_suite
from ribench.models import create_model

ROOT = Path(__file__).resolve().parents[1]
INPUT = {"size": 12, "channels": 1, "mean": [0.4], "std": [0.3]}
ATTACKS = [{"name": "fgsm", "eps": [0.05], "subset": 30, "check_masking": False, "transfer": True}]
CORRUPTIONS = {"names": ["gaussian_noise"], "severities": [1, 3], "subset": 40}
FT = {"name": "ft", "params": {"epochs": 1, "lr": 3e-3}}
UNTIMED = {"seconds", "train_seconds"}  # wall times, not results


def base_spec(**over):
    data = {"name": "api", "suite": "tiny", "methods": ["lp", FT], "seeds": [0], "device": "cpu",
            "pretrain": {"epochs": 1}, "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
            "analysis": {"enabled": False}, "diagnostics": {"enabled": False}}
    data.update(over)
    return data


def live_net(seed: int = 0) -> fixtures_models.TinyNet:
    torch.manual_seed(seed)
    return fixtures_models.tiny_net()


def zoo_mlp(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=3, spec=InputSpec(channels=1, size=12, mean=(0.5,), std=(0.5,)), width=16)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One run on the tiny suite: a registered backbone, a live module, an importable factory,
    a ribench model of a registered kind; lp and ft; engine-made corruptions and an attack."""
    out = tmp_path_factory.mktemp("api") / "run"
    net = live_net()
    spec = base_spec(backbones=["mlp", {"name": "live", "module": net, "input": INPUT},
                                {"name": "factory", "module": fixtures_models.tiny_net, "input": INPUT},
                                {"name": "zoo", "module": zoo_mlp()}],
                     attacks=ATTACKS, corruptions=CORRUPTIONS)
    r = ribench.run(spec, out, quiet=True)
    return r, out, net


def stored_rows(out: Path) -> dict[tuple, float | None]:
    """(backbone, recipe, method, task, seed, eval_set, metric) -> value, read from the SQLite file itself."""
    con = sqlite3.connect(out / "results.sqlite")
    try:
        rows = con.execute("SELECT m.backbone, m.recipe, m.method, m.task, m.seed, m.eval_set, m.metric, m.value "
                           "FROM metrics m JOIN cells c ON c.key = m.cell WHERE c.status = 'done'").fetchall()
    finally:
        con.close()
    return {r[:7]: r[7] for r in rows}


def cell_of(out: Path, kind: str, **labels) -> tuple[str, dict]:
    """(key, config) of the one cell of ``kind`` with these labels, read from the SQLite file."""
    con = sqlite3.connect(out / "results.sqlite")
    try:
        rows = con.execute("SELECT key, labels, config FROM cells WHERE kind = ?", (kind,)).fetchall()
    finally:
        con.close()
    found = [(k, json.loads(c)) for k, lab, c in rows if all(json.loads(lab).get(n) == v for n, v in labels.items())]
    assert len(found) == 1, found
    return found[0]


# --- the run and its tables --------------------------------------------------------
def test_run_returns_a_run_of_its_folder(made):
    r, out, _ = made
    assert r.outcome.ok and r.outcome.ran == r.outcome.total > 0
    assert r.out_dir == out and r.tasks == ["t1", "t2"]
    assert set(r.eval_sets) == {"pre", "t1", "t2", "extra", "gaussian_noise/1", "gaussian_noise/3"}
    assert [b if isinstance(b, str) else b["name"] for b in r.spec["backbones"]] == ["mlp", "live", "factory", "zoo"]
    assert repr(r) == f"Run({str(out)!r}, {r.outcome.total} cells: {r.outcome.ran} ran, 0 already done, 0 failed, 0 skipped)"


def test_results_are_every_stored_number_with_the_methods_hyperparameters(made):
    r, out, _ = made
    df = r.results()
    assert list(df.columns) == ["backbone", "recipe", "method", "task", "seed", "eval_set", "metric", "value",
                                "params", "cell"]
    want = stored_rows(out)
    got = {}
    for row in df.astype(object).where(df.notna(), None).itertuples(index=False):
        got[(row.backbone, row.recipe, row.method, row.task, row.seed, row.eval_set, row.metric)] = row.value
    assert got == want
    # params: the resolved config of each method (defaults included), as the method itself gives it
    ft_params = json.dumps(METHODS.create("ft", **FT["params"]).params(), sort_keys=True)
    lp_params = json.dumps(METHODS.create("lp").params(), sort_keys=True)
    assert set(df.loc[df.method == "ft", "params"]) == {ft_params}
    assert set(df.loc[df.method == "lp", "params"]) == {lp_params}
    assert df.loc[df.method == "pretrained", "params"].isna().all()
    # and what the adapt cell recorded, read from the file
    _, cfg = cell_of(out, "adapt", backbone="live", method="ft", task="t1", seed=0)
    assert json.loads(ft_params) == cfg["params"]


def test_results_filters_and_expanded_params(made):
    r, _, _ = made
    df = r.results(method=["ft", "lp"], eval_set="*", expand_params=True)
    assert set(df.method) == {"ft", "lp"} and set(df.eval_set) == {"*"}
    ft = df[df.method == "ft"]
    assert set(ft["params.epochs"]) == {1} and set(ft["params.lr"]) == {3e-3}
    assert df.loc[df.method == "lp", "params.epochs"].isna().all()  # lp has no epochs
    one = r.results(backbone="mlp", method="lp", task="t1", seed=0, eval_set="t1", metric="accuracy")
    assert len(one) == 1
    with pytest.raises(ConfigError, match=r"methd.*not a column.*backbone, recipe, method"):
        r.results(methd="ft")


def test_summary_is_the_mean_and_t_interval_over_tasks_and_seeds(made):
    r, out, _ = made
    rows = stored_rows(out)
    s = r.summary()
    assert list(s.columns[:6]) == ["backbone", "recipe", "method", "n", "tasks", "seeds"]
    assert {"id_acc", "id_acc_lo", "id_acc_hi", "R", "dR", "dP", "corr_acc", "mCE", "robust_acc"} <= set(s.columns)
    # m0 first in each (backbone, recipe)
    assert list(s[s.backbone == "mlp"].method)[0] == "pretrained"
    assert sorted(s[s.backbone == "mlp"].method) == ["ft", "lp", "pretrained"]
    for row in s.itertuples(index=False):
        for metric in ("id_acc", "R", "dR", "dP", "robust_acc"):
            v = [val for (b, rc, m, _, _, es, mt), val in rows.items()
                 if (b, rc, m, es, mt) == (row.backbone, row.recipe, row.method, "*", metric) and val is not None]
            got = getattr(row, metric), getattr(row, f"{metric}_lo"), getattr(row, f"{metric}_hi")
            if not v:
                assert all(math.isnan(x) for x in got)
                continue
            assert got[0] == pytest.approx(np.mean(v), abs=1e-12)
            if len(v) < 2 or np.std(v) == 0:
                assert len(v) >= 2 or (math.isnan(got[1]) and math.isnan(got[2]))
                continue
            lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
            assert (got[1], got[2]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert list(r.summary(["R", "dP"]).columns[6:]) == ["R", "R_lo", "R_hi", "dP", "dP_lo", "dP_hi"]
    with pytest.raises(ConfigError, match=r"'nope' is not a summary metric.*id_acc"):
        r.summary(["nope"])


def test_model_loads_the_selected_model_from_the_artifacts(made):
    r, out, _ = made
    rows = stored_rows(out)
    suite = build_suite("tiny")
    for backbone in ("mlp", "live", "factory", "zoo"):
        m = r.model(backbone=backbone, method="lp", task="t2", seed=0)
        assert not m.training
        test = suite.tasks["t1"].test
        with torch.no_grad():  # the accuracy by hand: argmax of its logits against the labels
            acc = (m(test.images).argmax(1) == test.labels).double().mean().item()
        recipe = "narrow" if backbone == "mlp" else "given"
        assert acc == pytest.approx(rows[(backbone, recipe, "lp", "t2", 0, "t1", "accuracy")], abs=1e-12)
    m0 = r.model(backbone="mlp", method="pretrained")
    key, _ = cell_of(out, "pretrain", backbone="mlp")
    want = load_file(str(out / "artifacts" / key[:2] / f"{key}.safetensors"))
    assert all(torch.equal(v, want[k]) for k, v in m0.state_dict().items())
    models = r.models()
    assert len(models[models.method == "pretrained"]) == len({b for b, *_ in rows})


def test_model_selection_errors_list_the_models(made):
    r, _, _ = made
    with pytest.raises(ConfigError, match=r"2 models .* match backbone='mlp', method='ft': mlp/narrow/ft, task t1, "
                                          r"seed 0; mlp/narrow/ft, task t2, seed 0\. Give more"):
        r.model(backbone="mlp", method="ft")
    with pytest.raises(ConfigError, match=r"no model .* matches method='wise_ft'\. Its models: .*mlp/narrow/pretrained"):
        r.model(method="wise_ft")


def test_open_reads_the_same_run_and_refuses_a_folder_without_one(made, tmp_path):
    r, out, _ = made
    again = ribench.open(out)
    assert again.outcome is None
    assert again.results().equals(r.results())
    with pytest.raises(DataError, match="holds no results"):
        ribench.open(tmp_path)


# --- live backbones --------------------------------------------------------------------
def test_each_kind_of_live_backbone_is_recorded_with_a_factory_and_its_weights(made):
    r, out, net = made
    tables = {b["name"]: b for b in r.spec["backbones"] if isinstance(b, dict)}
    assert tables["live"]["source"] == api.LIVE_SOURCE
    assert tables["live"]["kwargs"]["qualname"] == "fixtures_models.TinyNet"
    assert tables["factory"]["source"] == "module:fixtures_models:tiny_net"
    assert tables["zoo"]["source"] == api.REGISTERED_SOURCE and tables["zoo"]["kwargs"]["arch"] == "mlp"
    assert tables["zoo"]["head"] == "head" and tables["zoo"]["feature_layer"] == "embed"
    assert tables["zoo"]["input"] == {"size": 12, "channels": 1, "mean": [0.5], "std": [0.5]}
    for t in tables.values():  # the weights file is the module's state dict, under <out>/backbones
        assert Path(t["weights"]).parent == (out / api.BACKBONES_DIR).resolve()
    saved = load_file(tables["live"]["weights"])
    assert saved.keys() == net.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())


def test_bare_live_backbones_take_their_names_and_a_models_own_input(tmp_path):
    data, live = api._with_live_backbones({"backbones": ["cnn", zoo_mlp(), {"module": fixtures_models.tiny_net,
                                                                             "input": INPUT}]}, tmp_path)
    assert data["backbones"][0] == "cnn" and set(live) == {1, 2}
    zoo, factory = data["backbones"][1], data["backbones"][2]
    assert zoo["name"] == "mlp" and zoo["input"] == {"size": 12, "channels": 1, "mean": [0.5], "std": [0.5]}
    assert factory["name"] == "tiny_net" and factory["source"] == "module:fixtures_models:tiny_net"
    assert not any(tmp_path.iterdir())  # nothing is written before the run starts
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input.*a live TinyNet needs its input spec"):
        api._with_live_backbones({"backbones": [fixtures_models.tiny_net]}, tmp_path)
    closure = lambda: fixtures_models.tiny_net()  # noqa: E731 - no process can import a lambda
    _, live = api._with_live_backbones({"backbones": [{"module": closure, "input": INPUT}]}, tmp_path)
    assert live[0].table["source"] == api.LIVE_SOURCE and live[0].serial_only


def test_a_live_backbone_keeps_its_keys_and_a_changed_one_gets_new_ones(tmp_path):
    spec = base_spec(backbones=[{"name": "live", "module": live_net(), "input": INPUT}], methods=["lp"], tasks=["t1"])
    first = ribench.run(spec, tmp_path / "a", quiet=True)
    again = ribench.run({**spec, "backbones": [{"name": "live", "module": live_net(), "input": INPUT}]},
                        tmp_path / "a", quiet=True)
    assert first.outcome.ran > 0 and again.outcome.ran == 0 and again.outcome.cached == first.outcome.total
    assert first.tasks == ["t1"] and {"t1", "t2"} <= set(first.eval_sets)
    other = ribench.run({**spec, "backbones": [{"name": "live", "module": live_net(seed=1), "input": INPUT}]},
                        tmp_path / "a", quiet=True)
    assert other.outcome.ran == other.outcome.total  # new weights: a new m0 and everything after it
    assert len(list((tmp_path / "a" / api.BACKBONES_DIR).glob("*.safetensors"))) == 2


def test_a_live_module_runs_on_the_serial_runner_only(tmp_path):
    spec = base_spec(backbones=["mlp", {"name": "live", "module": live_net(), "input": INPUT}])
    with pytest.raises(ConfigError, match=r"backbones\[1\].*serial runner only, not 'pool'.*fixtures_models.TinyNet"):
        ribench.run(spec, tmp_path / "p", runner="pool")
    assert not (tmp_path / "p").exists()  # refused before anything was written


def test_a_later_process_passes_the_live_module_again(made, monkeypatch):
    r, out, net = made
    before = r.model(backbone="live", method="ft", task="t1", seed=0).state_dict()
    monkeypatch.setattr(api, "_LIVE", {})  # what a fresh process knows of live modules
    with pytest.raises(CheckpointError, match=r"given as a live object in another Python process.*ribench\.open"):
        ribench.open(out).model(backbone="live", method="ft", task="t1", seed=0)
    # the importable factory and the registered kind need nothing
    ribench.open(out).model(backbone="factory", method="ft", task="t1", seed=0)
    with pytest.raises(ConfigError, match=r"backbones\.live.*is a torch.nn.modules.linear.Linear.*TinyNet"):
        ribench.open(out, backbones={"live": torch.nn.Linear(2, 2)})
    with pytest.raises(ConfigError, match=r"no live backbone named 'factory'; its live backbones: live"):
        ribench.open(out, backbones={"factory": live_net()})
    after = ribench.open(out, backbones={"live": live_net(seed=5)}).model(backbone="live", method="ft", task="t1",
                                                                         seed=0).state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_live_backbone_errors_name_the_field(tmp_path):
    def spec(b):
        return base_spec(backbones=[b])

    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input.*needs its input spec"):
        ribench.run(spec(live_net()), tmp_path / "x")
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.weights.*unknown field of a live backbone; valid: name, "
                                          r"module"):
        ribench.run(spec({"module": live_net(), "input": INPUT, "name": "a", "weights": "w.pt"}), tmp_path / "x")
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.module.*returned a str"):
        ribench.run(spec({"module": fixtures_models.not_a_module, "input": INPUT}), tmp_path / "x")
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.head.*'neck' is a Sequential"):
        ribench.run(spec({"module": live_net(), "input": INPUT, "head": "neck"}), tmp_path / "x")
    with pytest.raises(ConfigError, match=r"backbones\[0\]\.input.*mean and std need 1 values"):
        ribench.run(spec({"module": live_net(), "input": {**INPUT, "mean": [0.1, 0.2]}}), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_run_takes_spec_files_and_checks_its_options(tmp_path):
    (tmp_path / "s.toml").write_text('name = "file"\nsuite = "tiny"\nmethods = ["lp"]\ntasks = ["t1"]\n'
                                     'backbones = [{ name = "f", source = "module:fixtures_models:tiny_net", '
                                     'input = { size = 12, channels = 1 } }]\ndevice = "cpu"\n'
                                     '[analysis]\nenabled = false\n[diagnostics]\nenabled = false\n')
    r = ribench.run(tmp_path / "s.toml", tmp_path / "out", quiet=True)
    assert r.outcome.ok and set(r.results(eval_set="*").method) == {"pretrained", "lp"}
    with pytest.raises(ConfigError, match=r"runnr.*unknown run option; valid: runner, workers"):
        ribench.run(tmp_path / "s.toml", tmp_path / "out", runnr="pool")
    with pytest.raises(ConfigError, match=r"nowhere\.toml is neither a spec file nor a preset \(presets: quick"):
        ribench.run("nowhere.toml")


# --- evaluate_model ---------------------------------------------------------------
@pytest.mark.parametrize("backbone,method,task", [("mlp", "lp", "t1"), ("mlp", "ft", "t2"), ("live", "ft", "t1")])
def test_evaluate_model_gives_the_numbers_the_run_stored(made, backbone, method, task):
    r, out, _ = made
    rows = stored_rows(out)
    recipe = "narrow" if backbone == "mlp" else "given"
    m0 = r.model(backbone=backbone, method="pretrained")
    m = r.model(backbone=backbone, method=method, task=task, seed=0)
    ev = ribench.evaluate_model(m, "tiny", reference=m0, task=task, attacks=ATTACKS, corruptions=CORRUPTIONS)

    def stored(method_, task_, seed_):
        out_: dict = {}
        for (b, rc, mt, t, s, es, metric), v in rows.items():
            # the adapt cell's training curve is a record of adaptation, not an evaluation number
            if ((b, rc, mt, t, s) == (backbone, recipe, method_, task_, seed_) and metric not in UNTIMED
                    and not rows_mod.is_train_curve(es)):
                out_.setdefault(es, {})[metric] = v
        return out_

    want = stored(method, task, 0)
    want["*"].pop("trainable_params")  # adaptation costs: not evaluation numbers
    got = {es: {k: v for k, v in row.items() if k not in UNTIMED} for es, row in ev.metrics.items()}
    assert got == want
    assert {"id_acc", "R", "dR", "P_acc", "dP", "corr_acc", "robust_acc", "transfer_robust_acc"} <= set(ev.summary)
    ref = {es: {k: v for k, v in row.items() if k not in UNTIMED} for es, row in ev.reference.items()}
    assert ref == stored("pretrained", None, None)
    assert ev["R"] == want["*"]["R"]
    long = ev.results()
    assert set(long.model) == {"model", "reference"} and len(long) == sum(map(len, ev.metrics.values())) + sum(
        map(len, ev.reference.values()))


def naive_accuracy(net: torch.nn.Module, split) -> float:
    """A plain module's accuracy, its preprocessing written out: x / 255, the mean of its channels
    (the module takes one), minus mean, over std."""
    x = (split.images.double().mean(1, keepdim=True) / 255.0 - INPUT["mean"][0]).div(INPUT["std"][0]).float()
    with torch.no_grad():
        return (net(x).argmax(1) == split.labels).double().mean().item()


def test_evaluate_model_on_a_plain_module_without_reference(tiny):
    net = live_net(seed=3).eval()
    ev = ribench.evaluate_model(net, tiny, task="t1", input=INPUT, head="fc")
    assert ev["id_acc"] == pytest.approx(naive_accuracy(net, tiny.tasks["t1"].test), abs=1e-12)
    assert ev["R"] == pytest.approx(naive_accuracy(net, tiny.tasks["t2"].test), abs=1e-12)  # t2: the only other task
    assert ev["P_acc"] == pytest.approx(naive_accuracy(net, tiny.pretrain.test), abs=1e-12)
    corr = [naive_accuracy(net, tiny.eval_sets[n].test) for n in tiny.corruptions]
    assert ev["corr_acc"] == pytest.approx(np.mean(corr), abs=1e-12)
    assert not {"dR", "dP", "mCE", "rel_mCE", "robust_acc"} & set(ev.summary)  # nothing to compare with, no attack
    assert ev.reference is None
    assert isinstance(net.fc, torch.nn.Linear)  # wrapped as a copy: the module keeps its head
    none = ribench.evaluate_model(net, tiny, input=INPUT)  # no task: summarised as m0 is, R over every task
    assert none["R"] == pytest.approx(np.mean([naive_accuracy(net, tiny.tasks[t].test) for t in tiny.tasks]),
                                      abs=1e-12)
    assert "id_acc" not in none.summary


def test_evaluate_model_errors(tiny):
    net = live_net()
    with pytest.raises(ConfigError, match=r"input.*plain TinyNet: give its input spec"):
        ribench.evaluate_model(net, tiny)
    with pytest.raises(UnknownNameError, match=r"t9.*t1"):
        ribench.evaluate_model(net, tiny, task="t9", input=INPUT)
    with pytest.raises(ConfigError, match=r"model.*has 10 classes, suite 'tiny' has 3"):
        ribench.evaluate_model(fixtures_models.tiny_net(num_classes=10), tiny, input=INPUT)
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.eps"):
        ribench.evaluate_model(net, tiny, input=INPUT, attacks=[{"name": "fgsm"}])
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.name.*pgd_linf"):
        ribench.evaluate_model(net, tiny, input=INPUT, attacks=[{"name": "fgsn", "eps": [0.1]}])
    with pytest.raises(ConfigError, match=r"corruptions\.severities"):
        ribench.evaluate_model(net, tiny, input=INPUT, corruptions={"names": ["gaussian_noise"], "severities": [7]})


# --- the package and its documentation --------------------------------------------
def test_importing_ribench_leaves_the_api_unloaded_until_used():
    code = ("import sys, ribench; assert 'ribench.api' not in sys.modules and 'torch' not in sys.modules; "
            "assert {'run', 'open', 'evaluate_model', 'Run'} <= set(dir(ribench))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert ribench.run is api.run and ribench.open is api.open and ribench.evaluate_model is api.evaluate_model
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ribench.nope  # noqa: B018


def test_tables_without_pandas_say_so(made, monkeypatch):
    r, _, _ = made
    monkeypatch.setitem(sys.modules, "pandas", None)  # an import of pandas now fails
    with pytest.raises(RibenchError, match="needs pandas.*pip install pandas"):
        r.results()


def docs_example() -> str:
    """The first Python block of docs/api.md, on the tiny suite: its suite and task names swapped."""
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    for old, new in (('"digits"', '"tiny"'), ('["fonts", "mnistm"]', '["t1", "t2"]')):
        assert old in code, f"docs/api.md's example no longer holds {old}"
        code = code.replace(old, new)
    assert "digits" not in code
    return code


def test_the_docs_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(docs_example(), str(ROOT / "docs" / "api.md"), "exec"), {"__name__": "docs_api"})
    assert (tmp_path / "runs" / "notebook" / "results.sqlite").is_file()
    assert "Run('runs/notebook'" in capsys.readouterr().out


@pytest.mark.slow
def test_portable_backbones_run_on_the_pool_runner(tmp_path):
    spec = base_spec(backbones=[{"name": "factory", "module": fixtures_models.tiny_net, "input": INPUT}, zoo_mlp()],
                     methods=["lp"], tasks=["t1"])
    torch.manual_seed(0)  # each run calls the factory once: the same weights for both
    pool = ribench.run(spec, tmp_path / "pool", runner="pool", workers=2, quiet=True)
    torch.manual_seed(0)
    serial = ribench.run(spec, tmp_path / "serial", quiet=True)
    assert pool.outcome.ok and serial.outcome.ok

    def numbers(r):
        df = r.results()
        df = df[~df.metric.isin(UNTIMED)]
        return {tuple(row[:7]): row[7] for row in df.astype(object).where(df.notna(), None).itertuples(index=False)}

    assert numbers(pool) == numbers(serial)
