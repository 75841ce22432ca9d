"""Every registered attack against its reference code, transcribed here as plain loops.

References (read, not copied; each transcription below follows the reference's loop
line by line, with its own random draws taken in the reference's order from a CPU
``torch.Generator`` seeded as the reference seeds torch's global generator):

- APGD: fra31/auto-attack, ``autoattack/autopgd_base.py`` (``APGDAttack.attack_single_run``,
  ``check_oscillation``, ``dlr_loss``, ``perturb``), commit a392200.
- Square (Linf): fra31/auto-attack, ``autoattack/square.py`` (``SquareAttack``), commit a392200.
- Sparse-RS (L0): fra31/sparse-rs, ``rs_attacks.py`` (``RSAttack``, norm 'L0'), commit 21d8759.
- PGD: MadryLab/robustness, ``robustness/attack_steps.py`` (``LinfStep``, ``L2Step``) and
  ``attacker.py``, commit a954124; its Linf steps equal Madry et al.'s mnist_challenge
  ``pgd_attack.py`` (commit 3ee3643) up to rounding.
- FGSM: Goodfellow et al. 2015 (cleverhans ``fgm``): ``clip(x + eps * sign(grad CE), 0, 1)``.

ribench returns, per image, the lowest-margin point it visited and stops attacking an image
once it is misclassified (docs/attacks.md, *Best point*): the first visited point with
margin <= 0, else the lowest-margin point visited (the clean image included). Each
reference run below records every point it visits, and ``best_point`` applies that rule,
so the comparison covers the whole trajectory of every image. Other checks of these
attacks (closed forms on linear models, threat models, seeding) are in test_attacks.py:
test_linf_attacks_flip_exactly_the_points_within_eps, test_l2_attacks_flip_exactly_the_points_within_eps,
test_outputs_stay_in_the_box_and_the_ball, test_same_seed_same_numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ribench.core.errors import ConfigError
from ribench.evaluate.attacks import (
    apgd_ce,
    apgd_checkpoints,
    fgsm,
    fraction_schedule,
    pgd_l2,
    pgd_linf,
    sparse_rs,
    square_linf,
)
from ribench.evaluate.attacks.blackbox import sparse_rs_schedule
from ribench.evaluate.attacks.common import dlr


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_mlp(classes: int = 4, side: int = 6, seed: int = 0, pixels: slice | None = None) -> nn.Module:
    """A seeded 2-layer tanh MLP on 1 x side x side images; ``pixels`` (a slice of the
    flattened image) makes it read only those pixels, so other changes tie."""
    torch.manual_seed(seed)
    d = side * side
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))
    with torch.no_grad():
        net[1].weight.mul_(4.0)
        if pixels is not None:
            keep = torch.zeros(d)
            keep[pixels] = 1.0
            net[1].weight.mul_(keep)
    return net.eval()


def images(n: int, side: int = 6, seed: int = 1) -> torch.Tensor:
    """Images in [0.05, 0.95] (never exactly 0 or 1)."""
    return 0.05 + 0.9 * torch.rand(n, 1, side, side, generator=seeded(seed))


def labels_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = []
    for row, label in zip(logits, y):
        others = [row[j] for j in range(len(row)) if j != label]
        out.append(row[label] - max(others))
    return torch.stack(out)


def best_point(x: torch.Tensor, m_clean: torch.Tensor, visits: list[tuple[int, torch.Tensor, float]]) -> torch.Tensor:
    """ribench's output for one image from the reference's visits ``(image, point, margin)``
    in visiting order: the first point of margin <= 0, else the lowest-margin point."""
    out = x.clone()
    best = m_clean.clone()
    for i, point, m in visits:
        if best[i] <= 0:
            continue
        if m < best[i]:
            out[i], best[i] = point, m
    return out


# --------------------------------------------------------------------- APGD


def reference_checkpoints(n_iter: int) -> list[int]:
    """The iterations (i + 1) at which ``attack_single_run`` checks its step size."""
    n_iter_2, n_iter_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    k, counter3, out = n_iter_2, 0, []
    for i in range(n_iter):
        counter3 += 1
        if counter3 == k:
            out.append(i + 1)
            k = max(k - size_decr, n_iter_min)
            counter3 = 0
    return out


@pytest.mark.parametrize("steps", [50, 100])
def test_apgd_checkpoints_match_the_reference(steps):
    assert apgd_checkpoints(steps) == reference_checkpoints(steps)
    assert apgd_checkpoints(50) == [11, 21, 30, 38, 45]  # not the paper's ceil(p_j * 50) = 11, 21, 29, 35, ...


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 33, 250])
def test_apgd_checkpoints_match_the_reference_at_odd_budgets(steps):
    assert apgd_checkpoints(steps) == reference_checkpoints(steps)


def reference_dlr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x_sorted, ind_sorted = x.sort(dim=1)
    ind = (ind_sorted[:, -1] == y).float()
    u = torch.arange(x.shape[0])
    return -(x[u, y] - x_sorted[:, -2] * ind - x_sorted[:, -1] * (1. - ind)) / (x_sorted[:, -1] - x_sorted[:, -3] + 1e-12)


def test_dlr_by_hand():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 1.0, 0.0]])
    y = torch.tensor([0, 0])
    # row 0: y on top: -(3 - 1) / (3 - 0); row 1: -(0.5 - 2) / (2 - 0.5)
    expected = torch.tensor([-(3 - 1) / (3 - 0 + 1e-12), -(0.5 - 2) / (2 - 0.5 + 1e-12)])
    assert torch.allclose(dlr(z, y), expected)
    g = seeded(2)
    z = torch.randn(50, 6, generator=g)
    y = torch.randint(0, 6, (50,), generator=g)
    assert torch.equal(dlr(z, y), reference_dlr(z, y))


def test_dlr_needs_three_classes():
    model = tiny_mlp(classes=4)
    x = images(4)
    with pytest.raises(ConfigError, match="at least 3 classes"):
        apgd_ce(model, x, labels_of(model, x), eps=0.05, steps=5, loss="dlr", class_subset=(0, 1))


def reference_apgd(model, x, y, *, eps, n_iter, norm, loss, n_restarts, g, rho=0.75):
    """``APGDAttack.perturb`` (best_loss=False) with ``attack_single_run`` for Linf / L2,
    transcribed; returns (clean margins, the visits of every image in order)."""
    criterion = (lambda z, t: F.cross_entropy(z, t, reduction="none")) if loss == "ce" else reference_dlr
    ndims = x.dim() - 1

    def normalize(t):
        if norm == "linf":
            n = t.abs().view(t.shape[0], -1).max(1)[0]
        else:
            n = (t ** 2).view(t.shape[0], -1).sum(-1).sqrt()
        return t / (n.view(-1, *([1] * ndims)) + 1e-12)

    def l2_norm(t):
        return (t ** 2).view(t.shape[0], -1).sum(-1).sqrt().view(-1, *([1] * ndims))

    def loss_grad(xa, yy):
        xa = xa.clone().requires_grad_()
        logits = model(xa)
        loss_indiv = criterion(logits, yy)
        grad = torch.autograd.grad(loss_indiv.sum(), [xa])[0].detach()
        return logits.detach(), loss_indiv.detach(), grad

    def single_run(xs, ys, who, visits):
        n_iter_2, n_iter_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        if norm == "linf":
            t = 2 * torch.rand(xs.shape, generator=g) - 1
        else:
            t = torch.randn(xs.shape, generator=g)
        x_adv = (xs + eps * torch.ones_like(xs) * normalize(t)).clamp(0., 1.)
        x_best = x_adv.clone()
        loss_steps = torch.zeros([n_iter, xs.shape[0]])
        logits, loss_indiv, grad = loss_grad(x_adv, ys)
        fooled = torch.zeros(len(ys), dtype=torch.bool)

        def visit(point, logits):
            m = margins(logits, ys)
            for r in range(len(ys)):
                if not fooled[r]:
                    visits.append((int(who[r]), point[r].clone(), float(m[r])))
            fooled.logical_or_(m <= 0)

        visit(x_adv, logits)
        grad_best = grad.clone()
        loss_best = loss_indiv.clone()
        step_size = 2. * eps * torch.ones([xs.shape[0], *([1] * ndims)])
        x_adv_old = x_adv.clone()
        k = n_iter_2 + 0
        counter3 = 0
        loss_best_last_check = loss_best.clone()
        reduced_last_check = torch.ones_like(loss_best)
        for i in range(n_iter):
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            if norm == "linf":
                x_adv_1 = x_adv + step_size * torch.sign(grad)
                x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, xs - eps), xs + eps), 0.0, 1.0)
                x_adv_1 = torch.clamp(torch.min(torch.max(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), xs - eps),
                                                xs + eps), 0.0, 1.0)
            else:
                x_adv_1 = x_adv + step_size * normalize(grad)
                x_adv_1 = torch.clamp(xs + normalize(x_adv_1 - xs) * torch.min(eps * torch.ones_like(xs),
                                                                                l2_norm(x_adv_1 - xs)), 0.0, 1.0)
                x_adv_1 = x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a)
                x_adv_1 = torch.clamp(xs + normalize(x_adv_1 - xs) * torch.min(eps * torch.ones_like(xs),
                                                                                l2_norm(x_adv_1 - xs)), 0.0, 1.0)
            x_adv = x_adv_1 + 0.
            logits, loss_indiv, grad = loss_grad(x_adv, ys)
            visit(x_adv, logits)
            y1 = loss_indiv.clone()
            loss_steps[i] = y1 + 0
            ind = (y1 > loss_best).nonzero().squeeze()
            x_best[ind] = x_adv[ind].clone()
            grad_best[ind] = grad[ind].clone()
            loss_best[ind] = y1[ind] + 0
            counter3 += 1
            if counter3 == k:
                t = torch.zeros(loss_steps.shape[1])
                for counter5 in range(k):
                    t += (loss_steps[i - counter5] > loss_steps[i - counter5 - 1]).float()
                fl_oscillation = (t <= k * rho * torch.ones_like(t)).float()
                fl_reduce_no_impr = (1. - reduced_last_check) * (loss_best_last_check >= loss_best).float()
                fl_oscillation = torch.max(fl_oscillation, fl_reduce_no_impr)
                reduced_last_check = fl_oscillation.clone()
                loss_best_last_check = loss_best.clone()
                if fl_oscillation.sum() > 0:
                    ind_fl_osc = (fl_oscillation > 0).nonzero().squeeze()
                    step_size[ind_fl_osc] /= 2.0
                    x_adv[ind_fl_osc] = x_best[ind_fl_osc].clone()
                    grad[ind_fl_osc] = grad_best[ind_fl_osc].clone()
                k = max(k - size_decr, n_iter_min)
                counter3 = 0
        return fooled

    with torch.no_grad():
        logits = model(x)
    acc = logits.max(1)[1] == y
    visits: list = []
    for _ in range(n_restarts):
        ind_to_fool = acc.nonzero().flatten()
        if ind_to_fool.numel() == 0:
            break
        fooled = single_run(x[ind_to_fool].clone(), y[ind_to_fool].clone(), ind_to_fool, visits)
        acc[ind_to_fool[fooled]] = False
    return margins(logits, y), visits


@pytest.mark.parametrize("norm, eps, loss, steps, restarts", [
    ("linf", 0.04, "ce", 50, 1),
    ("linf", 0.04, "dlr", 50, 2),
    ("l2", 0.25, "ce", 30, 2),
])
def test_apgd_follows_the_reference_loop(norm, eps, loss, steps, restarts):
    model = tiny_mlp()
    x = images(48)
    y = labels_of(model, x)
    m_clean, visits = reference_apgd(model, x, y, eps=eps, n_iter=steps, norm=norm, loss=loss, n_restarts=restarts,
                                     g=seeded(7))
    expected = best_point(x, m_clean, visits)
    out = apgd_ce(model, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, loss=loss, generator=seeded(7))
    fooled = labels_of(model, expected) != y
    assert 0 < int(fooled.sum()) < len(y) - 5  # some images survive all steps: their whole trajectory counts
    assert torch.equal(out, expected), (out - expected).abs().max()
    assert torch.equal(labels_of(model, out) != y, fooled)


# ------------------------------------------------------------------- Square


def reference_p_selection(it: int, n_queries: int, p_init: float) -> float:
    it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 8
    if 500 < it <= 1000:
        return p_init / 16
    if 1000 < it <= 2000:
        return p_init / 32
    if 2000 < it <= 4000:
        return p_init / 64
    if 4000 < it <= 6000:
        return p_init / 128
    if 6000 < it <= 8000:
        return p_init / 256
    if 8000 < it:
        return p_init / 512
    return p_init


def test_square_p_selection_matches_the_reference():
    for n in (1, 7, 99, 1000, 4999):
        for it in range(n):
            assert fraction_schedule(it, n, 0.8) == reference_p_selection(it, n, 0.8), (it, n)


def reference_square(model, x, y, *, eps, n_queries, p_init, g):
    """``SquareAttack.attack_single_run`` (Linf, margin loss) transcribed; returns
    (x_best, margin_min, n_queries) of the images attacked."""
    def random_choice(shape):
        return torch.sign(2 * torch.rand(shape, generator=g) - 1)

    def random_int(low, high):
        return (low + (high - low) * torch.rand([1], generator=g)).long()

    def margin_of(xx, yy):
        with torch.no_grad():
            logits = model(xx)
        u = torch.arange(xx.shape[0])
        y_corr = logits[u, yy].clone()
        logits[u, yy] = -float("inf")
        return y_corr - logits.max(dim=-1)[0]

    c, h, w = x.shape[1:]
    n_features = c * h * w
    x_best = torch.clamp(x + eps * random_choice([x.shape[0], c, 1, w]), 0., 1.)
    margin_min = margin_of(x_best, y)
    loss_min = margin_min.clone()
    queries = torch.ones(x.shape[0])
    for i_iter in range(n_queries):
        idx_to_fool = (margin_min > 0.0).nonzero().flatten()
        if idx_to_fool.numel() == 0:
            break
        x_curr, x_best_curr, y_curr = x[idx_to_fool], x_best[idx_to_fool], y[idx_to_fool]
        margin_min_curr, loss_min_curr = margin_min[idx_to_fool], loss_min[idx_to_fool]
        p = reference_p_selection(i_iter, n_queries, p_init)
        s = max(int(round(math.sqrt(p * n_features / c))), 1)
        s = min(s, min(h, w))
        vh = random_int(0, h - s)
        vw = random_int(0, w - s)
        new_deltas = torch.zeros([c, h, w])
        new_deltas[:, vh:vh + s, vw:vw + s] = 2. * eps * random_choice([c, 1, 1])
        x_new = x_best_curr + new_deltas
        x_new = torch.min(torch.max(x_new, x_curr - eps), x_curr + eps)
        x_new = torch.clamp(x_new, 0., 1.)
        margin = margin_of(x_new, y_curr)
        loss = margin
        idx_improved = (loss < loss_min_curr).float()
        loss_min[idx_to_fool] = idx_improved * loss + (1. - idx_improved) * loss_min_curr
        idx_miscl = (margin <= 0.).float()
        idx_improved = torch.max(idx_improved, idx_miscl)
        margin_min[idx_to_fool] = idx_improved * margin + (1. - idx_improved) * margin_min_curr
        idx_improved = idx_improved.reshape([-1, *[1] * len(x.shape[:-1])])
        x_best[idx_to_fool] = idx_improved * x_new + (1. - idx_improved) * x_best_curr
        queries[idx_to_fool] += 1.
    return x_best, margin_min, queries


@pytest.mark.parametrize("pixels", [None, slice(0, 8)])
def test_square_follows_the_reference_loop(pixels):
    # pixels=slice(0, 8): the model reads only the first 8 pixels, so most candidates tie
    model = tiny_mlp(pixels=pixels, seed=3)
    x = images(40, seed=4)
    y = labels_of(model, x)
    eps, budget = 0.05, 120
    with torch.no_grad():
        m_clean = margins(model(x), y)
    x_best, m_min, q = reference_square(model, x, y, eps=eps, n_queries=budget - 1, p_init=0.8, g=seeded(5))
    expected = torch.where((m_min < m_clean).view(-1, 1, 1, 1), x_best, x)
    out, used = square_linf(model, x, y, eps=eps, queries=budget, generator=seeded(5))
    fooled = m_min <= 0
    assert 0 < int(fooled.sum()) < len(y)
    assert torch.equal(out, expected)
    assert torch.equal(used, q.long())


def test_square_keeps_its_point_on_ties():
    # a model that reads no pixel: every candidate ties, none is accepted, the output is clean
    model = tiny_mlp(pixels=slice(0, 0))
    x = images(10)
    y = labels_of(model, x)
    out, used = square_linf(model, x, y, eps=0.1, queries=30, generator=seeded(0))
    assert torch.equal(out, x) and (used == 30).all()


# ---------------------------------------------------------------- Sparse-RS


def reference_rs_p_selection(it: int, n_queries: int, p_init: float) -> float:
    it = int(it / n_queries * 10000)
    if 0 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 5
    if 500 < it <= 1000:
        return p_init / 6
    if 1000 < it <= 2000:
        return p_init / 8
    if 2000 < it <= 4000:
        return p_init / 10
    if 4000 < it <= 6000:
        return p_init / 12
    if 6000 < it <= 8000:
        return p_init / 15
    if 8000 < it:
        return p_init / 20
    return p_init


def test_sparse_rs_alpha_schedule_matches_the_reference():
    for n in (2, 9, 100, 1000, 10000):
        for it in range(1, n):
            assert sparse_rs_schedule(it, n, 0.3) == reference_rs_p_selection(it, n, 0.3), (it, n)


def reference_sparse_rs(model, x, y, *, eps, n_queries, p_init, g):
    """``RSAttack.attack_single_run`` (L0, margin loss) transcribed."""
    def random_choice(shape):
        return torch.sign(2 * torch.rand(shape, generator=g) - 1)

    def margin_of(xx, yy):
        with torch.no_grad():
            logits = model(xx)
        u = torch.arange(xx.shape[0])
        y_corr = logits[u, yy].clone()
        logits[u, yy] = -float("inf")
        return y_corr - logits.max(dim=-1)[0]

    c, h, w = x.shape[1:]
    x_best = x.clone()
    n_pixels = h * w
    b_all, be_all = torch.zeros([x.shape[0], eps]).long(), torch.zeros([x.shape[0], n_pixels - eps]).long()
    for img in range(x.shape[0]):
        ind_all = torch.randperm(n_pixels, generator=g)
        ind_p, ind_np = ind_all[:eps], ind_all[eps:]
        x_best[img, :, ind_p // w, ind_p % w] = random_choice([c, eps]).clamp(0., 1.)
        b_all[img], be_all[img] = ind_p.clone(), ind_np.clone()
    margin_min = margin_of(x_best, y)
    loss_min = margin_min.clone()
    queries = torch.ones(x.shape[0])
    for it in range(1, n_queries):
        idx_to_fool = (margin_min > 0.).nonzero().flatten()
        if idx_to_fool.numel() == 0:
            break
        x_curr, x_best_curr, y_curr = x[idx_to_fool], x_best[idx_to_fool], y[idx_to_fool]
        loss_min_curr = loss_min[idx_to_fool]
        b_curr, be_curr = b_all[idx_to_fool], be_all[idx_to_fool]
        x_new = x_best_curr.clone()
        eps_it = max(int(reference_rs_p_selection(it, n_queries, p_init) * eps), 1)
        ind_p = torch.randperm(eps, generator=g)[:eps_it]
        ind_np = torch.randperm(n_pixels - eps, generator=g)[:eps_it]
        for img in range(x_new.shape[0]):
            p_set, np_set = b_curr[img, ind_p], be_curr[img, ind_np]
            x_new[img, :, p_set // w, p_set % w] = x_curr[img, :, p_set // w, p_set % w].clone()
            if eps_it > 1:
                x_new[img, :, np_set // w, np_set % w] = random_choice([c, eps_it]).clamp(0., 1.)
            else:
                old_clr = x_new[img, :, np_set // w, np_set % w].clone()
                new_clr = old_clr.clone()
                while (new_clr == old_clr).all().item():
                    new_clr = random_choice([c, 1]).clone().clamp(0., 1.)
                x_new[img, :, np_set // w, np_set % w] = new_clr.clone()
        margin = margin_of(x_new, y_curr)
        loss = margin
        queries[idx_to_fool] += 1
        idx_improved = (loss < loss_min_curr).float()
        idx_to_update = (idx_improved > 0.).nonzero().flatten()
        loss_min[idx_to_fool[idx_to_update]] = loss[idx_to_update]
        idx_miscl = (margin < -1e-6).float()
        idx_improved = torch.max(idx_improved, idx_miscl)
        if idx_improved.sum().item() > 0.:
            idx_improved = (idx_improved.view(-1) > 0).nonzero().flatten()
            margin_min[idx_to_fool[idx_improved]] = margin[idx_improved].clone()
            x_best[idx_to_fool[idx_improved]] = x_new[idx_improved].clone()
            t = b_curr[idx_improved].clone()
            te = be_curr[idx_improved].clone()
            t[:, ind_p] = be_curr[idx_improved][:, ind_np] + 0
            te[:, ind_np] = b_curr[idx_improved][:, ind_p] + 0
            b_all[idx_to_fool[idx_improved]] = t.clone()
            be_all[idx_to_fool[idx_improved]] = te.clone()
    return x_best, margin_min, queries


@pytest.mark.parametrize("k, p_init, background", [
    (3, 0.3, False), (12, 0.8, False),  # 12 px at 0.8: moves of 4, 2 and 1 pixels
    (3, 0.3, True),  # black background (exact 0s, as MNIST's): single-pixel colours get redrawn
])
def test_sparse_rs_follows_the_reference_loop(k, p_init, background):
    model = tiny_mlp(seed=5, side=16)
    x = images(30, side=16, seed=6)
    if background:
        x = torch.where(x < 0.6, torch.zeros_like(x), x)
    y = labels_of(model, x)
    budget = 60
    with torch.no_grad():
        m_clean = margins(model(x), y)
    x_best, m_min, q = reference_sparse_rs(model, x, y, eps=k, n_queries=budget, p_init=p_init, g=seeded(8))
    expected = torch.where((m_min < m_clean).view(-1, 1, 1, 1), x_best, x)
    out, used = sparse_rs(model, x, y, k=k, queries=budget, p_init=p_init, generator=seeded(8))
    assert 0 < int((m_min <= 0).sum()) < len(y)
    assert torch.equal(out, expected)
    assert torch.equal(used, q.long())


# ---------------------------------------------------------------- FGSM, PGD


def test_fgsm_matches_the_closed_form():
    model = tiny_mlp()
    x = images(60)
    y = labels_of(model, x)
    eps = 0.06
    xr = x.clone().requires_grad_()
    grad = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), [xr])[0]
    step = torch.clamp(x + eps * torch.sign(grad), 0, 1)
    with torch.no_grad():
        m_clean, m_step = margins(model(x), y), margins(model(step), y)
    expected = torch.where((m_step < m_clean).view(-1, 1, 1, 1), step, x)
    assert 0 < int((m_step <= 0).sum()) < len(y)
    assert torch.equal(fgsm(model, x, y, eps=eps), expected)


def reference_pgd(model, x, y, *, eps, steps, step_size, norm, g):
    """MadryLab/robustness: ``random_perturb``, then ``steps`` times ``step`` and ``project``
    (cross-entropy, ``ch.mean(losses)`` differentiated); records every point visited."""
    ndims = x.dim() - 1
    if norm == "linf":
        xa = torch.clamp(x + 2 * (torch.rand(x.shape, generator=g) - 0.5) * eps, 0, 1)
    else:
        rp = torch.randn(x.shape, generator=g)
        rp_norm = rp.view(rp.shape[0], -1).norm(dim=1).view(-1, *([1] * ndims))
        xa = torch.clamp(x + eps * rp / (rp_norm + 1e-10), 0, 1)
    visits = []
    fooled = torch.zeros(len(y), dtype=torch.bool)

    def visit(point):
        with torch.no_grad():
            m = margins(model(point), y)
        for r in range(len(y)):
            if not fooled[r]:
                visits.append((r, point[r].clone(), float(m[r])))
        fooled.logical_or_(m <= 0)

    for _ in range(steps):
        xa = xa.clone().detach().requires_grad_(True)
        losses = F.cross_entropy(model(xa), y, reduction="none")
        grad, = torch.autograd.grad(torch.mean(losses), [xa])
        with torch.no_grad():
            visit(xa.detach())
            if norm == "linf":
                xa = xa + torch.sign(grad) * step_size
                diff = torch.clamp(xa - x, -eps, eps)
                xa = torch.clamp(diff + x, 0, 1)
            else:
                g_norm = torch.norm(grad.view(grad.shape[0], -1), dim=1).view(-1, *([1] * ndims))
                xa = xa + grad / (g_norm + 1e-10) * step_size
                diff = (xa - x).renorm(p=2, dim=0, maxnorm=eps)
                xa = torch.clamp(x + diff, 0, 1)
    visit(xa.detach())
    return visits


@pytest.mark.parametrize("norm, eps", [("linf", 0.04), ("l2", 0.25)])
def test_pgd_follows_the_reference_loop(norm, eps):
    model = tiny_mlp(seed=1)
    x = images(48, seed=2)
    y = labels_of(model, x)
    steps = 15
    step_size = 2.5 * eps / steps
    with torch.no_grad():
        m_clean = margins(model(x), y)
    expected = best_point(x, m_clean, reference_pgd(model, x, y, eps=eps, steps=steps, step_size=step_size, norm=norm,
                                                    g=seeded(3)))
    attack = pgd_linf if norm == "linf" else pgd_l2
    out = attack(model, x, y, eps=eps, steps=steps, generator=seeded(3))  # default step size 2.5 eps / steps
    fooled = labels_of(model, expected) != y
    assert 0 < int(fooled.sum()) < len(y) - 5
    if norm == "linf":  # sign(grad) does not see the reference's 1/B (batch mean)
        assert torch.equal(out, expected)
    else:  # g / (||g|| + 1e-10) does, by a rounding: 1.2e-7 measured
        assert torch.allclose(out, expected, atol=1e-6, rtol=0), (out - expected).abs().max()
    assert torch.equal(labels_of(model, out) != y, fooled)
