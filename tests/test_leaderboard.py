"""The leaderboard's robustness rows: one per (model, threat model, eps, attack), each the mean of
the stored attack rows of that budget over tasks and seeds, never an average over budgets;
with the model's RIB fields, method label and hyperparameters."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict

import pytest

from ribench.engine import parse_spec, run
from ribench.engine.store import ResultsStore
from ribench.report.leaderboard import attack_label, leaderboard, write_leaderboard

FGSM_EPS = (0.05, 0.3)
L2_EPS = 1.0
SUBSET = 20


@pytest.fixture(scope="module")
def attacked_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    spec = parse_spec({
        "name": "board", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
        "methods": [{"name": "ft", "label": "ft_short", "params": {"epochs": 1, "lr": 0.002}}, "lp"],
        "seeds": [0, 1], "device": "cpu", "pretrain": {"epochs": 2},
        "eval": {"val_fraction": 0.2, "pretrain_sample": 50}, "diagnostics": {"enabled": False},
        "attacks": [{"name": "fgsm", "eps": list(FGSM_EPS), "subset": SUBSET, "transfer": True},
                    {"name": "pgd_l2", "eps": [L2_EPS], "subset": SUBSET, "params": {"steps": 3}}],
    })
    res = run(spec, out, quiet=True)
    assert res.ok, res.failed
    return out


def _stored(out):
    """(method, attack, eps) -> metric -> [(task, seed, value)] from the store's attack rows, read with SQL."""
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT method, task, seed, eval_set, metric, value FROM metrics "
                       "WHERE eval_set LIKE 'attack/%'").fetchall()
    configs = con.execute("SELECT labels, config FROM cells WHERE kind = 'adapt' AND status = 'done'").fetchall()
    con.close()
    found = defaultdict(lambda: defaultdict(list))
    for method, task, seed, eval_set, metric, value in rows:
        parts = eval_set.split("/")  # attack/<name>/eps=<eps>[/<task>]
        task = task if task is not None else parts[3]
        found[(method, parts[1], float(parts[2].removeprefix("eps=")))][metric].append((task, seed, value))
    return found, configs


def _mean(values):
    return sum(values) / len(values)


@pytest.mark.slow
def test_one_row_per_model_threat_model_and_budget_with_the_stored_means(attacked_run):
    doc = leaderboard(attacked_run)
    rows = doc["robustness"]
    stored, _ = _stored(attacked_run)
    keys = [(r["model"], r["threat_model"], r["eps"], r["attack"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(stored) == 3 * 3  # 3 models (m0, ft_short, lp) x 3 budgets
    for r in rows:
        truth = stored[(r["method"], r["attack_name"], r["eps"])]
        robust = [v for _, _, v in truth["robust_acc"]]
        assert r["robust_acc"] == round(100 * _mean(robust), 2)
        assert r["clean_acc"] == round(100 * _mean([v for _, _, v in truth["clean_acc"]]), 2)
        assert r["n_examples"] == sum(v for _, _, v in truth["n"]) == SUBSET * len(truth["n"])
        assert r["n_tasks"] == 2 == len({t for t, _, _ in truth["robust_acc"]})
        assert r["threat_model"] == {"fgsm": "Linf", "pgd_l2": "L2"}[r["attack_name"]]
        assert r["attack"] == {"fgsm": "FGSM", "pgd_l2": "PGD-L2"}[r["attack_name"]]
        if r["method"] == "pretrained":
            assert "n_seeds" not in r and "delta_robust_acc" not in r and "transfer_robust_acc" not in r
        else:
            assert r["n_seeds"] == 2 and len(truth["robust_acc"]) == 4  # 2 tasks x 2 seeds
            assert r["delta_robust_acc"] == round(100 * _mean([v for _, _, v in truth["delta_robust_acc"]]), 2)
            assert ("transfer_robust_acc" in r) == (r["attack_name"] == "fgsm")
    # never an average over budgets: each fgsm budget has its own row, the two differ as the stored means do
    ft = {r["eps"]: r for r in rows if r["method"] == "ft_short" and r["attack_name"] == "fgsm"}
    assert set(ft) == set(FGSM_EPS)
    means = {e: round(100 * _mean([v for _, _, v in stored[("ft_short", "fgsm", e)]["robust_acc"]]), 2)
             for e in FGSM_EPS}
    assert {e: ft[e]["robust_acc"] for e in FGSM_EPS} == means
    # sorted by threat model, then eps, then attack, then robust accuracy (descending)
    order = [(r["threat_model"], r["eps"], r["attack"], -r["robust_acc"], r["model"]) for r in rows]
    assert order == sorted(order)


@pytest.mark.slow
def test_rows_carry_the_rib_fields_label_and_hyperparameters(attacked_run):
    doc = leaderboard(attacked_run)
    _, configs = _stored(attacked_run)
    recorded = {}
    for labels, config in configs:
        lab, cfg = json.loads(labels), json.loads(config)
        recorded.setdefault(lab["method"], set()).add((cfg["method"], json.dumps(cfg["params"], sort_keys=True)))
    assert {k: len(v) for k, v in recorded.items()} == {"ft_short": 1, "lp": 1}
    entries = {e["model"]: e for e in doc["entries"] + doc["pretrained"]}
    for r in doc["robustness"]:
        e = entries[r["model"]]
        assert r["ood_robustness"] == e["ood_robustness"] and r.get("delta_P") == e.get("delta_P")
        if r["method"] == "pretrained":
            assert "hyperparameters" not in r
            continue
        assert r["id_acc"] == e["clean_acc"] and r["delta_R"] == e["delta_R"]
        (name, params), = recorded[r["method"]]
        assert r["method_name"] == name == e["method_name"]
        assert r["hyperparameters"] == json.loads(params) == e["hyperparameters"]
    ft = next(r for r in doc["robustness"] if r["method"] == "ft_short")
    assert ft["method_name"] == "ft" and ft["hyperparameters"]["epochs"] == 1 and ft["hyperparameters"]["lr"] == 0.002
    # the entries no longer give a robust accuracy averaged over the three budgets
    assert all("robust_acc" not in e and "transfer_robust_acc" not in e for e in entries.values())


@pytest.mark.slow
def test_markdown_lists_every_robustness_row(attacked_run):
    _, mp = write_leaderboard(attacked_run)
    md = mp.read_text()
    assert "| model | threat model | eps | attack | n | clean acc % | robust acc % |" in md
    doc = leaderboard(attacked_run)
    table = [ln for ln in md.split("Under attack", 1)[1].splitlines() if ln.startswith("| mlp/")]
    assert len(table) == len(doc["robustness"])
    for line, r in zip(table, doc["robustness"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:4] == [r["model"], r["threat_model"], format(r["eps"], "g"), r["attack"]]
        assert float(cells[6]) == r["robust_acc"]


def test_autoattack_is_named_by_its_implementation():
    label, threat = attack_label("autoattack")
    assert "torchattacks" in label and label != "AutoAttack" and threat == "Linf"
    assert attack_label("sparse_rs")[1] == "L0" and attack_label("pgd_linf") == ("PGD-Linf", "Linf")
    assert attack_label("gone") == ("gone", "?")


def test_synthetic_store_two_budgets_and_one_budget(tmp_path):
    """Fast: hand-made attack rows. A model attacked at two budgets gets two rows and no
    budget-averaged robust_acc in its entry; a model attacked at one budget keeps it."""
    store = ResultsStore(tmp_path / "results.sqlite")
    store.record_run({"name": "synthetic", "suite": "tiny"}, {"suite": {"pretrain": "pre", "tasks": ["t1", "t2"]}})
    base = {"backbone": "mlp", "recipe": "narrow"}
    values = {("two", 0.1): [0.5, 0.7], ("two", 0.2): [0.1, 0.2], ("one", 0.1): [0.4, 0.8]}
    for method in ("two", "one"):
        for i, task in enumerate(("t1", "t2")):
            attacks = {f"attack/fgsm/eps={eps}": {"robust_acc": v[i], "clean_acc": 0.9, "n": 10.0}
                       for (m, eps), v in values.items() if m == method}
            mean = sum(a["robust_acc"] for a in attacks.values()) / len(attacks)
            store.finish_cell(f"{method}-{task}", "evaluate", {**base, "method": method, "task": task, "seed": 0}, {},
                              0.0, {**attacks, "*": {"id_acc": 0.9, "R": 0.5, "robust_acc": mean}})
    store.close()
    doc = leaderboard(tmp_path)
    rows = {(r["method"], r["eps"]): r for r in doc["robustness"]}
    assert set(rows) == set(values)
    for key, v in values.items():
        assert rows[key]["robust_acc"] == round(100 * (v[0] + v[1]) / 2, 2)
        assert rows[key]["n_examples"] == 20 and rows[key]["clean_acc"] == 90.0
        assert rows[key]["threat_model"] == "Linf" and rows[key]["attack"] == "FGSM"
    entries = {e["method"]: e for e in doc["entries"]}
    assert "robust_acc" not in entries["two"]
    assert entries["one"]["robust_acc"] == round(100 * (0.4 + 0.8) / 2, 2)
