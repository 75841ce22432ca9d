"""Cell keys fold in the code version of every component a cell runs, so a changed
corruption, estimator or attack recomputes exactly the cells that use it, and a newly
registered estimator runs on an existing run."""

from __future__ import annotations

import pytest

from ribench.core.errors import ConfigError
from ribench.core.registry import CORRUPTIONS, ESTIMATORS, Registry
from ribench.engine import parse_spec
from ribench.engine.plan import plan
from ribench.evaluate.attacks import api as attacks_api

SUITE_ID = {"name": "tiny", "version": "1", "data_seed": 0}
BASE = {"suite": "tiny", "backbones": ["mlp"], "methods": ["lp"], "device": "cpu",
        "diagnostics": {"enabled": False}}


def keys(spec: dict, kind: str) -> dict[str, str]:
    cells = plan(parse_spec(spec), ["t1", "t2"], SUITE_ID)
    return {f"{c.labels.get('backbone')}/{c.labels.get('method')}/{c.labels.get('task')}": c.key
            for c in cells if c.kind == kind}


def test_registry_version_defaults_to_1_and_is_set_by_register():
    reg: Registry = Registry("thing")

    @reg.register("plain")
    def plain():
        return 0

    @reg.register("bumped", version=3)
    def bumped():
        return 0

    assert reg.version("plain") == "1" and reg.version("bumped") == "3"


def test_a_corruption_version_bump_changes_only_its_cells(monkeypatch):
    spec = {**BASE, "corruptions": {"names": ["mnist-c/shot_noise", "mnist-c/impulse_noise"], "severities": [1]}}
    before = keys(spec, "corrupt")
    monkeypatch.setattr(CORRUPTIONS.get("mnist-c/shot_noise"), "version", "2", raising=False)
    after = keys(spec, "corrupt")
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"None/corrupt/mnist-c/shot_noise/1"}
    # every evaluate cell reads every corruption set, so all of them follow
    assert keys(spec, "evaluate") != {}


def test_an_estimator_version_bump_and_a_new_estimator_change_the_analysis_keys(monkeypatch):
    before = keys(BASE, "analysis")
    fn = ESTIMATORS.get("leep")
    monkeypatch.setattr(fn, "version", "9", raising=False)
    bumped = keys(BASE, "analysis")
    assert bumped.keys() == before.keys() and all(bumped[k] != before[k] for k in before)
    monkeypatch.undo()
    assert keys(BASE, "analysis") == before

    def new_score(features, labels):
        return 0.0

    new_score.takes = "features"
    monkeypatch.setitem(ESTIMATORS._items, "zz_new", new_score)
    added = keys(BASE, "analysis")
    assert all(added[k] != before[k] for k in before)
    # an explicit list that does not name it is unaffected by it
    explicit = {**BASE, "analysis": {"estimators": ["leep", "logme"]}}
    k1 = keys(explicit, "analysis")
    monkeypatch.delitem(ESTIMATORS._items, "zz_new")
    assert keys(explicit, "analysis") == k1


def test_an_unknown_estimator_or_attack_fails_at_plan_time():
    with pytest.raises(ConfigError, match="analysis.estimators.*not a registered estimator"):
        keys({**BASE, "analysis": {"estimators": ["leep", "nope"]}}, "analysis")
    with pytest.raises(ConfigError, match=r"attacks\[0\].name"):
        keys({**BASE, "attacks": [{"name": "pgd", "eps": [0.1]}]}, "evaluate")


def test_an_attack_version_bump_changes_the_evaluate_cells_that_run_it(monkeypatch):
    spec = {**BASE, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    before_eval, before_adapt = keys(spec, "evaluate"), keys(spec, "adapt")
    without = keys(BASE, "evaluate")
    old = attacks_api.ATTACKS["fgsm"]
    monkeypatch.setitem(attacks_api.ATTACKS, "fgsm", attacks_api.AttackSpec(
        old.fn, old.budget, old.norm, old.blackbox, old.label, old.paper, old.eps_arg, version="2"))
    after = keys(spec, "evaluate")
    assert all(after[k] != before_eval[k] for k in before_eval)
    assert keys(spec, "adapt") == before_adapt  # training does not depend on the attack
    assert keys(BASE, "evaluate") == without  # runs without the attack keep their keys


@pytest.mark.parametrize("params,match", [({"steps": "big"}, "steps: must be an integer"),
                                          ({"step_size": float("inf")}, "step_size: must be a finite number"),
                                          ({"restarts": 0}, "restarts: must be an integer"),
                                          ({"queries": 10}, "does not take queries")])
def test_bad_attack_budgets_fail_at_plan_time_naming_the_field(params, match):
    with pytest.raises(ConfigError, match=r"attacks\[0\].params.*" + match):
        keys({**BASE, "attacks": [{"name": "pgd_linf", "eps": [0.1], "params": params}]}, "evaluate")
