"""The figures researchers publish: the per-backbone method scatters (ΔR against ΔP, R
against ID accuracy) and the predictor scatters, drawn from rows built here by hand, with
the expected positions computed here from those rows (numpy, scipy's t quantile)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from scipy import stats

from ribench.report import plots
from ribench.report.rundata import RunData

BACKBONES = ("mlp", "cnn")
METHODS = ("ft", "lp", "lora")
TASKS = ("t1", "t2", "t3")
SEEDS = (0, 1)
M0_R = 0.6


def _row(b, m, t, s, metric, value, eval_set="*"):
    return {"backbone": b, "recipe": "narrow", "method": m, "task": t, "seed": s, "eval_set": eval_set,
            "metric": metric, "value": value}


def _summary(bi, mi, ti, s):
    return {"id_acc": 0.7 + 0.05 * mi + 0.01 * ti + 0.004 * s + 0.02 * bi,
            "R": 0.5 + 0.03 * mi - 0.01 * ti + 0.002 * s,
            "dR": -0.1 + 0.03 * mi - 0.01 * ti + 0.002 * s,
            "dP": -0.3 + 0.08 * mi - 0.02 * ti - 0.005 * s - 0.05 * bi}


def make_rows():
    rows = []
    for bi, b in enumerate(BACKBONES):
        rows += [_row(b, "pretrained", None, None, k, v) for k, v in {"R": M0_R, "P_acc": 0.9, "dR": 0.0, "dP": 0.0}.items()]
        for ti, t in enumerate(TASKS):
            rows.append(_row(b, "analysis", t, None, "otdd", 1.0 + ti))
            for (mi, m), s in itertools.product(enumerate(METHODS), SEEDS):
                rows += [_row(b, m, t, s, k, v) for k, v in _summary(bi, mi, ti, s).items()]
    return rows


@pytest.fixture(scope="module")
def figures():
    return {p.slug: p for p in plots.build_plots(RunData(Path("unused"), make_rows()))}


def _points(ax):
    """(x, y) of every marker drawn by ``errorbar`` / ``plot`` on ``ax`` (not the reference lines)."""
    out = []
    for line in ax.lines:
        x, y = line.get_xdata(), line.get_ydata()
        if line.get_marker() not in (None, "None", "", "|", "_") and len(x) == 1:  # not the error bars' caps
            out.append((float(x[0]), float(y[0]), line))
    return out


def _mean_and_half_width(values):
    v = np.asarray(values)
    return v.mean(), stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))


@pytest.mark.parametrize("bi,b", list(enumerate(BACKBONES)))
def test_method_scatters_put_one_point_per_method_at_its_mean(figures, bi, b):
    p = figures[f"methods-{b}"]
    assert p.section in plots.SECTIONS
    left, right = p.figure.axes[:2]
    for ax, (xk, yk) in ((left, ("dP", "dR")), (right, ("id_acc", "R"))):
        pts = _points(ax)
        expected = []
        for mi, m in enumerate(METHODS):
            per_run = [_summary(bi, mi, ti, s) for ti in range(len(TASKS)) for s in SEEDS]
            mx, hx = _mean_and_half_width([100 * v[xk] for v in per_run])
            my, hy = _mean_and_half_width([100 * v[yk] for v in per_run])
            expected.append((mx, my))
            [(x, y, line)] = [(x, y, ln) for x, y, ln in pts if abs(x - mx) < 1e-6 and abs(y - my) < 1e-6]
            # the error bars span the 95% t-interval in both directions
            spans = [np.asarray(seg) for c in ax.collections for seg in getattr(c, "get_segments", lambda: [])()]
            assert any(np.allclose(s_, [[mx - hx, my], [mx + hx, my]]) for s_ in spans)
            assert any(np.allclose(s_, [[mx, my - hy], [mx, my + hy]]) for s_ in spans)
        if xk == "dP":  # m0 at (0, 0), the reference of both axes
            expected.append((0.0, 0.0))
        assert sorted((round(x, 6), round(y, 6)) for x, y, _ in pts) == sorted((round(x, 6), round(y, 6)) for x, y in expected)
        labels = {t.get_text() for t in ax.texts}
        assert labels >= set(METHODS) | {"m0 (pretrained)"}
    # m0's R is the dashed reference line of the ID-OOD panel
    assert any(ln.get_linestyle() == "--" and np.allclose(ln.get_ydata(), 100 * M0_R) for ln in right.lines)


def _bbox_overlaps(fig):
    """Pairs of visible, non-empty text artists of ``fig`` whose drawn boxes intersect."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in plots._texts(fig) if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_no_two_texts_of_a_figure_overlap(figures):
    assert figures, "no figures drawn"
    for slug, p in figures.items():
        assert _bbox_overlaps(p.figure) == [], slug


def test_label_placement_avoids_points_that_coincide():
    """Two methods with the same means: their labels still do not overlap."""
    rows = [r for r in make_rows() if r["backbone"] == "mlp"]
    rows += [{**r, "method": "lora2"} for r in rows if r["method"] == "lora"]
    p = {p.slug: p for p in plots.build_plots(RunData(Path("unused"), rows))}["methods-mlp"]
    assert _bbox_overlaps(p.figure) == []
    assert {"lora", "lora2"} <= {t.get_text() for t in p.figure.axes[0].texts}


def test_subplot_titles_do_not_intersect(figures):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for slug, p in figures.items():
        canvas = FigureCanvasAgg(p.figure)
        canvas.draw()
        r = canvas.get_renderer()
        boxes = [ax.title.get_window_extent(r) for ax in p.figure.axes if ax.get_title()]
        assert all(not a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), slug


def test_predictor_scatter_marks_backbones_by_marker_and_methods_by_colour(figures):
    p = figures["predictor-otdd"]
    ax = p.figure.axes[0]
    colls = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    # one collection per (method, backbone), each holding that pair's tasks
    assert len(colls) == len(METHODS) * len(BACKBONES)
    assert all(len(c.get_offsets()) == len(TASKS) for c in colls)
    colour = {tuple(np.round(c.get_facecolor()[0], 4)) for c in colls}
    shapes = {c.get_paths()[0].vertices.tobytes() for c in colls}
    assert len(colour) == len(METHODS) and len(shapes) == len(BACKBONES)
    # a backbone keeps its marker across methods, a method its colour across backbones
    by_shape = {}
    for c in colls:
        by_shape.setdefault(c.get_paths()[0].vertices.tobytes(), set()).add(tuple(np.round(c.get_facecolor()[0], 4)))
    assert all(len(v) == len(METHODS) for v in by_shape.values())
    # y: ΔP in points, mean over seeds, for each (backbone, method, task)
    expected = sorted(round(100 * np.mean([_summary(bi, mi, ti, s)["dP"] for s in SEEDS]), 6)
                      for bi in range(len(BACKBONES)) for mi in range(len(METHODS)) for ti in range(len(TASKS)))
    got = sorted(round(float(y), 6) for c in colls for _, y in c.get_offsets())
    assert got == pytest.approx(expected)
    legend = [t.get_text() for lg in p.figure.legends for t in lg.get_texts()]
    assert set(METHODS) <= set(legend) and {f"backbone {b}" for b in BACKBONES} <= set(legend)
    handles = {t.get_text(): h for lg in p.figure.legends for t, h in zip(lg.get_texts(), lg.legend_handles)}
    assert len({handles[f"backbone {b}"].get_marker() for b in BACKBONES}) == len(BACKBONES)
    assert all(isinstance(handles[m], Line2D) for m in METHODS)
