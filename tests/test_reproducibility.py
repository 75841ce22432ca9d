"""The same spec gives bit-identical numbers on every runner with default settings: every
cell computes with the spec's ``threads`` (default 1), whatever runner, worker count or
core count runs it (docs/results.md, "Reproducibility")."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from ribench.core.runtime import fixed_threads
from ribench.engine import parse_spec, run
from ribench.engine.runner import RunOptions

SPEC = {
    "name": "tiny-repro", "suite": "tiny", "backbones": ["mlp", "cnn"], "recipes": ["narrow"],
    "methods": [{"name": "ft", "params": {"epochs": 1}}, "lp"], "seeds": [0], "device": "cpu",
    "pretrain": {"epochs": 2}, "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
    "diagnostics": {"enabled": False},
}


def numbers(out: Path) -> dict:
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT cell, eval_set, metric, value FROM metrics WHERE metric NOT LIKE '%seconds'").fetchall()
    con.close()
    return {r[:3]: r[3] for r in rows}


def recorded_environment(out: Path) -> dict:
    con = sqlite3.connect(out / "results.sqlite")
    (env,) = con.execute("SELECT env FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
    con.close()
    return json.loads(env)


@pytest.fixture(scope="module")
def serial_default(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    res = run(parse_spec(SPEC), out, options=RunOptions(quiet=True))  # the runner's defaults, no thread setting
    assert res.ok, res.failed
    return out


def test_pool_with_default_settings_matches_serial_bit_for_bit(serial_default, tmp_path):
    res = run(parse_spec(SPEC), tmp_path, options=RunOptions(runner="pool", workers=2, quiet=True))
    assert res.ok, res.failed
    ref, got = numbers(serial_default), numbers(tmp_path)
    assert len(ref) > 100 and got.keys() == ref.keys()
    differing = [k for k in ref if not (ref[k] == got[k] or (ref[k] is None and got[k] is None))]
    assert not differing, f"{len(differing)} numbers differ, e.g. {differing[:3]}"


def test_the_thread_count_is_recorded_with_the_results(serial_default):
    env = recorded_environment(serial_default)
    assert env["threads_per_cell"] == "1"


def test_fixed_threads_sets_torch_and_blas_then_restores():
    before = torch.get_num_threads()
    blas_before = [p["num_threads"] for p in threadpool_info()]
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
        np.ones((64, 64)) @ np.ones((64, 64))  # BLAS runs inside the limit
    assert torch.get_num_threads() == before
    assert [p["num_threads"] for p in threadpool_info()] == blas_before


def test_threads_is_validated_and_overridable():
    from ribench.core.errors import ConfigError

    assert parse_spec(SPEC).threads == 1
    assert parse_spec(SPEC).with_overrides(threads=3).threads == 3
    with pytest.raises(ConfigError, match="threads"):
        parse_spec({**SPEC, "threads": 0})
