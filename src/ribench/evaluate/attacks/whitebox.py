"""White-box (gradient) attacks: FGSM, PGD (Linf, L2), APGD.

Each takes ``model, x [B, C, H, W] in [0, 1] (or uint8), y int64 [B]`` and keyword
budgets, and returns adversarial images ``[B, C, H, W]`` float in [0, 1], on the
model's device, within ``eps`` of ``x`` in the attack's norm. Per image the output is
the lowest-margin point found (the clean image if nothing beats it); an image stops
being attacked as soon as it is misclassified. See ``common`` for the conventions.
"""

from __future__ import annotations

import torch

from ...core.errors import ConfigError
from .common import (
    Best,
    ClassSubset,
    Classifier,
    Norm,
    ascent_direction,
    check_eps,
    check_loss,
    check_positive_int,
    gradients_on,
    logits_of,
    loss_and_grad,
    margin,
    project,
    prepare_inputs,
    rand,
    randn,
    random_start_point,
)


def _check_norm(name: str, norm: str) -> None:
    if norm not in ("linf", "l2"):
        raise ConfigError(f"{name}.norm", f"must be 'linf' or 'l2', got {norm!r}")


def _margin_at(model: Classifier, x: torch.Tensor, y: torch.Tensor, class_subset: ClassSubset) -> torch.Tensor:
    with torch.no_grad():
        return margin(logits_of(model, x, class_subset), y)


def fgsm(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1,
         class_subset: ClassSubset = None) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015), Linf: ``clamp(x + eps * sign(grad_x CE), 0, 1)``
    (cleverhans' ``fgm``, with the true label). One gradient, no randomness. The clean image
    is returned where the FGSM point has the higher margin (ribench's best-point convention)."""
    eps = check_eps("fgsm", eps)
    x, y = prepare_inputs(model, x, y)
    with gradients_on():
        _, grad, m0 = loss_and_grad(model, x, y, "ce", class_subset)
        x_adv = (x + eps * grad.sign()).clamp(0.0, 1.0)
        best = Best(x, m0)
        best.update(torch.arange(len(x), device=x.device), x_adv, _margin_at(model, x_adv, y, class_subset))
    return best.x


def pgd(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf", steps: int = 20,
        step_size: float | None = None, restarts: int = 1, random_start: bool = True, loss: str = "ce",
        class_subset: ClassSubset = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) on ``loss`` ("ce", "margin" or "dlr"),
    step for step as MadryLab/robustness (``attack_steps.py``, ``attacker.py``) takes it.

    Each restart starts at ``common.random_start_point`` (``random_start=True``; Linf: uniform in
    the cube, Madry et al.'s ``uniform(-eps, eps)``; L2: on the sphere of radius eps) and
    takes ``steps`` steps of ``step_size`` (default ``2.5 * eps / steps``, robustness' rule
    of thumb) along ``common.ascent_direction``, projecting with ``common.project`` after
    each. Restarts attack only the images still classified correctly. An image stops being
    attacked once misclassified; per image the output is the lowest-margin point visited
    (robustness returns the highest-loss iterate, Madry et al.'s challenge code the last).
    """
    _check_norm("pgd", norm)
    eps = check_eps("pgd", eps)
    steps = check_positive_int("pgd.steps", steps)
    restarts = check_positive_int("pgd.restarts", restarts)
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    if not step_size > 0 and eps > 0:
        raise ConfigError("pgd.step_size", f"must be > 0, got {step_size!r}")
    x, y = prepare_inputs(model, x, y)
    with gradients_on():
        with torch.no_grad():
            z = logits_of(model, x, class_subset)
        check_loss("pgd", loss, len(class_subset) if class_subset is not None else z.shape[1])
        best = Best(x, margin(z, y))
        for _ in range(restarts):
            idx = best.still_robust()
            if len(idx) == 0:
                break
            x0, yy = x[idx], y[idx]
            xa = random_start_point(x0, eps, norm, generator) if random_start else x0.clone()
            for _ in range(steps):
                _, grad, m = loss_and_grad(model, xa, yy, loss, class_subset)
                best.update(idx, xa, m)
                keep = m > 0
                if not keep.all():
                    idx, x0, yy, xa, grad = idx[keep], x0[keep], yy[keep], xa[keep], grad[keep]
                    if len(idx) == 0:
                        break
                xa = project(x0, xa + step_size * ascent_direction(grad, norm), eps, norm)
            if len(idx):
                best.update(idx, xa, _margin_at(model, xa, yy, class_subset))
    return best.x


def pgd_linf(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1, steps: int = 20,
             step_size: float | None = None, restarts: int = 1, loss: str = "ce", class_subset: ClassSubset = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD in the Linf ball; see ``pgd``."""
    return pgd(model, x, y, eps=eps, norm="linf", steps=steps, step_size=step_size, restarts=restarts, loss=loss,
               class_subset=class_subset, generator=generator)


def pgd_l2(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps: float = 1.5, steps: int = 20,
           step_size: float | None = None, restarts: int = 1, loss: str = "ce", class_subset: ClassSubset = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD in the L2 ball; see ``pgd``."""
    return pgd(model, x, y, eps=eps, norm="l2", steps=steps, step_size=step_size, restarts=restarts, loss=loss,
               class_subset=class_subset, generator=generator)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (counted from 1) after which APGD checks its step size, as fra31/auto-attack
    (``autopgd_base.py``) places them: the first after ``max(int(0.22 steps), 1)`` steps, each
    later one ``k`` steps after the previous, ``k`` shrinking by ``max(int(0.03 steps), 1)`` at
    every check down to ``max(int(0.06 steps), 1)``. For 50 steps: 11, 21, 30, 38, 45; for 100:
    22, 41, 57, 70, 80, 87, 93, 99 (the paper's ``ceil(p_j * steps)`` agrees at 100 steps only)."""
    k = max(int(0.22 * steps), 1)
    shrink, k_min = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points: list[int] = []
    at = k
    while at <= steps:
        points.append(at)
        k = max(k - shrink, k_min)
        at += k
    return points


def _l2(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm [B, 1, 1, 1], summed the way auto-attack's ``L2_norm`` sums it."""
    return (t ** 2).flatten(1).sum(-1).sqrt().view(-1, *([1] * (t.dim() - 1)))


def _apgd_start(x0: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> torch.Tensor:
    """auto-attack's starting point: Linf ``x0 + eps t / max|t|``, t uniform in [-1, 1)^d (a
    random point of the ball's surface); L2 ``x0 + eps t / ||t||_2``, t standard normal; each
    normaliser + 1e-12, clamped to [0, 1]."""
    if norm == "linf":
        t = 2 * rand(tuple(x0.shape), generator, x0.device) - 1
        scale = t.abs().flatten(1).amax(1).view(-1, *([1] * (t.dim() - 1)))
    else:
        t = randn(tuple(x0.shape), generator, x0.device)
        scale = _l2(t)
    return (x0 + eps * (t / (scale + 1e-12))).clamp(0.0, 1.0)


def _apgd_step(x0: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm, step: torch.Tensor, grad: torch.Tensor,
               x_old: torch.Tensor, a: float) -> torch.Tensor:
    """One APGD update with auto-attack's arithmetic (so runs are comparable bit for bit):
    ``z = P(x + step * dir(grad))``, then ``P(x + a (z - x) + (1 - a)(x - x_old))``.
    Linf: dir = sign, ``P`` clamps to [x0 - eps, x0 + eps] then [0, 1]; L2: dir = g / (||g|| + 1e-12),
    ``P(v) = clamp(x0 + (v - x0) / (||v - x0|| + 1e-12) * min(eps, ||v - x0||), 0, 1)``."""
    if norm == "linf":
        lo, hi = x0 - eps, x0 + eps

        def proj(v: torch.Tensor) -> torch.Tensor:
            return torch.clamp(torch.min(torch.max(v, lo), hi), 0.0, 1.0)

        z = proj(x + step * torch.sign(grad))
    else:
        def proj(v: torch.Tensor) -> torch.Tensor:
            d = v - x0
            n = _l2(d)
            return torch.clamp(x0 + d / (n + 1e-12) * torch.min(eps * torch.ones_like(x0), n), 0.0, 1.0)

        z = proj(x + step * (grad / (_l2(grad) + 1e-12)))
    return proj(x + (z - x) * a + (x - x_old) * (1 - a))


def apgd_ce(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.1, norm: Norm = "linf",
            steps: int = 100, restarts: int = 1, loss: str = "ce", rho: float = 0.75, momentum: float = 0.75,
            class_subset: ClassSubset = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1) as ``APGDAttack.attack_single_run`` of
    fra31/auto-attack computes it, on ``loss`` "ce" (default, APGD-CE) or "dlr" (APGD-DLR).

    Per image: start at ``_apgd_start``; step size ``2 eps``; the first step is a plain
    gradient step, later ones ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``,
    ``z = P(x_k + eta dir(grad))``, ``a = momentum`` (0.75). The highest-loss point is kept
    (strict improvement). At each checkpoint (``apgd_checkpoints``), with ``k`` the steps since
    the previous one, eta is halved and the iterate (and its gradient) reset to the highest-loss
    point when

    1. the loss rose from one step to the next in at most ``rho * k`` of the last ``k`` steps
       (``rho`` is auto-attack's ``thr_decr``; at the first checkpoint the first of these
       compares with a still-empty loss record, 0, exactly as the reference's
       ``check_oscillation`` does), or
    2. eta was not halved at the previous checkpoint (never true at the first) and the highest
       loss has not risen since it.

    The momentum term after a reset is the reference's ``x_best - x_{k-1}``. Each of
    ``restarts`` runs attacks only the images still classified correctly. An image stops being
    attacked once misclassified (its later iterates cannot change whether it was fooled); the
    output is, per image, the lowest-margin point visited (ribench's convention; auto-attack
    returns the last misclassified iterate, or the clean image).
    """
    _check_norm("apgd_ce", norm)
    eps = check_eps("apgd_ce", eps)
    steps = check_positive_int("apgd_ce.steps", steps)
    restarts = check_positive_int("apgd_ce.restarts", restarts)
    for field, value in (("rho", rho), ("momentum", momentum)):
        if not 0 <= value <= 1:
            raise ConfigError(f"apgd_ce.{field}", f"must lie in [0, 1], got {value!r}")
    checks = apgd_checkpoints(steps)
    intervals = dict(zip(checks, [c - p for p, c in zip([0] + checks, checks)]))
    x, y = prepare_inputs(model, x, y)

    def rows(v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (x.dim() - 1)))

    with gradients_on():
        with torch.no_grad():
            z = logits_of(model, x, class_subset)
        check_loss("apgd_ce", loss, len(class_subset) if class_subset is not None else z.shape[1])
        best = Best(x, margin(z, y))
        for _ in range(restarts):
            idx = best.still_robust()
            if len(idx) == 0:
                break
            x0, yy = x[idx], y[idx]
            x_adv = _apgd_start(x0, eps, norm, generator)
            f, g, m = loss_and_grad(model, x_adv, yy, loss, class_subset)
            best.update(idx, x_adv, m)
            n = len(idx)
            s = {  # per-image state; the rows of every entry follow ``idx``
                "idx": idx, "x0": x0, "y": yy, "x": x_adv, "x_old": x_adv.clone(), "grad": g,
                "step": torch.full((n,), 2.0 * eps, device=x.device), "x_best": x_adv.clone(), "g_best": g.clone(),
                "f_best": f.clone(), "f_best_last": f.clone(),
                "reduced_last": torch.ones(n, dtype=torch.bool, device=x.device),
                "f_steps": torch.zeros(n, steps, device=x.device),  # the loss after each step
            }
            for i in range(steps):
                keep = best.margin[s["idx"]] > 0
                if not keep.all():
                    s = {key: v[keep] for key, v in s.items()}
                if len(s["idx"]) == 0:
                    break
                x_new = _apgd_step(s["x0"], s["x"], eps, norm, rows(s["step"]), s["grad"], s["x_old"],
                                   1.0 if i == 0 else momentum)
                s["x_old"] = s["x"]
                f, g, m = loss_and_grad(model, x_new, s["y"], loss, class_subset)
                best.update(s["idx"], x_new, m)
                s["x"], s["grad"] = x_new, g
                s["f_steps"][:, i] = f
                up = f > s["f_best"]
                s["x_best"][up], s["g_best"][up], s["f_best"][up] = x_new[up], g[up], f[up]
                if i + 1 in intervals:
                    k = intervals[i + 1]
                    hist = s["f_steps"]
                    # index -1 wraps to the last (still zero) column, as the reference's does
                    rises = sum((hist[:, i - c] > hist[:, (i - c - 1) % steps]).float() for c in range(k))
                    halve = (rises <= k * rho) | (~s["reduced_last"] & (s["f_best_last"] >= s["f_best"]))
                    s["reduced_last"], s["f_best_last"] = halve, s["f_best"].clone()
                    s["step"] = torch.where(halve, s["step"] / 2.0, s["step"])
                    s["x"] = torch.where(rows(halve), s["x_best"], s["x"])
                    s["grad"] = torch.where(rows(halve), s["g_best"], s["grad"])
    return best.x
