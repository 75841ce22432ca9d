"""Transferability estimators: how well a frozen model's output fits a target task,
predicted before any fine-tuning.

Every estimator is a plain function registered in ``ribench.core.ESTIMATORS``; for all
of them **higher = more transferable**. Two kinds of input (the function's ``takes``
attribute says which):

- ``takes = "features"``: ``estimator(features [N, D], labels [N], **kw) -> float``,
  features of the target data from the frozen backbone (LogME, H-score, GBC, kNN);
- ``takes = "probs"``: ``estimator(probs [N, Z], labels [N], **kw) -> float``, the
  source model's class probabilities on the target data (LEEP, NCE).

Labels are integers (any values; they are re-indexed to 0..K-1 in sorted order).
Inputs may be NumPy arrays or torch tensors; computations run in float64.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..core.errors import ConfigError, DataError
from ..core.registry import ESTIMATORS, register_estimator

__all__ = ["gbc", "hscore", "knn_accuracy", "leep", "list_estimators", "logme", "nce", "score"]


# ----------------------------------------------------------------------------- inputs


def _takes(kind: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        fn.takes = kind
        return fn

    return deco


def _matrix(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-d array [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{name} holds NaN or inf values")
    return x


def _labels(y, n: int, name: str = "labels") -> tuple[np.ndarray, int]:
    """Labels -> (indices 0..K-1 [N], K)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name} must be a 1-d array of {n} labels, got shape {y.shape}")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{name} must hold at least 2 classes to estimate transferability, got {len(classes)}")
    return index.astype(np.int64), len(classes)


def _probs(p) -> np.ndarray:
    p = _matrix(p, "probs")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise DataError("probs must hold probabilities: rows of non-negative numbers summing to 1 "
                        "(apply softmax to logits first)")
    return p / p.sum(1, keepdims=True)


def _one_hot(index: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(index), k))
    out[np.arange(len(index)), index] = 1.0
    return out


# ---------------------------------------------------------------------------- LogME


def _logme_evidence(sigma: np.ndarray, z: np.ndarray, y_sq: float, n: int) -> float:
    """Supremum over alpha, beta > 0 of the log evidence / N of one target y.

    ``sigma`` [r]: non-zero eigenvalues of F^T F, ``z`` [r]: U^T y in the left singular
    basis, ``y_sq`` = ||y||^2. The evidence equals log N(y | 0, F F^T / alpha + I / beta);
    with lam = alpha / beta it is, in the singular basis,

        -N/2 log 2 pi + N/2 log beta - 1/2 sum_i log(1 + s_i / lam) - beta / 2 q(lam),
        q(lam) = sum_i z_i^2 lam / (lam + s_i) + ||y - U U^T y||^2,

    maximised over beta in closed form (beta = N / q(lam)); the profile in log lam is
    searched on a grid, refined by bounded Brent, and compared with its limits
    lam -> inf (alpha -> inf: F says nothing about y) and lam -> 0 (beta -> inf: y is
    fitted exactly, possible when rank F = N), which the fixed point of the paper
    only approaches.
    """
    from scipy.optimize import minimize_scalar

    r = len(sigma)
    z2 = z * z
    outside = 0.0 if r >= n else max(y_sq - float(z2.sum()), 0.0)
    const = -0.5 * n * math.log(2 * math.pi) + 0.5 * n * math.log(n) - 0.5 * n

    def profile(t: float) -> float:  # t = log lam
        lam = math.exp(t)
        log_q = math.log(lam * float((z2 / (lam + sigma)).sum()) + outside)
        return const - 0.5 * n * log_q - 0.5 * float((np.log(lam + sigma) - t).sum())

    limits = [const - 0.5 * n * math.log(y_sq)]  # lam -> inf
    if outside == 0.0:  # lam -> 0: the N/2 log lam terms cancel when r = N
        limits.append(const - 0.5 * n * math.log(float((z2 / sigma).sum())) - 0.5 * float(np.log(sigma).sum()))
    lo, hi = math.log(sigma.min()) - 20.0, math.log(sigma.max()) + 20.0
    grid = np.linspace(lo, hi, 161)
    values = [profile(t) for t in grid]
    i = int(np.argmax(values))
    best = values[i]
    res = minimize_scalar(lambda t: -profile(t), bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]),
                          method="bounded", options={"xatol": 1e-12})
    best = max(best, -float(res.fun), *limits)
    return best / n


LOGME_SOLVERS = ("fixed_point", "maximum")


def _logme_fixed_point(f: np.ndarray, index: np.ndarray, k: int) -> float:
    """The authors' default computation (thuml/LogME ``LogME._fit_fixed_point``, the arXiv
    2021 version that ``LogME.fit`` runs): alpha = beta = 1, at most 11 fixed-point steps,
    stopped when alpha / beta moves by at most 0.1%, 1e-5 added to both denominators;
    the SVD of F^T F when N > D (singular values above 1e-10 kept), else of F."""
    n, d = f.shape
    if n > d:
        _, s2, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s2)
        r = int((s > 1e-10).sum())
        u = (f @ vh.T)[:, :r] / s[:r][None, :]
        s = s[:r]
    else:
        u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    out = []
    for c in range(k):
        y = (index == c).astype(np.float64)
        x2 = (u.T @ y) ** 2
        res_x2 = float(y @ y) - float(x2.sum())
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
            res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        evidence = (d / 2.0 * math.log(alpha) + n / 2.0 * math.log(beta) - 0.5 * float(np.log(alpha + beta * sigma).sum())
                    - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2 * math.pi))
        out.append(evidence / n)
    return float(np.mean(out))


@register_estimator("logme", version="2")  # 2: the authors' fixed point by default
@_takes("features")
def logme(features, labels, solver: str = "fixed_point") -> float:
    """LogME (You et al., ICML 2021, "LogME: Practical Assessment of Pre-trained Models
    for Transfer Learning"). Higher = more transferable.

    For each class k, the one-hot target y_k in R^N is modelled by Bayesian linear
    regression on the features F [N, D]: w ~ N(0, alpha^-1 I), y = F w + N(0, beta^-1).
    Its log evidence

        L(alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                         - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log |A|,
        A = alpha I + beta F^T F,  m = beta A^-1 F^T y,

    is maximised over alpha and beta; LogME = mean over classes of L / N.

    ``solver="fixed_point"`` (default) computes what the authors' code computes
    (``_logme_fixed_point``): the fixed point gamma = sum_i beta s_i / (alpha + beta s_i),
    alpha = gamma / ||m||^2, beta = (N - gamma) / ||F m - y||^2, at most 11 steps.
    ``solver="maximum"`` returns the supremum instead: beta profiled out in closed form
    and the ratio alpha / beta searched in 1-d, which also reaches the maxima at
    alpha -> inf or beta -> inf (random features, N < D) that 11 fixed-point steps stop
    short of (up to 3% lower there; equal to 1e-5 where the fixed point converges).
    Classes are those present in ``labels`` (the reference also scores absent labels
    below the largest one, as all-zero targets).
    """
    if solver not in LOGME_SOLVERS:
        raise ConfigError("solver", f"must be one of {', '.join(LOGME_SOLVERS)}, got {solver!r}")
    f = _matrix(features, "features")
    index, k = _labels(labels, len(f))
    n, d = f.shape
    if not np.any(f):
        raise DataError("features are all zero; LogME is undefined")
    if solver == "fixed_point":
        return _logme_fixed_point(f, index, k)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max() * max(n, d) * np.finfo(np.float64).eps  # numerical rank, as numpy.linalg.matrix_rank
    u, sigma = u[:, keep], s[keep] ** 2
    y = _one_hot(index, k)
    z = u.T @ y  # [r, K]
    return float(np.mean([_logme_evidence(sigma, z[:, c], float(y[:, c] @ y[:, c]), n) for c in range(k)]))


# ------------------------------------------------------------------------ LEEP, NCE


@register_estimator("leep")
@_takes("probs")
def leep(probs, labels) -> float:
    """LEEP, log expected empirical prediction (Nguyen et al., ICML 2020). Higher = better.

    ``probs`` [N, Z]: the source model's predicted distribution theta(x_i) over its Z
    source classes on each target example; ``labels`` [N] target labels. With the
    empirical joint P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z and the conditional
    P(y | z) = P(y, z) / sum_y' P(y', z),

        LEEP = 1/N sum_i log sum_z P(y_i | z) theta(x_i)_z   (<= 0).
    """
    p = _probs(probs)
    index, k = _labels(labels, len(p))
    joint = _one_hot(index, k).T @ p / len(p)  # [K, Z]
    marginal = joint.sum(0, keepdims=True)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = (p * cond[index]).sum(1)
    return float(np.log(np.maximum(eep, 1e-300)).mean())


@register_estimator("nce")
@_takes("probs")
def nce(probs, labels) -> float:
    """NCE, negative conditional entropy (Tran et al., ICCV 2019, "Transferability and
    Hardness of Supervised Classification Tasks"). Higher = better (<= 0).

    ``probs`` [N, Z] source-model probabilities (their argmax z_i is the source hard
    prediction; a 1-d integer array of predictions is accepted too), ``labels`` [N].
    With the empirical joint P(y, z) of (y_i, z_i),

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log (P(y, z) / P(z)).
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    probs = np.asarray(probs)
    z = probs.astype(np.int64) if probs.ndim == 1 else _probs(probs).argmax(1)
    index, k = _labels(labels, len(z))
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((k, int(z.max()) + 1))
    np.add.at(joint, (index, z), 1.0)
    joint /= len(z)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.broadcast_to(pz, joint.shape)[nz])).sum())


# ------------------------------------------------------------------------- H-score


@register_estimator("hscore", version="2")  # 2: covariances divided by N - 1, as tllib
@_takes("features")
def hscore(features, labels, shrinkage: bool = True) -> float:
    """H-score (Bao et al., ICIP 2019), with Ledoit-Wolf shrinkage (Ibrahim et al.,
    ICLR 2022, "Newer is not always better: rethinking transferability metrics, their
    peculiarities, stability and performance"), as the Transfer-Learning-Library
    computes them (``tllib/ranking/hscore.py``: ``regularized_h_score`` and ``h_score``).
    Higher = more transferable.

    With f the features, g(x) = E[f | y(x)] their class means per example,

        H = tr(cov(f)^+ cov(g))                          (shrinkage=False)
        H_a = tr(cov_a(f)^+ (1 - a) cov(g))             (shrinkage=True)

    where cov(.) is the sample covariance (divided by N - 1), cov_a(f) =
    (1 - a) S + a (tr S / D) I the Ledoit-Wolf (2004) estimate of the centred features
    (S their maximum-likelihood covariance, divided by N) with its optimal shrinkage a
    (``sklearn.covariance.ledoit_wolf``), and ^+ the pseudo-inverse (singular values
    below 1e-15 x the largest dropped).
    """
    f = _matrix(features, "features")
    index, k = _labels(labels, len(f))
    f = f - f.mean(0)
    n = len(f)
    counts = np.bincount(index, minlength=k).astype(np.float64)
    means = (_one_hot(index, k).T @ f) / counts[:, None]
    cov_g = (means * counts[:, None]).T @ means / (n - 1)  # 1/(N-1) sum_i g_i g_i^T; g has mean 0
    if shrinkage:
        from sklearn.covariance import ledoit_wolf

        cov_f, a = ledoit_wolf(f, assume_centered=True)
        cov_g = (1.0 - a) * cov_g
    else:
        cov_f = f.T @ f / (n - 1)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


# ----------------------------------------------------------------------------- GBC


@register_estimator("gbc", version="2")  # 2: the spherical log-determinant enters once, as the authors' code
@_takes("features")
def gbc(features, labels, gaussian: str = "spherical", pca_dim: int | None = None,
        min_variance: float = 1e-4) -> float:
    """GBC, Gaussian Bhattacharyya coefficient (Pándy et al., CVPR 2022, "Transferability
    Estimation using Bhattacharyya Class Separability"), as the authors' code computes it
    (google-research ``stable_transfer/transferability/gbc.py``). Higher = more
    transferable (<= 0).

    Each class c has its mean mu_c [D] and per-dimension variances v_c [D] (maximum
    likelihood, floored at ``min_variance``). With s = (s_i + s_j) / 2 the Bhattacharyya
    distance between classes i and j is

        D_B(i, j) = 1/8 sum_d (mu_id - mu_jd)^2 / s_d
                    + 1/2 (sum ln s - 1/2 sum ln s_i - 1/2 sum ln s_j),

    where s_c = v_c and the sums run over the D dimensions (``gaussian="diagonal"``), or
    s_c = mean_d v_cd, one scalar per class (``"spherical"``, the default of the authors'
    code): the Mahalanobis term still sums over D dimensions, the log-determinant term is
    that one scalar's, entering once (a D-dimensional spherical density would give it
    D times; the reference code's value is kept). GBC = -sum_i sum_{j != i} exp(-D_B(i, j)):
    the overlap of the classes, negated.
    ``pca_dim``: project the centred features on their top principal components first.
    """
    if gaussian not in ("spherical", "diagonal"):
        raise ConfigError("gaussian", f"must be 'spherical' or 'diagonal', got {gaussian!r}")
    f = _matrix(features, "features")
    index, k = _labels(labels, len(f))
    if pca_dim is not None:
        if pca_dim < 1:
            raise ConfigError("pca_dim", f"must be a positive integer or None, got {pca_dim!r}")
        f = f - f.mean(0)
        _, _, vt = np.linalg.svd(f, full_matrices=False)
        f = f @ vt[:pca_dim].T
    onehot = _one_hot(index, k)
    counts = onehot.sum(0)[:, None]
    mu = onehot.T @ f / counts  # [K, D]
    var = np.maximum(onehot.T @ (f - mu[index]) ** 2 / counts, min_variance)
    if gaussian == "spherical":
        var = var.mean(1, keepdims=True)  # [K, 1]: broadcast in the Mahalanobis term, once in the log term
    avg = 0.5 * (var[:, None, :] + var[None, :, :])  # [K, K, D] or [K, K, 1]
    maha = ((mu[:, None, :] - mu[None, :, :]) ** 2 / avg).sum(-1) / 8.0
    logdet = np.log(avg).sum(-1) - 0.5 * (np.log(var).sum(-1)[:, None] + np.log(var).sum(-1)[None, :])
    bc = np.exp(-(maha + 0.5 * logdet))
    np.fill_diagonal(bc, 0.0)
    return float(-bc.sum())


# ------------------------------------------------------------------------------ kNN


@register_estimator("knn")
@_takes("features")
def knn_accuracy(features, labels, k: int = 5, metric: str = "cosine", batch_size: int = 1024) -> float:
    """Leave-one-out k-nearest-neighbour accuracy in feature space, in [0, 1]. Higher = better.

    Each example is classified by the majority label of its ``k`` nearest other
    examples (``metric``: "cosine" similarity or "euclidean" distance); a tie between
    labels goes to the label of the nearest neighbour among the tied ones.
    """
    if metric not in ("cosine", "euclidean"):
        raise ConfigError("metric", f"must be 'cosine' or 'euclidean', got {metric!r}")
    f = torch.from_numpy(_matrix(features, "features"))
    index, n_classes = _labels(labels, len(f))
    n = len(f)
    if not 1 <= k < n:
        raise ConfigError("k", f"must be in [1, {n - 1}] for {n} examples, got {k!r}")
    y = torch.from_numpy(index)
    if metric == "cosine":
        f = torch.nn.functional.normalize(f, dim=1)
    sq = (f * f).sum(1)
    correct = 0
    for start in range(0, n, batch_size):
        q = f[start : start + batch_size]
        rows = torch.arange(start, start + len(q))
        # score: larger = nearer
        score = q @ f.T if metric == "cosine" else -(sq[rows, None] + sq[None, :] - 2 * q @ f.T)
        score[torch.arange(len(q)), rows] = -math.inf
        nearest = score.topk(k, dim=1).indices  # [B, k], nearest first
        neighbour_labels = y[nearest]
        votes = torch.zeros(len(q), n_classes, dtype=torch.long).scatter_add_(
            1, neighbour_labels, torch.ones_like(neighbour_labels))
        ranks = torch.arange(k).expand(len(q), k)
        first = torch.full((len(q), n_classes), k, dtype=torch.long).scatter_reduce_(
            1, neighbour_labels, ranks, reduce="amin")
        # most votes first; among equal counts, the label whose nearest member is nearest
        key = votes * (k + 1) + (k - first)
        correct += int((key.argmax(1) == y[rows]).sum())
    return correct / n


# -------------------------------------------------------------------------- helpers


def list_estimators(pattern: str = "*") -> list[str]:
    """Sorted names of the registered transferability estimators."""
    return ESTIMATORS.names(pattern)


def score(name: str, features=None, labels=None, probs=None, **kwargs) -> float:
    """Run the registered estimator ``name`` on whichever input it takes.

    ``features`` [N, D] for feature estimators, ``probs`` [N, Z] for probability ones
    (LEEP, NCE); ``labels`` [N]. ``kwargs`` go to the estimator.
    """
    fn = ESTIMATORS.get(name)
    takes = getattr(fn, "takes", "features")
    x = probs if takes == "probs" else features
    if x is None:
        arg = "probs" if takes == "probs" else "features"
        raise ConfigError("estimator", f"{name!r} needs {takes!r} (pass {arg}=...)")
    return float(fn(x, labels, **kwargs))
