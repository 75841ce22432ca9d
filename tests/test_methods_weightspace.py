"""Weight-space methods and merge kernels, each against an independent reference."""

from __future__ import annotations

import copy
import re
import sqlite3

import pytest
import torch

from methods_helpers import perturbed

import ribench.methods  # noqa: F401  (registration)
from ribench.core import METHODS, ConfigError
from ribench.methods import merging
from ribench.methods.base import AdaptContext, Ingredient
from ribench.methods.fisher import diagonal_fisher
from ribench.methods.weightspace import DaWinModel, atlas_state, task_arithmetic_state
from ribench.models import create_model
from ribench.models.checkpoint import load_model, save_model


# --------------------------------------------------------------------------- fixtures
def small_model(seed: int):
    torch.manual_seed(seed)
    return create_model("mlp", num_classes=3, width=16, depth=1)


@pytest.fixture(scope="module")
def pretrained(tiny):
    from ribench.models.pretrain import PretrainConfig, pretrain

    torch.manual_seed(0)
    return pretrain(create_model("mlp", num_classes=3, width=32, depth=1), tiny, "narrow", PretrainConfig(epochs=2), seed=0)


@pytest.fixture(scope="module")
def finetuned(pretrained, tiny):
    """ft on each task (seed 0), the engine's recipe in miniature."""
    out = {}
    for t in ("t1", "t2"):
        train, val = tiny.tasks[t].train.holdout(0.2, seed=1)
        ctx = AdaptContext(train=train, val=val, pretrain_sample=tiny.pretrain.train, seed=0,
                           device=torch.device("cpu"), num_classes=3)
        out[t] = METHODS.create("ft", epochs=3).adapt(pretrained, tiny.tasks[t], ctx)
    return out


def ctx_for(tiny, task="t1", inputs=None, splits=None):
    train, val = tiny.tasks[task].train.holdout(0.2, seed=1)
    return AdaptContext(train=train, val=val, pretrain_sample=tiny.pretrain.train, seed=0, device=torch.device("cpu"),
                        num_classes=3, inputs=inputs or {}, task_splits=splits or {})


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def accuracy(model, split):
    return float((outputs(model, split.images).argmax(1) == split.labels).float().mean())


# --------------------------------------------------------------------------- WiSE-FT
def test_wise_ft_endpoints_reproduce_the_two_models(tiny):
    m0 = small_model(0)
    m1 = perturbed(m0, 1, 0.3)
    x = tiny.tasks["t1"].test.images[:20]
    for alpha, ref in ((0.0, m0), (1.0, m1)):
        got = METHODS.create("wise_ft", alpha=alpha).adapt(m0, tiny.tasks["t1"], ctx_for(tiny, inputs={"ft": m1}))
        torch.testing.assert_close(outputs(got, x), outputs(ref, x), rtol=0, atol=1e-6)
    curve = METHODS.create("wise_ft", alphas=[0, 0.5, 1]).extra_models(m0, m1, {"ft": m1})
    assert list(curve) == ["curve/alpha=0", "curve/alpha=0.5", "curve/alpha=1"]
    torch.testing.assert_close(outputs(curve["curve/alpha=1"], x), outputs(m1, x), rtol=0, atol=1e-6)
    mid = {k: 0.5 * (a + b) for (k, a), b in zip(m0.state_dict().items(), m1.state_dict().values())}
    for k, v in curve["curve/alpha=0.5"].state_dict().items():
        torch.testing.assert_close(v, mid[k])


def test_wise_ft_selects_the_best_alpha_on_validation(tiny, pretrained, finetuned):
    ctx = ctx_for(tiny, "t2", inputs={"ft": finetuned["t2"]})
    METHODS.create("wise_ft").adapt(pretrained, tiny.tasks["t2"], ctx)
    scores = ctx.info["val_acc_by_alpha"]
    best = max(scores.values())
    assert scores[f"{ctx.info['alpha']:g}"] == best
    # the first alpha of the grid reaching the best score (ties go to the model nearer m0)
    assert ctx.info["alpha"] == min(float(a) for a, s in scores.items() if s == best)
    with pytest.raises(ConfigError, match=r"wise_ft.*alphas"):
        METHODS.create("wise_ft", alphas=[0.5, 2.0])


# --------------------------------------------------------------------------- soups
@pytest.mark.parametrize("name", ["soup_uniform", "soup_greedy"])
def test_soup_of_identical_ingredients_is_the_ingredient(name, tiny):
    m0 = small_model(0)
    m1 = perturbed(m0, 1)
    inputs = {Ingredient("ft", "t1", s): copy.deepcopy(m1) for s in range(3)}
    soup = METHODS.create(name).adapt(m0, tiny.tasks["t1"], ctx_for(tiny, inputs=inputs))
    for k, v in soup.state_dict().items():
        assert torch.equal(v, m1.state_dict()[k]), k


def test_greedy_soup_never_lowers_held_out_accuracy(tiny, pretrained, finetuned):
    ctx = ctx_for(tiny, "t2")
    val = ctx.val
    ingredients = [finetuned["t2"], *(perturbed(finetuned["t2"], s, 0.4) for s in range(1, 5))]
    ctx.inputs = {Ingredient("ft", "t2", s): m for s, m in enumerate(ingredients)}
    soup = METHODS.create("soup_greedy").adapt(pretrained, tiny.tasks["t2"], ctx)
    accs = [accuracy(m, val) for m in ingredients]
    assert accuracy(soup, val) >= max(accs)
    # the recipe written out: sort by held-out accuracy (model-soups main.py: ascending, then
    # reversed, so equal accuracies come in reverse order), add when it strictly improves
    order = sorted(range(len(ingredients)), key=lambda i: accs[i])[::-1]
    chosen, best = [order[0]], accs[order[0]]
    for i in order[1:]:
        cand = copy.deepcopy(pretrained)
        cand.load_state_dict({k: sum(ingredients[j].state_dict()[k] for j in chosen + [i]) / (len(chosen) + 1)
                              for k in cand.state_dict()})
        if accuracy(cand, val) > best:
            chosen, best = chosen + [i], accuracy(cand, val)
    assert [s for _, _, s, _ in ctx.info["selected"]] == chosen
    assert accuracy(soup, val) == pytest.approx(best)


# --------------------------------------------------------------------------- TIES kernels
def naive_ties(vectors, density, scope):
    """TIES with ``trim="exact"`` written out entry by entry over plain Python lists (exactly k
    kept, ties in index order; a zero mass takes the majority sign, as the reference)."""
    names = list(vectors[0])
    flat = [[float(x) for n in names for x in v[n].flatten()] for v in vectors]
    sizes = [vectors[0][n].numel() for n in names]
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    trimmed = []
    for f in flat:
        keep = [False] * len(f)
        groups = [range(len(f))] if scope == "global" else [range(bounds[i], bounds[i + 1]) for i in range(len(names))]
        for grp in groups:
            grp = list(grp)
            k = int(density * len(grp))
            ranked = sorted(grp, key=lambda i: (-abs(f[i]), i))  # stable: equal magnitudes by index
            for i in ranked[:k]:
                keep[i] = True
        trimmed.append([x if kp else 0.0 for x, kp in zip(f, keep)])
    signs = []
    for j in range(len(flat[0])):
        total = sum(t[j] for t in trimmed)
        signs.append((total > 0) - (total < 0))
    balance = sum(signs)
    majority = (balance > 0) - (balance < 0)
    merged = []
    for j, sign in enumerate(signs):
        sign = sign if sign != 0 else majority
        agree = [t[j] for t in trimmed if (t[j] > 0 if sign > 0 else t[j] < 0)]
        merged.append(sum(agree) / len(agree) if agree else 0.0)
    out = {}
    for i, n in enumerate(names):
        out[n] = torch.tensor(merged[bounds[i]:bounds[i + 1]], dtype=torch.float64).view(vectors[0][n].shape)
    return out


@pytest.mark.parametrize("scope", ["global", "tensor"])
@pytest.mark.parametrize("density", [0.2, 0.5])
def test_ties_exact_trim_matches_a_naive_loop(scope, density):
    g = torch.Generator().manual_seed(3)
    vectors = []
    for _ in range(3):
        # small integers: many equal magnitudes, so the tie rule matters
        vectors.append({"a": torch.randint(-4, 5, (4, 5), generator=g).double(),
                        "b": torch.randint(-4, 5, (7,), generator=g).double() * 0.5,
                        "c": torch.randn(3, 2, generator=g).double()})
    got = dict(merging.ties(vectors, density, scope, trim="exact"))
    ref = naive_ties(vectors, density, scope)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 7, 50, 123, 200, 240])
def test_streaming_global_topk_equals_topk_of_the_concatenation(k):
    g = torch.Generator().manual_seed(k)
    tensors = [torch.randint(-6, 7, (n,), generator=g).float() * 0.25 for n in (40, 1, 99, 60)]
    tensors.append(torch.randn(40, generator=g))
    cat = torch.cat(tensors)
    trim = merging.Trimmer(merging.global_topk(lambda: iter(tensors), k))
    mask = torch.cat([trim.mask(t) for t in tensors])
    assert int(mask.sum()) == min(k, len(cat))
    # the same values as torch.topk, and among equal magnitudes the first ones
    torch.testing.assert_close(torch.sort(cat.abs()[mask], descending=True).values, torch.topk(cat.abs(), k).values)
    ref = torch.zeros_like(mask)
    ref[torch.sort(cat.abs(), descending=True, stable=True).indices[:k]] = True
    assert torch.equal(mask, ref)


def test_streaming_global_topk_on_wide_magnitude_ranges():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(3000, generator=g) * 10.0 ** e for e in (-8, -2, 0, 3)]
    cat = torch.cat(tensors)
    for k in (1, 999, 6000, 11999):
        trim = merging.Trimmer(merging.global_topk(lambda: iter(tensors), k))
        mask = torch.cat([trim.mask(t) for t in tensors])
        ref = torch.zeros_like(mask)
        ref[torch.topk(cat.abs(), k).indices] = True
        assert torch.equal(mask, ref)


# --------------------------------------------------------------------------- task arithmetic, aTLAS
def test_task_negation_lowers_target_accuracy_and_keeps_the_control(tiny, finetuned):
    # a model that knows the target task t2 (and the pretraining domain), trained on t2 further:
    # negating that task vector should forget t2 and keep the control task
    start = finetuned["t2"]
    more = METHODS.create("ft", epochs=5).adapt(start, tiny.tasks["t2"], ctx_for(tiny, "t2"))
    ctx = ctx_for(tiny, "t2", inputs={"ft": more})
    model = METHODS.create("task_arithmetic", mode="negate", coefficients=[0, 0.5, 1, 2, 3]).adapt(
        start, tiny.tasks["t2"], ctx)
    assert ctx.info["coefficient"] > 0
    target = tiny.tasks["t2"].test
    assert accuracy(model, target) < accuracy(start, target) - 0.2
    assert accuracy(model, ctx.pretrain_sample) >= 0.95 * accuracy(start, ctx.pretrain_sample)
    assert METHODS.create("task_arithmetic", mode="negate").combines is None
    assert METHODS.create("task_arithmetic").combines == "tasks"


def test_atlas_with_unit_coefficients_is_task_arithmetic_with_coefficient_one():
    m0 = small_model(0)
    models = [perturbed(m0, s) for s in (1, 2, 3)]
    from ribench.analysis.weightspace import task_vector

    vectors = [task_vector(m0, m) for m in models]
    names = [k for k, _ in m0.named_parameters()]
    got = atlas_state(m0, vectors, torch.ones(3, len(names), dtype=torch.float64), names)
    ta = task_arithmetic_state(m0, vectors, 1.0)
    for k, v in m0.state_dict().items():
        ref = v.double() + sum(m.state_dict()[k].double() - v.double() for m in models)
        torch.testing.assert_close(got[k].double(), ref)
        torch.testing.assert_close(ta[k].double(), ref.float().double())


def test_atlas_learns_coefficients_on_validation(tiny, pretrained, finetuned):
    splits = {t: tiny.tasks[t].train.holdout(0.2, seed=1) for t in ("t1", "t2")}
    inputs = {Ingredient("ft", t, 0): m for t, m in finetuned.items()}
    ctx = ctx_for(tiny, "t1", inputs=inputs, splits=splits)
    model = METHODS.create("atlas", epochs=3, lr=0.2).adapt(pretrained, tiny.tasks["t1"], ctx)
    n_tensors = len(list(pretrained.parameters()))
    assert ctx.info["coefficients"] == 2 * n_tensors
    assert ctx.info["best_epoch"] >= 1 and ctx.info["mean_coefficient"] != 0  # learned, and better than m0
    norm = sum(accuracy(model, splits[t][1]) / accuracy(finetuned[t], splits[t][1]) for t in splits) / 2
    assert norm == pytest.approx(ctx.info["val_norm_acc"]) == max(ctx.info["val_norm_acc_by_epoch"])
    assert model.state_dict().keys() == pretrained.state_dict().keys()


# --------------------------------------------------------------------------- Fisher merging
def test_fisher_merge_with_equal_fishers_is_the_plain_average():
    m0 = small_model(0)
    models = [perturbed(m0, s) for s in (1, 2, 3)]
    params = [m.state_dict() for m in models]
    g = torch.Generator().manual_seed(0)
    fisher = {k: torch.rand(v.shape, generator=g) for k, v in params[0].items()}
    got = dict(merging.fisher_average(params, [fisher] * 3))
    for k in params[0]:
        torch.testing.assert_close(got[k], sum(p[k] for p in params) / 3)
    # unnormalised (the named option), unequal Fishers pull towards the model with the larger Fisher
    big = {k: 1e6 * torch.ones_like(v) for k, v in fisher.items()}
    got = dict(merging.fisher_average(params, [big, fisher, fisher], normalize=False))
    for k in params[0]:
        torch.testing.assert_close(got[k], params[0][k], rtol=1e-4, atol=1e-4)
    # normalised (the default, the reference's), a Fisher's overall scale does not matter
    scaled = dict(merging.fisher_average(params, [{k: 1e6 * v for k, v in fisher.items()}, fisher, fisher]))
    for k in params[0]:
        torch.testing.assert_close(scaled[k], sum(p[k] for p in params) / 3)


def test_diagonal_fisher_matches_per_example_autograd(tiny):
    model = small_model(0)
    split = tiny.tasks["t1"].train.subset(torch.arange(6))
    got = diagonal_fisher(model, split, examples=6, batch_size=4, generator=torch.Generator().manual_seed(0))
    ref = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(6):
        logp = torch.log_softmax(model(split.images[i:i + 1]), -1)[0]
        for c in range(3):
            grads = torch.autograd.grad(logp[c], list(model.parameters()), retain_graph=True)
            for (k, _), gr in zip(model.named_parameters(), grads):
                ref[k] += logp[c].exp().detach() * gr.pow(2) / 6
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-8)


# --------------------------------------------------------------------------- DaWin
def test_dawin_of_identical_models_is_that_model(tiny, tmp_path):
    m = small_model(0)
    dawin = DaWinModel(copy.deepcopy(m), copy.deepcopy(m))
    x = tiny.tasks["t1"].test.images[:30]
    torch.testing.assert_close(outputs(dawin, x), outputs(m, x), rtol=0, atol=1e-6)
    save_model(dawin, tmp_path / "d.safetensors")
    back = load_model(tmp_path / "d.safetensors")
    assert isinstance(back, DaWinModel)
    torch.testing.assert_close(outputs(back, x), outputs(m, x), rtol=0, atol=1e-6)


def test_dawin_entropy_ratio_option_interpolates_per_sample_by_h0_over_h0_plus_h1(tiny, tmp_path):
    # the named option; the default (the reference's) is in test_conformance_methods.py
    m0, m1 = small_model(0), small_model(1)
    x = tiny.tasks["t2"].test.images[:12]
    model = METHODS.create("dawin", expertise="entropy_ratio").adapt(m0, tiny.tasks["t2"],
                                                                      ctx_for(tiny, "t2", inputs={"ft": m1}))
    got = outputs(model, x)

    def entropy(logits):
        p = torch.softmax(logits.double(), -1)
        return -(p * p.log()).sum(-1)

    h0, h1 = entropy(outputs(m0, x)), entropy(outputs(m1, x))
    for i in range(len(x)):
        lam = float(h0[i] / (h0[i] + h1[i]))
        ref = copy.deepcopy(m0)
        ref.load_state_dict({k: v + lam * (m1.state_dict()[k] - v) for k, v in m0.state_dict().items()})
        torch.testing.assert_close(got[i], outputs(ref, x[i:i + 1])[0], rtol=1e-5, atol=1e-5)
    save_model(model, tmp_path / "d.safetensors")
    torch.testing.assert_close(outputs(load_model(tmp_path / "d.safetensors"), x), got)


# --------------------------------------------------------------------------- engine
def test_engine_runs_weight_space_methods_and_caches_them(tmp_path):
    from ribench.engine import parse_spec, plan, run

    data = {"name": "ws", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
            "methods": [{"name": "ft", "params": {"epochs": 1}}, {"name": "wise_ft", "params": {"alphas": [0, 0.5, 1]}},
                        "soup_uniform", {"name": "ties", "params": {"coefficients": [0.5, 1.0]}}],
            "seeds": [0, 1], "device": "cpu", "pretrain": {"epochs": 2},
            "eval": {"val_fraction": 0.2, "pretrain_sample": 50}}
    data["diagnostics"] = {"enabled": False}  # per-model diagnostics are tested in test_diagnose.py
    spec = parse_spec(data)
    suite_id = {"name": "tiny", "version": "1", "data_seed": 0}
    cells = plan(spec, ["t1", "t2"], suite_id)
    # existing methods keep their keys when weight-space methods join the spec
    ft_only = plan(parse_spec({**data, "methods": data["methods"][:1]}), ["t1", "t2"], suite_id)
    assert {c.key for c in ft_only} <= {c.key for c in cells}
    soup = [c for c in cells if c.kind == "adapt" and c.labels["method"] == "soup_uniform"]
    assert len(soup) == 2 and all(len(c.deps) == 1 + 2 for c in soup)  # m0 + ft of 2 seeds, per task
    merged = [c for c in cells if c.kind == "adapt" and c.labels["method"] == "ties"]
    assert [c.labels["task"] for c in merged] == ["merged", "merged"]  # one per seed

    out = tmp_path / "run"
    res = run(spec, out, quiet=True)
    assert res.ok and res.ran == res.total
    con = sqlite3.connect(out / "results.sqlite")
    rows = {r[:5]: r[5] for r in con.execute("SELECT method, task, seed, eval_set, metric, value FROM metrics")}
    con.close()
    for t in ("t1", "t2"):
        for s in (0, 1):
            for a in ("0", "0.5", "1"):
                assert ("wise_ft", t, s, f"curve/alpha={a}", "id_acc") in rows
                assert ("wise_ft", t, s, f"curve/alpha={a}", "R") in rows
            # the alpha=1 end of the curve is the fine-tuned model
            assert rows[("wise_ft", t, s, "curve/alpha=1", "id_acc")] == pytest.approx(rows[("ft", t, s, t, "accuracy")])
        assert ("soup_uniform", t, None, "*", "id_acc") in rows
    for s in (0, 1):
        norm = []
        for t in ("t1", "t2"):
            want = rows[("ties", "merged", s, t, "accuracy")] / rows[("ft", t, s, t, "accuracy")]
            assert rows[("ties", "merged", s, t, "norm_acc")] == pytest.approx(want)
            norm.append(want)
        assert rows[("ties", "merged", s, "*", "norm_acc")] == pytest.approx(sum(norm) / 2)

    from ribench.report.markdown import write_report

    text = write_report(out).read_text()
    assert "Merged models" in text and "ties" in text
    from ribench.report.html import write_html_report

    html = write_html_report(out, figures=False).read_text()
    row = re.search(r'<table class="sortable" id="merged-table">.*?<tr><td class="label">mlp</td>'
                    r'<td class="label">narrow</td><td class="label">ties</td>(.*?)</tr>', html, re.S)
    assert row, "the HTML report has no merged-models row for ties"
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', row.group(1))]
    mean_norm = sum(rows[("ties", "merged", s, "*", "norm_acc")] for s in (0, 1)) / 2
    assert values[2] == pytest.approx(100 * mean_norm, abs=0.051)  # columns t1, t2, mean normalised (%, 1 decimal)

    again = run(spec, out, quiet=True)
    assert again.ok and again.ran == 0


def test_safetensors_mapping_reads_what_safetensors_wrote(tmp_path):
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    data = {"a": torch.randn(3, 4, generator=g), "b": torch.randint(0, 9, (5,), generator=g),
            "c": torch.randn(2, generator=g).double(), "d": torch.randn(7, generator=g).half()}
    save_file(data, str(tmp_path / "x.safetensors"), metadata={"k": "v"})
    m = merging.SafetensorsMapping(tmp_path / "x.safetensors")
    ref = load_file(str(tmp_path / "x.safetensors"))
    assert sorted(m) == sorted(ref)
    for k, v in ref.items():
        assert m[k].dtype == v.dtype and torch.equal(m[k], v)
