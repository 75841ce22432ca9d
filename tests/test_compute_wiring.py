"""The spec's compute options reach the cells: precision and max_per_set enter the keys of
the cells whose numbers they change (and nothing with the defaults), and a run evaluates the
stratified subsets with bf16 autocast."""

from __future__ import annotations

import json
import sqlite3

from ribench.engine import parse_spec, run
from ribench.engine.plan import plan

SUITE_ID = {"name": "tiny", "version": "1", "data_seed": 0}
BASE = {"name": "wire", "suite": "tiny", "backbones": ["mlp"], "methods": ["lp"], "device": "cpu", "seeds": [0],
        "pretrain": {"epochs": 1}, "analysis": {"enabled": False}, "diagnostics": {"enabled": False}}


def keys(**over) -> dict[tuple, str]:
    cells = plan(parse_spec({**BASE, **over}), ["t1", "t2"], SUITE_ID)
    return {(c.kind, json.dumps(c.labels, sort_keys=True)): c.key for c in cells}


def test_precision_and_max_per_set_change_exactly_the_cells_they_affect():
    base = keys()
    assert keys(compile=True, loader_workers=2) == base  # same numbers: same keys
    bf16 = keys(precision="bf16")
    changed = {k[0] for k in base if bf16[k] != base[k]}
    assert changed == {"pretrain", "eval_pretrained", "adapt", "evaluate"}
    sub = keys(eval={"max_per_set": 7})
    assert {k[0] for k in base if sub[k] != base[k]} == {"eval_pretrained", "evaluate"}


def test_a_run_evaluates_subsets_in_bf16(tmp_path, tiny):
    res = run(parse_spec({**BASE, "precision": "bf16", "eval": {"max_per_set": 7}}), tmp_path / "out", quiet=True)
    assert res.ok, res.failed
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    n = dict(con.execute("SELECT eval_set, value FROM metrics WHERE method = 'pretrained' AND metric = 'n'"))
    lo = dict(con.execute("SELECT eval_set, value FROM metrics WHERE method = 'pretrained' AND metric = 'acc_lo'"))
    acc = dict(con.execute("SELECT eval_set, value FROM metrics WHERE method = 'pretrained' AND metric = 'accuracy'"))
    env = json.loads(con.execute("SELECT env FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    con.close()
    sizes = {"pre": len(tiny.pretrain.test), **{k: len(d.test) for k, d in tiny.all_eval_sets().items()}}
    assert n and all(n[k] == min(7, sizes[k]) for k in n)
    assert all(lo[k] <= acc[k] for k in n)
    assert env["precision"] == "bf16"
