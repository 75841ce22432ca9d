"""Conformance of the adaptation methods with their authors' released code.

Every expected value here comes from a transcription, written inside this file, of the
formula in the cited source file of the reference repository (plain Python loops or
plain torch on small seeded inputs), or from a closed form; never from ribench.

Covered elsewhere (not repeated here):
- WiSE-FT interpolates every state-dict entry, the head included (wise-ft
  ``src/wise_ft.py: _merge`` without Fishers):
  test_methods_weightspace.py::test_wise_ft_endpoints_reproduce_the_two_models
- the diagonal Fisher, an exact expectation over the model's predictive distribution
  averaged over examples (model_merging ``model_merging/fisher.py``):
  test_methods_weightspace.py::test_diagonal_fisher_matches_per_example_autograd
- the ridge solutions (Gram and kernel forms) against scikit-learn's Ridge:
  test_methods_more.py::test_ridge_matches_sklearn
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import ribench.methods  # noqa: F401  (registration)
from ribench.analysis.weightspace import task_vector
from ribench.core import METHODS
from ribench.methods import merging
from ribench.methods.base import Ingredient
from ribench.methods.weightspace import DaWinModel, atlas_state, task_arithmetic_state
from ribench.models import create_model

from methods_helpers import make_ctx, perturbed, tiny_model


def small_model(seed: int):
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=3, width=16, depth=1).eval()


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


# =========================================================================== DaWin
# naver-ai/dawin, dawin_rft/main_dawin.py (DaWin.build_datastore, argparse defaults:
# expertise negexp_ent_ratio, no --offset-adjustment so coef_bias = 0, bmm_ncluster 0 so
# sample-wise interpolation) with the entropy of dawin_rft/utils.py
# compute_sample_loss_uncertainty_acc: -(softmax(z/T) * log_softmax(z/T)).sum(1).


def reference_entropy(row, temperature=1.0):
    z = [float(v) / temperature for v in row]
    top = max(z)
    lse = top + math.log(sum(math.exp(v - top) for v in z))
    return -sum(math.exp(v - lse) * (v - lse) for v in z)


def reference_dawin_lambdas(logits0, logits1, temperatures=(1.0, 1.0)):
    out = []
    for a, b in zip(logits0.tolist(), logits1.tolist()):
        h0, h1 = reference_entropy(a, temperatures[0]), reference_entropy(b, temperatures[1])
        negexp_zs, negexp_ft = math.exp(-h0), math.exp(-h1)
        out.append(negexp_ft / (negexp_zs + negexp_ft))
    return out


def reference_interpolation(alpha, sd0, sd1):
    """main_dawin.py: interpolation(alpha, w1, w2) = (1 - alpha) w1 + alpha w2, every key."""
    return {k: (1 - alpha) * sd0[k] + alpha * sd1[k] for k in sd0}


def test_dawin_coefficient_closed_form_and_edge_cases():
    from ribench.methods.weightspace import dawin_coefficients

    h0 = torch.tensor([0.2, 0.02, 0.0, 1.3, 0.0, 2.0], dtype=torch.float64)
    h1 = torch.tensor([0.1, 0.01, 0.0, 1.3, 2.0, 0.0], dtype=torch.float64)
    got = dawin_coefficients(h0, h1)
    want = [math.exp(-b) / (math.exp(-a) + math.exp(-b)) for a, b in zip(h0.tolist(), h1.tolist())]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=0)
    assert got[0].item() == pytest.approx(0.52498, abs=1e-5)  # the plain ratio gives 0.667 here
    assert got[1].item() == pytest.approx(0.50250, abs=1e-5)
    assert got[2].item() == 0.5 and got[3].item() == 0.5  # equal entropies, both 0 included
    ratio = dawin_coefficients(h0, h1, "entropy_ratio")
    torch.testing.assert_close(ratio[:4], torch.tensor([2 / 3, 2 / 3, 0.5, 0.5], dtype=torch.float64))


def test_dawin_coefficients_match_the_reference_per_sample(tiny):
    m0, m1 = small_model(0), perturbed(small_model(0), 1, 0.8)
    x = torch.cat([tiny.tasks["t1"].test.images[:10], tiny.pretrain.test.images[:10]])
    got = DaWinModel(copy.deepcopy(m0), copy.deepcopy(m1)).coefficients(x)
    want = reference_dawin_lambdas(outputs(m0, x), outputs(m1, x))
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-7)
    assert len(set(round(w, 4) for w in want)) > 5  # per-sample coefficients, not one value


def test_dawin_temperatures_scale_the_logits_before_the_entropies(tiny):
    m0, m1 = small_model(0), perturbed(small_model(0), 2, 0.8)
    x = tiny.tasks["t1"].test.images[:12]
    got = DaWinModel(copy.deepcopy(m0), copy.deepcopy(m1), temperatures=(0.9576, 0.9733)).coefficients(x)
    want = reference_dawin_lambdas(outputs(m0, x), outputs(m1, x), (0.9576, 0.9733))  # its ViT-B/32 values
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-7)


def test_dawin_predictions_are_the_reference_samplewise_interpolation(tiny):
    m0, m1 = small_model(0), perturbed(small_model(0), 3, 0.8)
    x = tiny.tasks["t2"].test.images[:10]
    model = METHODS.create("dawin").adapt(m0, tiny.tasks["t2"], make_ctx(tiny, "t2", inputs={"ft": m1}))
    got = outputs(model, x)
    lams = reference_dawin_lambdas(outputs(m0, x), outputs(m1, x))
    sd0, sd1 = m0.state_dict(), m1.state_dict()
    for i, lam in enumerate(lams):
        ref = copy.deepcopy(m0)
        ref.load_state_dict(reference_interpolation(lam, sd0, sd1))
        torch.testing.assert_close(got[i], outputs(ref, x[i:i + 1])[0], rtol=1e-5, atol=1e-5)


# =========================================================================== RanPAC
# RanPAC/RanPAC, RanPAC.py (Learner.replace_fc, optimise_ridge_parameter, setup_RP) and
# inc_net.py (CosineLinear.forward with use_RP): W_rand = randn(D, M); H = relu(F @ W_rand);
# ridges 10**arange(-8, 9); fit on the first int(0.8 N) rows, MSE (mean over all entries) on
# the rest, argmin; then Wo = solve(G + ridge I, Q).T over every row; logits = H @ Wo.T.

REFERENCE_RIDGES = [10.0 ** float(e) for e in np.arange(-8, 9)]


def reference_ridge(h, y, lam):
    gram, q = h.T @ h, h.T @ y
    return torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), q).T


def reference_optimise_ridge(h, y):
    n_fit = int(h.shape[0] * 0.8)
    losses = []
    for lam in REFERENCE_RIDGES:
        wo = reference_ridge(h[:n_fit], y[:n_fit], lam)
        losses.append(float(((h[n_fit:] @ wo.T - y[n_fit:]) ** 2).mean()))
    return REFERENCE_RIDGES[int(np.argmin(np.array(losses)))]


def test_ranpac_lambda_grid_is_the_references():
    lambdas = METHODS.create("ranpac").config.lambdas
    np.testing.assert_allclose(np.array(lambdas), 10.0 ** np.arange(-8, 9), rtol=1e-15, atol=0)
    assert METHODS.create("ranpac").config.dim == 10000  # M of the reference's published runs


@pytest.mark.parametrize("dim", [32, 200])  # fewer features than images (Gram form), more (kernel form)
def test_ranpac_matches_the_reference_ridge_selection_and_fit(tiny, dim):
    pretrained = tiny_model("mlp")
    ctx = make_ctx(tiny)
    model = METHODS.create("ranpac", dim=dim).adapt(pretrained, tiny.tasks["t1"], ctx)
    with torch.no_grad():
        feats = pretrained.features(torch.cat([ctx.train.images, ctx.val.images]))  # all of the task's training data
    labels = torch.cat([ctx.train.labels, ctx.val.labels])
    # the projection is a seeded standard Gaussian [D, M], and the data order a seeded shuffle
    g = torch.Generator().manual_seed(ctx.seed)
    w_rand = torch.randn(feats.shape[1], dim, generator=g)
    assert torch.equal(model.head.proj, w_rand)
    order = torch.randperm(len(feats), generator=g)
    h = torch.relu(feats @ w_rand).double()
    y = torch.nn.functional.one_hot(labels, 3).double()
    lam = reference_optimise_ridge(h[order], y[order])
    assert ctx.info["selected_lambda"] == pytest.approx(lam, rel=1e-15)
    wo = reference_ridge(h, y, lam)
    np.testing.assert_allclose(model.head.out.weight.detach().double().numpy(), wo.numpy(), rtol=1e-4, atol=1e-6)
    x = tiny.tasks["t1"].test.images[:9]
    with torch.no_grad():
        ref_logits = torch.relu(pretrained.features(x) @ w_rand).double() @ wo.T
    torch.testing.assert_close(outputs(model, x).double(), ref_logits, rtol=1e-4, atol=1e-5)


def test_ranpac_needs_images_on_both_sides_of_the_split():
    from ribench.core import DataError
    from ribench.methods.training_free import select_ridge

    h, y = torch.rand(4, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    with pytest.raises(DataError, match="ranpac"):
        select_ridge(h, y, [1.0], 0)
    with pytest.raises(DataError, match="ranpac"):
        select_ridge(h, y, [1.0], 4)


# =========================================================================== TIES
# prateeky2806/ties-merging, src/utils/merge_utils.py: topk_values_mask (K = density:
# k = int(d K), kthvalue(d - k) of the magnitudes, keep >= it), resolve_sign("mass") with
# resolve_zero_signs("majority"), disjoint_merge("dis-mean"), over each task vector
# flattened (state_dict_to_vector). Written with loops over a [K, d] float64 array.


def reference_trim(row, density):
    d = len(row)
    k = d - int(d * density)  # "Keep top k elements instead of bottom k elements"
    kth = sorted(abs(v) for v in row)[k - 1]  # kthvalue(k): the k-th smallest, 1-indexed
    return [v if abs(v) >= kth else 0.0 for v in row]


def reference_elect_mean(trimmed):
    n_tasks, d = len(trimmed), len(trimmed[0])
    signs = [float(np.sign(sum(trimmed[t][j] for t in range(n_tasks)))) for j in range(d)]
    majority = float(np.sign(sum(signs)))
    signs = [s if s != 0 else majority for s in signs]
    out = []
    for j in range(d):
        picked = [trimmed[t][j] for t in range(n_tasks)
                  if (trimmed[t][j] > 0 if signs[j] > 0 else trimmed[t][j] < 0)]
        out.append(sum(picked) / max(len(picked), 1))
    return out


def reference_ties(rows, density):
    return reference_elect_mean([reference_trim(list(r), density) for r in rows])


def flat(vector):
    return [float(x) for n in vector for x in vector[n].flatten()]


def unflat(values, like):
    out, i = {}, 0
    for n, t in like.items():
        out[n] = torch.tensor(values[i:i + t.numel()], dtype=torch.float64).view(t.shape)
        i += t.numel()
    return out


def small_integer_vectors(seed, n_tasks=3):
    g = torch.Generator().manual_seed(seed)
    return [{"a": torch.randint(-4, 5, (4, 5), generator=g).double(),  # many equal magnitudes: ties at the threshold
             "b": torch.randint(-4, 5, (7,), generator=g).double() * 0.5,
             "c": torch.randn(3, 2, generator=g).double()} for _ in range(n_tasks)]


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", [3, 4])
def test_ties_matches_the_reference_on_whole_task_vectors(seed, density):
    vectors = small_integer_vectors(seed)
    got = dict(merging.ties(vectors, density))
    want = unflat(reference_ties([flat(v) for v in vectors], density), vectors[0])
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-12)


def test_ties_trim_keeps_k_plus_one_and_every_tie_of_a_single_task():
    # d = 6, density 0.2: k = 1, so everything >= the 2nd largest magnitude (2) stays: three entries
    v = {"w": torch.tensor([0.5, -3.0, 2.0, 2.0, -1.0, 0.0], dtype=torch.float64)}
    got = dict(merging.ties([v], 0.2))["w"]
    torch.testing.assert_close(got, torch.tensor([0.0, -3.0, 2.0, 2.0, 0.0, 0.0], dtype=torch.float64))
    # k = 0 (density below 1/d): the largest magnitude and its ties
    got = dict(merging.ties([{"w": torch.tensor([1.0, -3.0, 3.0, 0.5])}], 0.1))["w"]
    torch.testing.assert_close(got, torch.tensor([0.0, -3.0, 3.0, 0.0]))
    exact = dict(merging.ties([v], 0.2, trim="exact"))["w"]  # the named option: exactly k
    torch.testing.assert_close(exact, torch.tensor([0.0, -3.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))


def test_ties_zero_mass_takes_the_majority_sign():
    # density 0.8 with d = 5: k = 4, kthvalue(1): every entry kept
    t1 = torch.tensor([1.0, 2.0, -1.0, 0.0, 4.0], dtype=torch.float64)
    t2 = torch.tensor([-1.0, 1.0, -2.0, 0.0, 4.0], dtype=torch.float64)
    # masses 0, 3, -3, 0, 8: elected +, +, -, +, + (two + against one -: majority +)
    got = dict(merging.ties([{"w": t1}, {"w": t2}], 0.8))["w"]
    torch.testing.assert_close(got, torch.tensor([1.0, 1.5, -1.5, 0.0, 4.0], dtype=torch.float64))
    assert got.tolist() == reference_ties([t1.tolist(), t2.tolist()], 0.8)


def test_ties_zero_majority_leaves_sign_zero_which_selects_the_negative_entries():
    # every mass is 0, so the majority is 0 too; the reference then keeps entries < 0
    t1 = {"w": torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)}
    t2 = {"w": torch.tensor([-1.0, 1.0, -2.0], dtype=torch.float64)}
    got = dict(merging.ties([t1, t2], 0.7))["w"]
    torch.testing.assert_close(got, torch.tensor([-1.0, -1.0, -2.0], dtype=torch.float64))
    assert got.tolist() == reference_ties([t1["w"].tolist(), t2["w"].tolist()], 0.7)


def test_ties_of_all_zero_task_vectors_is_zero():
    zeros = [{"a": torch.zeros(3, 2, dtype=torch.float64), "b": torch.zeros(4, dtype=torch.float64)} for _ in range(3)]
    for n, t in merging.ties(zeros, 0.2):
        assert torch.equal(t, torch.zeros_like(zeros[0][n]))


def test_ties_per_tensor_scope_trims_each_tensor_as_the_reference_trims_a_vector():
    vectors = small_integer_vectors(5)
    got = dict(merging.ties(vectors, 0.3, scope="tensor"))
    trimmed = [[x for n in v for x in reference_trim([float(e) for e in v[n].flatten()], 0.3)] for v in vectors]
    want = unflat(reference_elect_mean(trimmed), vectors[0])
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-12)


def test_ties_defaults_are_the_references():
    cfg = METHODS.create("ties").config
    assert (cfg.density, cfg.scope, cfg.trim) == (0.2, "global", "kthvalue")  # topk20 over the flattened vector
    # its README's scale linear+0.8+2.51+0.1, each rounded to one decimal
    assert cfg.coefficients == tuple(round(float(c), 1) for c in np.arange(0.8, 2.51, 0.1))


def test_ties_method_applies_the_reference_merge_with_the_selected_coefficient(tiny):
    m0 = small_model(0)
    models = {"t1": perturbed(m0, 1, 0.1), "t2": perturbed(m0, 2, 0.1)}
    inputs = {Ingredient("ft", t, 0): m for t, m in models.items()}
    splits = {t: tiny.tasks[t].train.holdout(0.2, seed=1) for t in models}
    ctx = make_ctx(tiny, inputs=inputs)
    ctx.task_splits = splits
    merged = METHODS.create("ties", coefficients=[1.3]).adapt(m0, tiny.tasks["t1"], ctx)
    sd0 = m0.state_dict()
    rows = [[float(x) for k in sd0 for x in (m.state_dict()[k].double() - sd0[k].double()).flatten()]
            for m in models.values()]
    tau = reference_ties(rows, 0.2)
    i = 0
    for k, v in sd0.items():  # merged_check = flat_ptm + lam * merged_tv
        want = v.double() + 1.3 * torch.tensor(tau[i:i + v.numel()], dtype=torch.float64).view(v.shape)
        torch.testing.assert_close(merged.state_dict()[k].double(), want.float().double(), rtol=0, atol=1e-6)
        i += v.numel()


# =========================================================================== task arithmetic
# mlfoundations/task_vectors, src/task_vectors.py: TaskVector (finetuned - pretrained for every
# entry whose dtype is not int64/uint8), __add__ / sum, apply_to (pretrained + scaling_coef * vector).


def reference_task_arithmetic(sd0, sds, coef):
    vectors = [{k: sd[k] - sd0[k] for k in sd0 if sd0[k].dtype not in (torch.int64, torch.uint8)} for sd in sds]
    total = {k: sum(v[k] for v in vectors) for k in vectors[0]}
    return {k: sd0[k] + coef * total[k] if k in total else sd0[k] for k in sd0}


def test_task_arithmetic_is_the_references_sum_of_task_vectors(tiny):
    m0 = tiny_model("cnn")
    models = [perturbed(m0, s, 0.1) for s in (1, 2, 3)]
    want = reference_task_arithmetic(m0.state_dict(), [m.state_dict() for m in models], 0.35)
    got = task_arithmetic_state(m0, [task_vector(m0, m) for m in models], 0.35)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    # the method with a one-point grid applies that coefficient
    inputs = {Ingredient("ft", t, 0): m for t, m in zip(("t1", "t2", "t3"), models)}
    ctx = make_ctx(tiny, inputs=inputs)
    model = METHODS.create("task_arithmetic", coefficients=[0.35]).adapt(m0, tiny.tasks["t1"], ctx)
    for k in want:
        torch.testing.assert_close(model.state_dict()[k], want[k], rtol=1e-6, atol=1e-7)
    assert METHODS.create("task_arithmetic").config.coefficients == tuple(round(0.05 * i, 10) for i in range(21))


def reference_negation_coefficient(coefs, target_acc, control_acc, threshold):
    """The negation selection of the task-arithmetic paper as released in code (fredzzhang/atlas
    src/utils.py find_optimal_coef, minimize=True with a control threshold; from the tangent
    task-arithmetic code): the lowest target accuracy among coefficients whose control accuracy
    is not below the threshold, the first on ties (strict <, starting from 1)."""
    best_coef, best = None, 1.0
    for c in coefs:
        if control_acc[c] < threshold:
            continue
        if target_acc[c] < best:
            best, best_coef = target_acc[c], c
    return best_coef


def test_task_negation_picks_the_lowest_target_accuracy_that_keeps_the_control(tiny, monkeypatch):
    import ribench.methods.weightspace.merging as ws  # where task arithmetic looks up accuracy

    m0 = small_model(0)
    ft = perturbed(m0, 4, 0.3)
    ctx = make_ctx(tiny, inputs={"ft": ft})
    coefs = (0.0, 0.25, 0.5, 0.75, 1.0)
    # prescribed accuracies by coefficient: target falls then rises, control falls below 95% at 1.0
    target = {0.0: 0.9, 0.25: 0.6, 0.5: 0.4, 0.75: 0.4, 1.0: 0.1}
    control = {0.0: 1.0, 0.25: 0.99, 0.5: 0.97, 0.75: 0.96, 1.0: 0.5}
    sd0, tv = m0.state_dict(), task_vector(m0, ft)

    def coef_of(state):
        if state is None:
            return 0.0
        k = next(iter(tv))
        d = (state[k].double() - sd0[k].double()).flatten()
        return round(float(-d[0] / tv[k].flatten()[0]), 6)

    def fake_accuracy(module, state, split, batch_size=512):
        c = coef_of(state)
        return control[c] if split is ctx.pretrain_sample else target[c]

    monkeypatch.setattr(ws, "accuracy", fake_accuracy)
    METHODS.create("task_arithmetic", mode="negate", coefficients=list(coefs)).adapt(m0, tiny.tasks["t1"], ctx)
    assert ctx.info["coefficient"] == reference_negation_coefficient(coefs, target, control, 0.95 * control[0.0]) == 0.5


# =========================================================================== Fisher merging
# mmatena/model_merging, model_merging/merging.py _merge_with_coeffs with the script defaults
# (scripts/merge_and_evaluate.py: fisher_floor 1e-6, normalize_fishers True): coefficient_i /
# ||F_i||_2 (the norm over every merged variable), diag = max(F_i, floor), theta =
# sum_i c_i diag_i theta_i / sum_i c_i diag_i. A ribench merge has no target model, so the
# floor applies to every model (the reference with favor_target_model False).


def reference_fisher_merge(params, fishers, coeffs, floor=1e-6, normalize=True):
    if normalize:
        norms = [math.sqrt(sum(float((f[k].double() ** 2).sum()) for k in f)) for f in fishers]
        coeffs = [c / n for c, n in zip(coeffs, norms)]
    out = {}
    for k in params[0]:
        lhs = sum(c * torch.clamp(f[k].double(), min=floor) for c, f in zip(coeffs, fishers))
        rhs = sum(c * torch.clamp(f[k].double(), min=floor) * p[k].double() for c, f, p in zip(coeffs, fishers, params))
        out[k] = rhs / lhs
    return out


def test_fisher_average_is_the_references_normalised_floored_merge():
    m0 = small_model(0)
    params = [perturbed(m0, s, 0.2).state_dict() for s in (1, 2, 3)]
    g = torch.Generator().manual_seed(0)
    fishers = []
    for scale in (1.0, 50.0, 1e-3):  # different overall scales: the normalisation matters
        f = {k: scale * torch.rand(v.shape, generator=g) ** 4 for k, v in params[0].items()}
        f[next(iter(f))].view(-1)[:5] = 0.0  # some entries below the floor
        fishers.append(f)
    want = reference_fisher_merge(params, fishers, [1 / 3] * 3)
    got = dict(merging.fisher_average(params, fishers))
    for k in want:
        torch.testing.assert_close(got[k].double(), want[k], rtol=1e-5, atol=1e-7)
    # every Fisher 0 at an entry: the floor leaves the weighted plain average of the coefficients
    zero = [{k: torch.zeros_like(v) for k, v in params[0].items()}] * 3
    got = dict(merging.fisher_average(params, zero, normalize=False))
    for k in params[0]:
        torch.testing.assert_close(got[k], sum(p[k] for p in params) / 3)
    cfg = METHODS.create("fisher_merge").config
    assert (cfg.floor, cfg.normalize, cfg.examples) == (1e-6, True, 4096)


# =========================================================================== model soups
# mlfoundations/model-soups, main.py: uniform soup sum_i theta_i / N; greedy soup: models sorted
# by held-out accuracy with sorted(..., key=itemgetter(1)) then reverse() (so among equal
# accuracies the later ingredient comes first), start from the first, add a model only if the
# held-out accuracy of the running average strictly improves.


def reference_greedy_order(accs):
    pairs = sorted(enumerate(accs), key=lambda p: p[1])
    pairs.reverse()
    return [i for i, _ in pairs]


def test_greedy_soup_orders_equal_accuracies_as_the_reference(tiny):
    m0 = small_model(0)
    a = perturbed(m0, 1, 0.05)
    twin = perturbed(a, 9, 1e-7)  # the same held-out accuracy as a, other weights
    b = perturbed(m0, 2, 3.0)  # far worse
    ingredients = [a, b, twin]
    ctx = make_ctx(tiny)
    ctx.inputs = {Ingredient("ft", "t1", s): m for s, m in enumerate(ingredients)}
    METHODS.create("soup_greedy").adapt(m0, tiny.tasks["t1"], ctx)

    def acc(m):
        return float((outputs(m, ctx.val.images).argmax(1) == ctx.val.labels).float().mean())

    accs = [acc(m) for m in ingredients]
    assert accs[0] == accs[2] and accs[1] < accs[0]
    assert [s for _, _, s, _ in ctx.info["selected"]][0] == reference_greedy_order(accs)[0] == 2


def test_uniform_soup_is_the_references_average(tiny):
    m0 = small_model(0)
    ingredients = [perturbed(m0, s, 0.3) for s in (1, 2, 3, 4)]
    ctx = make_ctx(tiny)
    ctx.inputs = {Ingredient("ft", "t1", s): m for s, m in enumerate(ingredients)}
    soup = METHODS.create("soup_uniform").adapt(m0, tiny.tasks["t1"], ctx)
    want = None
    for j, m in enumerate(ingredients):  # built sequentially, as main.py does
        sd = m.state_dict()
        want = {k: v * (1.0 / 4) for k, v in sd.items()} if j == 0 else {k: v * (1.0 / 4) + want[k] for k, v in sd.items()}
    for k, v in soup.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=1e-6, atol=1e-7)


# =========================================================================== aTLAS
# fredzzhang/atlas, src/composition.py WeightedImageEncoder.forward with blockwise=True: one
# coefficient per (task vector, parameter tensor); new_params = params + sum_t tau_t * coef[t, i];
# buffers are the pretrained model's.


def test_atlas_composition_is_the_references_blockwise_sum():
    m0 = tiny_model("cnn")
    models = [perturbed(m0, s, 0.1) for s in (1, 2)]
    names = [k for k, _ in m0.named_parameters()]
    coef = torch.randn(2, len(names), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    vectors = [task_vector(m0, m) for m in models]
    got = atlas_state(m0, vectors, coef, names)
    params = dict(m0.named_parameters())
    for i, k in enumerate(names):
        dparam = sum(float(coef[t, i]) * (models[t].state_dict()[k].double() - params[k].double()) for t in range(2))
        torch.testing.assert_close(got[k].double(), params[k].double() + dparam, rtol=1e-6, atol=1e-6)
    for k, b in m0.state_dict().items():  # entries that are not parameters stay m0's
        if k not in params:
            assert torch.equal(got[k], b)


# learn_task_addition.py: coef = zeros, AdamW(lr 1e-3, wd 0.1) (src/args.py), 20 epochs, batch 128
# over all datasets (int(128 / n) each), loss = the sum of the datasets' cross-entropies,
# clip_grad_norm_(1.0); after each epoch the mean normalised validation accuracy (top-1 / the
# fine-tuned model's), the best coefficients kept, starting from the zero-shot model's score.


def test_atlas_defaults_are_the_references():
    cfg = METHODS.create("atlas").config
    assert (cfg.init, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.batch_size, cfg.clip) == (0.0, 1e-3, 0.1, 20, 128, 1.0)


def test_atlas_one_epoch_is_the_references_clipped_adamw_step_and_best_epoch_rule(tiny):
    m0 = small_model(0)
    fts = {"t1": perturbed(m0, 1, 0.5), "t2": perturbed(m0, 2, 0.5)}
    splits = {t: tiny.tasks[t].train.holdout(0.2, seed=1) for t in fts}
    ctx = make_ctx(tiny, inputs={Ingredient("ft", t, 0): m for t, m in fts.items()})
    ctx.task_splits = splits
    lr = 0.5
    model = METHODS.create("atlas", epochs=1, batch_size=64, lr=lr).adapt(m0, tiny.tasks["t1"], ctx)  # one full batch
    names = [k for k, _ in m0.named_parameters()]
    params = dict(m0.named_parameters())
    taus = [{k: (fts[t].state_dict()[k] - params[k]).detach() for k in names} for t in fts]
    coef = torch.zeros(2, len(names), requires_grad=True)

    def composed(c):
        return {k: params[k].detach() + sum(taus[t][k] * c[t, i] for t in range(2)) for i, k in enumerate(names)}

    loss = sum(torch.nn.functional.cross_entropy(torch.func.functional_call(m0, composed(coef), (splits[t][1].images,)),
                                                 splits[t][1].labels) for t in fts)
    (grad,) = torch.autograd.grad(loss, [coef])
    grad = grad * min(1.0, 1.0 / (float(grad.norm()) + 1e-6))  # clip_grad_norm_(params, 1.0)
    step = -lr * grad / (grad.abs() + 1e-8)  # AdamW's first step from 0 (decay of 0 is 0)

    def norm_acc(state):
        out = []
        for t, ft in fts.items():
            x, y = splits[t][1].images, splits[t][1].labels
            with torch.no_grad():
                acc = float((torch.func.functional_call(m0, state, (x,)).argmax(1) == y).float().mean())
                ft_acc = float((ft(x).argmax(1) == y).float().mean())
            out.append(acc / ft_acc)
        return sum(out) / len(out)

    zero_shot, stepped = norm_acc(composed(torch.zeros(2, len(names)))), norm_acc(composed(step))
    assert ctx.info["val_norm_acc_by_epoch"] == [pytest.approx(stepped)]
    kept = step if stepped > zero_shot else torch.zeros_like(step)
    assert ctx.info["best_epoch"] == (1 if stepped > zero_shot else 0)
    for k, v in composed(kept).items():
        torch.testing.assert_close(model.state_dict()[k], v.detach(), rtol=1e-5, atol=1e-6)
