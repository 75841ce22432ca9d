"""What the reports show of the newer rows: the gradient-masking mark of attack rows, the
task-vector norm split into backbone and head, m0's probe reference on a suite whose
pretraining domain has its own classes (``tiny_ls``), and the pretraining column's name.

Every expected number is read back from ``results.sqlite`` with plain SQL (or built by hand
for synthetic rows), not from the report's own aggregation.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict

import numpy as np
import pytest

from ribench.core.rows import PRETRAINED, SUMMARY, parse_attack, parse_probe
from ribench.engine import parse_spec, run
from ribench.report import aggregate as agg
from ribench.report.leaderboard import MASKING_FIELD, leaderboard, leaderboard_entries, leaderboard_markdown
from ribench.report.pipeline import write_reports
from ribench.report.plots import build_plots
from ribench.report.rundata import load_run
from ribench.report.tables import (M0_PROBE_LABEL, MASK_MARK, PROBE_NOTE, diagnostics_table, inheritance_tables,
                                   summary_table)


def _spec(suite: str, name: str, **over):
    data = {"name": name, "suite": suite, "backbones": ["mlp"], "recipes": ["narrow"], "methods": ["lp", "ncm"],
            "seeds": [0], "device": "cpu", "pretrain": {"epochs": 3},
            "eval": {"val_fraction": 0.2, "pretrain_sample": 40}, "diagnostics": {"enabled": False},
            "attacks": [{"name": "fgsm", "eps": [0.03], "subset": 32}]}
    data.update(over)
    return parse_spec(data)


def _sql(out) -> list[tuple]:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute("SELECT method, task, seed, eval_set, metric, value FROM metrics").fetchall()
    finally:
        con.close()


def _layout(out) -> dict:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        (env,) = con.execute("SELECT env FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return json.loads(env)["suite"]


@pytest.fixture(scope="module")
def ls_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lsreport")
    res = run(_spec("tiny_ls", "ls", diagnostics={"enabled": True}), out, quiet=True)
    assert res.failed == []
    write_reports(out)
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyreport")
    res = run(_spec("tiny", "tiny"), out, quiet=True)
    assert res.failed == []
    write_reports(out)
    return out


def _md_table(text: str, title_start: str) -> list[list[str]]:
    """The rows (header first) of the first Markdown table under a ``### <title_start>...`` heading."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("### " + title_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _num(cell: str) -> float:
    return float(cell.lstrip("*").split(" ")[0].rstrip(MASK_MARK))


# --- 3. m0's probe reference on a suite with its own pretraining classes --------------------
def test_label_space_run_records_the_layout_and_the_header_says_so(ls_run):
    layout = _layout(ls_run)
    assert layout["pretrain_classes"] == ["p0", "p1", "p2", "p3"] and layout["classes"] == ["a", "b", "c"]
    assert layout["class_map"] is None
    sentence = ("has its own 4 classes; tasks have 3 classes; the task heads start from a linear probe per task; "
                "P is measured through m0's own head, kept frozen in every adapted model")
    md = (ls_run / "report.md").read_text()
    assert "The pretraining domain `pre` " + sentence in md
    html = (ls_run / "report.html").read_text()
    assert "The pretraining domain pre " + sentence.replace("'", "&#x27;") in html


def test_m0_row_and_deltas_are_the_probe_references(ls_run):
    rows = _sql(ls_run)
    probes = {parse_probe(e): v for m, t, s, e, k, v in rows if m == PRETRAINED and k == "accuracy" and parse_probe(e)}
    acc = {(m, t, e): v for m, t, s, e, k, v in rows if k == "accuracy" and m != PRETRAINED}
    m0_plain = {e: v for m, t, s, e, k, v in rows if m == PRETRAINED and k == "accuracy" and not e.startswith("probe/")}
    tasks, task_sets = ["t1", "t2"], ["t1", "t2", "extra"]
    assert set(probes) == {(t, e) for t in tasks for e in task_sets}
    assert not any(e in m0_plain for e in task_sets)  # no plain m0 rows on the tasks' label space
    md = (ls_run / "report.md").read_text()
    table = _md_table(md, "mlp / narrow / ncm")
    header, m0, body = table[0], table[1], {r[0]: r for r in table[2:]}
    assert m0[0] == M0_PROBE_LABEL
    assert PROBE_NOTE in md
    for e in task_sets:
        j = header.index(e)
        others = [probes[(t, e)] for t in tasks if t != e]
        assert _num(m0[j]) == pytest.approx(100 * np.mean(others), abs=0.051)
        for t in tasks:
            delta = float(body[t][j].rsplit("(", 1)[1].rstrip(")"))
            assert delta == pytest.approx(100 * (acc[("ncm", t, e)] - probes[(t, e)]), abs=0.051)
    # the pretraining column is m0's own head: its plain row, both in m0's row and in the deltas
    j = header.index("pre")
    assert _num(m0[j]) == pytest.approx(100 * m0_plain["pre"], abs=0.051)
    # the summary's ΔR is against the same reference: its mean over tasks matches the table's off-task deltas
    dr = {t: v for m, t, s, e, k, v in rows if m == "ncm" and e == SUMMARY and k == "dR"}
    for t in tasks:
        other = next(o for o in tasks if o != t)
        assert dr[t] == pytest.approx(acc[("ncm", t, other)] - probes[(t, other)], abs=1e-9)


def test_heatmap_and_radar_use_the_probe_reference(ls_run):
    run_ = load_run(ls_run)
    rows = _sql(ls_run)
    probes = {parse_probe(e): v for m, t, s, e, k, v in rows if m == PRETRAINED and k == "accuracy" and parse_probe(e)}
    res = agg.inheritance_matrix(run_.rows, run_.layout, "mlp", "narrow", "lp")
    assert res.probed == {"t1", "t2", "extra"}
    for i, t in enumerate(res.tasks):
        for j, c in enumerate(res.columns):
            if c in res.probed:
                assert res.ref[i, j] == pytest.approx(probes[(t, c)])
    # lp is the probe: no change on the tasks' label space
    assert np.allclose([res.acc[i, j] - res.ref[i, j] for i in range(len(res.tasks))
                        for j, c in enumerate(res.columns) if c in res.probed], 0.0)
    columns, radar = agg.radar_values(run_.rows, run_.layout, "mlp", "narrow")
    assert radar[PRETRAINED][columns.index("extra")] == pytest.approx((probes[("t1", "extra")] + probes[("t2", "extra")]) / 2)
    plots = build_plots(run_)
    heat = next(p for p in plots if p.section == "inheritance" and p.slug.startswith("inheritance"))
    labels = [t.get_text() for t in heat.figure.axes[0].get_yticklabels()]
    assert labels[0] == "m0 (probe)" and "linear probe per task" in heat.caption


def test_a_one_label_space_run_is_as_before(tiny_run):
    rows = _sql(tiny_run)
    m0 = {e: v for m, t, s, e, k, v in rows if m == PRETRAINED and k == "accuracy"}
    acc = {(t, e): v for m, t, s, e, k, v in rows if m == "lp" and k == "accuracy"}
    md = (tiny_run / "report.md").read_text()
    assert "has its own" not in md and PROBE_NOTE not in md and M0_PROBE_LABEL not in md
    assert "has its own" not in (tiny_run / "report.html").read_text()
    table = _md_table(md, "mlp / narrow / lp")
    header, m0_row, body = table[0], table[1], {r[0]: r for r in table[2:]}
    assert m0_row[0] == "m0 (pretrained)"
    for e in ("t1", "t2", "extra"):
        j = header.index(e)
        assert _num(m0_row[j]) == pytest.approx(100 * m0[e], abs=0.051)
        for t in ("t1", "t2"):
            delta = float(body[t][j].rsplit("(", 1)[1].rstrip(")"))
            assert delta == pytest.approx(100 * (acc[(t, e)] - m0[e]), abs=0.051)
    assert "pretrain_classes" not in _layout(tiny_run)


# --- 4. the pretraining column carries the domain's name -----------------------------------
def test_pretraining_column_is_named_after_the_domain(ls_run):
    run_ = load_run(ls_run)
    assert _layout(ls_run)["pretrain"] == "pre"
    for t in inheritance_tables(run_.rows, run_.layout):
        assert t.headers[1] == "pre" and "pretrain" not in t.headers
    plots = build_plots(run_)
    heat = next(p for p in plots if p.section == "inheritance" and p.slug.startswith("inheritance"))
    assert [t.get_text() for t in heat.figure.axes[0].get_xticklabels()][0] == "pre"
    radar = next(p for p in plots if p.section == "radar")
    assert "pre" in [t.get_text() for t in radar.figure.axes[0].get_xticklabels()]
    doc = leaderboard(run_)
    assert doc["pretrain_domain"] == "pre"
    assert "pretraining domain `pre`" in leaderboard_markdown(doc)


# --- 1. the gradient-masking mark ------------------------------------------------------------
def test_masked_rows_are_marked_in_every_report(ls_run):
    rows = _sql(ls_run)
    marks: dict[str, list[float]] = defaultdict(list)
    for m, t, s, e, k, v in rows:
        a = parse_attack(e)
        if a is not None and not a.transfer and k == "masked":
            marks[m].append(v)
    assert marks and any(1.0 in v for v in marks.values()), "the run should have a marked row (ncm's saturated softmax)"
    suspect = {m for m, v in marks.items() if 1.0 in v}
    md = (ls_run / "report.md").read_text()
    html = (ls_run / "report.html").read_text()
    summary = _md_table(md, "Summary")
    col = summary[0].index("robust acc")
    for r in summary[1:]:
        method = "pretrained" if r[2] == "m0 (pretrained)" else r[2]
        assert (MASK_MARK in r[col]) == (method in suspect), r
    for m in suspect:
        n, k = len(marks[m]), int(sum(marks[m]))
        note = f"{MASK_MARK} mlp/narrow/{m}: gradient masking suspected in {k} of the {n} attack rows this mean averages"
        assert note in md and note in html
    assert html.count(MASK_MARK) >= 2 * len(suspect)  # the cell and its footnote
    doc = leaderboard(ls_run)
    for e in doc["entries"] + doc["pretrained"] + doc["robustness"]:
        assert e[MASKING_FIELD] is (e["method"] in suspect)
    board_md = leaderboard_markdown(doc)
    assert sum(MASK_MARK in line for line in board_md.splitlines() if line.startswith("| ")) == 2 * len(suspect)
    fig = next(p for p in build_plots(load_run(ls_run)) if p.section == "attacks")
    assert "gradient masking suspected" in fig.caption
    legend = [t.get_text() for t in fig.figure.legends[0].get_texts()]
    assert sorted(t for t in legend if t.endswith(MASK_MARK)) == sorted(f"{m}{MASK_MARK}" for m in suspect)


def _row(method, task, seed, eval_set, metric, value):
    return {"backbone": "b", "recipe": "r", "method": method, "task": task, "seed": seed, "eval_set": eval_set,
            "metric": metric, "value": value}


def _attacked(method: str, marks: list[tuple[float, float] | None], robust=(0.5, 0.7, 0.9)) -> list[dict]:
    """One summary and one fgsm row per task t<i>; ``marks[i]``: (zero_grad_frac, masked) or None (an old row)."""
    out = []
    for i, (mark, acc) in enumerate(zip(marks, robust)):
        task = f"t{i}"
        out += [_row(method, task, 0, SUMMARY, "robust_acc", acc), _row(method, task, 0, SUMMARY, "R", 0.5),
                _row(method, task, 0, "attack/fgsm/eps=0.1", "robust_acc", acc),
                _row(method, task, 0, "attack/fgsm/eps=0.1", "clean_acc", 0.9),
                _row(method, task, 0, "attack/fgsm/eps=0.1", "n", 10.0)]
        if mark is not None:
            out += [_row(method, task, 0, "attack/fgsm/eps=0.1", "zero_grad_frac", mark[0]),
                    _row(method, task, 0, "attack/fgsm/eps=0.1", "masked", mark[1])]
    return out


def test_mean_marks_count_the_marked_rows_and_old_rows_have_none():
    rows = (_attacked("ncm", [(0.8, 1.0), (0.0, 0.0), (0.6, 1.0)]) + _attacked("ft", [(0.1, 0.0)] * 3)
            + _attacked("old", [None] * 3))
    t = summary_table(rows)
    col = t.headers.index("robust acc")
    cells = {r[2]: r[col] for r in t.rows}
    assert cells["ncm"].main == "70.0" + MASK_MARK and cells["ncm"].value == pytest.approx(70.0)
    assert MASK_MARK not in cells["ft"] and MASK_MARK not in cells["old"]
    assert t.notes == [f"{MASK_MARK} b/r/ncm: gradient masking suspected in 2 of the 3 attack rows this mean averages "
                       "(70.0% of their attacked images have a zero input gradient); the robust accuracy overstates "
                       "robustness."]
    entries, _ = leaderboard_entries(rows)
    by = {e["method"]: e for e in entries}
    assert by["ncm"][MASKING_FIELD] is True and by["ft"][MASKING_FIELD] is False and MASKING_FIELD not in by["old"]
    one = summary_table(_attacked("ncm", [(0.75, 1.0)], robust=(0.4,)))
    assert one.notes == [f"{MASK_MARK} b/r/ncm: gradient masking suspected: 75.0% of the attacked images have a zero "
                         "input gradient; the robust accuracy overstates robustness."]


# --- 2. the task-vector norm split ------------------------------------------------------------
def test_task_vector_norm_shows_backbone_then_head(ls_run):
    rows = _sql(ls_run)
    vals = defaultdict(list)
    for m, t, s, e, k, v in rows:
        if e == "diag/summary" and k.startswith("task_vector_relative_norm"):
            vals[(m, k)].append(v)
    t = diagnostics_table(load_run(ls_run).rows)
    hb, hh = t.headers.index("‖τ‖/‖θ0‖ backbone"), t.headers.index("‖τ‖/‖θ0‖ head")
    assert hh == hb + 1 and "‖τ‖/‖θ0‖ incl. head" not in t.headers
    for r in t.rows:
        m = r[2]
        assert float(r[hb].main) == pytest.approx(np.mean(vals[(m, "task_vector_relative_norm_backbone")]), abs=5e-4)
        assert float(r[hh].main) == pytest.approx(np.mean(vals[(m, "task_vector_relative_norm_head")]), abs=5e-4)
    assert "‖τ‖/‖θ0‖ backbone" in (ls_run / "report.md").read_text()


def test_old_rows_without_the_split_show_the_total_labelled_with_the_head():
    old = [_row("ft", f"t{i}", 0, "diag/summary", "task_vector_relative_norm", v) for i, v in enumerate((0.2, 0.4))]
    t = diagnostics_table(old)
    assert t.headers[3:] == ["‖τ‖/‖θ0‖ incl. head"] and float(t.rows[0][3].main) == pytest.approx(0.3)
    assert "head included" in t.tooltips[3]
    new = [_row("lp", "t0", 0, "diag/summary", k, v) for k, v in (
        ("task_vector_relative_norm", 0.5), ("task_vector_relative_norm_backbone", 0.0),
        ("task_vector_relative_norm_head", 2.0))]
    mixed = diagnostics_table(old + new)  # a resumed run: old cells beside new ones
    assert mixed.headers[3:] == ["‖τ‖/‖θ0‖ backbone", "‖τ‖/‖θ0‖ head", "‖τ‖/‖θ0‖ incl. head"]
    lp = next(r for r in mixed.rows if r[2] == "lp")
    assert [c.main for c in lp[3:]] == ["0.000", "2.000", "0.500"]
    assert math.isclose(float(next(r for r in mixed.rows if r[2] == "ft")[5].main), 0.3)
