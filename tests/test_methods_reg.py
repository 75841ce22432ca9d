"""Regularised fine-tuning (EWC, LwF, L2-SP, L2-init) against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ribench.methods  # noqa: F401  (registration)
from ribench.core import METHODS, ConfigError
from ribench.methods.fisher import diagonal_fisher
from ribench.methods.regularised import distillation_loss

from methods_helpers import make_ctx, run_method, tiny_model


def _loop_fisher(model, split, mode, generator=None):
    """Per-sample autograd loop: the reference for diagonal_fisher."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(split)):
        x = split.images[i:i + 1]
        logp = torch.log_softmax(model(x), dim=1)[0]
        probs = logp.exp().detach()
        if mode == "exact":
            for c in range(len(logp)):
                grads = torch.autograd.grad(logp[c], list(params.values()), retain_graph=True)
                for n, g in zip(params, grads):
                    total[n] += probs[c] * g.square()
        else:
            y = int(torch.multinomial(probs.unsqueeze(0), 1, generator=generator))
            grads = torch.autograd.grad(logp[y], list(params.values()))
            for n, g in zip(params, grads):
                total[n] += g.square()
    return {n: v / len(split) for n, v in total.items()}


@pytest.mark.parametrize("arch", ["mlp", "cnn", "vit"])
def test_fisher_matches_a_per_sample_autograd_loop(arch, tiny):
    model = tiny_model(arch)
    sample = tiny.pretrain.train.subset(torch.arange(7))
    per_image = 3 * sum(p.numel() for p in model.parameters())
    ours = diagonal_fisher(model, sample, mode="exact", max_chunk_floats=3 * per_image)  # chunks of 3, 3 and 1
    ref = _loop_fisher(model, sample, "exact")
    for n in ref:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-4, atol=1e-9)


def test_sampled_fisher_matches_the_loop_with_the_same_draws(tiny):
    model = tiny_model("mlp")
    sample = tiny.pretrain.train.subset(torch.arange(12))
    ours = diagonal_fisher(model, sample, mode="sample", generator=torch.Generator().manual_seed(3), max_chunk_floats=10**9)
    ref = _loop_fisher(model, sample, "sample", generator=torch.Generator().manual_seed(3))
    for n in ref:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-4, atol=1e-9)


def test_ewc_penalty_is_zero_at_the_pretrained_weights_and_weighted_by_the_fisher(tiny):
    pretrained = tiny_model("cnn")
    method = METHODS.create("ewc", lam=2.0)
    ctx = make_ctx(tiny)
    model = method.fresh_copy(pretrained)
    penalty, extra = method.terms(model, pretrained, ctx)
    assert extra is None
    assert penalty(model).item() == 0.0
    fisher = diagonal_fisher(pretrained, ctx.pretrain_sample)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expected = sum((fisher[n] * (p - dict(pretrained.named_parameters())[n]).square()).sum()
                   for n, p in model.named_parameters())  # head included under head="keep"
    torch.testing.assert_close(penalty(model), 0.5 * 2.0 * expected)


def test_l2sp_and_l2_init_penalties_match_their_formulas(tiny):
    pretrained = tiny_model("mlp")
    ctx = make_ctx(tiny)
    model = tiny_model("mlp", seed=5)  # other weights
    w0 = dict(pretrained.named_parameters())
    backbone = sum((p - w0[n]).square().sum() for n, p in model.named_parameters() if not n.startswith("head."))
    head = sum(p.square().sum() for p in model.head.parameters())
    pen, _ = METHODS.create("l2sp", alpha=0.3, beta=0.07).terms(model, pretrained, ctx)
    torch.testing.assert_close(pen(model), 0.15 * backbone + 0.035 * head)
    pen, _ = METHODS.create("l2_init", lam=0.4).terms(model, pretrained, ctx)
    everything = sum((p - w0[n]).square().sum() for n, p in model.named_parameters())
    torch.testing.assert_close(pen(model), 0.2 * everything)
    pen, _ = METHODS.create("l2_init", lam=0.4, head="reinit").terms(model, pretrained, ctx)
    torch.testing.assert_close(pen(model), 0.2 * backbone)


def test_lwf_with_an_identical_model_gives_zero_loss_and_zero_gradient(tiny):
    pretrained = tiny_model("vit")
    method = METHODS.create("lwf", temperature=2.0)
    model = method.fresh_copy(pretrained)
    _, extra = method.terms(model, pretrained, make_ctx(tiny))
    x = tiny.tasks["t1"].train.images[:8].float() / 255
    logits = model(x)
    loss = extra(model, x, None, logits)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    for n, p in model.named_parameters():
        assert p.grad.abs().max() < 1e-6, n
    # and it is the paper's soft cross-entropy minus the targets' entropy when the models differ
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    pt = torch.softmax(t / 2, 1)
    ce = -(pt * torch.log_softmax(s / 2, 1)).sum(1).mean()
    entropy = -(pt * torch.log(pt)).sum(1).mean()
    torch.testing.assert_close(distillation_loss(s, t, 2.0), ce - entropy)


def test_regularisation_keeps_the_model_closer_to_the_pretrained_one(tiny):
    pretrained = tiny_model("mlp")

    def drift(name, **kw):
        out, _ = run_method(name, pretrained, tiny, "t2", epochs=3, lr=3e-3, **kw)
        return sum((a - b).square().sum() for a, b in zip(out.parameters(), pretrained.parameters())).item()

    free = drift("l2_init", lam=0.0)
    assert drift("l2_init", lam=50.0) < 0.8 * free
    assert drift("l2sp", alpha=50.0, beta=0.0) < 0.8 * free


@pytest.mark.parametrize("name,field,value", [
    ("ewc", "fisher", "approx"), ("ewc", "lam", -1.0), ("lwf", "temperature", 0.0), ("l2sp", "alpha", -0.1),
    ("l2_init", "head", "x"), ("lwf", "batch_size", 0),
])
def test_bad_hyperparameters_name_the_field(name, field, value):
    with pytest.raises(ConfigError, match=rf"methods\.{name}\.params\.{field}"):
        METHODS.create(name, **{field: value})


def test_masked_head_with_lwf_stays_finite_on_a_class_subset(tiny):
    import dataclasses

    task = dataclasses.replace(tiny.tasks["t1"], class_subset=(0, 1, 2))
    pretrained = tiny_model("mlp")
    ctx = make_ctx(tiny)
    out = METHODS.create("lwf", epochs=1, head="masked").adapt(pretrained, task, ctx)
    assert ctx.info["head_policy"] == "masked"
    assert torch.equal(out.head.weight, pretrained.head.weight)
    assert torch.isfinite(out(tiny.tasks["t1"].test.images[:4])).all()
    assert F.softmax(out(tiny.tasks["t1"].test.images[:4]), 1).shape == (4, 3)
