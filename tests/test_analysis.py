"""Analysis layer: OTDD, transferability estimators, representation similarity,
weight-space diagnostics, prediction checks. References are written here
independently: naive loops, closed forms, POT, SciPy, scikit-learn."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import ot
import pytest
import scipy.linalg
import scipy.stats
import torch
import torch.nn.functional as F

from ribench.analysis import (
    LinearPath,
    MinibatchCKA,
    bures_wasserstein,
    compare_models,
    correlations,
    extract_features,
    filter_shift,
    gbc,
    hscore,
    hsic_unbiased,
    knn_accuracy,
    label_distances,
    layer_features,
    leep,
    linear_cka,
    linear_path,
    logme,
    minibatch_cka,
    mutual_knn,
    nce,
    otdd,
    otdd_splits,
    rank_backbones,
    rbf_cka,
    score,
    score_model,
    task_vector,
    task_vector_cosines,
    task_vector_norm,
)
from ribench.core import ESTIMATORS, DataError
from ribench.models import create_model


def blobs(n, d, k, sep, seed, shift=0.0):
    """n points in d dims around k class centres ``sep`` apart; labels cycle 0..k-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = np.random.default_rng(100).normal(size=(k, d)) * sep
    return centres[y] + rng.normal(size=(n, d)) + shift, y


# ---------------------------------------------------------------------------- OTDD


def naive_exact_label_w2(x1, y1, x2, y2):
    out = np.zeros((len(np.unique(y1)), len(np.unique(y2))))
    for i, a in enumerate(np.unique(y1)):
        for j, b in enumerate(np.unique(y2)):
            xa, xb = x1[y1 == a], x2[y2 == b]
            out[i, j] = ot.emd2(ot.unif(len(xa)), ot.unif(len(xb)), ot.dist(xa, xb))
    return out


def naive_gaussian_label_w2(x1, y1, x2, y2, bias=False):
    """bias=False: sample covariances (divided by n - 1); True: maximum likelihood (by n)."""
    out = np.zeros((len(np.unique(y1)), len(np.unique(y2))))
    for i, a in enumerate(np.unique(y1)):
        for j, b in enumerate(np.unique(y2)):
            xa, xb = x1[y1 == a], x2[y2 == b]
            sa, sb = np.cov(xa, rowvar=False, bias=bias), np.cov(xb, rowvar=False, bias=bias)
            ra = scipy.linalg.sqrtm(sa).real
            cross = scipy.linalg.sqrtm(ra @ sb @ ra).real
            out[i, j] = ((xa.mean(0) - xb.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(cross)
    return out


def test_bures_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    v1, v2 = rng.uniform(0.1, 3, size=(3, 5)), rng.uniform(0.1, 3, size=(4, 5))
    got = bures_wasserstein(m1, np.stack([np.diag(v) for v in v1]), m2, np.stack([np.diag(v) for v in v2]))
    for i, j in itertools.product(range(3), range(4)):
        expected = ((m1[i] - m2[j]) ** 2).sum() + ((np.sqrt(v1[i]) - np.sqrt(v2[j])) ** 2).sum()
        assert got[i, j] == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_bures_of_a_gaussian_with_itself_is_zero_and_general_case_matches_sqrtm():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 6, 6))
    covs = a @ a.transpose(0, 2, 1)
    means = rng.normal(size=(2, 6))
    got = bures_wasserstein(means, covs, means, covs)
    assert got[0, 0] == pytest.approx(0, abs=1e-9) and got[1, 1] == pytest.approx(0, abs=1e-9)
    r0 = scipy.linalg.sqrtm(covs[0]).real
    expected = ((means[0] - means[1]) ** 2).sum() + np.trace(covs[0]) + np.trace(covs[1]) \
        - 2 * np.trace(scipy.linalg.sqrtm(r0 @ covs[1] @ r0).real)
    assert got[0, 1] == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("covariance", ["unbiased", "ml"])
@pytest.mark.parametrize("n1, n2, d", [(24, 30, 5), (36, 30, 40)])  # n per class > d, and n per class < d
def test_gaussian_label_distances_match_sqrtm_reference(n1, n2, d, covariance):
    x1, y1 = blobs(n1, d, 3, 2.0, seed=1)
    x2, y2 = blobs(n2, d, 2, 2.0, seed=2, shift=0.5)
    got = label_distances(x1, y1, x2, y2, inner="gaussian", covariance=covariance)
    np.testing.assert_allclose(got, naive_gaussian_label_w2(x1, y1, x2, y2, bias=covariance == "ml"),
                               rtol=1e-7, atol=1e-9)


def test_exact_label_distances_match_emd2_loop():
    x1, y1 = blobs(30, 4, 3, 2.0, seed=3)
    x2, y2 = blobs(25, 4, 3, 2.0, seed=4, shift=1.0)
    got = label_distances(x1, y1, x2, y2, inner="exact")
    np.testing.assert_allclose(got, naive_exact_label_w2(x1, y1, x2, y2), rtol=1e-10)


def test_otdd_exact_inner_exact_outer_equals_emd2_built_in_the_test():
    x1, y1 = blobs(30, 4, 3, 2.0, seed=5)
    x2, y2 = blobs(24, 4, 3, 2.0, seed=6, shift=0.7)
    w = naive_exact_label_w2(x1, y1, x2, y2)
    cost = ot.dist(x1, x2) + w[y1][:, y2]  # labels are 0..2 here
    expected = ot.emd2(ot.unif(len(x1)), ot.unif(len(x2)), cost)
    assert otdd(x1, y1, x2, y2, inner="exact", entropic_reg=0) == pytest.approx(expected, rel=1e-9)


def test_entropic_outer_value_matches_pot_plan():
    """Not debiased: OT_eps = <P, C> + eps KL(P | a x b) at POT's optimal plan P."""
    x1, y1 = blobs(30, 3, 3, 1.5, seed=7)
    x2, y2 = blobs(27, 3, 3, 1.5, seed=8, shift=0.3)
    w = naive_exact_label_w2(x1, y1, x2, y2)
    cost = ot.dist(x1, x2) + w[y1][:, y2]
    eps = 0.1 * cost.mean()
    a, b = ot.unif(len(x1)), ot.unif(len(x2))
    plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000)
    expected = (plan * cost).sum() + eps * (plan * np.log(plan / np.outer(a, b))).sum()
    got = otdd(x1, y1, x2, y2, inner="exact", entropic_reg=0.1, debiased=False, tol=1e-10)
    assert got == pytest.approx(expected, rel=1e-6)


def test_otdd_debiased_is_zero_on_itself_symmetric_and_close_to_exact_ot():
    x1, y1 = blobs(45, 4, 3, 1.5, seed=9)
    x2, y2 = blobs(36, 4, 3, 1.5, seed=10, shift=0.8)
    for inner in ("gaussian", "exact"):
        d12 = otdd(x1, y1, x2, y2, inner=inner)
        assert d12 > 0.5
        assert otdd(x1, y1, x1, y1, inner=inner) == pytest.approx(0.0, abs=1e-6 * d12)
        assert otdd(x2, y2, x1, y1, inner=inner) == pytest.approx(d12, rel=1e-6)
    # the Sinkhorn divergence tends to exact OT as eps -> 0: within 5% at eps = 0.005 x mean cost,
    # and closer than at eps = 0.05 x mean cost
    exact = otdd(x1, y1, x2, y2, inner="exact", entropic_reg=0)
    small = otdd(x1, y1, x2, y2, inner="exact", entropic_reg=0.005)
    large = otdd(x1, y1, x2, y2, inner="exact", entropic_reg=0.05)
    assert small == pytest.approx(exact, rel=0.05)
    assert abs(small - exact) < abs(large - exact)


def test_otdd_grows_with_shift_and_caps_samples_per_class():
    x1, y1 = blobs(60, 4, 3, 2.0, seed=11)
    near = otdd(x1, y1, *blobs(60, 4, 3, 2.0, seed=12, shift=0.2))
    far = otdd(x1, y1, *blobs(60, 4, 3, 2.0, seed=12, shift=2.0))
    assert 0 < near < far
    capped = label_distances(x1, y1, x1, y1, inner="exact", max_per_class=5)
    assert capped.shape == (3, 3) and np.isfinite(capped).all()
    with pytest.raises(DataError, match="dimensions"):
        otdd(x1, y1, x1[:, :2], y1)


def test_otdd_source_cost_scale_is_the_mean_self_cost_of_dataset_1():
    """cost_scale="source": eps = entropic_reg x mean of dataset 1's self cost (fixed across targets)."""
    x1, y1 = blobs(30, 4, 3, 2.0, seed=13)
    w11 = naive_exact_label_w2(x1, y1, x1, y1)
    unit = float((ot.dist(x1, x1) + w11[y1][:, y1]).mean())
    for shift in (0.3, 1.5):
        x2, y2 = blobs(27, 4, 3, 2.0, seed=14, shift=shift)
        for debiased in (True, False):
            got = otdd(x1, y1, x2, y2, inner="exact", cost_scale="source", debiased=debiased)
            assert got == pytest.approx(otdd(x1, y1, x2, y2, inner="exact", cost_scale=unit, debiased=debiased),
                                        rel=1e-9)
        cross = otdd(x1, y1, x2, y2, inner="exact", debiased=False)  # eps from this pair's cross cost
        assert cross != pytest.approx(got, rel=1e-6)
    with pytest.raises(Exception, match="cost_scale"):
        otdd(x1, y1, x2, y2, cost_scale="target")


def test_otdd_on_splits_in_pixel_and_feature_space(tiny):
    pre, t1, t2 = tiny.pretrain.test, tiny.tasks["t1"].test, tiny.tasks["t2"].test
    d1 = otdd_splits(pre, t1, max_per_class=30)
    d2 = otdd_splits(pre, t2, max_per_class=30)  # colour column bars, compared in gray
    assert 0 < d1 < d2
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, width=16, depth=1)
    f_self = otdd_splits(pre, pre, model=model, max_per_class=30, seed=3)
    f_12 = otdd_splits(pre, t2, model=model, max_per_class=30)
    assert f_self == pytest.approx(0.0, abs=1e-6 * f_12) and f_12 > 0


# ---------------------------------------------------------------- transferability


def naive_logme(f, y):
    """The published log evidence of Bayesian linear regression (You et al. 2021, eq. 2),
    with full D x D matrices, maximised numerically over (log alpha, log beta)."""
    from scipy.optimize import minimize

    n, d = f.shape

    def evidence(log_alpha, log_beta, t):
        alpha, beta = math.exp(log_alpha), math.exp(log_beta)
        a_mat = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a_mat, f.T @ t)
        return (d / 2 * log_alpha + n / 2 * log_beta - n / 2 * np.log(2 * np.pi) - beta / 2 * (t - f @ m) @ (t - f @ m)
                - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a_mat)[1]) / n

    scores = []
    for c in np.unique(y):
        t = (y == c).astype(float)
        # |log alpha|, |log beta| <= 18: beyond, the D x D formula loses its precision
        obj = lambda p: -evidence(*np.clip(p, -18, 18), t)  # noqa: E731
        best = min((minimize(obj, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14,
                                                                          "maxiter": 20_000})
                    for start in ([0.0, 0.0], [5.0, 15.0], [15.0, 5.0])), key=lambda r: r.fun)
        scores.append(-best.fun)
    return float(np.mean(scores))


def naive_leep(p, y):
    n, z = p.shape
    ys = np.unique(y)
    joint = np.zeros((len(ys), z))
    for i in range(n):
        for zz in range(z):
            joint[list(ys).index(y[i]), zz] += p[i, zz] / n
    total = 0.0
    for i in range(n):
        s = sum(joint[list(ys).index(y[i]), zz] / joint[:, zz].sum() * p[i, zz] for zz in range(z))
        total += math.log(s)
    return total / n


def naive_nce(pred, y):
    n = len(y)
    total = 0.0
    for yy in set(y.tolist()):
        for zz in set(pred.tolist()):
            pyz = sum(1 for i in range(n) if y[i] == yy and pred[i] == zz) / n
            pz = sum(1 for i in range(n) if pred[i] == zz) / n
            if pyz > 0:
                total += pyz * math.log(pyz / pz)
    return total


def naive_ledoit_wolf(f):
    """Ledoit & Wolf (2004) on centred f: shrinkage = min(b2, d2) / d2 with
    d2 = ||S - mu I||_F^2 / p and b2 = 1/n^2 sum_k ||x_k x_k^T - S||_F^2 / p."""
    n, p = f.shape
    s = f.T @ f / n
    mu = np.trace(s) / p
    d2 = ((s - mu * np.eye(p)) ** 2).sum() / p
    b2 = sum(((np.outer(x, x) - s) ** 2).sum() for x in f) / n**2 / p
    shrink = min(b2, d2) / d2
    return (1 - shrink) * s + shrink * mu * np.eye(p), shrink


def naive_hscore(f, y, shrinkage):
    """Sample covariances (divided by N - 1), except the Ledoit-Wolf estimate (by N), as tllib."""
    f = f - f.mean(0)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    cov_g = g.T @ g / (len(f) - 1)
    if not shrinkage:
        return np.trace(np.linalg.pinv(f.T @ f / (len(f) - 1), rcond=1e-15) @ cov_g)
    cov, a = naive_ledoit_wolf(f)
    return np.trace(np.linalg.inv(cov) @ ((1 - a) * cov_g))


def naive_gbc(f, y, gaussian):
    """Diagonal: the Bhattacharyya distance of diagonal Gaussians with full matrices.
    Spherical, as the authors' code: the Mahalanobis term with Sigma = s I in D dimensions,
    the log-determinant term of the scalar s (once, as in one dimension)."""
    classes = np.unique(y)
    stats = {}
    for c in classes:
        v = np.maximum(f[y == c].var(0), 1e-4)
        stats[c] = (f[y == c].mean(0), np.diag(v) if gaussian == "diagonal" else np.array([[v.mean()]]))
    total = 0.0
    for i in classes:
        for j in classes:
            if i == j:
                continue
            (mi, si), (mj, sj) = stats[i], stats[j]
            s = (si + sj) / 2
            inv = np.linalg.inv(s) if gaussian == "diagonal" else np.eye(len(mi)) / s[0, 0]
            db = (mi - mj) @ inv @ (mi - mj) / 8 + 0.5 * np.log(
                np.linalg.det(s) / math.sqrt(np.linalg.det(si) * np.linalg.det(sj)))
            total += math.exp(-db)
    return -total


def naive_knn(f, y, k, metric):
    if metric == "cosine":
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
    right = 0
    for i in range(len(f)):
        d = -(f @ f[i]) if metric == "cosine" else ((f - f[i]) ** 2).sum(1)
        d[i] = np.inf
        nn_idx = np.argsort(d, kind="stable")[:k]
        counts = {}
        for rank, j in enumerate(nn_idx):
            c, first = counts.get(y[j], (0, rank))
            counts[y[j]] = (c + 1, first)
        best = max(counts.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
        right += best == y[i]
    return right / len(f)


def source_probs(y, z_classes, informative, seed):
    """Source-model probabilities over z_classes source labels: peaked at a source
    class tied to the target label (informative) or at a random one."""
    rng = np.random.default_rng(seed)
    z = (y * 2 + rng.integers(0, 2, len(y))) % z_classes if informative else rng.integers(0, z_classes, len(y))
    logits = rng.normal(size=(len(y), z_classes)) + 3.0 * np.eye(z_classes)[z]
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("n, d", [(80, 12), (30, 60)])  # N > D and D > N
def test_logme_matches_naive_evidence_maximisation(n, d):
    """``solver="maximum"``: the supremum of the evidence (the default follows the authors'
    fixed point: tests/test_conformance_analysis.py)."""
    f, y = blobs(n, d, 3, 1.0, seed=n + d)
    # the reference searches a bounded box, so where the supremum lies at alpha -> inf
    # (random features) or beta -> inf (D > N) it stays up to ~1e-6 below it
    for feats in (f, np.random.default_rng(0).normal(size=(n, d))):
        ours, ref = logme(feats, y, solver="maximum"), naive_logme(feats, y)
        assert ref - 1e-10 <= ours <= ref + 2e-6 * abs(ref)
    rnd = np.random.default_rng(0).normal(size=(n, d))
    assert logme(f, y) > logme(rnd, y)


def test_leep_and_nce_match_naive_counts():
    y = np.arange(90) % 3
    for informative in (True, False):
        p = source_probs(y, 6, informative, seed=1)
        assert leep(p, y) == pytest.approx(naive_leep(p, y), rel=1e-10)
        assert nce(p, y) == pytest.approx(naive_nce(p.argmax(1), y), rel=1e-10, abs=1e-12)
        assert nce(p.argmax(1), y) == pytest.approx(nce(p, y))
    assert leep(source_probs(y, 6, True, 1), y) > leep(source_probs(y, 6, False, 1), y)
    assert nce(source_probs(y, 6, True, 1), y) > nce(source_probs(y, 6, False, 1), y)


@pytest.mark.parametrize("shrinkage", [True, False])
def test_hscore_matches_naive_formula(shrinkage):
    f, y = blobs(70, 8, 3, 1.0, seed=3)
    assert hscore(f, y, shrinkage=shrinkage) == pytest.approx(naive_hscore(f, y, shrinkage), rel=1e-8)
    rnd = np.random.default_rng(1).normal(size=(70, 8))
    assert hscore(rnd, y, shrinkage=shrinkage) == pytest.approx(naive_hscore(rnd, y, shrinkage), rel=1e-8)
    assert hscore(f, y, shrinkage=shrinkage) > hscore(rnd, y, shrinkage=shrinkage)


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_matches_naive_bhattacharyya(gaussian):
    f, y = blobs(60, 5, 4, 0.8, seed=4)
    assert gbc(f, y, gaussian=gaussian) == pytest.approx(naive_gbc(f, y, gaussian), rel=1e-9)
    from sklearn.decomposition import PCA

    projected = PCA(n_components=3).fit_transform(f)
    assert gbc(f, y, gaussian=gaussian, pca_dim=3) == pytest.approx(naive_gbc(projected, y, gaussian), rel=1e-7)
    rnd = np.random.default_rng(2).normal(size=(60, 5))
    assert gbc(f, y, gaussian=gaussian) > gbc(rnd, y, gaussian=gaussian)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_accuracy_matches_naive_leave_one_out(metric):
    f, y = blobs(90, 4, 3, 0.7, seed=5)
    for k in (1, 4, 5):
        assert knn_accuracy(f, y, k=k, metric=metric, batch_size=32) == pytest.approx(naive_knn(f, y, k, metric))


def estimator_input(fn, separable: bool, seed: int):
    y = np.arange(120) % 4
    if getattr(fn, "takes", "features") == "probs":
        return source_probs(y, 8, True, seed), (y if separable else np.random.default_rng(seed).permutation(y))
    f, _ = blobs(120, 10, 4, 1.5, seed=seed)
    return f, (y if separable else np.random.default_rng(seed).permutation(y))


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_is_finite_and_prefers_separable_labels(name):
    fn = ESTIMATORS.get(name)
    assert fn.__doc__ and "Higher" in fn.__doc__
    sep = fn(*estimator_input(fn, True, seed=0))
    shuffled = fn(*estimator_input(fn, False, seed=0))
    assert isinstance(sep, float) and math.isfinite(sep) and math.isfinite(shuffled)
    assert sep > shuffled
    x, y = estimator_input(fn, True, seed=0)
    assert score(name, **{fn.takes: x}, labels=y) == sep
    with pytest.raises(DataError):
        fn(*estimator_input(fn, True, seed=0)[:1], np.zeros(120, dtype=int))  # one class only


# --------------------------------------------------------------------- similarity


def naive_hsic_u(k, l):
    """The unbiased HSIC as its U-statistic over distinct index tuples (Song et al. 2012)."""
    n = len(k)
    t1 = sum(k[i, j] * l[i, j] for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    t2 = sum(k[i, j] * l[q, r] for i, j, q, r in itertools.permutations(range(n), 4))
    t2 /= n * (n - 1) * (n - 2) * (n - 3)
    t3 = sum(k[i, j] * l[i, q] for i, j, q in itertools.permutations(range(n), 3)) / (n * (n - 1) * (n - 2))
    return t1 + t2 - 2 * t3


def naive_linear_cka(x, y):
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_naive_and_is_invariant():
    rng = np.random.default_rng(0)
    for n, d in ((50, 8), (20, 30)):  # feature-space and Gram-space paths
        x = rng.normal(size=(n, d))
        y = x @ rng.normal(size=(d, 5)) + 0.5 * rng.normal(size=(n, 5))
        assert linear_cka(x, y) == pytest.approx(naive_linear_cka(x, y), rel=1e-10)
        assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        assert linear_cka(x @ q * 7.5, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
        assert rbf_cka(x, x) == pytest.approx(1.0, rel=1e-12)
        assert rbf_cka(3.0 * x @ q, y) == pytest.approx(rbf_cka(x, y), rel=1e-8)
    # not invariant to arbitrary invertible maps
    x = rng.normal(size=(200, 4))
    assert linear_cka(x, x @ np.diag([1.0, 1.0, 1.0, 50.0])) < 0.9


def test_unbiased_hsic_matches_u_statistic():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    k, l = x @ x.T, np.exp(-((y[:, None] - y[None]) ** 2).sum(-1))
    got = hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l))
    assert float(got) == pytest.approx(naive_hsic_u(k, l), rel=1e-10)


def test_minibatch_cka_accumulates_and_converges_to_full_cka():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 16))
    y = np.tanh(x @ rng.normal(size=(16, 12))) + 0.3 * rng.normal(size=(3000, 12))
    full = linear_cka(x, y)
    assert minibatch_cka(x, y, batch_size=500) == pytest.approx(full, abs=0.01)
    # the biased CKA of small batches drifts from the full value; the unbiased one does not
    biased_small = np.mean([linear_cka(x[i : i + 20], y[i : i + 20]) for i in range(0, 3000, 20)])
    assert abs(minibatch_cka(x, y, batch_size=20) - full) < abs(biased_small - full)
    assert minibatch_cka(x, x, batch_size=64) == pytest.approx(1.0, rel=1e-10)
    # one batch = the ratio of unbiased HSICs of all examples
    xs, ys = torch.from_numpy(x[:300]), torch.from_numpy(y[:300])
    k, l = xs @ xs.T, ys @ ys.T
    one = float(hsic_unbiased(k, l) / torch.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l)))
    assert minibatch_cka(x[:300], y[:300], batch_size=300, seed=None) == pytest.approx(one, rel=1e-10)
    acc = MinibatchCKA()
    for i in range(0, 300, 100):
        acc.update(x[i : i + 100], y[i : i + 100])
    assert acc.compute() == pytest.approx(minibatch_cka(x[:300], y[:300], batch_size=100, seed=None), rel=1e-12)


def test_mutual_knn_matches_set_intersections():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 5))
    y = x + 0.8 * rng.normal(size=(60, 5))
    assert mutual_knn(x, x, k=5) == 1.0
    assert mutual_knn(x, 4.0 * x @ np.linalg.qr(rng.normal(size=(5, 5)))[0], k=5) == pytest.approx(1.0)

    def neighbours(z, i, k):
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        s = z @ z[i]
        s[i] = -np.inf
        return set(np.argsort(-s)[:k].tolist())

    expected = np.mean([len(neighbours(x, i, 5) & neighbours(y, i, 5)) / 5 for i in range(60)])
    assert mutual_knn(x, y, k=5, batch_size=16) == pytest.approx(expected)
    assert mutual_knn(x, rng.normal(size=(60, 5)), k=5) < mutual_knn(x, y, k=5)


def test_layer_features_and_compare_models(tiny):
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, width=16, depth=2)
    other = create_model("mlp", num_classes=3, width=16, depth=2)
    images = tiny.pretrain.test.images[:40]
    feats = layer_features(model, images, ["body.1", "features", "logits", "head"], batch_size=16)
    with torch.no_grad():
        z = model.preprocess(images).flatten(1)
        first = model.body[1](z)
        np.testing.assert_allclose(feats["body.1"].numpy(), first.double().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(feats["logits"].numpy(), model(images).double().numpy(), rtol=1e-5, atol=1e-6)
    assert torch.equal(feats["logits"], feats["head"])
    same = compare_models(model, model, images)
    assert list(same) == ["body.1", "body.3", "head", "features"]
    assert all(v == pytest.approx(1.0) for v in same.values())
    diff = compare_models(model, other, images, layers=[("body.1", "body.3")], method="minibatch", batch_size=10)
    assert list(diff) == ["body.1|body.3"] and diff["body.1|body.3"] < 0.99
    assert compare_models(model, model, images, method="minibatch", batch_size=10)["features"] == pytest.approx(1.0)
    scores = score_model(model, tiny.pretrain.test)
    assert set(scores) == set(ESTIMATORS.names()) and all(math.isfinite(v) for v in scores.values())
    fs = extract_features(model, tiny.pretrain.test)
    assert fs.features.shape == (len(tiny.pretrain.test), 16)
    assert torch.allclose(fs.probs.sum(1), torch.ones(len(fs.probs)))


# ---------------------------------------------------------------------- weights


def small_cnn(seed):
    torch.manual_seed(seed)
    return create_model("cnn", num_classes=3, widths=[4, 8], features=16)


def test_linear_path_with_itself_has_zero_barrier_and_matches_loaded_models(tiny):
    a, b = small_cnn(0), small_cnn(1)
    data = tiny.pretrain.test
    same = linear_path(a, a, data, alphas=5)
    assert same.loss_barrier == 0.0 and same.error_barrier == 0.0
    path = linear_path(a, b, data, alphas=[0.5], batch_size=64)
    np.testing.assert_allclose(path.alphas, [0.0, 0.5, 1.0])
    # reference: a fresh module loaded with the averaged state dict
    mid = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    mid.load_state_dict({k: 0.5 * (sa[k] + sb[k]) for k in sa})
    with torch.no_grad():
        for i, m in enumerate((a, mid, b)):
            m.eval()
            logits = m(data.images).double()
            assert path.losses[i] == pytest.approx(float(F.cross_entropy(logits, data.labels)), rel=1e-5)
            assert path.errors[i] == pytest.approx(float((logits.argmax(1) != data.labels).double().mean()))
    expected = path.losses[1] - 0.5 * (path.losses[0] + path.losses[2])
    assert path.loss_barrier == pytest.approx(max(expected, 0.0))
    assert LinearPath(np.array([0, 0.5, 1.0]), np.array([1.0, 3.0, 2.0]), np.zeros(3)).loss_barrier == 1.5


def test_task_vectors_norms_and_cosines():
    pre, ft1, ft2 = small_cnn(0), small_cnn(1), small_cnn(2)
    tv1, tv2 = task_vector(pre, ft1), task_vector(pre, ft2)
    sp, s1 = pre.state_dict(), ft1.state_dict()
    assert task_vector_norm(tv1) == pytest.approx(
        math.sqrt(sum(float(((s1[k].double() - sp[k].double()) ** 2).sum()) for k in sp)), rel=1e-12)
    cos = task_vector_cosines({"a": tv1, "b": tv2, "neg": {k: -v for k, v in tv1.items()}})
    assert cos[0, 0] == pytest.approx(1.0) and cos[1, 1] == pytest.approx(1.0) and cos[0, 2] == pytest.approx(-1.0)
    flat1 = torch.cat([tv1[k].flatten() for k in sorted(tv1)])
    flat2 = torch.cat([tv2[k].flatten() for k in sorted(tv1)])
    assert cos[0, 1] == pytest.approx(float(F.cosine_similarity(flat1, flat2, dim=0)), rel=1e-10)
    assert not any(k.startswith("head.") for k in task_vector(pre, ft1, exclude=("head.*",)))


def test_filter_shift_zero_when_unchanged_and_ks_matches_scipy():
    pre = small_cnn(0)
    assert all(v["kl"] == 0 and v["ks"] == 0 and v["relative_change"] == 0 for v in filter_shift(pre, pre).values())
    small, large = copy.deepcopy(pre), copy.deepcopy(pre)
    with torch.no_grad():
        for m, scale in ((small, 0.05), (large, 1.0)):
            for name, p in m.named_parameters():
                if p.dim() == 4:
                    p.add_(scale * p.std() * torch.randn_like(p))
    s_small, s_large = filter_shift(pre, small), filter_shift(pre, large)
    assert set(s_small) == {"body.0", "body.4"}
    for layer in s_small:
        assert 0 < s_small[layer]["ks"] < s_large[layer]["ks"]
        assert 0 < s_small[layer]["kl"] < s_large[layer]["kl"]
        assert s_small[layer]["relative_change"] < s_large[layer]["relative_change"]
    # KS reference: the same basis, scipy's two-sample statistic per component
    w0 = pre.body[4].weight.detach().double().reshape(-1, 9).numpy()
    w1 = large.body[4].weight.detach().double().reshape(-1, 9).numpy()
    _, s, vt = np.linalg.svd(w0, full_matrices=False)
    weights = s**2 / (s**2).sum()
    expected = sum(w * scipy.stats.ks_2samp(w0 @ v, w1 @ v).statistic for w, v in zip(weights, vt))
    assert s_large["body.4"]["ks"] == pytest.approx(expected, rel=1e-10)
    # KL reference: scipy's entropy of add-one smoothed histograms, sqrt(32) -> 5 common bins
    kl = 0.0
    for w, v in zip(weights, vt):
        p, q = w0 @ v, w1 @ v
        edges = np.linspace(min(p.min(), q.min()), max(p.max(), q.max()), 6)
        kl += w * scipy.stats.entropy(np.histogram(p, edges)[0] + 1.0, np.histogram(q, edges)[0] + 1.0)
    assert s_large["body.4"]["kl"] == pytest.approx(kl, rel=1e-10)


# ---------------------------------------------------------------------- predict


def test_correlations_and_backbone_ranking():
    pred = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": float("nan")}
    res = correlations(pred, {"a": 10.0, "b": 20.0, "c": 25.0, "d": 40.0, "x": 0.0, "e": 1.0})
    assert res["n"] == 4 and res["spearman"] == pytest.approx(1.0) and res["kendall"] == pytest.approx(1.0)
    assert correlations(pred, {"a": 3.0, "b": 2.0, "c": 1.0})["spearman"] == pytest.approx(-1.0)
    assert math.isnan(correlations({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0})["spearman"])
    y = np.arange(90) % 3
    good, _ = blobs(90, 6, 3, 2.0, seed=0)
    noise = np.random.default_rng(0).normal(size=(90, 6))
    table = rank_backbones({"good": (good, y, source_probs(y, 6, True, 0)), "noise": (noise, y)},
                           estimators=["logme", "hscore", "gbc", "knn", "leep"])
    assert [r["backbone"] for r in table] == ["good", "noise"]
    for name in ("logme", "hscore", "gbc", "knn"):
        assert table[0][f"{name}_rank"] == 1 and table[1][f"{name}_rank"] == 2
    assert table[0]["leep_rank"] == 1 and math.isnan(table[1]["leep"]) and table[1]["leep_rank"] is None


def test_similarities_from_grams_equal_the_feature_functions():
    from ribench.analysis.similarity import similarities_from_grams

    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 300, generator=g, dtype=torch.float64) + 2.0  # wider than N: Gram form in linear_cka
    y = x[:, :50] @ torch.randn(50, 20, generator=g, dtype=torch.float64) + 0.3 * torch.randn(40, 20, generator=g,
                                                                                              dtype=torch.float64)
    got = similarities_from_grams(x @ x.T, y @ y.T, knn_k=5)
    assert got["linear_cka"] == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert got["rbf_cka"] == pytest.approx(rbf_cka(x, y), rel=1e-10)
    assert got["mutual_knn"] == mutual_knn(x, y, k=5)
    assert 0 < got["mutual_knn"] < 1
