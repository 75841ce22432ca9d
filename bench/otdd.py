"""OTDD: ribench's batched implementation against a straightforward one.

Data: the built-in ``digits`` suite in pixel space, ``mnist`` train against ``fonts``
train, 200 images per class of 10 classes on each side (2,000 vs 2,000 points of
784 dimensions in [0, 1]). Both compute the same quantity, the debiased Sinkhorn
divergence with the Gaussian (Bures-Wasserstein) label-to-label term, eps = 0.05 x
the mean cross cost, converged to a marginal error of 1e-9:

- ribench (``ribench.analysis.otdd``): all class statistics at once, the Bures term
  of every class pair from low-rank covariance factors and one batched eigensolve,
  one Gram matrix for every sample distance, kernel-domain Sinkhorn in torch;
- reference (written here): class statistics one class at a time, a Python loop over
  class pairs computing tr (S^1/2 S' S^1/2)^1/2 from the eigenvalues of the D x D
  matrix S^1/2 S' S^1/2 (S^1/2 by ``numpy.linalg.eigh``), dense cost matrices
  (``ot.dist``), log-domain Sinkhorn with ``scipy.special.logsumexp``.

``--exact`` also times the exact inner variant (``ot.emd2`` per class pair) against a
reference looping over pairs with ``ot.dist`` + ``ot.emd2``.

Usage: python bench/otdd.py [--per-class 200] [--repeats 3] [--exact]
The last line is a JSON object: "metric", "value" (ribench seconds), "reference"
(reference seconds), "ratio" (reference / ribench), "rel_diff" and "agree" (relative
difference of the two values below 1e-4).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import ot
import torch
from scipy.special import logsumexp

from ribench.analysis import otdd, split_arrays, subsample_per_class
from ribench.data import build_suite

ENTROPIC_REG = 0.05
TOL = 1e-9


# ------------------------------------------------------------------------- reference


def _sqrt_psd(s):
    lam, vec = np.linalg.eigh(s)
    return (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T


def naive_gaussian_w2(x1, y1, x2, y2):
    """[C1, C2] Bures-Wasserstein label distances, one class pair at a time, with sample
    covariances (divided by n - 1, ribench's and microsoft/otdd's default):
    tr (S^1/2 S' S^1/2)^1/2 from the eigenvalues of the D x D matrix S^1/2 S' S^1/2."""
    c1, c2 = np.unique(y1), np.unique(y2)
    stats1 = [(x1[y1 == c].mean(0), np.cov(x1[y1 == c], rowvar=False)) for c in c1]
    stats2 = [(x2[y2 == c].mean(0), np.cov(x2[y2 == c], rowvar=False)) for c in c2]
    w = np.zeros((len(c1), len(c2)))
    for i, (m1, s1) in enumerate(stats1):
        root = _sqrt_psd(s1)
        for j, (m2, s2) in enumerate(stats2):
            fidelity = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
            w[i, j] = max(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * fidelity, 0.0)
    return w


def naive_exact_w2(x1, y1, x2, y2):
    c1, c2 = np.unique(y1), np.unique(y2)
    w = np.zeros((len(c1), len(c2)))
    for i, a in enumerate(c1):
        for j, b in enumerate(c2):
            xa, xb = x1[y1 == a], x2[y2 == b]
            w[i, j] = ot.emd2(np.full(len(xa), 1 / len(xa)), np.full(len(xb), 1 / len(xb)), ot.dist(xa, xb),
                              numItermax=10_000_000)
    return w


def naive_cost(x1, y1, x2, y2, w):
    """Dense ground cost ||x - x'||^2 + W[y, y']."""
    c1, c2 = list(np.unique(y1)), list(np.unique(y2))
    sq = ot.dist(x1, x2)  # squared Euclidean
    rows = np.array([c1.index(v) for v in y1])
    cols = np.array([c2.index(v) for v in y2])
    return sq + w[rows][:, cols]


def naive_entropic_ot(c, eps, symmetric):
    """Log-domain Sinkhorn; the dual value <a, f> + <b, g> at convergence."""
    n, m = c.shape
    la, lb = np.full(n, -math.log(n)), np.full(m, -math.log(m))
    f, g = np.zeros(n), np.zeros(m)
    for it in range(100_000):
        if symmetric:  # averaged update (Feydy et al. 2019)
            f = 0.5 * (f - eps * logsumexp(la[None, :] + (f[None, :] - c) / eps, axis=1))
            g = f
        else:
            g = -eps * logsumexp(la[:, None] + (f[:, None] - c) / eps, axis=0)
            f = -eps * logsumexp(lb[None, :] + (g[None, :] - c) / eps, axis=1)
        if it % 10 == 9:
            plan_cols = np.exp(la[:, None] + lb[None, :] + (f[:, None] + g[None, :] - c) / eps).sum(0)
            if np.abs(plan_cols - np.exp(lb)).sum() < TOL:
                break
    return float(np.exp(la) @ f + np.exp(lb) @ g)


def naive_otdd(x1, y1, x2, y2, inner):
    label_w2 = naive_gaussian_w2 if inner == "gaussian" else naive_exact_w2
    c12 = naive_cost(x1, y1, x2, y2, label_w2(x1, y1, x2, y2))
    c11 = naive_cost(x1, y1, x1, y1, label_w2(x1, y1, x1, y1))
    c22 = naive_cost(x2, y2, x2, y2, label_w2(x2, y2, x2, y2))
    for c in (c11, c22):
        np.fill_diagonal(c, 0.0)
    eps = ENTROPIC_REG * c12.mean()
    return (naive_entropic_ot(c12, eps, False)
            - 0.5 * naive_entropic_ot(c11, eps, True) - 0.5 * naive_entropic_ot(c22, eps, True))


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exact", action="store_true", help="also time the exact inner variant")
    a = ap.parse_args()
    suite = build_suite("digits")
    x1, y1 = split_arrays(suite.pretrain.train)
    x2, y2 = split_arrays(suite.tasks["fonts"].train)
    x1, y1 = subsample_per_class(x1, y1, a.per_class, seed=0)
    x2, y2 = subsample_per_class(x2, y2, a.per_class, seed=1)
    x1n, y1n, x2n, y2n = x1.double().numpy(), y1.numpy(), x2.double().numpy(), y2.numpy()
    print(f"mnist train {tuple(x1.shape)} vs fonts train {tuple(x2.shape)}, {len(np.unique(y1n))} classes, "
          f"torch threads {torch.get_num_threads()}")

    results = {}
    for inner in ("gaussian", "exact") if a.exact else ("gaussian",):
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            value = otdd(x1, y1, x2, y2, inner=inner, entropic_reg=ENTROPIC_REG, max_per_class=None, tol=TOL)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = naive_otdd(x1n, y1n, x2n, y2n, inner)
        t_ref = time.perf_counter() - t
        rel = abs(value - ref) / abs(ref)
        results[inner] = (min(times), t_ref, value, ref, rel)
        print(f"inner={inner:<8} ribench {min(times):7.2f} s (best of {a.repeats})  reference {t_ref:7.2f} s  "
              f"ratio {t_ref / min(times):6.1f}x  otdd {value:.6f} vs {ref:.6f}  rel diff {rel:.1e}")

    t_fast, t_ref, value, ref, rel = results["gaussian"]
    print(json.dumps({
        "metric": "otdd_seconds_gaussian_2000x2000_784d", "value": round(t_fast, 3), "reference": round(t_ref, 3),
        "ratio": round(t_ref / t_fast, 2), "otdd": value, "otdd_reference": ref, "rel_diff": rel,
        "agree": bool(rel < 1e-4),
    }))


if __name__ == "__main__":
    main()
