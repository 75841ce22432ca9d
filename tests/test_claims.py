"""Paired comparisons over tasks (report.claims) against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ribench.core import rows as names
from ribench.report import claims


def _row(method, task, seed, metric, value, eval_set=names.SUMMARY, recipe="narrow"):
    return dict(backbone="cnn", recipe=recipe, method=method, task=task, seed=seed, eval_set=eval_set,
                metric=metric, value=value)


RNG = np.random.default_rng(0)
TASKS = [f"t{i}" for i in range(6)]
A = {t: list(RNG.normal(0.05, 0.02, 3)) for t in TASKS}   # e.g. ewc's dR on each task, 3 seeds
B = {t: list(RNG.normal(0.00, 0.02, 3)) for t in TASKS}   # ft's
ROWS = ([_row("ewc", t, s, "dR", v) for t in TASKS for s, v in enumerate(A[t])]
        + [_row("ft", t, s, "dR", v) for t in TASKS for s, v in enumerate(B[t])]
        + [_row("ft", "t0", 3, "dR", None)])  # a NaN (stored as NULL) is left out


def test_paired_difference_is_a_t_interval_over_tasks_of_seed_means():
    a, b = claims.seed_values(ROWS, "dR", method="ewc"), claims.seed_values(ROWS, "dR", method="ft")
    assert a == A and b == B
    assert claims.seed_values(ROWS, "dR", method="ewc", seeds=[1]) == {t: [v[1]] for t, v in A.items()}
    c = claims.paired(a, b)
    d = np.array([np.mean(A[t]) - np.mean(B[t]) for t in TASKS])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert c.n == 6 and c.mean == pytest.approx(d.mean(), abs=1e-12)
    assert (c.lo, c.hi) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
    assert c.wins == int((d > 0).sum())
    assert c.seed_sd == pytest.approx(np.mean([np.std(v, ddof=1) for v in [*A.values(), *B.values()]]))


def test_verdict_reads_the_interval_against_the_claimed_side():
    mk = lambda lo, hi: claims.Comparison({"a": 0, "b": 0}, (lo + hi) / 2, lo, hi)
    assert mk(0.01, 0.05).verdict("greater") == "holds"
    assert mk(0.01, 0.05).verdict("less") == "fails"
    assert mk(-0.01, 0.05).verdict("greater") == "too close to tell"
    assert mk(-0.05, -0.01).verdict("less") == "holds"
    one = claims.summary({"t0": [0.2]})
    assert one.n == 1 and math.isnan(one.lo) and one.verdict() == "too close to tell"
    assert mk(0.01, 0.05).text() == "+3.0 [+1.0, +5.0]"


def test_pretrained_curve_and_merged_rows():
    rows = [_row(names.PRETRAINED, None, None, "accuracy", 0.5, eval_set="t0"),
            _row(names.PRETRAINED, None, None, "accuracy", 0.7, eval_set="t1"),
            _row(names.PRETRAINED, None, None, "accuracy", 0.9, eval_set=names.attack("fgsm", 0.1, "t0")),
            _row(names.PRETRAINED, None, None, "accuracy", 0.4, eval_set="t0", recipe="rich"),
            _row("wise_ft", "t0", 0, "R", 0.6, eval_set=names.curve(0.5)),
            _row("wise_ft", "t0", 1, "R", 0.8, eval_set=names.curve(0.5)),
            _row("wise_ft", "t0", 0, "R", 0.5, eval_set=names.curve(1.0)),
            _row("ties", names.MERGED, 0, "norm_acc", 0.9), _row("ties", names.MERGED, 1, "norm_acc", 0.8),
            _row("ties", names.MERGED, 1, "norm_acc", 0.1, eval_set="t0")]
    assert claims.pretrained_accuracy(rows, recipe="narrow") == {"t0": [0.5], "t1": [0.7]}
    assert claims.pretrained_accuracy(rows, recipe="rich", eval_sets=["t0"]) == {"t0": [0.4]}
    cv = claims.curve(rows)
    assert cv == {"t0": {0.5: [0.6, 0.8], 1.0: [0.5]}}
    assert claims.at_alpha(cv, 0.5) == {"t0": [0.6, 0.8]}
    m = claims.over_seeds(claims.merged_values(rows, "ties"))
    assert m.mean == pytest.approx(0.85) and m.n == 2 and m.lo < 0.85 < m.hi


def test_figures_draw_every_item(tmp_path):
    c = claims.paired(A, B)
    fig = claims.intervals_figure([("ewc - ft", c), ("ft", claims.summary(B))], xlabel="ΔR (points)", title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ft", "ewc - ft"]
    path = claims.save(fig, tmp_path / "f" / "x.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = claims.per_task_figure({"ft": c.per_task}, ylabel="y", title="t")
    assert len(bars.axes[0].patches) == len(TASKS)
    lines = claims.lines_figure({"ties": [(2, c), (5, c)]}, xlabel="tasks", ylabel="y", title="t")
    assert len(lines.axes[0].lines) == 1
    sc = claims.scatter_figure([("t0", 1.0, 0.1), ("t1", 2.0, 0.3)], xlabel="x", ylabel="y", title="t",
                               diagonal=True)
    assert [t.get_text() for t in sc.axes[0].texts] == ["t0", "t1"]
    two = claims.scatter_panels([("a", [("t0", 1.0, 0.1)], "x1"), ("b", [("t1", 2.0, 0.3)], "x2")], ylabel="y")
    assert [ax.get_title() for ax in two.axes] == ["a", "b"] and two.axes[1].texts[0].get_text() == "t1"
