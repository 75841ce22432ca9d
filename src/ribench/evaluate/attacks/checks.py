"""Sanity checks that flag gradient masking: when white-box numbers are not to be trusted.

In the spirit of AutoAttack's checks (Croce & Hein 2020) and the checklist of
Carlini et al. 2019 ("On Evaluating Adversarial Robustness"), section 5 of
docs/attacks.md. ``gradient_masking_checks`` returns one warning (a sentence) per
failed check and an empty list when all pass.

``zero_gradient_fraction`` is the cheap check every white-box attack row carries, whether
or not the full checks run: the share of the attacked images on which the attack's loss
has an input gradient that is exactly zero or not finite, so that a gradient attack cannot
move them (a softmax saturated to exactly 1.0, as NCM's often is). Above
``MASKED_ZERO_GRAD`` the row is marked ``masked``.
"""

from __future__ import annotations

import math

import torch

from ...core.errors import ConfigError
from ...core.runtime import derive_seed
from .blackbox import square_linf
from .common import (
    LOSSES,
    ClassSubset,
    Classifier,
    Norm,
    check_eps,
    check_subset,
    gradients_on,
    logits_of,
    loss_per_example,
    margin,
    prepare_inputs,
)
from .whitebox import pgd


MASKED_ZERO_GRAD = 0.5
"""An attack row is marked ``masked`` when more than this share of its images has a zero or
non-finite input gradient: its white-box robust accuracy then measures the gradient, not the model."""


def zero_gradient_fraction(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
                           class_subset: ClassSubset = None, batch_size: int = 250) -> float:
    """Share of the images ``x`` (uint8 or float [0, 1], [B, C, H, W]; labels ``y`` int64 [B]) whose
    input gradient of ``loss`` (per image, as the attacks compute it: "ce", "margin" or "dlr") is
    all zero or has a NaN/inf entry; every image counts when the input has no gradient at all.

    One forward and backward pass over the images, in eval mode (restored after), under the
    autocast of the block it is called in. 0.0 for an empty set."""
    if loss not in LOSSES:
        raise ConfigError("zero_gradient_fraction.loss", f"must be one of {', '.join(LOSSES)}, got {loss!r}")
    x, y = prepare_inputs(model, x, y)
    if not len(y):
        return 0.0
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    flat = 0
    try:
        with gradients_on():
            for i in range(0, len(y), batch_size):
                xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
                yb = y[i:i + batch_size]
                values = loss_per_example(logits_of(model, xb, class_subset), yb, loss)
                grad = torch.autograd.grad(values.sum(), xb, allow_unused=True)[0] if values.requires_grad else None
                if grad is None:
                    flat += len(yb)
                    continue
                g = grad.flatten(1)
                flat += int(((g == 0).all(1) | ~torch.isfinite(g).all(1)).sum())
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return flat / len(y)


def _accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor, subset: tuple[int, ...] | None,
              batch_size: int) -> float:
    with torch.no_grad():
        hits = sum(int((logits_of(model, x[i:i + batch_size], subset).argmax(1) == y[i:i + batch_size]).sum())
                   for i in range(0, len(y), batch_size))
    return hits / max(1, len(y))


def _gradient_warnings(model: Classifier, x: torch.Tensor, y: torch.Tensor, subset: tuple[int, ...] | None,
                       batch_size: int) -> list[str]:
    """Margin-loss input gradients: None (input cut from the graph), non-finite, or all zero.

    The margin, unlike cross-entropy, does not saturate, so a zero gradient means the
    model itself is flat in its input (rounding, quantisation, a hard threshold)."""
    none = nonfinite = zero = 0
    with gradients_on():
        for i in range(0, len(y), batch_size):
            xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
            yb = y[i:i + batch_size]
            try:
                m = margin(logits_of(model, xb, subset), yb)
                grad = torch.autograd.grad(m.sum(), xb, allow_unused=True)[0] if m.requires_grad else None
            except RuntimeError:
                grad = None
            if grad is None:
                none += len(yb)
                continue
            flat = grad.flatten(1)
            bad = ~torch.isfinite(flat).all(1)
            nonfinite += int(bad.sum())
            zero += int(((flat == 0).all(1) & ~bad).sum())
    n = len(y)
    out = []
    if none:
        out.append("the model's logits have no gradient w.r.t. its input (None): its preprocessing cuts the input "
                   "out of the graph (a uint8 conversion, .detach(), numpy); gradient attacks cannot run")
    if nonfinite:
        out.append(f"{nonfinite} of {n} images have NaN or inf input gradients: gradient attacks are unreliable")
    if zero:
        out.append(f"{zero} of {n} images have an all-zero input gradient (rounding, quantisation or a hard "
                   f"threshold in the forward pass?): gradient attacks see nothing, use black-box attacks")
    return out


def gradient_masking_checks(
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.1,
    norm: Norm = "linf",
    steps: int = 20,
    queries: int = 500,
    tol: float = 0.02,
    class_subset: ClassSubset = None,
    seed: int = 0,
    batch_size: int = 250,
    full: bool = True,
) -> list[str]:
    """Warnings (empty when every check passes) that white-box robust accuracy of
    ``model`` at ``eps`` is overestimated by gradient masking.

    x: uint8 or float [0, 1] images [B, C, H, W]; y: int64 [B]. A few hundred images
    are enough. Checks, accuracies compared with slack ``tol``:

    1. outputs are finite and deterministic (two passes agree);
    2. input gradients exist, are finite, and are not all zero for any image;
    3. no attack accuracy exceeds clean accuracy;
    4. PGD accuracy does not rise as eps grows (eps/4, eps/2, eps);
    5. PGD (``steps``) is at least as strong as a single gradient step (FGSM for Linf);
    6. PGD with an unbounded budget (the whole [0, 1] box) fools every image;
    7. the black-box Square attack (``queries``) is not stronger than PGD. For L2 it runs
       in the Linf ball of radius eps / sqrt(d), which lies inside the L2 ball.

    ``full`` False runs checks 1 and 2 only (one forward and backward pass): for robust
    accuracies already at most ``tol`` at every radius reported, which checks 3 to 7 could only find overestimated by
    less than their own slack (``evaluation.attack_rows`` decides).
    """
    eps = check_eps("gradient_masking_checks", eps)
    if norm not in ("linf", "l2"):
        raise ConfigError("gradient_masking_checks.norm", f"must be 'linf' or 'l2', got {norm!r}")
    x, y = prepare_inputs(model, x, y)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        return _checks(model, x, y, eps, norm, steps, queries, tol, class_subset, seed, batch_size, full)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def _checks(model, x, y, eps, norm, steps, queries, tol, class_subset, seed, batch_size, full=True) -> list[str]:
    warnings: list[str] = []
    with torch.no_grad():
        first = model(x[:batch_size])
        second = model(x[:batch_size])
    subset = check_subset(class_subset, first.shape[1])
    if not torch.isfinite(first).all():
        warnings.append("the model returns NaN or inf logits on clean images")
    elif not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        warnings.append("the model's outputs are random (two passes on the same images differ): evaluate it "
                        "with expectation over transformation, single-pass attacks overestimate robustness")
    warnings += _gradient_warnings(model, x, y, subset, batch_size)
    if not full:
        return warnings

    def gen(tag: str) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed("masking-check", tag, seed))

    def pgd_acc(radius: float, n_steps: int, step_size: float | None = None, random_start: bool = True,
                tag: str = "pgd") -> float:
        out = [pgd(model, x[i:i + batch_size], y[i:i + batch_size], eps=radius, norm=norm, steps=n_steps,
                   step_size=step_size, random_start=random_start, class_subset=subset, generator=gen(f"{tag}{i}"))
               for i in range(0, len(y), batch_size)]
        return _accuracy(model, torch.cat(out), y, subset, batch_size)

    d = x[0].numel()
    clean = _accuracy(model, x, y, subset, batch_size)
    grid = [eps / 4, eps / 2, eps]
    accs = [pgd_acc(e, steps, tag=f"pgd{e}") for e in grid]
    single = pgd_acc(eps, 1, step_size=eps, random_start=False, tag="single")  # = FGSM for Linf
    unbounded_eps = 1.0 if norm == "linf" else math.sqrt(d)
    unbounded = pgd_acc(unbounded_eps, max(steps, 20), tag="unbounded")
    bb_eps = eps if norm == "linf" else eps / math.sqrt(d)
    bb_out = [square_linf(model, x[i:i + batch_size], y[i:i + batch_size], eps=bb_eps, queries=queries,
                          class_subset=subset, generator=gen(f"square{i}"))[0] for i in range(0, len(y), batch_size)]
    blackbox = _accuracy(model, torch.cat(bb_out), y, subset, batch_size)

    single_name = "FGSM" if norm == "linf" else "a single gradient step"
    named = {**{f"PGD at eps {e:g}": a for e, a in zip(grid, accs)}, single_name: single,
             "unbounded PGD": unbounded, "Square": blackbox}
    above = [f"{k} ({v:.3f})" for k, v in named.items() if v > clean + 1e-9]
    if above:
        warnings.append(f"accuracy under attack exceeds clean accuracy {clean:.3f}: {', '.join(above)}")
    for (e0, a0), (e1, a1) in zip(zip(grid, accs), zip(grid[1:], accs[1:])):
        if a1 > a0 + tol:
            warnings.append(f"PGD accuracy rises with eps: {a0:.3f} at eps {e0:g} but {a1:.3f} at eps {e1:g}")
    if accs[-1] > single + tol:
        warnings.append(f"PGD ({steps} steps, accuracy {accs[-1]:.3f}) is weaker than {single_name} "
                        f"({single:.3f}) at eps {eps:g}")
    if unbounded > tol:
        warnings.append(f"PGD with an unbounded budget (eps {unbounded_eps:g}, the whole image box) leaves "
                        f"accuracy at {unbounded:.3f}, not 0: gradients do not lead out of the class")
    if blackbox < accs[-1] - tol:
        warnings.append(f"the black-box Square attack (accuracy {blackbox:.3f}) is stronger than white-box PGD "
                        f"({accs[-1]:.3f}) at eps {eps:g}: gradients are masked")
    return warnings
