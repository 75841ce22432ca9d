"""The reports' "Did the prediction hold?" section and the intervals of the method summary.

Runs are made of synthetic rows shaped as docs/results.md describes them (written with
``ResultsStore.finish_cell``, as tests/test_report_html.py does), with known predictor
values, so that the expected numbers can be computed here independently: with scipy
(Spearman's ρ per group, the t-interval) and by parsing report.md and report.html.
"""

from __future__ import annotations

import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ribench.engine.store import ResultsStore
from ribench.report.html import write_html_report
from ribench.report.markdown import write_report


# --- synthetic runs ---------------------------------------------------------------------------
def make_run(out: Path, backbones, tasks, methods, seeds=(0, 1), recipe="narrow", seed=0) -> dict:
    """A results store with m0, adapted-model summary rows and analysis rows.

    Pixel OTDD depends on the task only (as the engine computes it); OTDD on features
    and LogME depend on the backbone too. ΔP falls with the task's distance, plus noise.
    Returns the values written: {"otdd": {task}, "otdd_features": {(b, t)}, "logme": {(b, t)},
    "summary": {(b, m, t, s, metric)}}.
    """
    rng = np.random.default_rng(seed)
    store = ResultsStore(out / "results.sqlite")
    now = time.time()
    dist = {t: 1.0 + 0.5 * i + 0.1 * rng.random() for i, t in enumerate(tasks)}
    written = {"otdd": dist, "otdd_features": {}, "logme": {}, "summary": {}}
    for bi, b in enumerate(backbones):
        lab = {"backbone": b, "recipe": recipe}
        store.finish_cell(f"m0-{b}", "evaluate", {**lab, "method": "pretrained", "task": None, "seed": None}, {}, now,
                          {"*": {"R": 0.6, "P_acc": 0.95, "dR": 0.0, "dP": 0.0}})
        for t in tasks:
            feat = dist[t] * (1 + 0.3 * bi) + 0.2 * rng.random()
            logme = -feat + 0.1 * rng.random()
            written["otdd_features"][(b, t)], written["logme"][(b, t)] = feat, logme
            store.finish_cell(f"analysis-{b}-{t}", "analysis", {**lab, "method": "analysis", "task": t, "seed": None},
                              {}, now, {"*": {"otdd": dist[t], "otdd_features": feat, "logme": logme}})
            for mi, m in enumerate(methods):
                for s in seeds:
                    dp = -0.04 * dist[t] - 0.02 * mi + 0.01 * rng.normal()
                    vals = {"id_acc": 0.9 - 0.02 * dist[t] + 0.01 * rng.normal(), "R": 0.55 + 0.01 * rng.normal(),
                            "dR": -0.03 * dist[t] + 0.01 * rng.normal(), "P_acc": 0.95 + dp, "dP": dp,
                            "trainable_params": 1000.0 * (mi + 1), "train_seconds": 1.0}
                    for k, v in vals.items():
                        written["summary"][(b, m, t, s, k)] = v
                    store.finish_cell(f"adapt-{b}-{m}-{t}-{s}", "adapt", {**lab, "method": m, "task": t, "seed": s}, {},
                                      now, {"*": vals})
    store.close()
    return written


def md_section(md: str, heading: str) -> str:
    start = md.index(heading)
    end = md.find("\n## ", start + len(heading))
    return md[start:end if end >= 0 else len(md)]


def md_table(md: str, title: str) -> list[list[str]]:
    """Body rows of the Markdown table under ``### <title>``."""
    lines = md[md.index(f"### {title}"):].splitlines()[1:]
    lines = [ln for ln in lines if ln.strip()]
    rows = []
    for ln in lines[2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


class _TableText(HTMLParser):
    """Cell texts of the table with a given id."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.depth, self.rows, self.cell = table_id, False, 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = []

    def handle_endtag(self, tag):
        if self.inside and tag == "td":
            self.rows[-1].append(re.sub(r"\s+", " ", "".join(self.cell)).strip())
            self.cell = None
        elif self.inside and tag == "table":
            self.inside = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def html_table(html: str, table_id: str) -> list[list[str]]:
    p = _TableText(table_id)
    p.feed(html)
    return [r for r in p.rows if r]


ACROSS_TASKS = "Across tasks, within each (backbone, recipe, method)"
ACROSS_MODELS = "Across backbones and recipes, within each (method, task)"


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """5 backbones x 2 methods x 6 tasks x 2 seeds: enough tasks and models to tell."""
    out = tmp_path_factory.mktemp("grid")
    written = make_run(out, [f"b{i}" for i in range(5)], [f"t{i}" for i in range(6)], ["ft", "lp"])
    write_report(out)
    write_html_report(out, figures=False)
    return out, written


# --- the defect: one correlation over every (backbone, recipe, method, task) ---------------------
def test_pooled_points_of_three_tasks_give_no_p_value(tmp_path):
    """Pixel OTDD over 3 tasks x 12 (backbone, recipe, method) groups: pooled, 36 points and
    a tiny p-value; counted once per task, too few to tell, in both reports."""
    written = make_run(tmp_path, ["b0", "b1", "b2", "b3"], ["t0", "t1", "t2"], ["ft", "lp", "lpft"], seeds=(0,))
    xs, ys = zip(*[(written["otdd"][t], v) for (b, m, t, s, k), v in written["summary"].items() if k == "dP"])
    pooled = stats.spearmanr(xs, ys)
    assert len(xs) == 36 and pooled.pvalue < 1e-3
    md = md_section(write_report(tmp_path).read_text(), "## Did the prediction hold?")
    html = write_html_report(tmp_path, figures=False).read_text()
    predictors = html[html.index('id="predictors"'):]
    for text in (md, predictors):
        assert "too few to tell" in text
        assert f"{pooled.pvalue:.2g}" not in text and "n = 36" not in text and "n=36" not in text
    rows = {(r[0], r[1]): r for r in md_table(md, ACROSS_TASKS)}
    groups, tasks, distinct, rho, interval, p = rows[("OTDD (pixels)", "ΔP")][2:]
    assert (groups, tasks, distinct) == ("12", "3", "3") and interval == p == "too few to tell"
    tasks = ["t0", "t1", "t2"]
    per_group = [stats.spearmanr([written["otdd"][t] for t in tasks],
                                 [written["summary"][(b, m, t, 0, "dP")] for t in tasks]).statistic
                 for b in ["b0", "b1", "b2", "b3"] for m in ["ft", "lp", "lpft"]]
    assert rho == f"{np.mean(per_group):+.2f}"  # the mean ρ is still shown, as a direction


def test_pixel_otdd_ranks_no_backbone():
    """The ranking tables rank backbones by model-dependent predictors only (ties share the
    best rank) and say why pixel OTDD is not among them."""
    from ribench.report.prediction import ranking_tables

    rows = []
    for b, feat, logme in (("mlp", 2.0, 0.5), ("cnn", 1.0, 0.5), ("vit", 3.0, 0.1)):
        for metric, v in (("otdd", 7.0), ("otdd_features", feat), ("logme", logme)):
            rows.append({"backbone": b, "recipe": "narrow", "method": "analysis", "task": "t1", "seed": None,
                         "eval_set": "*", "metric": metric, "value": v})
    (table,) = ranking_tables(rows)
    assert table.headers == ["backbone", "recipe", "otdd_features", "logme"]
    cells = {r[0]: r[2:] for r in table.rows}
    assert cells == {"cnn": ["1 (#1)", "0.5 (#1)"], "mlp": ["2 (#2)", "0.5 (#1)"], "vit": ["3 (#3)", "0.1 (#3)"]}
    from ribench.report.prediction import prediction_notes

    (note,) = prediction_notes(rows)
    assert "`otdd`" in note and "does not rank backbones" in note and "t1 7" in note


# --- one computation, both reports ----------------------------------------------------------------
def test_markdown_and_html_show_the_same_prediction_numbers(grid_run):
    out, written = grid_run
    md = md_section((out / "report.md").read_text(), "## Did the prediction hold?")
    html = (out / "report.html").read_text()
    for title, table_id in ((ACROSS_TASKS, "correlation-table"), (ACROSS_MODELS, "model-correlation-table")):
        shown_md, shown_html = md_table(md, title), html_table(html, table_id)
        assert shown_md and shown_md == shown_html, title
        assert md_table(md, f"Spearman ρ per group (across {'tasks' if table_id.startswith('c') else 'models'})") \
            == html_table(html, f"{table_id}-groups")
    across_tasks = {(r[0], r[1]): r[2:] for r in md_table(md, ACROSS_TASKS)}
    assert {p for p, _ in across_tasks} == {"OTDD (pixels)", "OTDD (features)", "LogME"}
    # pixel OTDD against ΔP across the 6 tasks of each (backbone, method): seeds averaged
    rhos = []
    for b in (f"b{i}" for i in range(5)):
        for m in ("ft", "lp"):
            dp = [np.mean([written["summary"][(b, m, t, s, "dP")] for s in (0, 1)]) for t in (f"t{i}" for i in range(6))]
            rhos.append(stats.spearmanr([written["otdd"][f"t{i}"] for i in range(6)], dp).statistic)
    groups, tasks, distinct, rho, interval, p = across_tasks[("OTDD (pixels)", "ΔP")]
    assert (groups, tasks, distinct) == ("10", "6", "6")
    assert rho == f"{np.mean(rhos):+.2f}"
    lo, hi = (float(v) for v in interval.strip("[]").split(","))
    assert lo <= float(rho) <= hi and 0 < float(p) <= 1
    # across models: pixel OTDD is not tested, feature OTDD is, over the 5 backbones
    across_models = {(r[0], r[1]): r[2:] for r in md_table(md, ACROSS_MODELS)}
    assert {p for p, _ in across_models} == {"OTDD (features)", "LogME"}
    assert across_models[("OTDD (features)", "ΔP")][:3] == ["12", "5", "5"]  # 2 methods x 6 tasks, 5 backbones


# --- intervals on the method summary ------------------------------------------------------------
def test_summary_rows_carry_t_intervals_over_task_seed_runs(grid_run):
    out, written = grid_run
    md = (out / "report.md").read_text()
    assert "95% t-interval" in md and "n/a: one run" in md
    headers_line = next(ln for ln in md.splitlines()
                        if ln.startswith("| backbone | recipe | method | tasks | seeds | ID acc"))
    headers = [c.strip() for c in headers_line.strip("|").split("|")]
    rows = {tuple(r[:3]): r for r in md_table(md, "Summary (")}
    html_rows = {tuple(r[:3]): r for r in html_table((out / "report.html").read_text(), "summary-table")}
    assert html_rows == rows  # one table: the same columns and text in both reports
    lp = rows[("b2", "narrow", "lp")]
    for metric, header, scale, sign in (("id_acc", "ID acc", 100, ""), ("dP", "ΔP", 100, "+")):
        v = [written["summary"][("b2", "lp", t, s, metric)] for t in (f"t{i}" for i in range(6)) for s in (0, 1)]
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
        expected = f"{scale * np.mean(v):{sign}.1f} [{scale * lo:{sign}.1f}, {scale * hi:{sign}.1f}]"
        assert lp[headers.index(header)] == expected
    assert (lp[headers.index("tasks")], lp[headers.index("seeds")]) == ("6", "2")
    m0 = rows[("b2", "narrow", "m0 (pretrained)")]
    assert m0[headers.index("R")] == "60.0 (n/a: one run)"
    assert lp[headers.index("trainable")] == "2,000"  # a setting: no interval
    first = headers.index("ID acc")
    assert not any(math.isnan(float(c.split()[0])) for c in lp[first:first + 2])
