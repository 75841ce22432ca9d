"""Weight-space diagnostics of adaptation: task vectors, linear mode connectivity, and
the shift of the distribution of 3x3 convolution filters.

- Task vector (Ilharco et al., ICLR 2023, "Editing Models with Task Arithmetic"):
  tau = theta_adapted - theta_pretrained, per state-dict entry (``task_vector``, defined
  with the methods that use it in ``ribench.methods.task_vectors``); its L2 norm says how
  far adaptation moved, cosines between task vectors how alike two adaptations are.
  ``task_vector_norms`` splits the norm into the backbone's entries and the head's
  (``head`` / ``head.*``, the linear classifier of ``ribench.models``): a method that
  trains a new head from scratch (linear probe, NCM) moves the head far and the
  backbone not at all, and the total says only the first.
- Linear path (Frankle et al., ICML 2020, "Linear Mode Connectivity and the Lottery
  Ticket Hypothesis"; Neyshabur et al., NeurIPS 2020): loss and error of
  theta(alpha) = theta_a + alpha (theta_b - theta_a) for alpha in [0, 1]; the barrier
  is max_alpha [L(theta(alpha)) - ((1 - alpha) L(theta_a) + alpha L(theta_b))]. A
  barrier near 0 means the two models lie in one linearly connected basin (as
  WiSE-FT needs). Every alpha runs the *same* module through
  ``torch.func.functional_call`` with an interpolated parameter dict; nothing is
  reloaded or copied into the module.
- Filter shift, after the CNN Filter DB study (Gavrikov & Keuper, CVPR 2022): the
  3x3 kernels of a convolution layer (every (out, in) slice, a vector in R^9) are
  projected on a fixed basis, the principal directions of the *pretrained* layer's
  kernels (right singular vectors of the uncentred [n, 9] kernel matrix). Along each
  basis vector k the coefficients of the pretrained and adapted kernels form two 1-d
  distributions P_k and Q_k. Per layer we report
    ``kl``: sum_k w_k KL(P_k || Q_k), w_k the share of the pretrained kernels' energy
            along k, the densities histograms on common bins over the joint range
            (``bins``, at most sqrt(number of kernels)), with add-one smoothing so
            KL stays finite;
    ``ks``: sum_k w_k KS(P_k, Q_k), the weighted two-sample Kolmogorov-Smirnov
            statistic (no binning; in [0, 1]);
    ``relative_change``: ||W_adapted - W_pretrained||_F / ||W_pretrained||_F;
    ``filters``: the number of 3x3 kernels.
  All are 0 for an unchanged layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..core.errors import CheckpointError, ConfigError, DataError
from ..core.runtime import autocast, current_compute
from ..core.types import Split
from ..methods.task_vectors import state_of, task_vector  # noqa: F401  (task_vector: part of this module's API)

__all__ = [
    "LinearPath", "filter_shift", "linear_path", "task_vector", "task_vector_cosines", "task_vector_norm",
    "task_vector_norms", "is_head_entry",
]


# ----------------------------------------------------------------------- task vectors


def _flat(tv: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    return torch.cat([tv[k].flatten().to("cpu", torch.float64) for k in keys])


def task_vector_norm(tv: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of a task vector (all its entries as one vector)."""
    return float(_flat(tv, sorted(tv)).norm())


def is_head_entry(key: str, head: str = "head") -> bool:
    """Whether state-dict entry ``key`` belongs to the module named ``head`` (``head`` itself or ``head.*``)."""
    return key == head or key.startswith(head + ".")


def task_vector_norms(tv: Mapping[str, torch.Tensor], head: str = "head") -> dict[str, float]:
    """L2 norms of a task vector's parts: ``{"total", "backbone", "head"}``, where ``head`` holds
    the entries of the module named ``head`` and ``backbone`` every other entry
    (total**2 = backbone**2 + head**2; a part with no entry is 0)."""
    parts = {"backbone": sorted(k for k in tv if not is_head_entry(k, head)),
             "head": sorted(k for k in tv if is_head_entry(k, head))}
    out = {"total": task_vector_norm(tv)}
    for name, keys in parts.items():
        out[name] = float(_flat(tv, keys).norm()) if keys else 0.0
    return out


def task_vector_cosines(tvs: Mapping[str, Mapping[str, torch.Tensor]] | Sequence[Mapping[str, torch.Tensor]]
                        ) -> np.ndarray:
    """Pairwise cosine similarities [K, K] of K task vectors, over the entries they all
    share (in the given order of ``tvs``; a dict's values in insertion order)."""
    vecs = list(tvs.values()) if isinstance(tvs, Mapping) else list(tvs)
    if not vecs:
        raise DataError("no task vectors given")
    keys = sorted(set.intersection(*(set(v) for v in vecs)))
    if not keys:
        raise DataError("the task vectors share no entry")
    for k in keys:
        shapes = {tuple(v[k].shape) for v in vecs}
        if len(shapes) > 1:
            raise DataError(f"task vector entry {k!r} has different shapes {sorted(shapes)}")
    m = torch.stack([_flat(v, keys) for v in vecs])
    norms = m.norm(dim=1)
    return ((m @ m.T) / (norms[:, None] * norms[None, :])).numpy()


# ------------------------------------------------------------------------ linear path


@dataclass(frozen=True)
class LinearPath:
    """Loss (mean cross-entropy, nats) and error (1 - accuracy) at each ``alphas`` [A]
    along theta_a + alpha (theta_b - theta_a); alphas include 0 and 1."""

    alphas: np.ndarray
    losses: np.ndarray
    errors: np.ndarray

    def _barrier(self, values: np.ndarray) -> float:
        line = (1 - self.alphas) * values[0] + self.alphas * values[-1]
        return float(np.max(values - line))

    @property
    def loss_barrier(self) -> float:
        """max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1)); 0 when the path is convex-or-flat."""
        return self._barrier(self.losses)

    @property
    def error_barrier(self) -> float:
        """The same for the error rate."""
        return self._barrier(self.errors)


def _data(data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Split):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 4 and y.dim() == 1 \
                and len(x) == len(y):
            return x, y.long()
    raise DataError("data must be a Split or a pair (images [N, C, H, W], labels [N]) of tensors")


def linear_path(model_a: nn.Module, model_b: nn.Module, data, alphas: int | Sequence[float] = 11,
                batch_size: int = 512) -> LinearPath:
    """Loss and error of the linear interpolation between two models of one architecture.

    ``data``: a Split or (images, labels). ``alphas``: how many evenly spaced points in
    [0, 1], or the points themselves (0 and 1 are always added). The interpolated
    parameters and buffers run through ``model_a``'s module with
    ``torch.func.functional_call``, in inference mode; neither model is modified.
    """
    grid = np.linspace(0.0, 1.0, alphas) if isinstance(alphas, int) else np.asarray(alphas, dtype=np.float64)
    if grid.ndim != 1 or len(grid) == 0 or (grid < 0).any() or (grid > 1).any():
        raise ConfigError("alphas", "must be a count >= 2 or a list of numbers in [0, 1]")
    grid = np.unique(np.concatenate([grid, [0.0, 1.0]]))
    x_all, y_all = _data(data)
    device = next(model_a.parameters()).device
    named_a = {**dict(model_a.named_parameters()), **dict(model_a.named_buffers())}
    named_b = {**dict(model_b.named_parameters()), **dict(model_b.named_buffers())}
    if set(named_a) != set(named_b):
        diff = sorted(set(named_a) ^ set(named_b))
        raise CheckpointError(f"the two models differ in architecture: entries {diff[:5]} are in only one")
    start, delta = {}, {}
    for k, va in named_a.items():
        vb = named_b[k]
        if vb.shape != va.shape:
            raise CheckpointError(
                f"entry {k!r} has shape {tuple(va.shape)} in model_a but {tuple(vb.shape)} in model_b")
        start[k] = va.detach()
        if va.is_floating_point():
            delta[k] = vb.detach().to(va.device, va.dtype) - va.detach()
    was_training = model_a.training
    model_a.eval()
    losses, errors = [], []
    try:
        with torch.inference_mode(), autocast(current_compute().precision, device):
            for alpha in grid:
                params = {k: (v + float(alpha) * delta[k] if k in delta else v) for k, v in start.items()}
                loss_sum, wrong = 0.0, 0
                for i in range(0, len(y_all), batch_size):
                    x = x_all[i : i + batch_size].to(device, non_blocking=True)
                    y = y_all[i : i + batch_size].to(device, non_blocking=True)
                    logits = functional_call(model_a, params, (x,)).double()
                    loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                    wrong += int((logits.argmax(1) != y).sum())
                losses.append(loss_sum / len(y_all))
                errors.append(wrong / len(y_all))
    finally:
        model_a.train(was_training)
    return LinearPath(grid, np.asarray(losses), np.asarray(errors))


# ------------------------------------------------------------------------ filter shift


def _histogram_kl(p: np.ndarray, q: np.ndarray, bins: int) -> float:
    """KL(P || Q) of two samples on common bins over their joint range, at most
    ``bins`` and at most sqrt(len(p)) of them, with add-one (Laplace) smoothing."""
    lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
    if hi <= lo:
        return 0.0
    bins = max(2, min(bins, int(math.sqrt(len(p)))))
    hp, edges = np.histogram(p, bins=bins, range=(lo, hi))
    hq, _ = np.histogram(q, bins=edges)
    hp = (hp + 1.0) / (hp.sum() + bins)
    hq = (hq + 1.0) / (hq.sum() + bins)
    return float((hp * np.log(hp / hq)).sum())


def _ks(p: np.ndarray, q: np.ndarray) -> float:
    grid = np.sort(np.concatenate([p, q]))
    cdf_p = np.searchsorted(np.sort(p), grid, side="right") / len(p)
    cdf_q = np.searchsorted(np.sort(q), grid, side="right") / len(q)
    return float(np.abs(cdf_p - cdf_q).max())


def filter_shift(pretrained, adapted, bins: int = 32) -> dict[str, dict[str, float]]:
    """Per 3x3 convolution layer, how much the distribution of its kernels moved.

    ``pretrained`` / ``adapted``: modules or state dicts of one architecture. Returns
    {layer name: {"kl", "ks", "relative_change", "filters"}} for every 4-d weight of
    shape [out, in, 3, 3] (see the module docstring for the definitions).
    """
    a, b = state_of(pretrained, "pretrained"), state_of(adapted, "adapted")
    out: dict[str, dict[str, float]] = {}
    for key, wa in a.items():
        if not key.endswith("weight") or wa.dim() != 4 or tuple(wa.shape[2:]) != (3, 3) or key not in b:
            continue
        wb = b[key]
        if wb.shape != wa.shape:
            raise CheckpointError(f"{key!r} has shape {tuple(wa.shape)} in the pretrained model but {tuple(wb.shape)}")
        p = wa.detach().reshape(-1, 9).to("cpu", torch.float64).numpy()
        q = wb.detach().reshape(-1, 9).to("cpu", torch.float64).numpy()
        _, s, vt = np.linalg.svd(p, full_matrices=False)
        energy = s**2
        weights = energy / energy.sum() if energy.sum() > 0 else np.full(len(s), 1.0 / len(s))
        cp, cq = p @ vt.T, q @ vt.T
        kl = sum(w * _histogram_kl(cp[:, k], cq[:, k], bins) for k, w in enumerate(weights))
        ks = sum(w * _ks(cp[:, k], cq[:, k]) for k, w in enumerate(weights))
        norm = np.linalg.norm(p)
        out[key[: -len(".weight")] if key.endswith(".weight") else key] = {
            "kl": float(kl), "ks": float(ks),
            "relative_change": float(np.linalg.norm(q - p) / norm) if norm > 0 else float("nan"),
            "filters": float(len(p)),
        }
    if not out:
        raise DataError("the models have no 3x3 convolution layer")
    return out
