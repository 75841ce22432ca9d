"""Representation similarity: CKA (linear, RBF, unbiased minibatch) and mutual kNN
alignment, plus feature extraction (whole model or layer by layer, via forward hooks).

All similarity functions take two representations of the *same* N examples, ``x``
[N, D1] and ``y`` [N, D2] (NumPy or torch, any widths), compute in float64, and return
a float in [0, 1] (1 = the same representation up to the method's invariances).

- linear CKA (Kornblith et al., ICML 2019): invariant to orthogonal transforms and
  isotropic scaling of either representation, not to arbitrary invertible maps.
- RBF CKA: the same with Gaussian kernels, bandwidth a fraction of the median
  distance between examples (Kornblith et al.'s ``gram_rbf``).
- minibatch CKA (Nguyen et al., ICLR 2021): unbiased HSIC estimates (Song et al.,
  2012) averaged over minibatches, so large datasets and wide layers never need an
  N x N Gram matrix at once (``MinibatchCKA`` accumulates batch by batch).
- mutual kNN alignment (Huh et al., ICML 2024, "The Platonic Representation
  Hypothesis"): mean fraction of shared k nearest neighbours.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, DataError, UnknownNameError
from ..core.runtime import autocast, current_compute
from ..core.types import Split

__all__ = [
    "FeatureSet", "MinibatchCKA", "compare_models", "default_layers", "extract_features", "hsic_unbiased",
    "layer_features", "linear_cka", "minibatch_cka", "mutual_knn", "rbf_cka",
]


# ----------------------------------------------------------------------------- inputs


def _rep(x, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        t = t.flatten(1)
    t = t.detach().to(torch.float64)
    if not torch.isfinite(t).all():
        raise DataError(f"{name} holds NaN or inf values")
    return t


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    a = _rep(x, "x")
    b = _rep(y, "y").to(a.device)
    if len(a) != len(b):
        raise DataError(f"x and y must describe the same examples, got {len(a)} and {len(b)} rows")
    if len(a) < 2:
        raise DataError(f"need at least 2 examples, got {len(a)}")
    return a, b


def _centre_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T / n."""
    k = k - k.mean(0, keepdim=True)
    return k - k.mean(1, keepdim=True)


def _cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    kc, lc = _centre_gram(k), _centre_gram(l)
    num = (kc * lc).sum()
    den = torch.sqrt((kc * kc).sum() * (lc * lc).sum())
    return float(num / den) if den > 0 else float("nan")


# ------------------------------------------------------------------------------ CKA


def linear_cka(x, y) -> float:
    """Linear CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) with X, Y centred.

    Computed in feature space (D x D products) when N exceeds both widths, from the
    N x N Gram matrices otherwise; both give the same number.
    """
    a, b = _pair(x, y)
    a, b = a - a.mean(0), b - b.mean(0)
    if len(a) > max(a.shape[1], b.shape[1]):
        num = (b.T @ a).pow(2).sum()
        den = torch.sqrt((a.T @ a).pow(2).sum() * (b.T @ b).pow(2).sum())
        return float(num / den) if den > 0 else float("nan")
    return _cka_from_grams(a @ a.T, b @ b.T)


def _rbf_gram(x: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return _rbf_from_gram(x @ x.T, bandwidth)


def _median(values: torch.Tensor) -> torch.Tensor:
    """Median of a 1-d tensor, the mean of the two middle values for an even count
    (``numpy.median``; ``torch.median`` returns the lower one)."""
    m = len(values)
    lower = values.kthvalue((m + 1) // 2).values
    return lower if m % 2 else 0.5 * (lower + values.kthvalue(m // 2 + 1).values)


def _rbf_from_gram(g: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The RBF kernel matrix from the linear Gram matrix G = X X^T (distances from G):
    exp(-d^2 / (2 bandwidth^2 median(d^2))), the median over all N^2 squared distances,
    the N zeros of the diagonal included (Kornblith et al.'s ``gram_rbf``)."""
    sq = torch.diagonal(g)
    d2 = (sq[:, None] + sq[None, :] - 2 * g).clamp_min(0)
    median = _median(d2.flatten())
    if median <= 0:
        raise DataError("most examples coincide; the RBF bandwidth (a fraction of the median distance) is 0")
    return torch.exp(-d2 / (2 * bandwidth * bandwidth * median))


def rbf_cka(x, y, bandwidth: float = 0.8) -> float:
    """CKA with Gaussian kernels k(x, x') = exp(-||x - x'||^2 / (2 s^2)), as Kornblith
    et al.'s code (google-research ``representation_similarity``, ``gram_rbf``) sets the
    bandwidth: s^2 = ``bandwidth``^2 x the median of the N x N squared distances, the
    zero diagonal included (the paper reports 0.2, 0.4 and 0.8). CKA = HSIC(K, L) /
    sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(K H L H) up to a constant factor."""
    if bandwidth <= 0:
        raise ConfigError("bandwidth", f"must be positive, got {bandwidth!r}")
    a, b = _pair(x, y)
    return _cka_from_grams(_rbf_gram(a, bandwidth), _rbf_gram(b, bandwidth))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator of Song et al. (2012) for n x n kernel matrices, n >= 4:

    HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)),

    where K~, L~ are K, L with their diagonals set to zero.
    """
    n = k.shape[0]
    if n < 4:
        raise DataError(f"the unbiased HSIC needs at least 4 examples, got {n}")
    kt = k - torch.diag_embed(torch.diagonal(k))
    lt = l - torch.diag_embed(torch.diagonal(l))
    sk, sl = kt.sum(), lt.sum()
    return ((kt * lt).sum() + sk * sl / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (kt.sum(0) @ lt.sum(1))) / (n * (n - 3))


class MinibatchCKA:
    """Unbiased minibatch CKA (Nguyen et al., ICLR 2021), accumulated batch by batch:

        CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) sum_b HSIC_1(L_b, L_b)),

    K_b = X_b X_b^T, L_b = Y_b Y_b^T (linear kernels) of each minibatch b (>= 4 rows).
    Its expectation does not depend on the batch size, unlike the biased estimator's.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hsic_xy_ = self.hsic_xx_ = self.hsic_yy_ = 0.0
        self.batches_ = 0

    def update(self, x, y) -> "MinibatchCKA":
        a, b = _pair(x, y)
        k, l = a @ a.T, b @ b.T
        self.hsic_xy_ += float(hsic_unbiased(k, l))
        self.hsic_xx_ += float(hsic_unbiased(k, k))
        self.hsic_yy_ += float(hsic_unbiased(l, l))
        self.batches_ += 1
        return self

    def compute(self) -> float:
        if self.batches_ == 0:
            raise DataError("MinibatchCKA.compute() called before any update()")
        den = self.hsic_xx_ * self.hsic_yy_
        return self.hsic_xy_ / math.sqrt(den) if den > 0 else float("nan")


def minibatch_cka(x, y, batch_size: int = 256, seed: int | None = 0) -> float:
    """Unbiased minibatch CKA of ``x`` [N, D1] and ``y`` [N, D2] over minibatches of
    ``batch_size`` examples in an order shuffled with ``seed`` (None keeps the order);
    a last batch of fewer than 4 examples is dropped."""
    if batch_size < 4:
        raise ConfigError("batch_size", f"must be at least 4, got {batch_size!r}")
    a, b = _pair(x, y)
    if seed is None:
        order = torch.arange(len(a))
    else:
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(seed))
    acc = MinibatchCKA()
    for start in range(0, len(a), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) >= 4:
            acc.update(a[idx], b[idx])
    return acc.compute()


# ------------------------------------------------------------------------ mutual kNN


def _knn(x: torch.Tensor, k: int, rows: torch.Tensor) -> torch.Tensor:
    sim = x[rows] @ x.T
    sim[torch.arange(len(rows)), rows] = -math.inf
    return sim.topk(k, dim=1).indices


def _knn_from_gram(g: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [N, k] of each example's k nearest others by cosine, from G = X X^T."""
    norm = torch.diagonal(g).clamp_min(1e-300).sqrt()
    sim = g / (norm[:, None] * norm[None, :])
    sim.fill_diagonal_(-math.inf)
    return sim.topk(k, dim=1).indices


def similarities_from_grams(ga: torch.Tensor, gb: torch.Tensor, knn_k: int = 10, bandwidth: float = 0.8
                            ) -> dict[str, float]:
    """Linear CKA, RBF CKA and mutual k-NN alignment of two representations of the same
    N examples, given only their linear Gram matrices (float64 [N, N]); the same numbers
    as ``linear_cka``, ``rbf_cka`` and ``mutual_knn`` on the features, with one Gram
    matrix per representation instead of one per measure."""
    if not 1 <= knn_k < len(ga):
        raise ConfigError("k", f"must be in [1, {len(ga) - 1}] for {len(ga)} examples, got {knn_k!r}")
    na, nb = _knn_from_gram(ga, knn_k), _knn_from_gram(gb, knn_k)
    return {
        "linear_cka": _cka_from_grams(ga, gb),
        "rbf_cka": _cka_from_grams(_rbf_from_gram(ga, bandwidth), _rbf_from_gram(gb, bandwidth)),
        "mutual_knn": int((na[:, :, None] == nb[:, None, :]).sum()) / (knn_k * len(ga)),
    }


def mutual_knn(x, y, k: int = 10, batch_size: int = 1024) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al., ICML 2024):
    mean over examples i of |N_k^X(i) & N_k^Y(i)| / k, where N_k(i) are the ``k``
    nearest other examples by cosine similarity (features L2-normalised), in [0, 1]."""
    a, b = _pair(x, y)
    if not 1 <= k < len(a):
        raise ConfigError("k", f"must be in [1, {len(a) - 1}] for {len(a)} examples, got {k!r}")
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    shared = 0
    for start in range(0, len(a), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(a)), device=a.device)
        na, nb = _knn(a, k, rows), _knn(b, k, rows)
        shared += int((na[:, :, None] == nb[:, None, :]).sum())
    return shared / (k * len(a))


# --------------------------------------------------------------- feature extraction


@dataclass(frozen=True)
class FeatureSet:
    """What a frozen model outputs on a split: ``features`` float32 [N, D],
    ``probs`` float32 [N, C] (softmax of its head), ``labels`` int64 [N]; on CPU."""

    features: torch.Tensor
    probs: torch.Tensor
    labels: torch.Tensor


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def extract_features(model, split: Split, batch_size: int = 256) -> FeatureSet:
    """Features and source-class probabilities of ``model`` (a ``ribench.models.Model``)
    on every image of ``split``, in one batched pass under ``torch.inference_mode()`` (and the
    precision of the enclosing compute options, core.runtime; float32 out)."""
    device = _device(model)
    was_training = model.training
    model.eval()
    feats, probs = [], []
    try:
        with torch.inference_mode(), autocast(current_compute().precision, device):
            for x, _ in split.batches(batch_size):
                f = model.features(x.to(device, non_blocking=True))
                feats.append(f.float().cpu())
                probs.append(torch.softmax(model.head(f).float(), 1).cpu())
    finally:
        model.train(was_training)
    return FeatureSet(torch.cat(feats), torch.cat(probs), split.labels.clone())


def default_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolution and linear layers, in definition order with
    the classification head (``head``) last."""
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and name]
    is_head = [n == "head" or n.startswith("head.") for n in names]
    return [n for n, h in zip(names, is_head) if not h] + [n for n, h in zip(names, is_head) if h]


def _images(images) -> torch.Tensor:
    x = images.images if isinstance(images, Split) else images
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise DataError(f"images must be a Split or a tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    return x


def _check_layers(model: nn.Module, layer_names: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    for name in layer_names:
        if name not in modules and name not in ("features", "logits"):
            raise UnknownNameError("layer", name, ["features", "logits", *[n for n in modules if n]])
    return modules


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _layer_outputs(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor,
                   layer_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """{name: [B, D] float64 CPU} for one batch, from forward hooks (or the special
    names "features" and "logits" for the model's own outputs). The hooks live only
    for this call, and inference mode only inside it."""
    store: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            # a copy now: a later in-place activation (ReLU(inplace=True)) would change it
            store[name] = out.detach().flatten(1).to("cpu", torch.float64, copy=True)

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in dict.fromkeys(layer_names)
               if n in modules and n not in ("features", "logits")]
    try:
        with torch.inference_mode(), autocast(current_compute().precision, _device(model)):
            f = model.features(x.to(_device(model), non_blocking=True))
            store["features"] = f.detach().to("cpu", torch.float64, copy=True)
            if any(n not in store for n in layer_names):  # the head and "logits"
                store["logits"] = model.head(f).detach().to("cpu", torch.float64)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layer_names if n not in store]
    if missing:
        raise DataError(f"layers {missing} were not called when the model ran on the images")
    return {n: store[n] for n in layer_names}


def layer_features(model, images, layer_names: Iterable[str], batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules on ``images`` (a Split or [N, C, H, W] uint8 or
    float in [0, 1]), each flattened to [N, D] float64 on CPU, via forward hooks.

    ``layer_names``: names from ``model.named_modules()`` (see ``default_layers``), or
    "features" / "logits" for the model's feature vector and head output.
    """
    names = list(layer_names)
    x = _images(images)
    modules = _check_layers(model, names)
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with _eval_mode(model):
        for start in range(0, len(x), batch_size):
            out = _layer_outputs(model, modules, x[start : start + batch_size], names)
            for n in names:
                chunks[n].append(out[n])
    return {n: torch.cat(c) for n, c in chunks.items()}


_METHODS = ("linear", "rbf", "minibatch", "mutual_knn")


def compare_models(model_a, model_b, images, layers: Sequence[str | tuple[str, str]] | None = None,
                   method: str = "linear", batch_size: int = 256, seed: int = 0, **kwargs) -> dict[str, float]:
    """Layer-by-layer similarity of two models on the same ``images``.

    ``layers``: names present in both models, or (name_in_a, name_in_b) pairs; None
    takes ``default_layers(model_a)`` that ``model_b`` also has, plus "features".
    ``method``: "linear" (linear CKA), "rbf" (RBF CKA), "mutual_knn" (these collect the
    layers' outputs for all images first), or "minibatch" (unbiased minibatch CKA over
    minibatches of ``batch_size`` images in a ``seed``-shuffled order, streamed: memory
    does not grow with the number of images). ``kwargs`` go to the method's function.
    Returns {layer: similarity}; a pair's key is "name_a|name_b".
    """
    if method not in _METHODS:
        raise ConfigError("method", f"must be one of {', '.join(_METHODS)}, got {method!r}")
    x = _images(images)
    if layers is None:
        names_b = dict(model_b.named_modules())
        layers = [n for n in default_layers(model_a) if n in names_b] + ["features"]
    pairs = [(p, p) if isinstance(p, str) else (p[0], p[1]) for p in layers]
    keys = [a if a == b else f"{a}|{b}" for a, b in pairs]
    names_a, names_b = list(dict.fromkeys(a for a, _ in pairs)), list(dict.fromkeys(b for _, b in pairs))
    if method == "minibatch":
        if batch_size < 4:
            raise ConfigError("batch_size", f"must be at least 4 for minibatch CKA, got {batch_size!r}")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        x = x[order]
        if len(x) % batch_size and len(x) % batch_size < 4:
            x = x[: len(x) - len(x) % batch_size]  # a last batch under 4 images has no unbiased HSIC
        acc = {k: MinibatchCKA() for k in keys}
        mods_a, mods_b = _check_layers(model_a, names_a), _check_layers(model_b, names_b)
        with _eval_mode(model_a), _eval_mode(model_b):
            for start in range(0, len(x), batch_size):
                out_a = _layer_outputs(model_a, mods_a, x[start : start + batch_size], names_a)
                out_b = _layer_outputs(model_b, mods_b, x[start : start + batch_size], names_b)
                for key, (a, b) in zip(keys, pairs):
                    acc[key].update(out_a[a], out_b[b])
        return {k: acc[k].compute() for k in keys}
    fa = layer_features(model_a, x, names_a, batch_size)
    fb = layer_features(model_b, x, names_b, batch_size)
    fn = {"linear": linear_cka, "rbf": rbf_cka, "mutual_knn": mutual_knn}[method]
    return {key: fn(fa[a], fb[b], **kwargs) for key, (a, b) in zip(keys, pairs)}
