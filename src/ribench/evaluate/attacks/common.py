"""Pieces every attack shares: losses, the margin, projections, random draws.

Conventions (all attacks):

- ``model(x) -> logits [B, K]`` takes float images ``x`` in [0, 1] shaped
  ``[B, C, H, W]``; a ribench ``Model`` does its own (differentiable) preprocessing.
  The model must be in eval mode; attacks never change its mode or its parameters.
- ``class_subset``: indices of the classes a domain covers; the logits of every other
  class are set to -inf (``mask_logits``), so neither the prediction nor the attack's
  loss can use them.
- The *margin* of a point is ``z_y - max_{j != y} z_j`` on masked logits: positive
  means correctly classified. Every attack keeps, per image, the point of lowest margin
  it has seen (the clean image included), so its output is never easier than its input.
- Random draws come from ``generator`` (a CPU ``torch.Generator`` gives the same draws
  on every device), or from torch's global CPU generator when it is None.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import ConfigError, DataError
from ..metrics import mask_logits

Norm = Literal["linf", "l2"]
Classifier = Callable[[torch.Tensor], torch.Tensor] | nn.Module
ClassSubset = tuple[int, ...] | list[int] | None
LOSSES = ("ce", "margin", "dlr")


def model_device(model: Classifier, fallback: torch.device) -> torch.device:
    """Device of the model's first parameter or buffer, else ``fallback``."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return fallback


def prepare_inputs(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and convert ``x`` (uint8 or float in [0, 1], [B, C, H, W]) and ``y`` (int64 [B]);
    return float32 ``x`` and ``y`` on the model's device, detached from any graph."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise DataError(f"attack images must be a tensor [B, C, H, W], got shape {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.dtype != torch.int64:
        raise DataError(f"attack labels must be an int64 tensor [B], got {getattr(y, 'dtype', type(y).__name__)} "
                        f"with shape {tuple(getattr(y, 'shape', ()))}")
    if len(x) != len(y):
        raise DataError(f"attack got {len(x)} images but {len(y)} labels")
    device = model_device(model, x.device)
    if x.dtype == torch.uint8:
        x = x.to(device).float().div_(255.0)
    elif torch.is_floating_point(x):
        x = x.detach().to(device, torch.float32).clone()
        if len(x) and (x.min() < 0 or x.max() > 1):
            raise DataError(f"attack images must lie in [0, 1], got values in "
                            f"[{x.min().item():.3g}, {x.max().item():.3g}]")
    else:
        raise DataError(f"attack images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    return x, y.detach().to(device)


def check_eps(name: str, eps: float) -> float:
    if not isinstance(eps, (int, float)) or not eps >= 0 or eps == float("inf"):
        raise ConfigError(f"{name}.eps", f"must be a finite number >= 0, got {eps!r}")
    return float(eps)


def check_positive_int(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be a positive integer, got {value!r}")
    return value


def check_subset(class_subset: ClassSubset, num_classes: int | None = None) -> tuple[int, ...] | None:
    if class_subset is None:
        return None
    subset = tuple(int(c) for c in class_subset)
    if len(subset) < 2:
        raise ConfigError("class_subset", f"needs at least two classes to attack, got {subset}")
    if num_classes is not None and (min(subset) < 0 or max(subset) >= num_classes):
        raise ConfigError("class_subset", f"indices must lie in 0..{num_classes - 1}, got {subset}")
    return subset


@contextmanager
def gradients_on() -> Iterator[None]:
    """Gradients w.r.t. the input, even when the caller runs under inference mode or no_grad."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def logits_of(model: Classifier, x: torch.Tensor, class_subset: ClassSubset) -> torch.Tensor:
    return mask_logits(model(x), None if class_subset is None else tuple(class_subset))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row [B] (masked logits: -inf classes never win)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - others.amax(1)


def fooled(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [B]: the prediction (argmax of masked logits) is not the label."""
    return logits.argmax(1) != y


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio loss per row [B] (Croce & Hein 2020, eq. 6), written as
    ``dlr_loss`` of fra31/auto-attack computes it:
    ``-(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12)`` with ``z_(i)`` the i-th largest logit.

    Masked (-inf) classes sort last, so with at least three kept classes the three largest
    logits are finite; ``check_loss`` refuses fewer.
    """
    z_sorted, ind_sorted = logits.sort(dim=1)
    top_is_y = (ind_sorted[:, -1] == y).float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - z_sorted[:, -2] * top_is_y - z_sorted[:, -1] * (1.0 - top_is_y)) / (
        z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def check_loss(name: str, loss: str, num_classes: int | None = None) -> str:
    """``loss`` if it is one of ``LOSSES`` (and, for "dlr", ``num_classes`` >= 3), else ConfigError."""
    if loss not in LOSSES:
        raise ConfigError(f"{name}.loss", f"must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "dlr" and num_classes is not None and num_classes < 3:
        raise ConfigError(f"{name}.loss", f"'dlr' reads the third largest logit: it needs at least 3 classes "
                                          f"(after class_subset), got {num_classes}")
    return loss


def loss_per_example(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss the attacker maximises, per example [B]: cross-entropy, the negative margin or DLR."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "margin":
        return -margin(logits, y)
    if loss == "dlr":
        return dlr(logits, y)
    raise ConfigError("loss", f"must be one of {', '.join(LOSSES)}, got {loss!r}")


def loss_and_grad(model: Classifier, x: torch.Tensor, y: torch.Tensor, loss: str, class_subset: ClassSubset
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss [B], gradient of the loss w.r.t. x [B, C, H, W], margin [B]) at ``x``.

    A model that cuts ``x`` out of its graph gets a zero gradient, and NaN or inf entries
    are zeroed, so the attack stays in its threat model; ``gradient_masking_checks``
    reports both.
    """
    x = x.detach().requires_grad_(True)
    logits = logits_of(model, x, class_subset)
    values = loss_per_example(logits, y, loss)
    if values.requires_grad:
        (grad,) = torch.autograd.grad(values.sum(), x, allow_unused=True)
    else:
        grad = None
    if grad is None:
        grad = torch.zeros_like(x)
    grad = torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)
    return values.detach(), grad, margin(logits.detach(), y)


def flat_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-example norm of [B, ...] as [B]."""
    return torch.linalg.vector_norm(t.flatten(1), ord=p, dim=1)


def _per_example(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A [B] tensor reshaped to broadcast against [B, C, H, W]; floats unchanged."""
    return v.view(-1, *([1] * (like.dim() - 1))) if isinstance(v, torch.Tensor) else v


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """PGD's step direction, as MadryLab/robustness (``attack_steps.py``) computes it:
    sign(g) for Linf, ``g / (||g||_2 + 1e-10)`` for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_example(flat_norm(grad, 2) + 1e-10, grad)


def project(x0: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project ``x`` onto {||x - x0|| <= eps} ∩ [0, 1]^d as MadryLab/robustness does:
    Linf clamps ``x - x0`` to [-eps, eps]; L2 rescales it by ``eps / (||x - x0||_2 + 1e-7)``
    where its norm exceeds eps (``torch.renorm``); then ``x0 + delta`` is clamped to [0, 1].

    Clamping to [0, 1] after the ball projection keeps the point in the ball: every
    coordinate of x - x0 only shrinks in magnitude, since x0 itself lies in [0, 1].
    """
    delta = x - x0
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "l2":
        delta = delta.renorm(p=2, dim=0, maxnorm=eps)
    else:
        raise ConfigError("norm", f"must be 'linf' or 'l2', got {norm!r}")
    return (x0 + delta).clamp_(0.0, 1.0)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws made on the generator's device (CPU by default), moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def random_start_point(x0: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> torch.Tensor:
    """PGD's random start, as MadryLab/robustness draws it (``random_perturb``), clamped to [0, 1]:
    Linf: ``x0 + 2 (u - 0.5) eps``, u uniform in [0, 1) per coordinate (Madry et al.'s
    ``uniform(-eps, eps)``); L2: ``x0 + eps r / (||r||_2 + 1e-10)``, r standard normal
    (a uniform point of the sphere of radius eps)."""
    if norm == "linf":
        return (x0 + 2 * (rand(tuple(x0.shape), generator, x0.device) - 0.5) * eps).clamp(0.0, 1.0)
    r = randn(tuple(x0.shape), generator, x0.device)
    return (x0 + eps * r / _per_example(flat_norm(r, 2) + 1e-10, r)).clamp(0.0, 1.0)


class Best:
    """Per example, the lowest-margin point seen so far (and its margin)."""

    def __init__(self, x: torch.Tensor, m: torch.Tensor):
        self.x = x.clone()
        self.margin = m.clone()

    def update(self, index: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> None:
        """Offer points ``x`` [n, ...] with margins ``m`` [n] for examples ``index`` [n]."""
        better = m < self.margin[index]
        if better.any():
            idx = index[better]
            self.x[idx] = x[better]
            self.margin[idx] = m[better]

    def still_robust(self) -> torch.Tensor:
        """Indices of examples with no adversarial point found yet (margin > 0)."""
        return torch.nonzero(self.margin > 0).flatten()
