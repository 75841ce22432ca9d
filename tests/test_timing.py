"""Where the time goes: phase timings of each cell, `ribench status --timing` and the reports' Cost section."""

from __future__ import annotations

import json

import pytest

from ribench.cli import main
from ribench.core import timing
from ribench.engine import parse_spec, run
from ribench.engine import runner as runner_mod
from ribench.engine.progress import CellTimes, format_eta
from ribench.engine.store import ResultsStore
from ribench.report import write_reports
from ribench.report.aggregate import OTHER_PHASE, cell_costs


class FakeTime:
    """A perf_counter that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the clock ---------------------------------------------------------------------
def test_nested_phases_charge_the_innermost_only(monkeypatch):
    t = FakeTime()
    monkeypatch.setattr(timing.time, "perf_counter", t)
    with timing.measure() as clock:
        with timing.phase("attacks"):
            t.now += 2.0
            with timing.phase("masking_checks"):
                t.now += 0.5
            t.now += 1.0
            with timing.phase("load"):
                t.now += 0.25
        with timing.phase("load"):
            t.now += 1.0
        t.now += 4.0  # outside any phase
    assert clock.seconds == {"masking_checks": 0.5, "load": 1.25, "attacks": 3.0}
    assert timing.current() is None
    with timing.phase("load"):  # outside measure: nothing recorded, nothing fails
        pass


def test_phase_seconds_are_kept_when_the_block_raises(monkeypatch):
    t = FakeTime()
    monkeypatch.setattr(timing.time, "perf_counter", t)
    with timing.measure() as clock:
        with pytest.raises(ValueError):
            with timing.phase("train"):
                t.now += 3.0
                raise ValueError("diverged")
    assert clock.seconds == {"train": 3.0}


def test_cell_costs_sum_phases_and_the_rest_per_kind():
    cells = [
        {"kind": "evaluate", "status": "done", "duration": 10.0, "info": {"phase_seconds": {"load": 1.0, "clean_eval": 6.0}}},
        {"kind": "evaluate", "status": "done", "duration": 4.0, "info": {"phase_seconds": {"clean_eval": 2.0, "attacks": 1.0}}},
        {"kind": "evaluate", "status": "done", "duration": 6.0, "info": {}},  # a run made before phases were measured
        {"kind": "evaluate", "status": "failed", "duration": 99.0, "info": {}},
        {"kind": "adapt", "status": "done", "duration": 3.0, "info": {"phase_seconds": {"train": 2.5}}},
    ]
    ev, ad = cell_costs(cells)
    assert (ev.kind, ev.count, ev.seconds, ev.timed) == ("evaluate", 3, 20.0, 2)
    assert ev.phases == {"load": 1.0, "clean_eval": 8.0, "attacks": 1.0, OTHER_PHASE: 3.0 + 1.0}
    assert list(ev.phases) == ["load", "clean_eval", "attacks", OTHER_PHASE]
    assert ev.mean() == pytest.approx(20.0 / 3) and ev.mean("clean_eval") == 4.0 and ev.mean("attacks") == 0.5
    assert (ad.count, ad.phases) == (1, {"train": 2.5, OTHER_PHASE: 0.5})


# --- a run -------------------------------------------------------------------------
ATTACKS = [{"name": "fgsm", "eps": [0.1], "subset": 20}]


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("timed")
    spec = parse_spec({
        "name": "timed", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"], "tasks": ["t1"],
        "methods": ["lp"], "seeds": [0], "device": "cpu", "pretrain": {"epochs": 1},
        "eval": {"val_fraction": 0.2, "pretrain_sample": 30}, "attacks": ATTACKS,
        "diagnostics": {"enabled": False},
    })
    etas: list = []  # every ETA the grid bar was given, in seconds
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner_mod, "format_eta", lambda seconds: etas.append(seconds) or format_eta(seconds))
        res = run(spec, out, quiet=True)
    assert res.ok
    TIMED_ETAS[:] = etas
    return out


TIMED_ETAS: list = []


def _done_cells(out):
    store = ResultsStore(out / "results.sqlite")
    try:
        return store.cells("done")
    finally:
        store.close()


def test_every_cell_records_phases_within_its_duration(timed_run):
    cells = _done_cells(timed_run)
    assert cells
    by_kind = {}
    for c in cells:
        phases = c["info"]["phase_seconds"]
        assert all(s >= 0 for s in phases.values()), c
        assert sum(phases.values()) <= c["duration"] + 1e-9, c
        by_kind.setdefault(c["kind"], set()).update(phases)
    assert {"pretrain", "save"} <= by_kind["pretrain"]
    assert {"train", "save"} <= by_kind["adapt"]
    for kind in ("eval_pretrained", "evaluate"):
        assert {"clean_eval", "corruption_eval", "attacks", "masking_checks"} <= by_kind[kind], kind
    assert not set().union(*by_kind.values()) - set(timing.PHASES)


def test_status_timing_prints_the_costs_per_kind(timed_run, capsys):
    cells = _done_cells(timed_run)
    assert main(["status", str(timed_run), "--timing"]) == 0
    out = capsys.readouterr().out
    for kind in {c["kind"] for c in cells}:
        n = sum(c["kind"] == kind for c in cells)
        total = sum(c["duration"] for c in cells if c["kind"] == kind)
        assert f"  {kind}: {n} cells, {total:.2f} s total" in out, out
    evaluate = [c for c in cells if c["kind"] == "evaluate"]
    attacks = sum(c["info"]["phase_seconds"]["attacks"] for c in evaluate)
    assert f"    attacks: {attacks:.2f} s total" in out.split("  evaluate:")[1], out

    assert main(["status", str(timed_run), "--timing", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    got = {k["kind"]: k for k in data["timing"]}
    assert got["evaluate"]["cells"] == len(evaluate)
    assert got["evaluate"]["phases"]["attacks"]["seconds"] == pytest.approx(attacks)
    assert got["evaluate"]["phases"]["attacks"]["mean_seconds"] == pytest.approx(attacks / len(evaluate))

    assert main(["status", str(timed_run)]) == 0
    assert "time per kind" not in capsys.readouterr().out


def test_both_reports_show_the_cost_table(timed_run):
    html, md, _ = write_reports(timed_run, figures=False)
    md_text, html_text = md.read_text(), html.read_text()
    assert "## Cost (seconds)" in md_text and 'id="cost"' in html_text
    cells = _done_cells(timed_run)
    adapt = [c for c in cells if c["kind"] == "adapt"]
    train = sum(c["info"]["phase_seconds"]["train"] for c in adapt)
    cost_md = md_text.split("## Cost (seconds)")[1].split("\n## ")[0]
    row = next(line for line in cost_md.splitlines() if line.startswith("| adapt |"))
    assert f"{train:.2f} ({train / len(adapt):.3f})" in row
    assert f"{train:.2f}" in html_text.split('id="cost-table"')[1]


# --- the grid's ETA ------------------------------------------------------------------
def test_cell_times_estimate_by_kind_then_overall():
    t = CellTimes()
    assert t.eta(["adapt"]) is None and t.eta([]) == 0.0
    t.record("adapt", 2.0)
    t.record("adapt", 4.0)
    t.record("evaluate", 9.0)
    assert t.mean("adapt") == 3.0 and t.mean("pretrain") == 5.0  # unmeasured kind: mean of all three cells
    assert t.eta(["adapt", "adapt", "evaluate", "pretrain"]) == 3 + 3 + 9 + 5
    assert t.eta(["adapt", "evaluate"], slots=4) == 12 / 4
    assert [format_eta(s) for s in (None, 12.4, 185, 3725)] == ["", "ETA 12s", "ETA 3m05s", "ETA 1h02m"]


def test_the_grid_eta_comes_from_the_cells_measured_so_far(timed_run):
    events = [json.loads(line) for line in (timed_run / "events.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "done"]
    n = next(e["cells"] for e in events if e["event"] == "run_start")
    assert len(TIMED_ETAS) == len(done) == n
    # after the first cell, every cell left is estimated at its time (no other kind measured yet)
    assert TIMED_ETAS[0] == pytest.approx((n - 1) * done[0]["seconds"], rel=1e-3, abs=5e-3)
    assert TIMED_ETAS[-1] == 0.0  # nothing left to run
