"""ribench.analysis.statistics against independent references: loop-based transcriptions
of Spearman's ρ, an exhaustive enumeration of every permutation, the bootstrap redone
resample by resample with scipy, scipy.stats.t and a hand computation of a t-interval."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ribench.analysis.statistics import (
    MIN_UNITS,
    grouped_spearman,
    permutation_pvalue,
    spearman_rows,
    t_interval,
    unit_permutations,
)
from ribench.core.errors import ConfigError, DataError


# --- naive references -----------------------------------------------------------------------
def naive_ranks(v):
    """Average ranks 1..n, by counting (ties share the mean of their positions)."""
    out = []
    for a in v:
        below = sum(1 for b in v if b < a)
        equal = sum(1 for b in v if b == a)
        out.append(below + (equal + 1) / 2)
    return out


def naive_spearman(x, y):
    """Pearson correlation of the average ranks, with plain loops; None when undefined."""
    rx, ry = naive_ranks(list(x)), naive_ranks(list(y))
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def naive_mean_rho(x, y, perm=None):
    """Mean over groups (rows) of ρ between x[g] and y[g] with y's units reordered by ``perm``."""
    vals = []
    for xg, yg in zip(x, y):
        yp = [yg[j] for j in perm] if perm is not None else list(yg)
        r = naive_spearman(xg, yp)
        if r is not None:
            vals.append(r)
    return sum(vals) / len(vals) if vals else None


def naive_two_sided(null, obs, exact=True):
    tol = abs(obs) * np.finfo(float).eps * 100
    adj = 0 if exact else 1
    less = (sum(v <= obs + tol for v in null) + adj) / (len(null) + adj)
    greater = (sum(v >= obs - tol for v in null) + adj) / (len(null) + adj)
    return min(1.0, 2 * min(less, greater)), less, greater


# --- Spearman per row ---------------------------------------------------------------------------
def test_spearman_rows_matches_a_loop_reference_with_ties_and_constant_rows():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(20, 7)).astype(float)  # many ties
    y = rng.integers(0, 3, size=(20, 7)).astype(float)
    x[0] = 2.0  # a constant predictor: undefined
    y[1] = -1.0  # a constant outcome: undefined
    got = spearman_rows(x, y)
    for g in range(20):
        ref = naive_spearman(x[g], y[g])
        if ref is None:
            assert math.isnan(got[g])
        else:
            assert got[g] == pytest.approx(ref, abs=1e-12)
            assert got[g] == pytest.approx(stats.spearmanr(x[g], y[g]).statistic, abs=1e-12)
    assert math.isnan(got[0]) and math.isnan(got[1])
    # two units: ±1; leading axes are batch axes
    assert spearman_rows([[1.0, 2.0]], [[5.0, 3.0]])[0] == -1.0
    assert spearman_rows(x.reshape(4, 5, 7), y.reshape(4, 5, 7)).shape == (4, 5)


# --- the defect: pooling counts a unit many times ------------------------------------------------
def test_pooling_three_tasks_in_twelve_groups_would_be_significant_grouping_is_not():
    """A predictor constant within each of 3 tasks (as pixel OTDD for 12 (backbone, recipe,
    method) groups): pooled, 36 points give p < 1e-6; counted once per task, the smallest
    possible two-sided p is 2/3! = 1/3, and the count is too small to tell."""
    rng = np.random.default_rng(0)
    x = np.tile([0.4, 1.1, 2.3], (12, 1))
    y = -x + 0.25 * rng.normal(size=x.shape)
    pooled = stats.spearmanr(x.ravel(), y.ravel())
    assert pooled.pvalue < 1e-6  # what the report used to print
    res = grouped_spearman(x, y)
    assert res.n_units == 3 and res.n_groups == 12 and set(res.distinct) == {3}
    assert res.exact and res.n_permutations == 6
    assert res.mean_rho == pytest.approx(float(np.mean([naive_spearman(a, b) for a, b in zip(x, y)])), abs=1e-12)
    null = [naive_mean_rho(x, y, p) for p in itertools.permutations(range(3))]
    assert res.p_value == pytest.approx(naive_two_sided(null, res.mean_rho)[0], abs=1e-12)
    assert res.p_value >= 1 / 3 - 1e-12
    assert not res.enough and res.min_distinct == 3 < MIN_UNITS


# --- the permutation test ---------------------------------------------------------------------------
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_permutation_test_equals_exhaustive_enumeration_of_five_tasks(alternative):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 5))
    x[1] = [1.0, 1.0, 2.0, 3.0, 3.0]  # ties in the predictor
    y = 0.6 * x + rng.normal(size=(4, 5))
    y[2] = [0.0, 1.0, 0.0, 1.0, 0.5]  # ties in the outcome
    res = grouped_spearman(x, y, alternative=alternative)
    assert res.exact and res.n_permutations == 120
    null = [naive_mean_rho(x, y, p) for p in itertools.permutations(range(5))]
    obs = naive_mean_rho(x, y)
    assert res.mean_rho == pytest.approx(obs, abs=1e-12)
    two, less, greater = naive_two_sided(null, obs)
    assert res.p_value == pytest.approx({"two-sided": two, "less": less, "greater": greater}[alternative], abs=1e-12)
    # the same test through scipy: one sample of task indices, permuted ("pairings")
    ref = stats.permutation_test((np.arange(5.0),), lambda idx: naive_mean_rho(x, y, idx.astype(int)),
                                 permutation_type="pairings", vectorized=False, n_resamples=10_000,
                                 alternative=alternative)
    assert res.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_perfect_agreement_in_every_group_has_the_smallest_exact_p():
    x = np.array([[1.0, 2, 3, 4, 5], [2, 4, 6, 8, 10], [0.1, 0.2, 0.3, 0.4, 0.5]])
    res = grouped_spearman(x, x ** 2)
    assert res.mean_rho == 1.0 and res.p_value == pytest.approx(2 / 120) and res.enough
    assert res.ci == (1.0, 1.0)  # every resample with a varying predictor is monotone too


def test_random_permutations_when_there_are_too_many_to_enumerate():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    res = grouped_spearman(x, y, n_permutations=200, seed=5)
    assert not res.exact and res.n_permutations == 200  # 6! = 720 > 200
    perms, exact = unit_permutations(6, 200, 5)
    draw = np.random.default_rng(5)
    assert not exact and all((p == draw.permutation(6)).all() for p in perms)
    null = [naive_mean_rho(x, y, p) for p in perms]
    assert res.p_value == pytest.approx(naive_two_sided(null, naive_mean_rho(x, y), exact=False)[0], abs=1e-12)
    assert 1 / 201 <= res.p_value <= 1


def test_pvalue_conventions():
    null = np.array([0.0, 0.5, 1.0, 1.0])
    assert permutation_pvalue(null, 1.0, exact=True, alternative="greater") == 0.5
    assert permutation_pvalue(null, 1.0, exact=False, alternative="greater") == 3 / 5
    assert permutation_pvalue(null, 0.0, exact=True) == 0.5  # 2 * min(1/4, 4/4)
    assert permutation_pvalue(null, 0.5, exact=True) == 1.0  # capped
    with pytest.raises(ConfigError, match="alternative"):
        permutation_pvalue(null, 0.5, exact=True, alternative="both")


# --- the bootstrap ---------------------------------------------------------------------------
def test_bootstrap_interval_equals_resampling_tasks_one_by_one():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 6))
    x[2] = [1.0, 1.0, 1.0, 2.0, 2.0, 3.0]  # resamples often make it constant: left out of that mean
    y = x + rng.normal(size=(3, 6))
    res = grouped_spearman(x, y, n_bootstrap=300, seed=4, confidence=0.9)
    idx = np.random.default_rng(5).integers(0, 6, size=(300, 6))  # seed + 1
    means = []
    for row in idx:
        vals = []
        for g in range(3):
            xs, ys = x[g, row], y[g, row]
            if np.ptp(xs) > 0 and np.ptp(ys) > 0:
                vals.append(stats.spearmanr(xs, ys).statistic)
        if vals:
            means.append(np.mean(vals))
    assert res.n_bootstrap == 300 and res.confidence == 0.9
    assert res.ci == pytest.approx(tuple(np.percentile(means, [5, 95])), abs=1e-12)
    assert res.ci[0] <= res.mean_rho <= res.ci[1]


def test_undefined_groups_are_left_out_and_all_undefined_gives_nan():
    x = np.array([[1.0, 2, 3, 4, 5], [3.0, 3, 3, 3, 3]])
    y = np.array([[2.0, 1, 4, 3, 5], [1.0, 2, 3, 4, 5]])
    res = grouped_spearman(x, y)
    assert res.n_groups == 1 and math.isnan(res.rho[1]) and res.mean_rho == pytest.approx(0.8)
    assert res.distinct == (5, 1) and res.min_distinct == 5 and res.enough
    none = grouped_spearman(np.ones((2, 4)), y[:, :4])
    assert none.n_groups == 0 and math.isnan(none.mean_rho) and math.isnan(none.p_value) and not none.enough
    one = grouped_spearman([[1.0]], [[2.0]])  # a single unit
    assert one.n_groups == 0 and math.isnan(one.ci[0])


def test_grouped_spearman_rejects_bad_input():
    with pytest.raises(DataError, match="x: expected a \\[groups, units\\]"):
        grouped_spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="y: expected finite"):
        grouped_spearman([[1.0, 2.0, 3.0]], [[1.0, np.nan, 3.0]])
    with pytest.raises(DataError, match="x and y"):
        grouped_spearman([[1.0, 2.0, 3.0]], [[1.0, 2.0]])
    with pytest.raises(ConfigError, match="n_bootstrap"):
        grouped_spearman([[1.0, 2.0]], [[1.0, 2.0]], n_bootstrap=0)
    with pytest.raises(ConfigError, match="confidence"):
        grouped_spearman([[1.0, 2.0]], [[1.0, 2.0]], confidence=95)


# --- t-intervals ---------------------------------------------------------------------------
def test_t_interval_matches_a_hand_computation_and_scipy():
    lo, hi = t_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, s = sqrt(5/3), t(0.975, 3) = 3.182446305284263 (tables): half-width 2.0542602567605
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (lo, hi) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-12)
    v = np.random.default_rng(0).normal(0.9, 0.05, size=7)
    for conf in (0.95, 0.9, 0.5):
        ref = stats.t.interval(conf, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        assert t_interval(v, conf) == pytest.approx(ref, abs=1e-12)
    assert t_interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7), abs=1e-14)  # no spread: a point
    assert all(math.isnan(b) for b in t_interval([0.5])) and all(math.isnan(b) for b in t_interval([]))
    with pytest.raises(DataError, match="finite"):
        t_interval([0.1, math.nan])
    with pytest.raises(ConfigError, match="confidence"):
        t_interval([0.1, 0.2], confidence=1.0)
