"""Training curves, Wilson intervals and the header of the reports, on a tiny real run.

The run (``tiny`` suite, ft trained by the loop, lp in closed form, two tasks, one seed)
stores the training-curve rows of its pretrain and adapt cells and a Wilson interval with
every accuracy. The expected numbers are read from the SQLite store directly and computed
here by hand, not through the report's own aggregation.
"""

from __future__ import annotations

import math
import re
import shutil
import sqlite3
from collections import defaultdict

import numpy as np
import pytest

from ribench.engine import parse_spec, run
from ribench.report import write_reports
from ribench.report.plots import build_plots
from ribench.report.rundata import load_run

SPEC = {"name": "tiny-curves", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
        "methods": [{"name": "ft", "params": {"epochs": 2}}, "lp"], "seeds": [0], "device": "cpu",
        "pretrain": {"epochs": 2}, "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
        "analysis": {"enabled": False}, "diagnostics": {"enabled": False}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("training") / "run"
    assert run(parse_spec(SPEC), out, quiet=True).ok
    write_reports(out)
    return out


def _sql(out, query, args=()):
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">.*?</section>', html, re.S)
    return m.group(0) if m else ""


# --- training curves --------------------------------------------------------------------
def test_training_curves_figure_shows_the_stored_rows(tiny_run):
    rows = _sql(tiny_run, "SELECT m.method, m.eval_set, m.metric, m.value FROM metrics m JOIN cells c ON c.key = m.cell "
                          "WHERE c.status = 'done' AND m.eval_set LIKE 'train/%'")
    assert rows
    expected = defaultdict(list)  # (line, metric) -> epoch -> values
    for method, eval_set, metric, value in rows:
        epoch = int(eval_set.split("epoch=")[1])
        expected[(method or "pretraining", metric, epoch)].append(value)
    assert {k[:2] for k in expected} == {("pretraining", "train_loss"), ("ft", "train_loss"), ("ft", "val_acc")}
    assert len(expected[("ft", "train_loss", 1)]) == 2  # two tasks averaged into the ft line

    html = (tiny_run / "report.html").read_text()
    assert 'id="fig-training-mlp-narrow"' in _section(html, "training")
    assert '<a href="#training">' in html
    md = (tiny_run / "report.md").read_text()
    assert "![Training curves: mlp / narrow](figures/training-mlp-narrow.png)" in md
    assert (tiny_run / "figures" / "training-mlp-narrow.png").read_bytes()[:4] == b"\x89PNG"

    (plot,) = [p for p in build_plots(load_run(tiny_run)) if p.section == "training"]
    panels = {ax.get_title(): ax for ax in plot.figure.axes}
    checks = {"pretraining (m0)": ("pretraining", "train_loss", 1.0), "adaptation: training loss": ("ft", "train_loss", 1.0),
              "adaptation: validation accuracy": ("ft", "val_acc", 100.0)}
    assert set(panels) == set(checks)
    for title, (line, metric, scale) in checks.items():
        (drawn,) = panels[title].get_lines()
        assert drawn.get_label() == line
        epochs = sorted(e for (ln, mt, e) in expected if (ln, mt) == (line, metric))
        assert list(drawn.get_xdata()) == epochs == [1, 2]
        want = [scale * sum(expected[(line, metric, e)]) / len(expected[(line, metric, e)]) for e in epochs]
        np.testing.assert_allclose(drawn.get_ydata(), want, rtol=1e-12)
    # the band of the ft lines spans the two tasks' values
    band = panels["adaptation: training loss"].collections[0].get_paths()[0].vertices[:, 1]
    lo = min(min(expected[("ft", "train_loss", e)]) for e in (1, 2))
    hi = max(max(expected[("ft", "train_loss", e)]) for e in (1, 2))
    assert band.min() == pytest.approx(lo, rel=1e-12) and band.max() == pytest.approx(hi, rel=1e-12)


def test_a_run_without_curve_rows_reports_as_before(tiny_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    con = sqlite3.connect(old / "results.sqlite")
    con.execute("DELETE FROM metrics WHERE eval_set LIKE 'train/%'")
    con.commit()
    con.close()
    html_path, md_path, _ = write_reports(old)
    html, md = html_path.read_text(), md_path.read_text()
    assert 'id="training"' not in html and "fig-training" not in html and "training-" not in md
    assert not (old / "figures" / "training-mlp-narrow.png").exists()
    # everything else is the same page: the new run's report without its training section
    new = (tiny_run / "report.html").read_text()
    new = new.replace(_section(new, "training"), "").replace('<li><a href="#training">Training curves</a></li>', "")
    assert html == new


# --- Wilson intervals -------------------------------------------------------------------
def _wilson(hits: int, n: int) -> tuple[float, float]:
    """The Wilson score interval at 95%, by its textbook formula."""
    z = 1.959963984540054
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _md_rows(md: str, title: str) -> dict[str, list[str]]:
    block = md.split(f"### {title}\n", 1)[1].split("\n\n", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {c[0]: dict(zip(header[1:], c[1:])) for c in
            ([x.strip() for x in ln.strip("|").split("|")] for ln in lines[2:])}


def test_inheritance_tables_show_the_wilson_interval_of_single_models(tiny_run):
    md = (tiny_run / "report.md").read_text()
    table = _md_rows(md, "mlp / narrow / ft: fine-tuned on (rows) → evaluated on (columns)")
    assert "95% Wilson score interval over the n images" in md
    got = dict(_sql(tiny_run, "SELECT metric, value FROM metrics WHERE method = 'ft' AND task = 't2' AND eval_set = 't2' "
                              "AND metric IN ('accuracy', 'n')"))
    n = int(got["n"])
    hits = round(got["accuracy"] * n)
    assert hits / n == pytest.approx(got["accuracy"], abs=1e-12)
    lo, hi = _wilson(hits, n)
    base = dict(_sql(tiny_run, "SELECT metric, value FROM metrics WHERE method = 'pretrained' AND eval_set = 't2' "
                               "AND metric = 'accuracy'"))["accuracy"]
    assert table["t2"]["t2"] == f"*{100 * got['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] ({100 * (got['accuracy'] - base):+.1f})"
    # the folded corruptions column is a mean over sets: no interval
    assert "[" not in table["t2"]["corruptions"] and "[" not in table["m0 (pretrained)"]["corruptions"]
    # report.html holds the same cells
    html = (tiny_run / "report.html").read_text()
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}] ({100 * (got['accuracy'] - base):+.1f})" in _section(html, "inheritance")
    assert "95% Wilson score interval" in _section(html, "inheritance")


def test_means_over_seeds_and_old_rows_show_no_interval(tiny_run, tmp_path):
    import time

    from ribench.engine.store import ResultsStore
    from ribench.report.markdown import render_markdown
    from store_helpers import plan_also

    two = tmp_path / "two-seeds"
    shutil.copytree(tiny_run, two)
    store = ResultsStore(two / "results.sqlite")  # a second seed of ft on t1
    store.finish_cell("second-seed", "evaluate", {"backbone": "mlp", "recipe": "narrow", "method": "ft", "task": "t1",
                                                  "seed": 1}, {}, time.time(),
                      {"t2": {"accuracy": 0.5, "acc_lo": 0.4, "acc_hi": 0.6, "n": 60.0}})
    plan_also(store, ["second-seed"])
    store.close()
    table = _md_rows(render_markdown(load_run(two)), "mlp / narrow / ft: fine-tuned on (rows) → evaluated on (columns)")
    first = dict(_sql(tiny_run, "SELECT metric, value FROM metrics WHERE method = 'ft' AND task = 't1' AND eval_set = 't2' "
                                "AND metric = 'accuracy'"))["accuracy"]
    assert table["t1"]["t2"].startswith(f"{100 * (first + 0.5) / 2:.1f} (")  # a mean over two seeds: change only
    assert "[" in table["t1"]["t1"] and "[" in table["t2"]["t2"]  # single models keep theirs

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    con = sqlite3.connect(old / "results.sqlite")
    con.execute("DELETE FROM metrics WHERE metric IN ('acc_lo', 'acc_hi')")
    con.commit()
    con.close()
    md = render_markdown(load_run(old))
    inherit = md.split("## Inheritance tables", 1)[1].split("\n## ", 1)[0]
    assert "Wilson" not in md and "[" not in inherit.split("### ", 1)[1]


# --- the header: user suites and outside backbones ---------------------------------------
@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """``test_spec_paths``' project: a user suite ``pets`` (data/pets.toml) and one outside backbone."""
    from test_spec_paths import _project

    from ribench.engine import load_spec

    root = tmp_path_factory.mktemp("user-suite")
    spec = load_spec(_project(root))
    out = root / "run"
    assert run(spec, out, quiet=True).ok
    write_reports(out)
    return out, spec


def test_header_names_a_user_suite_and_only_the_recipes_that_apply(user_run):
    from ribench.report.leaderboard import leaderboard

    out, spec = user_run
    suite_file = str(out.parent / "data" / "pets.toml")
    assert spec.suite == "digits" and spec.suite_file == suite_file and spec.recipes == ["narrow"]  # the spec's defaults
    md = (out / "report.md").read_text()
    header = md.splitlines()[2]
    assert header.startswith(f"User suite `pets` (from `{suite_file}`), backbones mine, recipes given, seeds [0].")
    assert "digits" not in header and "narrow" not in header
    html = (out / "report.html").read_text()
    lead = re.search(r'<p class="lead">(.*?)</p>', html, re.S).group(1)
    assert lead.startswith(f"User suite <b>pets</b> (from <code>{suite_file}</code>); backbones mine; recipes given;")
    assert leaderboard(out)["suite"] == "pets"
    # the stored rows of the outside backbone carry the recipe the header shows
    assert {r for (r,) in _sql(out, "SELECT DISTINCT recipe FROM metrics")} == {"given"}


def test_header_of_a_registered_suite_lists_the_spec_recipes(tiny_run):
    md = (tiny_run / "report.md").read_text()
    assert md.splitlines()[2].startswith("Suite `tiny`, backbones mlp, recipes narrow, seeds [0].")
    lead = re.search(r'<p class="lead">(.*?)</p>', (tiny_run / "report.html").read_text(), re.S).group(1)
    assert lead.startswith("Suite <b>tiny</b>; backbones mlp; recipes narrow;")


def test_mixed_backbones_list_the_spec_recipes_and_given():
    from ribench.report.rundata import applied_recipes, suite_header

    spec = {"backbones": ["mlp", {"name": "mine"}], "recipes": ["narrow", "wide"]}
    assert applied_recipes(spec) == ["narrow", "wide", "given"]
    assert applied_recipes({"backbones": ["mlp"], "recipes": ["wide"]}) == ["wide"]
    # a user suite whose cells recorded no name yet (nothing finished) is named by its file
    assert suite_header({"suite": "digits", "suite_file": "/x/pets.toml"}) == ("User suite", "pets", "/x/pets.toml")
    assert suite_header({"suite": "digits", "suite_file": "/x/spec.toml"}, {"name": "pets"}).name == "pets"
    assert suite_header({"suite": "digits", "suite_file": None}, {"name": "digits"}) == ("Suite", "digits", None)
