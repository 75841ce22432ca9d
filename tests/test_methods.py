"""Every registered method, and each against an independent reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import ribench.methods  # noqa: F401  (registration)
from ribench.core import METHODS, ConfigError
from ribench.methods.base import AdaptContext
from ribench.methods.linear_probe import fit_logistic_regression
from ribench.models import create_model

BUILTIN = [n for n in METHODS.names() if n in ("ft", "lp", "lpft")]


@pytest.fixture(scope="module")
def pretrained(tiny):
    from ribench.models.pretrain import PretrainConfig, pretrain

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3)
    return pretrain(model, tiny, "narrow", PretrainConfig(epochs=2), seed=0)


def make_ctx(tiny, task="t1", inputs=None, seed=0):
    train, val = tiny.tasks[task].train.holdout(0.2, seed=1)
    return AdaptContext(train=train, val=val, pretrain_sample=tiny.pretrain.train, seed=seed,
                        device=torch.device("cpu"), num_classes=3, inputs=inputs or {})


# the methods ribench registers (not those other test modules register for their own tests,
# whichever order the modules are collected in)
BUILT_IN = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("ribench.")]


def adapt(name, pretrained, tiny, task="t1", **params):
    method = METHODS.create(name, **params)
    inputs = {r: adapt(r, pretrained, tiny, task)[0] for r in method.requires}
    ctx = make_ctx(tiny, task, inputs)
    return method.adapt(pretrained, tiny.tasks[task], ctx), ctx


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_method_adapts_without_touching_the_pretrained_model(name, pretrained, tiny):
    before = copy.deepcopy(pretrained.state_dict())
    model, ctx = adapt(name, pretrained, tiny)
    assert model is not pretrained
    x = tiny.tasks["t1"].test.images[:5]
    assert model(x).shape == (5, 3)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} modified the pretrained model's {k}"
    assert ctx.info["trainable_params"] > 0
    assert METHODS.get(name).__doc__


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_method_rejects_unknown_hyperparameters(name):
    with pytest.raises(ConfigError, match=rf"methods\.{name}\.params\.nonsense"):
        METHODS.create(name, nonsense=1)


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(200, generator=g, dtype=torch.float64) > 0).long()
    y = y + (x[:, 2] > 1).long()  # three classes
    l2 = 0.01
    w, b = fit_logistic_regression(x, y, 3, l2, max_iter=500)
    # mean CE + l2/2 |W|^2  ==  (1 / (C n)) * (C sum CE + 1/2 |W|^2)  with C = 1 / (l2 n)
    ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(x.numpy(), y.numpy())
    ours = torch.softmax(x @ w.T + b, 1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(x.numpy()), atol=2e-4)


def test_lp_keeps_backbone_and_fits_the_head(pretrained, tiny):
    model, ctx = adapt("lp", pretrained, tiny)
    for (k, v), (k2, v2) in zip(pretrained.state_dict().items(), model.state_dict().items()):
        if not k.startswith("head."):
            assert torch.equal(v, v2), k
    assert ctx.info["trainable_params"] == 3 * pretrained.num_features + 3
    assert ctx.info["selected_l2"] in METHODS.get("lp").Config().l2_grid
    test = tiny.tasks["t1"].test
    with torch.no_grad():
        acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.8


def test_ft_improves_the_task(pretrained, tiny):
    test = tiny.tasks["t2"].test
    model, _ = adapt("ft", pretrained, tiny, "t2", epochs=4, lr=1e-3)
    with torch.no_grad():
        before = (pretrained(test.images).argmax(1) == test.labels).float().mean().item()
        after = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert after > max(before, 0.7)


def test_lpft_starts_from_the_linear_probe(pretrained, tiny, monkeypatch):
    import ribench.methods.finetune as ftmod

    seen = {}

    def fake_train(model, data, cfg, **kw):
        seen["head"] = model.head.weight.detach().clone()
        return model

    monkeypatch.setattr(ftmod, "train_classifier", fake_train)
    lp_model, _ = adapt("lp", pretrained, tiny)
    method = METHODS.create("lpft")
    method.adapt(pretrained, tiny.tasks["t1"], make_ctx(tiny, inputs={"lp": lp_model}))
    assert torch.equal(seen["head"], lp_model.head.weight)
    assert method.requires == ("lp",)


def test_ft_is_deterministic_for_a_seed(pretrained, tiny):
    a, _ = adapt("ft", pretrained, tiny, epochs=1)
    b, _ = adapt("ft", pretrained, tiny, epochs=1)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
