"""Visual prompting, NCM, RanPAC, the head policy, and save/load of every new method's model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import ribench.methods  # noqa: F401  (registration)
from ribench.core import METHODS, ConfigError
from ribench.methods.training_free import ridge_solutions
from ribench.models.checkpoint import load_model, save_model

from methods_helpers import make_ctx, run_method, tiny_model

NEW_METHODS = ["lora", "dora", "randlora", "vera", "bone", "ln_tuning", "bitfit", "head_only",
               "ewc", "lwf", "l2sp", "l2_init", "prompt", "ncm", "ranpac"]
FAST = {"epochs": 1}
SMALL = {"bone": {"r": 8}, "vera": {"r": 8}, "randlora": {"r": 4}, "ranpac": {"dim": 64}, "ncm": {}}


def test_every_new_method_is_registered():
    assert set(NEW_METHODS) <= set(METHODS.names())


@pytest.mark.parametrize("name", NEW_METHODS)
def test_adapt_then_save_and_load_gives_identical_outputs(name, tiny, tmp_path):
    pretrained = tiny_model("cnn")
    params = SMALL.get(name, {}) if name in ("ncm", "ranpac") else {**FAST, **SMALL.get(name, {})}
    model, ctx = run_method(name, pretrained, tiny, **params)
    assert ctx.info["trainable_params"] > 0
    assert "head_policy" in ctx.info
    path = save_model(model, tmp_path / f"{name}.safetensors")
    loaded = load_model(path)
    assert type(loaded) is type(model)
    x = tiny.tasks["t2"].test.images[:7]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert json.dumps(ctx.info, default=str)  # the engine stores it as JSON


def test_prompt_keeps_the_backbone_and_learns_only_the_frame(tiny):
    pretrained = tiny_model("vit")
    model, ctx = run_method("prompt", pretrained, tiny, epochs=2, pad=3, lr=0.05)
    ref = pretrained.state_dict()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert torch.equal(model.head.weight, pretrained.head.weight)  # default head policy: masked (frozen)
    assert ctx.info["trainable_params"] == 3 * (28 * 28 - 22 * 22)
    prompt = model.prompt()
    assert prompt.shape == (1, 3, 28, 28)
    assert torch.count_nonzero(prompt[:, :, 3:-3, 3:-3]) == 0 and torch.count_nonzero(prompt[:, :, :3]) > 0
    # the prompted model computes exactly embed(preprocess(x) + prompt) of the pretrained backbone
    x = tiny.tasks["t1"].test.images[:4]
    with torch.no_grad():
        ref_logits = pretrained.head(pretrained.embed(pretrained.preprocess(x) + prompt))
        torch.testing.assert_close(model(x), ref_logits)


def test_prompt_pad_must_fit_the_input(tiny):
    with pytest.raises(ConfigError, match=r"methods\.prompt\.params\.pad"):
        run_method("prompt", tiny_model("mlp"), tiny, pad=14)


def test_ncm_matches_a_direct_computation(tiny):
    pretrained = tiny_model("cnn")
    ctx = make_ctx(tiny)
    x = tiny.tasks["t1"].test.images
    with torch.no_grad():
        ftr = pretrained.features(ctx.train.images)
        fte = pretrained.features(x)
    means = torch.stack([ftr[ctx.train.labels == c].mean(0) for c in range(3)])
    model = METHODS.create("ncm").adapt(pretrained, tiny.tasks["t1"], ctx)
    d2 = torch.cdist(fte.double(), means.double()).square()
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), 1)
    torch.testing.assert_close(probs, torch.softmax(-d2 / 2, 1), rtol=1e-4, atol=1e-5)
    assert torch.equal(probs.argmax(1), d2.argmin(1))

    model = METHODS.create("ncm", metric="cosine").adapt(pretrained, tiny.tasks["t1"], make_ctx(tiny))
    cos = torch.nn.functional.cosine_similarity(fte.unsqueeze(1), means.unsqueeze(0), dim=2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cos, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n,m", [(40, 12), (10, 30)])  # primal (Gram) and dual (kernel) paths
def test_ridge_matches_sklearn(n, m):
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(n, m, generator=g, dtype=torch.float64))
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3).double()
    for lam, w in ridge_solutions(h, y, [1e-2, 1.0, 100.0], batch_size=7):
        ref = Ridge(alpha=lam, fit_intercept=False, solver="svd").fit(h.numpy(), y.numpy())
        np.testing.assert_allclose(w.T.numpy(), ref.coef_, rtol=1e-6, atol=1e-9)


def test_ranpac_head_is_ridge_on_random_relu_features(tiny):
    from sklearn.linear_model import Ridge

    pretrained = tiny_model("mlp")
    ctx = make_ctx(tiny)
    model = METHODS.create("ranpac", dim=32, lambdas=(1e-2, 1.0, 1e2)).adapt(pretrained, tiny.tasks["t1"], ctx)
    lam = ctx.info["selected_lambda"]
    with torch.no_grad():
        f = pretrained.features(torch.cat([ctx.train.images, ctx.val.images]))
        h = torch.relu(f @ model.head.proj).double()
    y = torch.nn.functional.one_hot(torch.cat([ctx.train.labels, ctx.val.labels]), 3).double()
    ref = Ridge(alpha=lam, fit_intercept=False, solver="svd").fit(h.numpy(), y.numpy())
    np.testing.assert_allclose(model.head.out.weight.detach().double().numpy(), ref.coef_, rtol=1e-4, atol=1e-6)
    # how lambda is chosen (the reference's 80/20 split): test_conformance_methods.py
    for k, v in pretrained.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, model.state_dict()[k]), k


def test_head_policies(tiny):
    pretrained = tiny_model("mlp", seed=3)  # not seed 0: a head re-initialised with the seed would equal it
    lp, _ = run_method("lp", pretrained, tiny)
    seen = {}
    import ribench.methods.heads as pm  # bitfit trains through heads.train_params

    def fake_train(model, data, cfg, **kw):
        seen["head"] = model.head.weight.detach().clone()
        seen["params"] = kw["params"]
        return model

    mp = pytest.MonkeyPatch()
    mp.setattr(pm, "train_classifier", fake_train)
    try:
        _, ctx = run_method("bitfit", pretrained, tiny, head="lp")
        assert torch.equal(seen["head"], lp.head.weight) and ctx.info["head_policy"] == "lp"
        _, ctx = run_method("bitfit", pretrained, tiny, head="reinit")
        assert not torch.equal(seen["head"], pretrained.head.weight) and ctx.info["head_policy"] == "reinit"
        first = seen["head"]
        run_method("bitfit", pretrained, tiny, head="reinit")
        assert torch.equal(seen["head"], first)  # seeded
        _, ctx = run_method("bitfit", pretrained, tiny, head="masked")
        assert all(p is not pretrained.head.weight for p in seen["params"])
        assert not any(p.shape == pretrained.head.weight.shape for p in seen["params"])
    finally:
        mp.undo()


def test_masked_policy_masks_classes_outside_the_task(tiny):
    from ribench.methods.heads import class_mask

    model = tiny_model("mlp")
    task = dataclasses.replace(tiny.tasks["t1"], class_subset=(0, 2))
    x = tiny.tasks["t1"].test.images[:3]
    with class_mask(model, "masked", task):
        out = model(x)
    assert torch.isinf(out[:, 1]).all() and torch.isfinite(out[:, [0, 2]]).all()
    assert torch.isfinite(model(x)).all()  # the mask is gone afterwards
    with class_mask(model, "keep", task):
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("name,field,value", [
    ("ncm", "metric", "manhattan"), ("ranpac", "dim", 0), ("ranpac", "lambdas", (-1.0,)), ("prompt", "pad", 0),
    ("ranpac", "fit_fraction", 1.0), ("dawin", "expertise", "plain_ratio"), ("dawin", "temperatures", (1.0,)),
    ("dawin", "temperatures", (1.0, 0.0)), ("ties", "trim", "topk"),
    ("prompt", "head", "frozen"),
])
def test_bad_hyperparameters_name_the_field(name, field, value):
    with pytest.raises(ConfigError, match=rf"methods\.{name}\.params\.{field}"):
        METHODS.create(name, **{field: value})


def test_cli_lists_every_method_with_its_hyperparameters(capsys):
    from ribench.cli import main

    assert main(["list", "methods", "--format", "json"]) == 0
    items = {it["name"]: it for it in json.loads(capsys.readouterr().out)}
    for name in NEW_METHODS:
        fields = {f.name for f in dataclasses.fields(METHODS.get(name).Config)}
        assert {p["name"] for p in items[name]["params"]} == fields, name
        assert all(p["help"] for p in items[name]["params"]), name
