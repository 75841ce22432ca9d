"""Statistics across results that count every independent unit once.

Pure functions on NumPy arrays (float64 inside):

- ``t_interval``: the two-sided Student-t interval of a mean over independent units;
- ``rank_rows``, ``spearman_rows``: Spearman's ρ (average ranks for ties) of each row of
  two ``[..., U]`` arrays, vectorised over the leading axes;
- ``grouped_spearman``: a predictor against an outcome in G groups that share the same U
  units (e.g. the tasks shared by every (backbone, recipe, method)): ρ per group, the
  mean ρ over groups, a permutation test that permutes the unit labels alike in every
  group, and a bootstrap interval that resamples units alike in every group.

Why groups and units: a predictor that does not vary inside a group (pixel-space OTDD is
the same for every backbone of a task) carries only as many independent values as there
are units it varies over. Pooling G groups of U units into one correlation of G·U points
counts each unit G times and makes the p-value far too small. Here a group contributes
one ρ over its U units, and both the permutation test and the bootstrap act on units,
with one permutation (or resample) applied to every group: groups share units and are
not independent of each other, and this keeps their dependence in the null
distribution. docs/analysis.md ("Did the prediction hold? The statistics") explains the
choices and the minimum counts.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..core.errors import ConfigError, DataError

__all__ = ["MIN_UNITS", "GroupedSpearman", "grouped_spearman", "permutation_pvalue", "rank_rows", "spearman_rows",
           "t_interval", "unit_permutations"]

MIN_UNITS = 5  # fewer units (or distinct predictor values) than this: too few to tell
ALTERNATIVES = ("two-sided", "greater", "less")
_CHUNK = 256  # permutations / resamples computed at once (bounds memory at G * _CHUNK * U floats)


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ConfigError("confidence", f"expected a number in (0, 1), got {confidence!r}")
    return float(confidence)


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean of ``values`` (one per independent unit):
    mean ± t_{(1+confidence)/2, n−1} · s / √n, with s the sample standard deviation
    (ddof = 1). (NaN, NaN) with fewer than 2 values. Same unit as ``values``."""
    from scipy.stats import t

    confidence = _check_confidence(confidence)
    v = np.asarray(list(values), dtype=np.float64)
    if v.ndim != 1:
        raise DataError(f"values: expected a flat sequence of numbers, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise DataError("values: expected finite numbers (drop NaN/inf first)")
    n = v.size
    if n < 2:
        return math.nan, math.nan
    mean, half = float(v.mean()), float(t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def rank_rows(a: np.ndarray) -> np.ndarray:
    """Ranks 1..U along the last axis, ties sharing their average rank (as
    ``scipy.stats.rankdata(method="average")``). Shape as ``a``, float64."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(a, dtype=np.float64), method="average", axis=-1)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ between ``x[..., :]`` and ``y[..., :]`` for every leading index: the
    Pearson correlation of their average ranks (``scipy.stats.spearmanr``'s value).
    ``x``, ``y``: float arrays of one shape ``[..., U]``, finite. Returns ``[...]``; NaN
    where either row is constant (ρ undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise DataError(f"x and y: expected one shape, got {x.shape} and {y.shape}")
    rx, ry = rank_rows(x), rank_rows(y)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    varies = (np.ptp(x, axis=-1) > 0) & (np.ptp(y, axis=-1) > 0)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=-1) / den
    return np.where(varies, np.clip(rho, -1.0, 1.0), np.nan)


@dataclass(frozen=True)
class GroupedSpearman:
    """``grouped_spearman``'s result.

    - ``rho``: Spearman's ρ of each group over its units (NaN where the predictor or the
      outcome is constant in the group); ``distinct``: distinct predictor values per group;
    - ``mean_rho``: the mean of the defined ρ over groups (``n_groups`` of them);
    - ``p_value``: permutation p-value of ``mean_rho`` (``alternative``), from
      ``n_permutations`` permutations of the unit labels (all U! of them when ``exact``);
    - ``ci``: percentile bootstrap interval of ``mean_rho`` over units (``confidence``);
    - ``enough``: at least ``min_units`` units and, in every group counted, at least
      ``min_units`` distinct predictor values; when False the report says "too few to
      tell" instead of a p-value and an interval.
    """

    rho: tuple[float, ...]
    distinct: tuple[int, ...]
    n_units: int
    n_groups: int
    mean_rho: float
    p_value: float
    ci: tuple[float, float]
    n_permutations: int
    exact: bool
    n_bootstrap: int
    confidence: float
    alternative: str
    min_units: int

    @property
    def min_distinct(self) -> int:
        """Fewest distinct predictor values in a group counted in ``mean_rho`` (0 if none)."""
        vals = [d for d, r in zip(self.distinct, self.rho) if math.isfinite(r)]
        return min(vals) if vals else 0

    @property
    def enough(self) -> bool:
        return self.n_groups > 0 and self.n_units >= self.min_units and self.min_distinct >= self.min_units


def _check_grid(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise DataError(f"{name}: expected a [groups, units] array with at least one of each, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise DataError(f"{name}: expected finite values in every (group, unit); leave out incomplete groups first")
    if x.shape != y.shape:
        raise DataError(f"x and y: expected one [groups, units] shape, got {x.shape} and {y.shape}")
    return x, y


def unit_permutations(n_units: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """``([P, U] int array, exact)``: every permutation of ``range(U)`` in lexicographic order
    (``itertools.permutations``) when U! ≤ ``n_permutations``, else ``n_permutations``
    uniform random ones from ``np.random.default_rng(seed)`` (each row
    ``rng.permutation(U)``)."""
    if math.factorial(n_units) <= n_permutations:
        return np.array(list(itertools.permutations(range(n_units))), dtype=np.int64).reshape(-1, n_units), True
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_units) for _ in range(n_permutations)]), False


def permutation_pvalue(null: np.ndarray, observed: float, exact: bool, alternative: str = "two-sided") -> float:
    """p-value of ``observed`` against a permutation ``null`` distribution, with the
    conventions of ``scipy.stats.permutation_test``: values within 100 machine epsilons
    (relative) of ``observed`` count as equal to it; a random (not ``exact``) null adds
    the observed arrangement once to numerator and denominator; two-sided is twice the
    smaller one-sided p, at most 1."""
    if alternative not in ALTERNATIVES:
        raise ConfigError("alternative", f"expected one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    gamma = abs(observed) * np.finfo(np.float64).eps * 100
    adj = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + adj) / (null.size + adj)
    greater = (np.count_nonzero(null >= observed - gamma) + adj) / (null.size + adj)
    p = {"less": less, "greater": greater, "two-sided": 2 * min(less, greater)}[alternative]
    return float(min(p, 1.0))


def _mean_over_groups(rho: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite values; NaN where none is finite."""
    ok = np.isfinite(rho)
    count = ok.sum(axis=0)
    total = np.where(ok, rho, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def grouped_spearman(x, y, *, n_permutations: int = 9999, n_bootstrap: int = 2000, confidence: float = 0.95,
                     alternative: str = "two-sided", seed: int = 0, min_units: int = MIN_UNITS) -> GroupedSpearman:
    """A predictor ``x`` against an outcome ``y`` in G groups sharing U units.

    ``x``, ``y``: ``[G, U]`` finite arrays; ``x[g, u]`` the predictor and ``y[g, u]`` the
    outcome of unit u (e.g. a task) in group g (e.g. a (backbone, recipe, method)), every
    group measured on the same units in the same order.

    - ρ_g = Spearman's ρ of row g (``spearman_rows``); the statistic is their mean over the
      groups where ρ_g is defined (the predictor and the outcome vary over the units).
    - Permutation test of "the outcome does not depend on the predictor": the unit labels
      of ``y`` are permuted by one permutation π applied to every group (ρ_g(π) between
      ``x[g, :]`` and ``y[g, π]``), so that groups that share units stay dependent as they
      are in the data. Exact (all U! permutations, the identity among them) when U! ≤
      ``n_permutations``; otherwise ``n_permutations`` random permutations
      (``unit_permutations(U, n_permutations, seed)``). p-value conventions of
      ``scipy.stats.permutation_test`` (``permutation_pvalue``).
    - Bootstrap interval: ``n_bootstrap`` resamples of U units with replacement,
      ``np.random.default_rng(seed + 1).integers(0, U, size=(n_bootstrap, U))``, the same
      resample in every group; ρ_g recomputed on each (ties averaged; a group whose
      resampled predictor or outcome is constant is left out of that resample's mean, a
      resample with no group left is dropped); the interval is the percentile interval
      (``np.percentile``, linear) of the resampled means. NaN with fewer than 2 units.
    """
    x, y = _check_grid(x, y)
    confidence = _check_confidence(confidence)
    for name, v, low in (("n_permutations", n_permutations, 1), ("n_bootstrap", n_bootstrap, 1), ("min_units", min_units, 1)):
        if not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(name, f"expected an integer >= {low}, got {v!r}")
    if alternative not in ALTERNATIVES:
        raise ConfigError("alternative", f"expected one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    n_groups_all, n_units = x.shape
    rho = spearman_rows(x, y)
    distinct = tuple(int(np.unique(row).size) for row in x)
    ok = np.isfinite(rho)
    common = dict(rho=tuple(float(r) for r in rho), distinct=distinct, n_units=n_units, n_groups=int(ok.sum()),
                  n_bootstrap=int(n_bootstrap), confidence=confidence, alternative=alternative,
                  min_units=int(min_units))
    if not ok.any():
        return GroupedSpearman(mean_rho=math.nan, p_value=math.nan, ci=(math.nan, math.nan), n_permutations=0,
                               exact=False, **common)
    xs, ys = x[ok], y[ok]
    mean_rho = float(rho[ok].mean())

    # permutation null: ranks of each row are fixed, only their pairing changes
    rx, ry = rank_rows(xs), rank_rows(ys)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    perms, exact = unit_permutations(n_units, int(n_permutations), seed)
    null = np.concatenate([np.einsum("gu,gpu->p", rx, ry[:, perms[i:i + _CHUNK]] / den[:, None, None]) / len(den)
                           for i in range(0, len(perms), _CHUNK)])
    p_value = permutation_pvalue(null, mean_rho, exact, alternative)

    # bootstrap over units, one resample for every group
    ci = (math.nan, math.nan)
    if n_units >= 2:
        idx = np.random.default_rng(seed + 1).integers(0, n_units, size=(int(n_bootstrap), n_units))
        means = np.concatenate([_mean_over_groups(spearman_rows(xs[:, idx[i:i + _CHUNK]], ys[:, idx[i:i + _CHUNK]]))
                                for i in range(0, len(idx), _CHUNK)])
        means = means[np.isfinite(means)]
        if means.size:
            alpha = 100 * (1 - confidence) / 2
            lo, hi = np.percentile(means, [alpha, 100 - alpha])
            ci = (float(lo), float(hi))
    return GroupedSpearman(mean_rho=mean_rho, p_value=p_value, ci=ci, n_permutations=len(perms), exact=exact, **common)
