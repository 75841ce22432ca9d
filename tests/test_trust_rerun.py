"""Following the advice of a refused checkpoint works: a rerun with --trust-checkpoint (of
`ribench run` or `ribench retry`) retries the failed cell, and every skipped cell is
reported with the failed cell it waits on."""

from __future__ import annotations

import json

import torch

import fixtures_models
import tiny_suite  # noqa: F401  (registers the "tiny" suite)
from ribench.cli import main

SPEC = """
name = "trust"
suite = "tiny"
tasks = ["t1"]
methods = ["lp"]
seeds = [0]
device = "cpu"
analysis = {{ enabled = false }}
diagnostics = {{ enabled = false }}
eval = {{ val_fraction = 0.2, pretrain_sample = 20 }}

[[backbones]]
name = "mine"
source = "module:fixtures_models:tiny_net"
weights = "{weights}"
input = {{ size = 12, channels = 1 }}
"""


def _spec(tmp_path):
    torch.manual_seed(0)
    torch.save(fixtures_models.tiny_net(), tmp_path / "whole.pt")  # a full pickle: refused without trust
    (tmp_path / "spec.toml").write_text(SPEC.format(weights=tmp_path / "whole.pt"))
    return str(tmp_path / "spec.toml")


def _status(out, capsys):
    capsys.readouterr()
    assert main(["status", str(out), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_run_with_trust_checkpoint_retries_the_refused_cell(tmp_path, capsys):
    spec, out = _spec(tmp_path), str(tmp_path / "out")
    assert main(["run", spec, "--out", out, "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "1 failed" in text and "--trust-checkpoint" in text
    assert "  skipped: adapt mine/given/lp/t1 seed 0: waits on pretrain mine/given, which failed\n" in text
    first = _status(out, capsys)
    assert first["failed"] == 1 and first["done"] == 0
    # the same command again: nothing runs, and each skipped line says which failed cell is why
    assert main(["run", spec, "--out", out, "--quiet"]) == 1
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith("  skipped: ")]
    assert "0 ran" in text and len(lines) == first["total"]
    failed_pretrain = [ln for ln in lines if ln.startswith("  skipped: pretrain")]
    assert len(failed_pretrain) == 1 and "failed in an earlier run" in failed_pretrain[0]
    assert "unsafe full pickle" in failed_pretrain[0]  # with its error
    assert all(ln.endswith("waits on pretrain mine/given, which failed in an earlier run")
               for ln in lines if ln not in failed_pretrain)
    # the advice: --trust-checkpoint retries the failed cell, and everything it blocked runs
    assert main(["run", spec, "--out", out, "--quiet", "--trust-checkpoint"]) == 0
    st = _status(out, capsys)
    assert st["failed"] == 0 and st["pending"] == 0 and st["done"] == st["total"] == first["total"]
    # trusted now, a plain rerun finds everything done
    assert main(["run", spec, "--out", out, "--quiet", "--trust-checkpoint"]) == 0
    assert f"0 ran, {first['total']} already done" in capsys.readouterr().out


def test_retry_takes_trust_checkpoint(tmp_path, capsys):
    spec, out = _spec(tmp_path), str(tmp_path / "out")
    assert main(["run", spec, "--out", out, "--quiet"]) == 1
    assert main(["retry", out, "--quiet"]) == 1  # still refused: retry keeps the stored spec's trust
    assert _status(out, capsys)["failed"] == 1
    assert main(["retry", out, "--quiet", "--trust-checkpoint"]) == 0
    st = _status(out, capsys)
    assert st["failed"] == 0 and st["done"] == st["total"]
