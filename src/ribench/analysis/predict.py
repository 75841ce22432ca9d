"""Did the prediction hold? Rank correlations between predictors (transferability
scores, dataset distances) and measured outcomes (accuracy, robustness change), and
transferability tables over backbones.

``correlations`` treats every key as one independent unit. Results that come in groups
sharing units (every (backbone, recipe, method) measured on the same tasks) go through
``ribench.analysis.statistics.grouped_spearman`` instead, which counts each unit once.
Pixel-space OTDD (``otdd``) is computed from the images alone: it is the same for every
backbone and recipe, so it can rank tasks but never models (``depends_on_model``).
"""

from __future__ import annotations

import math
import warnings
from typing import Hashable, Iterable, Mapping

import numpy as np

from ..core.errors import DataError
from ..core.registry import ESTIMATORS
from ..core.types import Split
from .similarity import FeatureSet, extract_features

__all__ = ["MODEL_FREE_PREDICTORS", "correlations", "depends_on_model", "rank_backbones", "score_features",
           "score_model"]

# predictors computed from the data alone, without the pretrained model: one value per task
MODEL_FREE_PREDICTORS = frozenset({"otdd"})


def depends_on_model(predictor: str) -> bool:
    """Whether a predictor's value depends on the pretrained model (backbone and recipe):
    False for pixel-space OTDD, True for feature-space OTDD (``otdd_features``) and every
    transferability estimator. Only such a predictor can rank backbones or recipes."""
    return predictor not in MODEL_FREE_PREDICTORS


def correlations(predictor_values: Mapping[Hashable, float], measured: Mapping[Hashable, float]) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b (``scipy.stats``) between a predictor and a
    measured quantity over the keys they share (pairs with a NaN are dropped). Each key
    must be one independent unit (e.g. one task): the p-values assume it.

    Returns {"n", "spearman", "spearman_p", "kendall", "kendall_p"}; the coefficients
    are NaN with fewer than 3 points or a constant input. A positive coefficient means
    a higher predictor goes with a higher measurement (for a distance such as OTDD,
    expect a negative one against accuracy).
    """
    from scipy import stats

    keys = [k for k in predictor_values if k in measured]
    pairs = [(float(predictor_values[k]), float(measured[k])) for k in keys]
    pairs = [(p, m) for p, m in pairs if math.isfinite(p) and math.isfinite(m)]
    out = {"n": len(pairs), "spearman": math.nan, "spearman_p": math.nan, "kendall": math.nan, "kendall_p": math.nan}
    if len(pairs) < 3:
        return out
    x, y = np.array(pairs).T
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho, p_rho = stats.spearmanr(x, y)
        tau, p_tau = stats.kendalltau(x, y)
    out.update(spearman=float(rho), spearman_p=float(p_rho), kendall=float(tau), kendall_p=float(p_tau))
    return out


def _unpack(value) -> tuple[object, object, object | None]:
    if isinstance(value, FeatureSet):
        return value.features, value.labels, value.probs
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        return value[0], value[1], (value[2] if len(value) == 3 else None)
    raise DataError("each backbone needs a FeatureSet or a tuple (features, labels[, probs])")


def score_features(features, labels, probs=None, estimators: Iterable[str] | None = None) -> dict[str, float]:
    """Every requested estimator (default: all registered) on one set of outputs.
    Estimators that take source probabilities get NaN when ``probs`` is None."""
    names = list(estimators) if estimators is not None else ESTIMATORS.names()
    out = {}
    for name in names:
        fn = ESTIMATORS.get(name)
        x = probs if getattr(fn, "takes", "features") == "probs" else features
        out[name] = math.nan if x is None else float(fn(x, labels))
    return out


def score_model(model, split: Split, estimators: Iterable[str] | None = None,
                batch_size: int = 256) -> dict[str, float]:
    """Transferability of a frozen ``model`` to the task whose data is ``split``: its
    features and head probabilities in one pass, then every requested estimator."""
    fs = extract_features(model, split, batch_size)
    return score_features(fs.features, fs.labels, fs.probs, estimators)


def rank_backbones(features_by_backbone: Mapping[str, object], estimators: Iterable[str] | None = None
                   ) -> list[dict[str, object]]:
    """A table, one row per backbone: each estimator's score and the backbone's rank
    under it (1 = most transferable; ties share the best rank; NaN scores get no rank).

    ``features_by_backbone``: {backbone: FeatureSet or (features, labels[, probs])},
    all on the same target data. Rows keep the given order; columns are "backbone",
    then "<estimator>" and "<estimator>_rank" for each estimator.
    """
    from scipy.stats import rankdata

    if not features_by_backbone:
        raise DataError("no backbones given")
    names = list(estimators) if estimators is not None else ESTIMATORS.names()
    scores = {b: score_features(*_unpack(v), estimators=names) for b, v in features_by_backbone.items()}
    rows = [{"backbone": b, **s} for b, s in scores.items()]
    for name in names:
        vals = np.array([r[name] for r in rows], dtype=float)
        ok = np.isfinite(vals)
        ranks = np.full(len(vals), math.nan)
        if ok.any():
            ranks[ok] = rankdata(-vals[ok], method="min")
        for r, rk in zip(rows, ranks):
            r[f"{name}_rank"] = int(rk) if math.isfinite(rk) else None
    return rows
