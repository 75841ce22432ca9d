"""Cell runners called directly with hand-made cells whose inputs are named by role, and the
engine's single paths: one suite build per run, the RunSpec handed over as it is, outside
backbones parsed once, one pretraining function for `ribench pretrain` and the pretrain cell;
a run stored by the engine from before inputs had names resumes with nothing rerun."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from methods_helpers import perturbed
from ribench.cli import main
from ribench.core import ConfigError, InputSpec, rows
from ribench.core.registry import MODELS
from ribench.engine import execute, executors, parse_spec, plan, run
from ribench.engine import runner as runner_mod
from ribench.engine import spec as spec_mod
from ribench.engine.artifacts import ArtifactStore
from ribench.engine.execute import CellResult, Workspace
from ribench.engine.plan import Cell
from ribench.engine.runner import RunOptions
from ribench.engine.store import ResultsStore
from ribench.models import load_model

SUITE_ID = {"name": "tiny", "version": "1", "data_seed": 0}
SPEC = {"name": "runners", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"], "methods": ["lp"],
        "tasks": ["t1"], "seeds": [0], "device": "cpu", "pretrain": {"epochs": 1},
        "eval": {"val_fraction": 0.2, "pretrain_sample": 50}, "analysis": {"enabled": False},
        "diagnostics": {"enabled": False}}
P, A, F, E0, C = ("%02x" % i * 32 for i in range(1, 6))  # artifact keys of hand-made cells
LABELS = {"backbone": "mlp", "recipe": "narrow"}


def no_progress(fraction: float, message: str) -> None:
    pass


def mlp(seed: int):
    """A small mlp on the tiny suite's 12x12 images (fast to evaluate)."""
    torch.manual_seed(seed)
    return MODELS.create("mlp", num_classes=3, spec=InputSpec(channels=3, size=12), width=16).eval()


def accuracy_by_hand(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


@pytest.fixture
def ws(tiny, tmp_path):
    w = Workspace(parse_spec(SPEC), tiny, ArtifactStore(tmp_path / "art"), torch.device("cpu"))
    w.save(P, mlp(0))
    w.save(A, perturbed(mlp(0), seed=1, scale=0.2))
    return w


def eval_pretrained_cell(corruptions: tuple[str, ...] = ()) -> Cell:
    return Cell.of("eval_pretrained", {"suite": SUITE_ID, "attacks": []}, {"model": P, "corruptions": corruptions},
                   {**LABELS, "method": rows.PRETRAINED})


def test_cell_inputs_are_its_deps_by_role():
    cell = Cell.of("evaluate", {}, {"model": A, "pretrained_eval": E0, "pretrained": P, "corruptions": (C, F)}, {})
    assert cell.deps == (A, E0, P, C, F)  # the order its key hashes
    assert cell.input("model") == A and cell.inputs_of("corruptions") == (C, F) and cell.inputs_of("extra") == ()
    assert cell.inputs_of("model") == (A,)
    with pytest.raises(KeyError, match="no single input 'corruptions'"):
        cell.input("corruptions")
    with pytest.raises(ValueError, match="not its deps"):
        Cell("evaluate", {}, (P, A), {}, inputs={"model": A, "pretrained": P})
    # the roles are not part of the key: the same deps give the same cell
    assert Cell("evaluate", {}, cell.deps, {}) == cell and Cell("evaluate", {}, cell.deps, {}).key == cell.key


def test_evaluate_reads_its_inputs_by_role(ws, tiny):
    e0 = eval_pretrained_cell()
    base = execute.run_eval_pretrained(ws, e0, {}, no_progress)
    p, a = ws.model(P), ws.model(A)
    for name in ("pre", "t1", "t2", "extra"):
        test = tiny.all_eval_sets()[name].test
        assert base.metrics[name]["accuracy"] == pytest.approx(accuracy_by_hand(p, test.images, test.labels))
    deps = {E0: CellResult(base.metrics, {}), A: CellResult({}, {"trainable_params": 7, "train_seconds": 1.5})}
    # inputs listed in another order than the plan's: the runner goes by role
    cell = Cell.of("evaluate", {"suite": SUITE_ID, "attacks": []}, {"pretrained": P, "pretrained_eval": E0, "model": A},
                   {**LABELS, "method": "lp", "task": "t1", "seed": 0})
    res = execute.run_evaluate(ws, cell, deps, no_progress)
    acc = {k: v["accuracy"] for k, v in res.metrics.items() if k != rows.SUMMARY}
    ref = {k: v["accuracy"] for k, v in base.metrics.items() if k != rows.SUMMARY}
    test = tiny.tasks["t1"].test
    assert acc["t1"] == pytest.approx(accuracy_by_hand(a, test.images, test.labels))
    s = res.metrics[rows.SUMMARY]
    assert s["id_acc"] == acc["t1"]
    assert s["dR"] == pytest.approx(acc["t2"] - ref["t2"])  # t2 is the only other task
    assert s["dP"] == pytest.approx(acc["pre"] - ref["pre"])
    assert (s["trainable_params"], s["train_seconds"]) == (7.0, 1.5)
    # the pretrained model in the model's role: no change from itself
    same = Cell.of("evaluate", cell.config, {"model": P, "pretrained_eval": E0, "pretrained": P}, cell.labels)
    s0 = execute.run_evaluate(ws, same, {**deps, P: CellResult()}, no_progress).metrics[rows.SUMMARY]
    assert s0["dR"] == 0 and s0["dP"] == 0


def test_corruption_sets_are_the_inputs_named_corruptions(ws, tiny):
    c = Cell("corrupt", {"suite": SUITE_ID, "domain": "pretrain", "corruption": "mnist-c/shot_noise", "severity": 2,
                         "seed": 0, "subset": 30}, (), {"method": "corrupt", "task": "mnist-c/shot_noise/2"})
    assert execute.run_corrupt(ws, c, {}, no_progress).info == {"images": 30}
    res = execute.run_eval_pretrained(ws, eval_pretrained_cell((c.key,)), {}, no_progress)
    made = ws.artifacts.load(c.key)
    assert "mnist-c/shot_noise/2" in res.metrics and not any(k.startswith("pre-c/") for k in res.metrics)
    by_hand = accuracy_by_hand(ws.model(P), made["images"], made["labels"])
    assert res.metrics["mnist-c/shot_noise/2"]["accuracy"] == pytest.approx(by_hand)
    assert res.metrics[rows.SUMMARY]["corr_acc"] == pytest.approx(by_hand)  # the one corruption set
    # without the input, the suite's built-in corruption sets are evaluated
    assert "pre-c/noise/1" in execute.run_eval_pretrained(ws, eval_pretrained_cell(), {}, no_progress).metrics


def test_adapt_hands_the_required_models_by_role(ws):
    ws.save(F, perturbed(mlp(0), seed=2, scale=0.3))
    cell = Cell.of("adapt", {"method": "wise_ft", "params": {"alpha": 0.3}, "task": "t1", "seed": 0,
                             "val_fraction": 0.2, "pretrain_sample": 50},
                   {"pretrained": P, "requires": (F,)}, {**LABELS, "method": "wise_ft", "task": "t1", "seed": 0})
    assert execute.run_adapt(ws, cell, {}, no_progress).info["alpha"] == 0.3
    out = load_model(ws.artifacts.path(cell.key)).state_dict()
    p, f = ws.model(P).state_dict(), ws.model(F).state_dict()
    for name, w in out.items():  # theta_0 + 0.3 (theta_ft - theta_0), written out
        assert torch.allclose(w, p[name] + 0.3 * (f[name] - p[name]), atol=1e-6), name


def test_plan_names_each_input_after_the_cell_it_comes_from():
    """Every role points at the cell its name says (checked by kind and labels), and deps list
    them in the order the keys have always hashed: model, pretrained_eval, pretrained, corruptions, extra."""
    spec = parse_spec({**SPEC, "methods": ["lp", "wise_ft", "task_arithmetic"], "tasks": ["t1", "t2"],
                       "corruptions": {"names": ["mnist-c/shot_noise"], "severities": [1, 2], "subset": 20},
                       "analysis": {"enabled": True}, "diagnostics": {"enabled": True}})
    cells = plan(spec, ["t1", "t2"], SUITE_ID)
    by_key = {c.key: c for c in cells}
    corrupt = tuple(c.key for c in cells if c.kind == "corrupt")
    (p,) = (c for c in cells if c.kind == "pretrain")
    (e0,) = (c for c in cells if c.kind == "eval_pretrained")
    assert e0.inputs == {"model": p.key, "corruptions": corrupt} and len(corrupt) == 2
    kinds_seen = set()
    for c in cells:
        assert c.deps == tuple(k for v in c.inputs.values() for k in ((v,) if isinstance(v, str) else v))
        if c.deps:
            assert c.inputs, c.describe()
        lab = c.labels
        if c.kind == "evaluate":
            adapted = by_key[c.input("model")]
            assert adapted.kind == "adapt" and adapted.labels == lab
            assert c.deps[:3 + len(corrupt)] == (adapted.key, e0.key, p.key, *corrupt)
            for k in c.inputs_of("extra"):  # WiSE-FT's curve: the ft model of the same task and seed
                assert by_key[k].labels == {**lab, "method": "ft"}
            for t, k in zip(c.config.get("reference", {}).get("tasks", []), c.inputs_of("task_refs")):
                assert by_key[k].kind == "evaluate" and by_key[k].labels["task"] == t
            kinds_seen |= {r for r in ("extra", "task_refs") if c.inputs_of(r)}
        if c.kind == "adapt":
            assert c.input("pretrained") == p.key
            for name, k in zip(["ft"] if lab["method"] == "wise_ft" else [], c.inputs_of("requires")):
                assert by_key[k].labels == {**lab, "method": name}
            for ing, k in zip(c.config.get("ingredients", []), c.inputs_of("ingredients")):
                assert [by_key[k].labels[x] for x in ("method", "task", "seed")] == ing[:3]
        if c.kind in ("analysis", "diagnose"):
            assert c.input("pretrained") == p.key
        if c.kind == "diagnose":
            models = c.inputs_of("model") + c.inputs_of("models")
            assert models and all(by_key[k].kind == "adapt" for k in models)
    assert kinds_seen == {"extra", "task_refs"}


@pytest.mark.slow  # two pretrainings; the first in a process pays torch's warm-up (several seconds on 2 busy cores)
def test_pretrain_cell_and_cli_make_the_same_weights(ws, tmp_path):
    cell = Cell("pretrain", {"suite": SUITE_ID, "backbone": "mlp", "recipe": "narrow", "recipe_version": "1",
                             "pretrain": {**ws.spec.pretrain.model_dump(), "epochs": 0.5, "seed": 3}}, (), LABELS)
    info = execute.run_pretrain(ws, cell, {}, no_progress).info
    assert info["params"] == sum(p.numel() for p in MODELS.create("mlp", num_classes=3).parameters())
    out = tmp_path / "m.safetensors"
    assert main(["pretrain", "--backbone", "mlp", "--suite", "tiny", "--epochs", "0.5", "--seed", "3",
                 "--device", "cpu", "--out", str(out)]) == 0
    mine, theirs = load_model(ws.artifacts.path(cell.key)).state_dict(), load_model(out).state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_serial_run_builds_its_suite_once_and_hands_the_spec_over_as_it_is(tmp_path, monkeypatch):
    builds, parses, contexts = [], [], []
    real_build, real_parse, real_cell = execute.build_run_suite, spec_mod.parse_spec, executors.execute_cell
    for mod in (runner_mod, executors):
        monkeypatch.setattr(mod, "build_run_suite", lambda s: builds.append(s) or real_build(s))
    monkeypatch.setattr(spec_mod, "parse_spec", lambda *a, **k: parses.append(a) or real_parse(*a, **k))
    monkeypatch.setattr(executors, "execute_cell", lambda ctx, *a: contexts.append(ctx) or real_cell(ctx, *a))
    spec = parse_spec(SPEC)
    res = run(spec, tmp_path, options=RunOptions(quiet=True, threads=2))  # an override is not a re-parse either
    assert res.ok and res.ran == 4
    assert len(builds) == 1 and parses == []
    assert len(contexts) == 4 and all(ctx.spec is contexts[0].spec for ctx in contexts)
    assert contexts[0].spec == spec.with_overrides(threads=2)
    with pytest.raises(ConfigError, match="threads"):
        RunOptions(threads=0)


def test_outside_backbone_tables_are_parsed_once(tmp_path, tiny, monkeypatch):
    from test_external_models import entry, spec_with

    from ribench.models import external

    spec = spec_with(entry(tmp_path))  # the one parse: the spec's validation
    (parsed,) = spec.outside_entries.values()
    monkeypatch.setattr(external, "parse_entry", lambda *a, **k: pytest.fail("an outside backbone parsed again"))
    cells = plan(spec, ["t1"], SUITE_ID)
    assert executors.WorkerContext(spec, str(tmp_path), "cpu").spec.outside_entries[0] is parsed
    p = next(c for c in cells if c.kind == "pretrain")
    w = Workspace(spec, tiny, ArtifactStore(tmp_path / "art"), torch.device("cpu"))
    assert execute.run_pretrain(w, p, {}, no_progress).info["params"] > 0
    assert w.artifacts.has(p.key)


# --- a run stored before cell inputs had names ----------------------------------------------------
BEFORE = "fe6d3b2c87282c263fded6a596485e0d9d11aaf5"  # the last commit whose engine decoded inputs by position
ROOT = Path(__file__).resolve().parents[1]
# every role: corruption sets, WiSE-FT's extra models, a merge over tasks with its references,
# attacks crafted on m0 (transfer), analysis and both scopes of diagnostics
BEFORE_SPEC = {**SPEC, "name": "before", "methods": ["lp", {"name": "ft", "params": {"epochs": 1}}, "wise_ft",
                                                    "task_arithmetic"],
               "tasks": ["t1", "t2"], "attacks": [{"name": "fgsm", "eps": [0.1], "subset": 20, "transfer": True}],
               "corruptions": {"names": ["mnist-c/shot_noise"], "severities": [1], "subset": 20},
               "analysis": {"enabled": True, "max_per_class": 10, "max_samples": 50},
               "diagnostics": {"enabled": True, "samples": 20, "barrier_points": 3}}
MAKE_RUN = """
import json, sys
import ribench, tiny_suite  # noqa: F401
assert ribench.__file__.startswith(sys.argv[1]), ribench.__file__
from ribench.engine import parse_spec, run
res = run(parse_spec(json.loads(sys.argv[2])), sys.argv[3], quiet=True)
assert res.ok, res.failed
"""


@pytest.fixture(scope="module")
def run_before(tmp_path_factory):
    """A run made by the engine of commit BEFORE (its source taken from git), in a subprocess."""
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                                                     capture_output=True).returncode:
        pytest.skip(f"needs the git history of the checkout (commit {BEFORE[:10]})")
    tmp = tmp_path_factory.mktemp("before")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp / "code", filter="data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp / "code" / "src"), str(ROOT / "tests")])}
    subprocess.run([sys.executable, "-c", MAKE_RUN, str(tmp / "code" / "src"), json.dumps(BEFORE_SPEC),
                    str(tmp / "run")], env=env, check=True, timeout=600)
    return tmp / "run"


def stored_numbers(out: Path) -> dict:
    con = sqlite3.connect(out / "results.sqlite")
    rows_ = con.execute("SELECT cell, eval_set, metric, value FROM metrics").fetchall()
    con.close()
    return {r[:3]: r[3] for r in rows_ if r[2] not in ("seconds", "train_seconds")}  # wall times are no results


@pytest.mark.slow  # a run by the earlier engine in a subprocess, then two resumes (about a minute on 2 busy cores)
def test_a_run_stored_before_named_inputs_resumes_with_nothing_rerun(run_before, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_before, out)
    spec = parse_spec(BEFORE_SPEC)
    res = run(spec, out, options=RunOptions(quiet=True))
    # the one deliberate key change since BEFORE: the gradient-masking checks' version (MASKING_VERSION 2, the
    # cheap checks only where robust accuracy is ~0) is in the key of the cells that run them; exactly those,
    # and the cells whose inputs they are, rerun
    cells = plan(spec, ["t1", "t2"], SUITE_ID)
    changed = {c.key for c in cells if any("masking" in a for a in c.config.get("attacks", []))}
    assert changed and {c.kind for c in cells if c.key in changed} == {"eval_pretrained", "evaluate"}
    for c in cells:  # topological order
        if set(c.deps) & changed:
            changed.add(c.key)
    assert res.ok and res.ran == len(changed) and res.cached == len(cells) - len(changed) and res.total == len(cells)
    # the cells that read their inputs, recomputed by role from the old run's artifacts, store the old numbers
    before = stored_numbers(out)
    store = ResultsStore(out / "results.sqlite")
    planned = {c.key for c in cells}  # the earlier keys of the cells that reran stay stored, outside the plan
    again = [c["key"] for c in store.cells() if c["kind"] in ("eval_pretrained", "evaluate", "analysis", "diagnose")
             and c["key"] in planned]
    for key in again:
        store.forget_cell(key)
    store.close()
    res = run(spec, out, options=RunOptions(quiet=True))
    assert res.ok and res.ran == len(again) > 10
    after = stored_numbers(out)
    # every stored number is recomputed; the diagnostics gained the task-vector norm's backbone and head parts
    # since BEFORE (new rows beside the unchanged total, without a version change), and nothing else is new
    assert before.keys() <= after.keys()
    split = {f"task_vector_{n}_{part}" for n in ("norm", "relative_norm") for part in ("backbone", "head")}
    assert {k[2] for k in after.keys() - before.keys()} <= split
    # equal up to rounding: a later fix may move a number in its last bits (the Wilson bound at n of n
    # hits is now exactly 1, not 1 - 2e-16); an input read in the wrong role moves them by far more
    def same(x, y) -> bool:  # NaN is stored as NULL
        return x is y is None or (None not in (x, y) and y == pytest.approx(x, rel=1e-9, abs=1e-12))

    changed = {k: (before[k], after[k]) for k in before if not same(before[k], after[k])}
    assert not changed, f"{len(changed)} numbers differ, e.g. {list(changed.items())[:3]}"
