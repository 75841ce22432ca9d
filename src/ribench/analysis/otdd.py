"""Optimal transport dataset distance (OTDD, Alvarez-Melis & Fusi, NeurIPS 2020).

A labelled dataset is a distribution over pairs z = (x, y). OTDD compares two of them
with optimal transport under the ground cost

    d(z, z')^2 = ||x - x'||^2 + W_2^2(alpha_y, alpha'_y'),

where alpha_y is the distribution of the inputs of class y (a *label* is represented
by the distribution of its inputs, so labels of two datasets with different label
sets are comparable). The value returned is the OT cost with this squared ground
cost, in squared input units (squared pixels in [0, 1], or squared feature units):

- ``entropic_reg > 0`` (default): the debiased Sinkhorn divergence (Feydy et al.,
  AISTATS 2019) S = OT_eps(A, B) - OT_eps(A, A) / 2 - OT_eps(B, B) / 2, where OT_eps is
  the value of entropic OT, min <P, C> + eps KL(P | a x b). S(A, A) = 0 and S >= 0.
  ``debiased=False`` gives OT_eps(A, B) alone.
- ``entropic_reg = 0``: exact OT (network simplex, POT's ``ot.emd2``).

The label-to-label term W_2^2(alpha_y, alpha'_y') comes from either

- ``inner="gaussian"``: each class as a Gaussian with its sample mean and covariance
  (``covariance="unbiased"``, divided by n - 1 as microsoft/otdd does, or ``"ml"``,
  divided by n); W_2^2 = ||m - m'||^2 + Bures^2(S, S') with
  Bures^2 = tr S + tr S' - 2 tr (S^1/2 S' S^1/2)^1/2 (closed form);
- ``inner="exact"``: exact OT between the empirical class samples (``ot.emd2``).

Implementation: every class-pair quantity is batched in torch. For the Gaussian term
each covariance is held as a factor L (L L^T = S): the centred class samples divided
by sqrt(n - 1) (or sqrt(n)) when n <= D, else V diag(sqrt(lambda)) from one batched ``eigh``. Then
tr (S^1/2 S' S^1/2)^1/2 is the nuclear norm of L^T L' (its singular values are the
square roots of the eigenvalues of S S'), computed for all pairs at once from the
eigenvalues of small r x r Gram matrices, r = min(n, D). All sample distances come
from one Gram matrix. The outer problem is solved by a stabilised Sinkhorn (scaling
in the kernel domain, absorbed into log-domain potentials when it grows) in float64,
with eps-scaling, and Newton steps on the dual where Sinkhorn stalls (well-separated
classes make the plan nearly block-diagonal).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, DataError
from ..core.types import Split

Inner = Literal["gaussian", "exact"]
Covariance = Literal["unbiased", "ml"]

__all__ = [
    "bures_wasserstein", "label_distances", "otdd", "otdd_splits", "subsample_per_class", "split_arrays",
]


# ----------------------------------------------------------------------------- inputs


def _as_points(x, name: str, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise DataError(f"{name} must be a 2-d array [N, D] of points, got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise DataError(f"{name} is empty")
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    if not torch.isfinite(t).all():
        raise DataError(f"{name} holds NaN or inf values")
    return t


def _as_labels(y, n: int, name: str, device: torch.device) -> torch.Tensor:
    t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if t.dim() != 1 or len(t) != n:
        raise DataError(f"{name} must be a 1-d array of {n} labels, got shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise DataError(f"{name} must hold integer class labels")
    return t.to(device=device, dtype=torch.int64)


def subsample_per_class(x, y, max_per_class: int | None, seed: int = 0):
    """Keep at most ``max_per_class`` samples of each class, drawn at random (seeded).

    ``x`` [N, ...] and ``y`` [N] (NumPy or torch); returns the same types, the kept
    samples in their original order. ``None`` keeps everything.
    """
    if max_per_class is None:
        return x, y
    if max_per_class < 1:
        raise ConfigError("max_per_class", f"must be a positive integer or None, got {max_per_class!r}")
    yt = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    yt = yt.cpu().long()
    g = torch.Generator().manual_seed(int(seed))
    order = torch.argsort(torch.rand(len(yt), generator=g))
    order = order[torch.argsort(yt[order], stable=True)]  # grouped by class, random inside a class
    classes, counts = torch.unique(yt, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(yt)) - torch.repeat_interleave(starts, counts)
    keep = torch.sort(order[rank < max_per_class]).values
    if isinstance(x, torch.Tensor):
        idx = keep.to(x.device)
        return x[idx], (y[keep.to(y.device)] if isinstance(y, torch.Tensor) else np.asarray(y)[keep.numpy()])
    keep_np = keep.numpy()
    return np.asarray(x)[keep_np], (y[keep.to(y.device)] if isinstance(y, torch.Tensor) else np.asarray(y)[keep_np])


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run many small LAPACK calls single-threaded on CPU: threading a 200 x 200
    eigensolver costs more than it gains, badly so when the cores are shared."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ------------------------------------------------------------------ class statistics


class _Classes:
    """Samples grouped by class: ``classes`` [C] label values, ``index`` [N] class
    index of each sample, ``padded`` [C, n_max, D] samples (zero padding), ``mask``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.classes, self.index, self.counts = torch.unique(y, return_inverse=True, return_counts=True)
        c, n_max = len(self.classes), int(self.counts.max())
        order = torch.argsort(self.index, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        rank = torch.arange(len(y), device=y.device) - torch.repeat_interleave(starts, self.counts)
        self.slot = torch.empty_like(rank)
        self.slot[order] = rank  # position of each sample inside its class
        self.padded = x.new_zeros(c, n_max, x.shape[1])
        self.padded[self.index, self.slot] = x
        self.mask = torch.zeros(c, n_max, dtype=torch.bool, device=x.device)
        self.mask[self.index, self.slot] = True
        self.sample_ids = torch.full((c, n_max), -1, dtype=torch.long, device=x.device)
        self.sample_ids[self.index, self.slot] = torch.arange(len(y), device=y.device)

    def __len__(self) -> int:
        return len(self.classes)

    def gaussians(self, covariance: Covariance, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Means [C, D], covariance factors [C, D, r] (L L^T = S), traces [C]; S divided
        by n - 1 (``covariance="unbiased"``) or by n (``"ml"``) for a class of n samples."""
        n = self.counts.to(self.padded.dtype)
        if covariance == "unbiased" and bool((self.counts < 2).any()):
            lone = self.classes[self.counts < 2].tolist()
            raise DataError(f"{name}: classes {lone} have a single sample; the unbiased covariance needs at least "
                            "2 per class (drop those classes, or pass covariance='ml')")
        means = self.padded.sum(1) / n[:, None]
        dof = n - 1 if covariance == "unbiased" else n
        centred = (self.padded - means[:, None]) * self.mask[..., None] / dof.sqrt()[:, None, None]
        traces = centred.pow(2).sum((1, 2))
        d, n_max = self.padded.shape[2], self.padded.shape[1]
        if n_max <= d:
            return means, centred.transpose(1, 2), traces
        cov = centred.transpose(1, 2) @ centred
        with _one_thread(cov.device):
            lam, vec = torch.linalg.eigh(cov)
        return means, vec * lam.clamp_min(0).sqrt()[:, None, :], traces


def _fidelity(fa: torch.Tensor, fb: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor,
              chunk_bytes: int = 64 << 20) -> torch.Tensor:
    """tr (S_a^1/2 S_b S_a^1/2)^1/2 = ||L_a^T L_b||_* for the pairs (ia[k], ib[k]) -> [P].

    fa [Ca, D, ra], fb [Cb, D, rb] covariance factors. The nuclear norm is the sum of
    square roots of the eigenvalues of the smaller of G G^T and G^T G, G = L_a^T L_b.
    """
    ra, rb = fa.shape[2], fb.shape[2]
    s = min(ra, rb)
    per_pair = (ra * rb + s * s) * fa.element_size()
    step = max(1, chunk_bytes // per_pair)
    out = []
    with _one_thread(fa.device):
        for k in range(0, len(ia), step):
            g = fa[ia[k : k + step]].transpose(1, 2) @ fb[ib[k : k + step]]  # [P, ra, rb]
            gram = g @ g.transpose(1, 2) if ra <= rb else g.transpose(1, 2) @ g
            out.append(torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum(1))
    return torch.cat(out) if out else fa.new_zeros(0)


def bures_wasserstein(mean1, cov1, mean2, cov2) -> np.ndarray:
    """Squared 2-Wasserstein distance between Gaussians, for all pairs.

    ``mean1`` [C1, D], ``cov1`` [C1, D, D], ``mean2`` [C2, D], ``cov2`` [C2, D, D]
    (covariances symmetric positive semi-definite). Returns [C1, C2]:
    ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 (Dowson & Landau 1982;
    the last three terms are the squared Bures distance), in float64.
    """
    m1, m2 = (_as_points(m, name, torch.float64, None) for m, name in ((mean1, "mean1"), (mean2, "mean2")))
    s1, s2 = (torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s).to(m1.device, torch.float64)
              for s in (cov1, cov2))
    for s, m, name in ((s1, m1, "cov1"), (s2, m2, "cov2")):
        if s.shape != (len(m), m.shape[1], m.shape[1]):
            raise DataError(f"{name} must be [C, D, D] = {[len(m), m.shape[1], m.shape[1]]}, got {list(s.shape)}")
    with _one_thread(m1.device):
        factors = []
        for s in (s1, s2):
            lam, vec = torch.linalg.eigh(0.5 * (s + s.transpose(1, 2)))
            factors.append(vec * lam.clamp_min(0).sqrt()[:, None, :])
    ia, ib = torch.meshgrid(torch.arange(len(m1), device=m1.device), torch.arange(len(m2), device=m1.device),
                            indexing="ij")
    fid = _fidelity(factors[0], factors[1], ia.flatten(), ib.flatten()).view(len(m1), len(m2))
    tr1, tr2 = torch.diagonal(s1, dim1=1, dim2=2).sum(1), torch.diagonal(s2, dim1=1, dim2=2).sum(1)
    w2 = torch.cdist(m1, m2).pow(2) + tr1[:, None] + tr2[None, :] - 2 * fid
    return w2.clamp_min(0).cpu().numpy()


# ------------------------------------------------------------------- label distances


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(a), len(b)] from one Gram matrix."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return d.clamp_min_(0)


def _gaussian_label_w2(ga, gb, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    (ma, fa, ta), (mb, fb, tb) = ga, gb
    fid = _fidelity(fa, fb, ia, ib)
    return ((ma[ia] - mb[ib]).pow(2).sum(1) + ta[ia] + tb[ib] - 2 * fid).clamp_min(0)


def _exact_label_w2(ca: _Classes, cb: _Classes, sq: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """Exact W_2^2 between class samples; ``sq`` [Na, Nb] squared sample distances."""
    import ot

    out = torch.empty(len(ia), dtype=torch.float64)
    for k, (i, j) in enumerate(zip(ia.tolist(), ib.tolist())):
        rows = ca.sample_ids[i][ca.mask[i]]
        cols = cb.sample_ids[j][cb.mask[j]]
        cost = sq[rows][:, cols].double().cpu().numpy()
        a = np.full(len(rows), 1.0 / len(rows))
        b = np.full(len(cols), 1.0 / len(cols))
        out[k] = float(ot.emd2(a, b, cost, numItermax=10_000_000))
    return out.to(sq.device, sq.dtype)


def _check_options(inner: str, covariance: str) -> None:
    if inner not in ("gaussian", "exact"):
        raise ConfigError("inner", f"must be 'gaussian' or 'exact', got {inner!r}")
    if covariance not in ("unbiased", "ml"):
        raise ConfigError("covariance", f"must be 'unbiased' or 'ml', got {covariance!r}")


def _points(x1, y1, x2, y2, max_per_class: int | None, seed: int, dtype: torch.dtype, device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both datasets capped per class (seeds ``seed``, ``seed + 1``) as (points, labels) on one device."""
    dev = torch.device(device) if device is not None else None
    x1, y1 = subsample_per_class(x1, y1, max_per_class, seed)
    x2, y2 = subsample_per_class(x2, y2, max_per_class, seed + 1)
    a = _as_points(x1, "x1", dtype, dev)
    b = _as_points(x2, "x2", dtype, a.device)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"x1 has {a.shape[1]} dimensions but x2 has {b.shape[1]}")
    return a, _as_labels(y1, len(a), "y1", a.device), b, _as_labels(y2, len(b), "y2", a.device)


def label_distances(x1, y1, x2, y2, inner: Inner = "gaussian", max_per_class: int | None = None, seed: int = 0,
                    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
                    covariance: Covariance = "unbiased") -> np.ndarray:
    """W_2^2 between the class-conditional distributions of two labelled datasets.

    ``x1`` [N, D], ``y1`` [N], ``x2`` [M, D], ``y2`` [M] (NumPy or torch). Returns
    [C1, C2] in squared input units; row i is the i-th smallest label of ``y1``,
    column j the j-th smallest of ``y2``. ``inner``: "gaussian" (Bures-Wasserstein
    between the classes' Gaussian fits) or "exact" (exact OT between class samples).
    ``max_per_class`` caps the samples per class (seeded draw). ``covariance``: the
    Gaussian fits' covariance, "unbiased" (divided by n - 1, microsoft/otdd's) or "ml"
    (divided by n).
    """
    _check_options(inner, covariance)
    a, ya, b, yb = _points(x1, y1, x2, y2, max_per_class, seed, dtype, device)
    ca, cb = _Classes(a, ya), _Classes(b, yb)
    ia, ib = (t.flatten() for t in torch.meshgrid(torch.arange(len(ca), device=a.device),
                                                  torch.arange(len(cb), device=a.device), indexing="ij"))
    if inner == "gaussian":
        w2 = _gaussian_label_w2(ca.gaussians(covariance, "y1"), cb.gaussians(covariance, "y2"), ia, ib)
    else:
        w2 = _exact_label_w2(ca, cb, _sqdist(a, b), ia, ib)
    return w2.view(len(ca), len(cb)).cpu().numpy()


# --------------------------------------------------------------------- outer problem


def _dual(cost: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float) -> tuple[float, torch.Tensor]:
    """Dual objective <a, f> + <b, g> - eps (sum P - 1) and the plan P (uniform a, b)."""
    n, m = cost.shape
    plan = torch.exp((f[:, None] + g[None, :] - cost) / eps - math.log(n) - math.log(m))
    return float(f.mean() + g.mean()) - eps * (float(plan.sum()) - 1.0), plan


def _newton_polish(cost: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float, tol: float,
                   max_steps: int = 50) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Newton's method on the entropic dual (Brauer et al. 2017, "A Sinkhorn-Newton
    method for entropic optimal transport"), with backtracking line search.

    Sinkhorn stalls when the plan is nearly block-diagonal (well-separated classes:
    mass moves between blocks through exponentially small entries); Newton resolves
    those few slow directions in a handful of steps. The Hessian system is reduced to
    the m x m Schur complement diag(P^T 1) - P^T diag(1 / P 1) P, whose null vector 1
    (the shift f + t, g - t) is removed by pinning the last entry of the g step.
    """
    n, m = cost.shape
    a, b = 1.0 / n, 1.0 / m
    value, plan = _dual(cost, f, g, eps)
    err = math.inf
    for _ in range(max_steps):
        rows, cols = plan.sum(1), plan.sum(0)
        err = max(float((rows - a).abs().sum()), float((cols - b).abs().sum()))
        if err < tol:
            break
        grad_f, grad_g = a - rows, b - cols
        schur = torch.diag(cols) - plan.T @ (plan / rows[:, None])
        rhs = eps * (grad_g - plan.T @ (grad_f / rows))
        step_g = torch.zeros_like(g)
        sub = schur[:-1, :-1]
        chol, info = torch.linalg.cholesky_ex(sub)
        if int(info) == 0:
            step_g[:-1] = torch.cholesky_solve(rhs[:-1, None], chol)[:, 0]
        else:
            step_g[:-1] = torch.linalg.lstsq(sub, rhs[:-1, None]).solution[:, 0]
        step_f = (eps * grad_f - plan @ step_g) / rows
        t = 1.0
        for _ in range(30):
            new_value, new_plan = _dual(cost, f + t * step_f, g + t * step_g, eps)
            if math.isfinite(new_value) and new_value >= value:
                break
            t /= 2
        else:
            break  # no ascent left at this precision
        f, g, value, plan = f + t * step_f, g + t * step_g, new_value, new_plan
    return f, g, err


def _entropic_ot(cost: torch.Tensor, eps: float, max_iter: int, tol: float, symmetric: bool = False) -> float:
    """Value of min_P <P, C> + eps KL(P | a x b) for uniform a and b.

    Returned as the dual objective <a, f> + <b, g> - eps (sum P - 1) at the final
    potentials. Sinkhorn in the kernel domain, P = diag(a u) K diag(b v) with
    K = exp((f + g - C) / eps); the scalings are absorbed into the log-domain
    potentials f, g whenever they leave [1e-13, 1e13] (Schmitzer 2019), so nothing
    over- or underflows.

    - General problems: alternating updates u = 1 / K(b v), v = 1 / K^T(a u), with
      eps-scaling (eps halved from the cost range down to ``eps``, potentials carried
      over). If the last stage has not converged after ``max_iter`` iterations,
      Newton steps on the dual finish the job (``_newton_polish``).
    - ``symmetric`` problems (C = C^T, a = b: the debiasing terms and a dataset against
      itself): the averaged update f <- (f + T(f)) / 2 of Feydy et al. (2019),
      u <- sqrt(u / K(a u)), which converges in tens of iterations where the
      alternating one oscillates.

    Converged when the L1 error of the marginals is below ``tol``.
    """
    n, m = cost.shape
    a = cost.new_full((n,), 1.0 / n)
    b = cost.new_full((m,), 1.0 / m)
    if symmetric:
        f = 0.5 * cost.min(1).values
        g = f  # C - f - f^T >= 0: min_k C_ik <= C_ij and min_k C_jk <= C_ji = C_ij
        schedule = [eps]
    else:
        f = cost.min(1).values
        g = (cost - f[:, None]).min(0).values  # C - f - g >= 0 with a zero in every row and column
        schedule, e = [], float(cost.max() - cost.min())
        while e > eps:
            schedule.append(e)
            e /= 2
        schedule.append(eps)
    iters, err = 0, math.inf
    for stage, e in enumerate(schedule):
        last = stage == len(schedule) - 1
        stage_tol = tol if last else 1e-2
        k = torch.exp((f[:, None] + g[None, :] - cost) / e)
        u, v = torch.ones_like(a), torch.ones_like(b)
        while iters < max_iter:
            iters += 1
            if symmetric:
                u = torch.sqrt(u / (k @ (a * u)))
                v = u
            else:
                u = 1.0 / (k @ (b * v))
                v = 1.0 / (k.T @ (a * u))
            if iters % 10 == 0:  # v is exact for the columns; check the rows
                rows = a * u * (k @ (b * v))
                err = float((rows - a).abs().sum())
                if err < stage_tol:
                    break
            if float(torch.stack([u.max(), v.max(), 1.0 / u.min(), 1.0 / v.min()]).max()) > 1e13:
                f, g = f + e * u.log(), g + e * v.log()
                k = torch.exp((f[:, None] + g[None, :] - cost) / e)
                u, v = torch.ones_like(a), torch.ones_like(b)
        f, g = f + e * u.log(), g + e * (u if symmetric else v).log()
        if symmetric:
            g = f
    if err >= tol:
        f, g, err = _newton_polish(cost, f, g, eps, tol)
    if err >= tol:
        warnings.warn(f"Sinkhorn did not converge (marginal error {err:.2e} > {tol:.0e}); "
                      "raise max_iter or entropic_reg", RuntimeWarning, stacklevel=3)
    return _dual(cost, f, g, eps)[0]


def _exact_ot(cost: torch.Tensor) -> float:
    import ot

    n, m = cost.shape
    return float(ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost.double().cpu().numpy(), numItermax=100_000_000))


def otdd(x1, y1, x2, y2, inner: Inner = "gaussian", entropic_reg: float = 0.05,
         cost_scale: float | Literal["cross", "source"] | None = None,
         debiased: bool = True, max_per_class: int | None = 200, seed: int = 0, max_iter: int = 1000,
         tol: float = 1e-9, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
         covariance: Covariance = "unbiased") -> float:
    """Optimal transport dataset distance between labelled datasets (x1, y1) and (x2, y2).

    ``x1`` [N, D] and ``x2`` [M, D] points (pixels flattened, or features), ``y1`` [N]
    and ``y2`` [M] integer labels; the label sets may differ. See the module docstring
    for the definition. Returns the OT cost under d(z, z')^2 = ||x - x'||^2 +
    W_2^2(alpha_y, alpha'_y') in squared input units (lower = closer datasets).

    inner: "gaussian" or "exact" label-to-label W_2^2.
    entropic_reg: eps / cost_scale; 0 solves the outer problem exactly (``ot.emd2``).
    cost_scale: the unit of eps. ``None`` or "cross": the mean of the cross cost matrix
        (changes with the pair). "source": the mean of dataset 1's cost against itself,
        so every target compared with one fixed source sample gets the same eps (what
        the engine uses to rank tasks). A number: that fixed unit.
    debiased: return the Sinkhorn divergence (True) or OT_eps(A, B) alone.
    max_per_class: at most this many samples per class of each dataset (seeded draw,
        ``seed`` for dataset 1, ``seed + 1`` for dataset 2); memory is O((N + M)^2).
    max_iter, tol: Sinkhorn iterations before Newton steps take over; the stopping rule
        (L1 error of the marginals below ``tol``).
    covariance: the class Gaussians' covariance for ``inner="gaussian"``: "unbiased"
        (divided by n - 1, as microsoft/otdd) or "ml" (maximum likelihood, divided by n).

    microsoft/otdd's ``DatasetDistance`` defaults are reproduced by
    ``0.5 * otdd(..., inner="gaussian", entropic_reg=0.2, cost_scale=1.0, max_per_class=None)``
    up to its outer Sinkhorn's early stop (docs/analysis.md).
    """
    _check_options(inner, covariance)
    if entropic_reg < 0:
        raise ConfigError("entropic_reg", f"must be >= 0, got {entropic_reg!r}")
    a, ya, b, yb = _points(x1, y1, x2, y2, max_per_class, seed, dtype, device)
    need_self = entropic_reg > 0 and (debiased or cost_scale == "source")

    # every sample of both datasets in one Gram matrix; every class of both in one set
    z = torch.cat([a, b])
    sq = _sqdist(z, z) if need_self else None
    sq_ab = sq[: len(a), len(a):] if sq is not None else _sqdist(a, b)
    ca, cb = _Classes(a, ya), _Classes(b, yb)
    na, nb = len(ca), len(cb)
    cross_i, cross_j = (t.flatten() for t in torch.meshgrid(torch.arange(na, device=a.device),
                                                            torch.arange(nb, device=a.device), indexing="ij"))
    w_ab = a.new_zeros(na, nb)
    w_aa, w_bb = a.new_zeros(na, na), b.new_zeros(nb, nb)
    tri_a, tri_b = torch.triu_indices(na, na, 1, device=a.device), torch.triu_indices(nb, nb, 1, device=a.device)
    if inner == "gaussian":
        ga, gb = ca.gaussians(covariance, "y1"), cb.gaussians(covariance, "y2")
        w_ab.view(-1)[:] = _gaussian_label_w2(ga, gb, cross_i, cross_j)
        if need_self:
            w_aa[tri_a[0], tri_a[1]] = _gaussian_label_w2(ga, ga, tri_a[0], tri_a[1])
            w_bb[tri_b[0], tri_b[1]] = _gaussian_label_w2(gb, gb, tri_b[0], tri_b[1])
    else:
        w_ab.view(-1)[:] = _exact_label_w2(ca, cb, sq_ab, cross_i, cross_j)
        if need_self:
            w_aa[tri_a[0], tri_a[1]] = _exact_label_w2(ca, ca, sq[: len(a), : len(a)], tri_a[0], tri_a[1])
            w_bb[tri_b[0], tri_b[1]] = _exact_label_w2(cb, cb, sq[len(a):, len(a):], tri_b[0], tri_b[1])
    w_aa, w_bb = w_aa + w_aa.T, w_bb + w_bb.T

    cost_ab = sq_ab + w_ab[ca.index][:, cb.index]
    if entropic_reg == 0:
        return _exact_ot(cost_ab)
    if cost_scale is None or cost_scale == "cross":
        scale = float(cost_ab.mean())
    elif cost_scale == "source":  # the self terms were computed above (need_self)
        scale = float((sq[: len(a), : len(a)] + w_aa[ca.index][:, ca.index]).mean())
    elif isinstance(cost_scale, str):
        raise ConfigError("cost_scale", f"must be a positive number, 'cross' or 'source', got {cost_scale!r}")
    else:
        scale = float(cost_scale)
    if not scale > 0:
        raise ConfigError("cost_scale", f"must be positive, got {scale!r}")
    eps = entropic_reg * scale
    # a dataset against itself: the cross cost is symmetric up to rounding
    symmetric = cost_ab.shape[0] == cost_ab.shape[1] and bool(
        (cost_ab - cost_ab.T).abs().max() <= 1e-10 * cost_ab.abs().max())
    if symmetric:
        cost_ab = 0.5 * (cost_ab + cost_ab.T)
    value = _entropic_ot(cost_ab, eps, max_iter, tol, symmetric)
    if not debiased:
        return value
    del cost_ab
    cost_aa = sq[: len(a), : len(a)] + w_aa[ca.index][:, ca.index]
    value_aa = _entropic_ot(cost_aa, eps, max_iter, tol, symmetric=True)
    del cost_aa
    cost_bb = sq[len(a):, len(a):] + w_bb[cb.index][:, cb.index]
    value_bb = _entropic_ot(cost_bb, eps, max_iter, tol, symmetric=True)
    return value - 0.5 * (value_aa + value_bb)


# ------------------------------------------------------------------- splits, models


def split_arrays(split: Split, model=None, size: int | None = None, channels: int | None = None,
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as points for OTDD: (``x`` float [N, D], ``labels`` int64 [N]).

    With ``model`` (a ``ribench.models.Model``), ``x`` holds its features
    (``model.features``, inference mode, batched, on the model's device). Without,
    ``x`` holds the pixels in [0, 1], resized to ``size`` (bilinear, antialiased) and
    averaged to gray when ``channels`` is 1, then flattened.
    """
    if model is not None:
        from .similarity import extract_features

        fs = extract_features(model, split, batch_size)
        return fs.features, fs.labels
    x = split.images.float() / 255.0
    if channels is not None and channels != x.shape[1]:
        if channels != 1:
            raise DataError(f"pixel-space OTDD converts images to gray (channels=1), not to {channels} channels")
        x = x.mean(1, keepdim=True)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.flatten(1), split.labels.clone()


def otdd_splits(split1: Split, split2: Split, model=None, max_per_class: int | None = 200, seed: int = 0,
                batch_size: int = 256, **kwargs) -> float:
    """OTDD between two splits, in pixel space (``model=None``) or in ``model``'s feature space.

    Each split is first capped to ``max_per_class`` images per class (seeded), then
    turned into points by ``split_arrays``. In pixel space, images of different sizes
    are resized to the first split's size and images with different channel counts are
    compared in gray. ``kwargs`` go to ``otdd`` (inner, entropic_reg, debiased, ...).
    """
    s1 = Split(*subsample_per_class(split1.images, split1.labels, max_per_class, seed))
    s2 = Split(*subsample_per_class(split2.images, split2.labels, max_per_class, seed + 1))
    size = channels = None
    if model is None:
        size = s1.images.shape[-1] if s1.images.shape[-2:] != s2.images.shape[-2:] else None
        channels = 1 if s1.images.shape[1] != s2.images.shape[1] else None
        if size is not None and s1.images.shape[-2] != s1.images.shape[-1]:
            raise DataError(f"cannot resize non-square images of shape {tuple(s1.images.shape[-2:])}")
    x1, y1 = split_arrays(s1, model, size, channels, batch_size)
    x2, y2 = split_arrays(s2, model, size, channels, batch_size)
    return otdd(x1, y1, x2, y2, max_per_class=None, seed=seed, **kwargs)
