"""Attacks against closed forms on linear models, their ordering on a trained mlp, the
registry entry point, transfer, and the gradient-masking checks.

For a linear model the smallest perturbation that flips a point from class y to class
j is known: margin / ||w_y - w_j||_1 in Linf, margin / ||w_y - w_j||_2 in L2, with
margin = z_y - z_j. The points lie in [0.3, 0.7] and eps stays below 0.3 per pixel, so
the [0, 1] box never binds and the closed forms hold exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ribench.core import InputSpec, derive_seed
from ribench.core.errors import ConfigError, DataError, UnknownNameError
from ribench.evaluate.attacks import (
    ATTACKS,
    adversarial_examples,
    apgd_ce,
    apgd_checkpoints,
    attack_subset,
    fgsm,
    fraction_schedule,
    gradient_masking_checks,
    pgd,
    pgd_l2,
    pgd_linf,
    robust_accuracy,
    sparse_rs,
    square_linf,
    transfer_attack,
)
from ribench.models import create_model
from ribench.models.training import TrainConfig, train_classifier

BAND = 0.01  # relative tolerance around eps for "must flip" / "never flips"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread avoids thread-sync stalls on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Linear(nn.Module):
    """logits = W x + b on flattened pixels; ``pre`` transforms x first (default: none)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, pre=None):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.pre = pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        return x.flatten(1) @ self.weight.T + self.bias


def linear_problem(classes: int = 2, n: int = 300, seed: int = 0, offset: float = 0.3):
    """A linear model on 1x6x6 images, points in [0.3, 0.7], labels = the model's predictions.
    The decision boundaries pass near the centre of the cube (``offset`` moves them away)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, 36, generator=g)
    model = Linear(w, -0.5 * w.sum(1) + offset * torch.randn(classes, generator=g))
    x = 0.3 + 0.4 * torch.rand(n, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def min_distance(model: Linear, x: torch.Tensor, y: torch.Tensor, p: float, classes=None) -> torch.Tensor:
    """Closed-form smallest Lp perturbation [n] that makes some other class (of ``classes``) win."""
    with torch.no_grad():
        z = model(x)
        w = model.weight
        dists = []
        for j in classes if classes is not None else range(w.shape[0]):
            diff = w[y] - w[j]  # [n, d]
            norm = torch.linalg.vector_norm(diff, ord=1 if p == 1 else 2, dim=1)
            d = (z.gather(1, y[:, None]).squeeze(1) - z[:, j]) / norm
            dists.append(torch.where(y == j, torch.full_like(d, float("inf")), d))
        return torch.stack(dists).amin(0)


def flipped(model, x_adv, y, classes=None) -> torch.Tensor:
    with torch.no_grad():
        z = model(x_adv)
        if classes is not None:
            keep = torch.zeros(z.shape[1], dtype=torch.bool)
            keep[list(classes)] = True
            z = z.masked_fill(~keep, float("-inf"))
        return z.argmax(1) != y


def assert_exact(flip: torch.Tensor, dist: torch.Tensor, eps: float, band: float = BAND) -> None:
    must, never = dist < eps * (1 - band), dist > eps * (1 + band)
    assert must.sum() >= 30 and never.sum() >= 30  # both groups are populated: the test can fail
    assert flip[must].all(), f"{int((~flip[must]).sum())} of {int(must.sum())} flippable points not flipped"
    assert not flip[never].any(), f"{int(flip[never].sum())} points flipped beyond eps"


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------ closed forms


@pytest.mark.parametrize("attack", ["fgsm", "pgd_linf", "apgd_ce", "square_linf"])
def test_linf_attacks_flip_exactly_the_points_within_eps(attack):
    model, x, y = linear_problem()
    if attack == "square_linf":
        # Square's window origin int((H - s) u) (auto-attack's random_int) never reaches the last
        # row and column once the side s is below H: the problem gives them no weight
        edge = torch.ones(6, 6)
        edge[-1, :] = 0
        edge[:, -1] = 0
        model = Linear(model.weight.data * edge.flatten(), model.bias.data)
        with torch.no_grad():
            y = model(x).argmax(1)
    dist = min_distance(model, x, y, 1)
    eps = dist.median().item()
    assert eps < 0.3
    run = {
        "fgsm": lambda: fgsm(model, x, y, eps=eps),
        "pgd_linf": lambda: pgd_linf(model, x, y, eps=eps, steps=10, generator=seeded()),
        "apgd_ce": lambda: apgd_ce(model, x, y, eps=eps, steps=10, generator=seeded()),
        "square_linf": lambda: square_linf(model, x, y, eps=eps, queries=300, generator=seeded())[0],
    }[attack]
    # random search is a heuristic: it needs some slack below eps, never above
    assert_exact(flipped(model, run(), y), dist, eps, band=0.1 if attack == "square_linf" else BAND)


@pytest.mark.parametrize("attack", ["pgd_l2", "apgd_ce_l2"])
def test_l2_attacks_flip_exactly_the_points_within_eps(attack):
    model, x, y = linear_problem(seed=1)
    dist = min_distance(model, x, y, 2)
    eps = dist.median().item()
    assert eps < 0.3  # no pixel can leave [0, 1]: the closed form holds
    if attack == "pgd_l2":
        x_adv = pgd_l2(model, x, y, eps=eps, steps=50, generator=seeded())
    else:
        x_adv = apgd_ce(model, x, y, eps=eps, norm="l2", steps=20, generator=seeded())
    assert_exact(flipped(model, x_adv, y), dist, eps, band=0.02)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_multiclass_linear_pgd_never_beyond_eps_and_finds_near_points(loss):
    model, x, y = linear_problem(classes=4, seed=2)
    dist = min_distance(model, x, y, 1)
    eps = dist.median().item()
    x_adv = pgd(model, x, y, eps=eps, norm="linf", steps=20, restarts=3, loss=loss, generator=seeded())
    flip = flipped(model, x_adv, y)
    assert not flip[dist > eps * (1 + BAND)].any()
    near = dist < 0.8 * eps
    assert near.sum() >= 30 and flip[near].all()


def test_class_subset_masks_the_other_classes():
    # the domain covers classes 0 and 1; class 2 is near most points but must be ignored
    g = seeded(3)
    w = torch.randn(3, 36, generator=g)
    model = Linear(w, -0.5 * w.sum(1) + torch.tensor([0.0, 0.0, 0.5]))
    x = 0.3 + 0.4 * torch.rand(400, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = model(x)[:, :2].argmax(1)
    subset = (0, 1)
    dist01 = min_distance(model, x, y, 1, classes=subset)
    eps = dist01.median().item()
    for x_adv in (fgsm(model, x, y, eps=eps, class_subset=subset),
                  pgd_linf(model, x, y, eps=eps, steps=10, class_subset=subset, generator=seeded())):
        assert_exact(flipped(model, x_adv, y, classes=subset), dist01, eps)
    # the same attack without the mask chases class 2 and misses points it could flip
    unmasked = flipped(model, pgd_linf(model, x, y, eps=eps, steps=10, generator=seeded()), y, classes=subset)
    assert not unmasked[dist01 < eps * (1 - BAND)].all()


def test_sparse_rs_changes_at_most_k_pixels_and_matches_the_l0_closed_form():
    # weights of similar size on 12x12 pixels anywhere in [0, 1]: a few pixels flip some points, not others
    g = seeded(4)
    w = torch.where(torch.rand(2, 144, generator=g) < 0.5, -1.0, 1.0) * (1 + 0.5 * torch.rand(2, 144, generator=g))
    model = Linear(w, -0.5 * w.sum(1))
    x = torch.rand(300, 1, 12, 12, generator=g)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    k, budget = 3, 1000  # Sparse-RS' alpha schedule moves one pixel per query here: 400 queries miss some
    w_diff = model.weight[y] - model.weight[1 - y]  # margin = w_diff . x + const
    m = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)
    xf = x.flatten(1)
    # best margin drop from one pixel: set it to 0 (drops w x) or to 1 (drops -w (1 - x))
    gain = torch.maximum(w_diff * xf, -w_diff * (1 - xf))
    reachable = gain.topk(k, dim=1).values.sum(1)
    x_adv, queries = sparse_rs(model, x, y, k=k, queries=budget, generator=seeded())
    assert ((x_adv != x).any(1).flatten(1).sum(1) <= k).all()
    assert set(x_adv[x_adv != x].unique().tolist()) <= {0.0, 1.0}
    flip = flipped(model, x_adv, y)
    must, never = reachable > m * 1.1, reachable < m
    assert must.sum() >= 30 and never.sum() >= 30
    assert not flip[never].any()
    assert flip[must].all(), f"{int((~flip[must]).sum())} of {int(must.sum())} reachable points not flipped"
    assert (queries >= 1).all() and (queries <= budget).all()
    assert (queries[~flip] == budget).all() and queries[flip].float().mean() < budget / 2


def test_apgd_checkpoints_follow_the_reference():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (Croce & Hein 2020, sec. 3.2), times 100
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # auto-attack's integer recursion (first after int(2.2) = 2 steps, then every max(k - 1, 1)),
    # not the paper's ceil(p_j * 10) = 3, 5, 6, ...; test_conformance_attacks transcribes it
    assert apgd_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_square_schedule_halves_at_the_rescaled_iterations():
    assert fraction_schedule(0, 1000, 0.8) == 0.8
    assert fraction_schedule(1, 1000, 0.8) == 0.8  # 10 on the 10,000 scale
    assert fraction_schedule(2, 1000, 0.8) == 0.4
    assert fraction_schedule(999, 1000, 0.8) == 0.8 / 512


# ------------------------------------------------------ a trained small mlp


@pytest.fixture(scope="module")
def trained(tiny):
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, spec=InputSpec(channels=1, size=12, mean=(0.5,), std=(0.5,)),
                         width=32, depth=1)
    train_classifier(model, tiny.pretrain.train, TrainConfig(epochs=3, batch_size=32, lr=3e-3),
                     generator=seeded())
    x = torch.cat([tiny.pretrain.test.images, tiny.pretrain.train.images])
    y = torch.cat([tiny.pretrain.test.labels, tiny.pretrain.train.labels])
    return model, x, y


def test_outputs_stay_in_the_box_and_the_ball(trained):
    model, x, y = trained
    xf = x.float() / 255
    for name, spec in ATTACKS.items():
        if name == "autoattack":
            continue
        kw = {"steps": 5} if "steps" in spec.budget else {"queries": 50} if "queries" in spec.budget else {}
        eps = {"linf": 0.15, "l2": 1.0, "l0": 4}[spec.norm]
        extra = {"generator": seeded()} if spec.fn not in (fgsm,) else {}
        out = spec.fn(model, x, y, **{spec.eps_arg: eps}, **kw, **extra)
        x_adv = out[0] if spec.blackbox else out
        assert x_adv.shape == xf.shape and x_adv.dtype == torch.float32
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        d = (x_adv - xf).flatten(1)
        if spec.norm == "linf":
            assert d.abs().amax() <= eps + 1e-6
        elif spec.norm == "l2":
            assert d.norm(dim=1).amax() <= eps * (1 + 1e-5)
        else:
            assert (x_adv != xf).any(1).flatten(1).sum(1).amax() <= eps
        assert not torch.equal(x_adv, xf), name  # the attack did something


def test_robust_accuracy_orders_attacks_and_falls_with_eps(trained):
    model, x, y = trained
    common = {"subset": None, "seed": 0}
    accs = [robust_accuracy(model, x, y, "pgd_linf", e, steps=10, **common) for e in (0.1, 0.15, 0.2, 0.22, 0.25, 0.3)]
    clean = accs[0].clean_acc
    assert clean > 0.9
    values = [r.robust_acc for r in accs]
    assert all(v <= clean for v in values)
    assert all(b <= a for a, b in zip(values, values[1:])), values
    assert values[0] > values[-1] and values[-1] < 0.5 * clean  # the grid spans the interesting range
    eps = 0.2
    fg = robust_accuracy(model, x, y, "fgsm", eps, **common).robust_acc
    pg = robust_accuracy(model, x, y, "pgd_linf", eps, steps=10, **common).robust_acc
    ap = robust_accuracy(model, x, y, "apgd_ce", eps, steps=10, **common).robust_acc
    assert pg <= fg and ap <= pg, (fg, pg, ap)
    assert 0 < ap < clean  # an intermediate eps: the comparison means something


def test_subset_is_seeded_and_shared_by_models(trained, tiny):
    model, x, y = trained
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.weight.mul_(-1)
    a = robust_accuracy(model, x, y, "fgsm", 0.1, subset=50, seed=3)
    b = robust_accuracy(other, x, y, "fgsm", 0.1, subset=50, seed=3)
    c = robust_accuracy(model, x, y, "fgsm", 0.1, subset=50, seed=4)
    assert a.n == b.n == 50 and torch.equal(a.indices, b.indices)
    assert torch.equal(a.indices, attack_subset(len(y), 50, 3))
    assert not torch.equal(a.indices, c.indices)
    assert len(a.indices.unique()) == 50 and a.indices.max() < len(y)
    # the numbers are those of the chosen images
    with torch.no_grad():
        hits = (model(x[a.indices].float() / 255).argmax(1) == y[a.indices]).float().mean().item()
    assert a.clean_acc == pytest.approx(hits)


def test_same_seed_same_numbers(trained):
    model, x, y = trained
    r1 = robust_accuracy(model, x, y, "pgd_l2", 1.0, steps=5, subset=60, seed=1)
    r2 = robust_accuracy(model, x, y, "pgd_l2", 1.0, steps=5, subset=60, seed=1)
    assert torch.equal(r1.robust, r2.robust) and r1.robust_acc == r2.robust_acc
    xf = x[:40].float() / 255
    a = pgd_linf(model, xf, y[:40], eps=0.1, steps=3, generator=seeded(5))
    b = pgd_linf(model, xf, y[:40], eps=0.1, steps=3, generator=seeded(5))
    c = pgd_linf(model, xf, y[:40], eps=0.1, steps=3, generator=seeded(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    q1 = robust_accuracy(model, x, y, "square_linf", 0.15, queries=30, subset=40, seed=2)
    q2 = robust_accuracy(model, x, y, "square_linf", 0.15, queries=30, subset=40, seed=2)
    assert q1.queries_mean == q2.queries_mean and 1 <= q1.queries_mean <= 30
    assert torch.equal(q1.robust, q2.robust)


def test_robust_accuracy_under_inference_mode_and_restores_train_mode(trained):
    model, x, y = trained
    model.train()
    try:
        with torch.inference_mode():
            r = robust_accuracy(model, x, y, "pgd_linf", 0.1, steps=2, subset=20)
        assert model.training and 0 <= r.robust_acc <= r.clean_acc
    finally:
        model.eval()
    assert r.label == "PGD-Linf" and r.queries_mean is None
    assert set(r.metrics()) == {"robust_acc", "clean_acc", "n", "seconds"}


def test_robust_accuracy_rejects_bad_input(trained):
    model, x, y = trained
    with pytest.raises(UnknownNameError, match="pgd_linf"):
        robust_accuracy(model, x, y, "pgd_lnf")
    with pytest.raises(ConfigError, match="fgsm.steps"):
        robust_accuracy(model, x, y, "fgsm", 0.1, steps=10)
    with pytest.raises(ConfigError, match="eps"):
        robust_accuracy(model, x, y, "pgd_linf", -0.1)
    with pytest.raises(ConfigError, match="pixels"):
        robust_accuracy(model, x, y, "sparse_rs", 2.5)
    with pytest.raises(DataError, match="labels"):
        robust_accuracy(model, x, y[:-1], "fgsm")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        fgsm(model, x.float(), y)  # floats in 0..255
    with pytest.raises(ConfigError, match="options.bogus"):
        robust_accuracy(model, x, y, "pgd_linf", options={"bogus": 1})


# ---------------------------------------------------------------- transfer


def test_transfer_attack_matches_direct_evaluation():
    source, x, y = linear_problem(seed=5)
    other, _, _ = linear_problem(seed=6)
    eps = min_distance(source, x, y, 1).median().item()
    out = transfer_attack(source, {"copy": copy.deepcopy(source), "other": other}, x, y, "pgd_linf", eps, steps=10,
                          seed=0)
    white = robust_accuracy(source, x, y, "pgd_linf", eps, steps=10, subset=None, seed=0)
    assert out["copy"] == pytest.approx(white.robust_acc)
    # reference: the same adversarial images, evaluated by hand on the other model
    gen = torch.Generator().manual_seed(derive_seed("attack", "pgd_linf", 0))
    x_adv = pgd_linf(source, x, y, eps=eps, steps=10, generator=gen)
    index, cached = adversarial_examples(source, x, y, "pgd_linf", eps, steps=10, subset=None, seed=0)
    assert torch.equal(index, torch.arange(len(y))) and torch.equal(cached, x_adv)
    with torch.no_grad():
        ok = (other(x).argmax(1) == y) & (other(x_adv).argmax(1) == y)
    assert out["other"] == pytest.approx(ok.float().mean().item())
    assert out["copy"] < out["other"]  # a white-box attack hurts its own model most


# ---------------------------------------------------------- masking checks


def round_pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 4) / 4


def test_masking_checks_pass_a_linear_model():
    model, x, y = linear_problem(n=120, seed=7)
    eps = min_distance(model, x, y, 1).median().item()
    assert gradient_masking_checks(model, x, y, eps=eps, steps=10, queries=150) == []
    assert gradient_masking_checks(model, x, y, eps=eps * 4, norm="l2", steps=10, queries=150) == []


def test_masking_checks_flag_a_rounding_model():
    model, x, y = linear_problem(n=120, seed=7)
    rounded = Linear(model.weight.data, model.bias.data, pre=round_pixels)
    with torch.no_grad():
        y = rounded(x).argmax(1)
    eps = min_distance(model, x, y, 1).median().item()
    warnings = gradient_masking_checks(rounded, x, y, eps=eps, steps=10, queries=150)
    text = " ".join(warnings)
    assert "all-zero input gradient" in text
    assert "black-box Square attack" in text and "unbounded" in text


@pytest.mark.parametrize("pre, expected", [
    (lambda x: x.detach(), "no gradient"),
    (lambda x: x + torch.sqrt(x - x), "NaN or inf"),
])
def test_masking_checks_flag_cut_or_broken_gradients(pre, expected):
    model, x, y = linear_problem(n=40, seed=8)
    broken = Linear(model.weight.data, model.bias.data, pre=pre)
    assert any(expected in w for w in gradient_masking_checks(broken, x, y, eps=0.05, steps=3, queries=20))


def test_masking_checks_flag_a_random_model():
    model, x, y = linear_problem(n=40, seed=9)
    noisy = Linear(model.weight.data, model.bias.data, pre=lambda x: x + 0.05 * torch.randn_like(x))
    assert any("random" in w for w in gradient_masking_checks(noisy, x, y, eps=0.05, steps=3, queries=20))


# ------------------------------------------------------- optional autoattack


def test_autoattack_through_torchattacks_when_installed():
    pytest.importorskip("torchattacks", reason="torchattacks is optional (pip install --no-deps torchattacks)")
    assert "autoattack" in ATTACKS and ATTACKS["autoattack"].label == "autoattack (torchattacks)"
    model, x, y = linear_problem(classes=4, n=100, seed=10)
    dist = min_distance(model, x, y, 1)
    eps = dist.median().item()
    r = robust_accuracy(model, x, y, "autoattack", eps, subset=None)
    assert r.label == "autoattack (torchattacks)" and r.clean_acc == 1.0
    flip = ~r.robust
    assert not flip[dist > eps * (1 + BAND)].any()
    near = dist < 0.9 * eps
    assert near.sum() >= 20 and flip[near].all()
    with pytest.raises(ConfigError, match="at least 4 classes"):
        robust_accuracy(*linear_problem(n=10), "autoattack", 0.1)
