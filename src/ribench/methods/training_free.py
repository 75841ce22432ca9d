"""Training-free classifiers on frozen features: nearest class mean [ncm] and RanPAC [ranpac].

Both read the pretrained backbone's features of the task's training part through
``ctx.features`` (cached by the engine), fit a classifier in closed form, and return
the pretrained model with its head replaced by a module computing that classifier's
logits; the backbone is untouched.

- NCM (Mensink et al., "Distance-Based Image Classification: Generalizing to new
  classes at near-zero cost", TPAMI 2013). ``metric="euclidean"`` (default): logits
  ``-||f - mu_c||^2 / 2 + ||f||^2 / 2 = <f, mu_c> - ||mu_c||^2 / 2``, a plain linear
  head (the per-image term ``||f||^2 / 2`` does not change the softmax, so the
  probabilities are exactly ``softmax(-||f - mu_c||^2 / 2)``, nearest-mean classification
  under a unit-variance Gaussian). ``metric="cosine"``: logits ``cos(f, mu_c)``, a
  ``CosineHead`` (normalised features against normalised means).
- RanPAC (McDonnell et al., "RanPAC: Random Projections and Pre-trained Models for
  Continual Learning", NeurIPS 2023; github.com/RanPAC/RanPAC, ``RanPAC.py``): ``h =
  ReLU(f W)`` with a frozen Gaussian random ``W`` [D, M] (M = 10000, the reference's
  published runs), then ridge regression of one-hot labels on ``h``: ``W_o = (G +
  lambda I)^-1 C`` with ``G = H^T H`` and ``C = H^T Y`` over the task's whole training
  data (the engine's training and validation parts together). lambda is chosen as in the
  reference's ``optimise_ridge_parameter``: from 10^-8..10^8 (powers of 10), fitting the
  ridge on the first ``fit_fraction`` = 80% of the training data in a shuffled order
  (seeded by the adaptation seed; the reference shuffles with its data loader) and taking
  the lambda with the lowest mean squared error on the remaining 20% (the first of equal
  ones). One eigendecomposition serves every lambda (float64; the reference solves each
  in float32). When there are fewer images than M the equivalent dual form (``W_o = H^T (H
  H^T + lambda I)^-1 Y``) is solved instead, which gives the same ``W_o``. The head is a
  ``RanPACHead`` holding the projection and ``W_o``. The paper's first-session adaptation
  of the backbone (its phase 1) is left out: here the backbone is frozen, which is the
  point of the method in this benchmark.

A model whose head is not ``nn.Linear`` is registered as the model ``with_head``: its
hparams name the backbone (``base_arch``, ``base_hparams``) and the head
(``head_kind``, ``head_kwargs``), so ``models.checkpoint.load_model`` rebuilds it.
scikit-learn's Ridge is not used at run time: it would refit per lambda and hold H in
memory, where the Gram form accumulates and solves once (it is the test's reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.registry import MODEL_KINDS, register_adapted_model, register_method
from ..core.types import Domain, InputSpec
from ..models.base import Model
from .base import AdaptContext, Method

ABSENT_LOGIT = -1e9  # finite, so losses and attack gradients stay finite
RANPAC_LAMBDAS = tuple(10.0**k for k in range(-8, 9))  # the reference's 10.0**np.arange(-8, 9)


class CosineHead(nn.Module):
    """logits[b, c] = cos(features[b], weight[c]); weight [C, D]."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, num_features))  # random until fitted

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f, dim=1) @ F.normalize(self.weight, dim=1).T


class RanPACHead(nn.Module):
    """logits = ReLU(features @ proj) @ out.weight.T; proj [D, M] frozen (a buffer), out: Linear(M, C, bias=False)."""

    def __init__(self, num_features: int, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("proj", torch.randn(num_features, dim))  # Gaussian, as the paper's projection
        self.out = nn.Linear(dim, num_classes, bias=False)

    def expand(self, f: torch.Tensor) -> torch.Tensor:
        return F.relu(f @ self.proj)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(self.expand(f))


HEADS: dict[str, type[nn.Module]] = {"cosine": CosineHead, "ranpac": RanPACHead}


def replace_head(model: Model, kind: str, **kwargs) -> Model:
    """Give ``model`` (in place) a ``HEADS[kind]`` head; record how to rebuild it (model ``with_head``)."""
    base_arch = model.hparams["base_arch"] if getattr(model, "arch", None) == "with_head" else model.arch
    base_hparams = model.hparams["base_hparams"] if model.arch == "with_head" else model.hparams
    device = next(model.parameters()).device
    model.head = HEADS[kind](model.num_features, model.num_classes, **kwargs).to(device)
    model.arch = "with_head"
    model.hparams = {"base_arch": base_arch, "base_hparams": base_hparams, "head_kind": kind, "head_kwargs": kwargs}
    return model


@register_adapted_model("with_head")
def with_head(num_classes: int = 10, spec: InputSpec | None = None, base_arch: str = "mlp",
              base_hparams: dict | None = None, head_kind: str = "cosine", head_kwargs: dict | None = None) -> Model:
    """A backbone ``base_arch`` whose head is ``HEADS[head_kind](num_features, num_classes, **head_kwargs)``."""
    if head_kind not in HEADS:
        raise ConfigError("with_head.head_kind", f"must be one of {', '.join(HEADS)}, got {head_kind!r}")
    model = MODEL_KINDS.create(base_arch, num_classes=num_classes, spec=spec, **(base_hparams or {}))
    return replace_head(model, head_kind, **(head_kwargs or {}))


def _check_features(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, what: str) -> None:
    if len(feats) != len(labels) or len(feats) == 0:
        raise DataError(f"{what}: {len(feats)} feature rows for {len(labels)} labels")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(f"{what}: labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def class_means(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean features [C, D] and counts [C] (0 rows for classes without images)."""
    counts = torch.bincount(labels, minlength=num_classes).to(feats.dtype)
    sums = torch.zeros(num_classes, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(0, labels, feats)
    return sums / counts.clamp_min(1).unsqueeze(1), counts


@dataclass(frozen=True)
class NCMConfig:
    metric: str = field(default="euclidean", metadata={"help": "euclidean (a linear head, exact softmax of -d^2/2) "
                                                               "or cosine (cosine similarity to the means)"})

    def __post_init__(self) -> None:
        if self.metric not in ("euclidean", "cosine"):
            raise ConfigError("metric", f"must be 'euclidean' or 'cosine', got {self.metric!r}")


@register_method("ncm")
class NearestClassMean(Method):
    """Nearest class mean on frozen features; classes without training images never win (Mensink et al. 2013)."""

    name = "ncm"
    Config = NCMConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        feats = ctx.features(pretrained, "train", ctx.train).float()
        labels = ctx.train.labels.to(feats.device)
        _check_features(feats, labels, ctx.num_classes, "ncm")
        means, counts = class_means(feats, labels, ctx.num_classes)
        model = self.fresh_copy(pretrained)
        absent = counts == 0
        if self.config.metric == "euclidean":
            bias = -0.5 * means.square().sum(1)
            bias[absent] = ABSENT_LOGIT  # classes the task never shows are never predicted
            with torch.no_grad():
                model.head.weight.copy_(means)
                model.head.bias.copy_(bias)
        else:
            replace_head(model, "cosine")
            with torch.no_grad():
                model.head.weight.copy_(means)  # absent classes: a zero row, cosine 0
        ctx.info.update(trainable_params=int(means.numel()), head_policy="replaced", metric=self.config.metric)
        return model


def _ridge_eigen(gram: torch.Tensor, cross: torch.Tensor):
    """Eigendecomposition of ``gram`` for ridge solutions at many lambdas (float64)."""
    s, v = torch.linalg.eigh(gram.double())
    return s.clamp_min(0), v, v.T @ cross.double()


def ridge_solutions(feats: torch.Tensor, targets: torch.Tensor, lambdas, batch_size: int = 4096):
    """Yield ``(lambda, W [M, K])`` minimising ||feats W - targets||^2 + lambda ||W||^2 for each lambda.

    feats [N, M], targets [N, K]. Primal (Gram ``G = H^T H``, accumulated by batches)
    when M <= N, dual (kernel ``H H^T``) otherwise; both solved in float64 from one
    eigendecomposition.
    """
    n, m = feats.shape
    if m <= n:
        gram = torch.zeros(m, m, dtype=torch.float64, device=feats.device)
        cross = torch.zeros(m, targets.shape[1], dtype=torch.float64, device=feats.device)
        for i in range(0, n, batch_size):
            hb = feats[i:i + batch_size].double()
            gram += hb.T @ hb
            cross += hb.T @ targets[i:i + batch_size].double()
        s, v, vc = _ridge_eigen(gram, cross)
        for lam in lambdas:
            yield lam, v @ (vc / (s + lam).unsqueeze(1))
    else:
        h = feats.double()
        s, u, uy = _ridge_eigen(h @ h.T, targets)
        for lam in lambdas:
            yield lam, h.T @ (u @ (uy / (s + lam).unsqueeze(1)))


@dataclass(frozen=True)
class RanPACConfig:
    dim: int = field(default=10000, metadata={"help": "random projection size M (the reference's runs: 10000)"})
    lambdas: tuple[float, ...] = field(default=RANPAC_LAMBDAS, metadata={
        "help": "ridge strengths tried (the reference: 10^-8..10^8), chosen by held-out MSE"})
    fit_fraction: float = field(default=0.8, metadata={
        "help": "while choosing lambda: the shuffled training data's first part that fits the ridge; the rest "
                "scores it (the reference: 0.8)"})

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise ConfigError("dim", f"must be a positive integer, got {self.dim!r}")
        if not self.lambdas or not all(isinstance(x, (int, float)) and x > 0 for x in self.lambdas):
            raise ConfigError("lambdas", f"must be a non-empty list of positive numbers, got {self.lambdas!r}")
        if not isinstance(self.fit_fraction, (int, float)) or not 0.0 < self.fit_fraction < 1.0:
            raise ConfigError("fit_fraction", f"must be a number in (0, 1), got {self.fit_fraction!r}")


def select_ridge(feats: torch.Tensor, targets: torch.Tensor, lambdas, n_fit: int) -> tuple[float, float]:
    """(lambda, its MSE): the ridge of ``feats[:n_fit]`` [n_fit, M] on ``targets[:n_fit]``
    [n_fit, K] with the lowest mean squared error on the remaining rows (the first of
    equal ones), as the reference's ``optimise_ridge_parameter``."""
    n = len(feats)
    if not 0 < n_fit < n:
        raise DataError(f"ranpac: {n} training images cannot be split into a fitting part of {n_fit} and a rest")
    held_h, held_y = feats[n_fit:].double(), targets[n_fit:].double()
    best = None
    for lam, w in ridge_solutions(feats[:n_fit], targets[:n_fit], lambdas):
        mse = (held_h @ w - held_y).square().mean().item()
        if best is None or mse < best[1]:
            best = (lam, mse)
    assert best is not None
    return best


@register_method("ranpac")
class RanPAC(Method):
    """RanPAC: frozen random ReLU projection of the features and a ridge classifier on it (McDonnell et al. 2023)."""

    name = "ranpac"
    # 2: lambda from 10^-8..10^8 on the reference's 80/20 split of the whole training data
    #    (was: 10^-8..10^13, fitted on the training part and scored on the validation part)
    version = "2"
    Config = RanPACConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        ftr = ctx.features(pretrained, "train", ctx.train).float()
        fva = ctx.features(pretrained, "val", ctx.val).float()
        ytr, yva = ctx.train.labels.to(ftr.device), ctx.val.labels.to(fva.device)
        _check_features(ftr, ytr, ctx.num_classes, "ranpac train")
        _check_features(fva, yva, ctx.num_classes, "ranpac val")
        model = replace_head(self.fresh_copy(pretrained), "ranpac", dim=cfg.dim)
        head: RanPACHead = model.head  # type: ignore[assignment]
        g = torch.Generator(device="cpu").manual_seed(ctx.seed)
        with torch.no_grad():
            head.proj.copy_(torch.randn(head.proj.shape, generator=g))
        h = head.expand(torch.cat([ftr, fva]))
        y = F.one_hot(torch.cat([ytr, yva]), ctx.num_classes).double()
        order = torch.randperm(len(h), generator=g).to(h.device)
        lam, mse = select_ridge(h[order], y[order], cfg.lambdas, int(len(h) * cfg.fit_fraction))
        (_, w), = ridge_solutions(h, y, [lam])
        with torch.no_grad():
            head.out.weight.copy_(w.T.to(head.out.weight.dtype))
        ctx.info.update(trainable_params=int(head.out.weight.numel()), head_policy="replaced", selected_lambda=lam,
                        heldout_mse=mse)
        return model
