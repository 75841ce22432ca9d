"""The one diagonal Fisher (methods/fisher.py) that EWC and Fisher merging share: its subset,
its seeded label draws, its one vocabulary of modes, and the spellings stored runs used."""

from __future__ import annotations

import pytest
import torch

import ribench.methods  # noqa: F401  (registration)
import ribench.methods.regularised as regularised
import ribench.methods.weightspace.merging as ws_merging
from ribench.core import METHODS, ConfigError
from ribench.core.errors import DataError
from ribench.methods import fisher
from ribench.methods.base import AdaptContext, Ingredient
from ribench.methods.fisher import FISHER_MODES, diagonal_fisher

from methods_helpers import perturbed, tiny_model


def _loop_fisher(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact expected Fisher by a per-image, per-class autograd loop (the reference)."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(images)):
        logp = torch.log_softmax(model(images[i:i + 1]), dim=1)[0]
        for c in range(len(logp)):
            grads = torch.autograd.grad(logp[c], list(params.values()), retain_graph=True)
            for n, g in zip(params, grads):
                total[n] += logp[c].exp().detach() * g.square()
    return {n: v / len(images) for n, v in total.items()}


def test_ewc_and_fisher_merge_call_the_same_fisher():
    assert regularised.diagonal_fisher is fisher.diagonal_fisher is ws_merging.diagonal_fisher
    for name in ("ewc", "fisher_merge"):
        with pytest.raises(ConfigError, match="exact, sample"):
            METHODS.create(name, fisher="expected")  # the former merge spelling is no mode of the one vocabulary
    assert FISHER_MODES == ("exact", "sample")


def test_examples_draw_a_seeded_subset_kept_in_order(tiny):
    model = tiny_model("mlp")
    split = tiny.pretrain.train.subset(torch.arange(20))
    got = diagonal_fisher(model, split, examples=5, batch_size=2, generator=torch.Generator().manual_seed(4))
    idx = torch.sort(torch.randperm(20, generator=torch.Generator().manual_seed(4))[:5]).values
    ref = _loop_fisher(model, split.images[idx])
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-9)
    # as many examples as images (or more): every image, the same numbers as no subset at all
    full = diagonal_fisher(model, split)
    capped = diagonal_fisher(model, split, examples=50, generator=torch.Generator().manual_seed(0))
    for n in full:
        torch.testing.assert_close(capped[n], full[n], rtol=1e-6, atol=0)


def test_sampled_labels_come_from_the_generator_only(tiny):
    model = tiny_model("mlp")
    split = tiny.pretrain.train.subset(torch.arange(24))

    def run(seed: int, global_seed: int):
        torch.manual_seed(global_seed)  # the global RNG must play no part
        return diagonal_fisher(model, split, mode="sample", examples=16, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(3, 0), run(3, 123), run(4, 0)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_the_fisher_refuses_empty_data_and_unknown_parameters(tiny):
    model = tiny_model("mlp")
    with pytest.raises(DataError, match="empty"):
        diagonal_fisher(model, tiny.pretrain.train.subset(torch.arange(0)))
    with pytest.raises(ConfigError, match="no parameter 'nope'"):
        diagonal_fisher(model, tiny.pretrain.train, names=["nope"])
    with pytest.raises(ConfigError, match="fisher"):
        diagonal_fisher(model, tiny.pretrain.train, mode="expected")


# ------------------------------------------------------------------ fisher_merge's stored spelling

STORED_DEFAULT = {"examples": 4096, "labels": "expected", "floor": 1e-6, "normalize": True, "batch_size": 32}


def test_fisher_merge_writes_the_exact_mode_as_runs_made_before_did():
    """Cell keys hash ``params()``: the default must keep the spelling stored runs hashed
    (``labels = "expected"``, the hyperparameter's former name), or every stored merge recomputes."""
    assert METHODS.create("fisher_merge").params() == STORED_DEFAULT
    assert METHODS.create("fisher_merge", fisher="exact").params() == STORED_DEFAULT
    for stored in (STORED_DEFAULT, {**STORED_DEFAULT, "examples": 64}):  # a stored cell's params rebuild the method
        m = METHODS.create("fisher_merge", **stored)
        assert m.config.fisher == "exact" and m.params() == stored


def test_fisher_merge_sampled_mode_is_written_in_the_new_spelling():
    """Its labels are now drawn from the run's generator (they were drawn from the global one):
    new numbers, so a new key."""
    new = METHODS.create("fisher_merge", fisher="sample").params()
    assert new["fisher"] == "sample" and "labels" not in new
    old = METHODS.create("fisher_merge", labels="sampled")
    assert old.config.fisher == "sample" and old.params() == new
    assert METHODS.create("fisher_merge", **new).params() == new


def test_fisher_merge_legacy_spelling_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"methods\.fisher_merge\.params\.labels.*expected, sampled"):
        METHODS.create("fisher_merge", labels="exact")
    with pytest.raises(ConfigError, match=r"methods\.fisher_merge\.params\.labels.*only fisher"):
        METHODS.create("fisher_merge", labels="expected", fisher="exact")
    with pytest.raises(ConfigError, match=r"methods\.fisher_merge\.params\.labels"):
        METHODS.create("fisher_merge", labels=["expected"])


def test_sampled_fisher_merge_is_fixed_by_the_run_seed(tiny):
    m0 = tiny_model("mlp")
    inputs = {Ingredient("ft", t, 0): perturbed(m0, i + 1, 0.2) for i, t in enumerate(tiny.tasks)}
    splits = {t: tiny.tasks[t].train.holdout(0.2, seed=1) for t in tiny.tasks}

    def merged(seed: int):
        train, val = splits["t1"]
        ctx = AdaptContext(train=train, val=val, pretrain_sample=tiny.pretrain.train, seed=seed,
                           device=torch.device("cpu"), num_classes=3, inputs=inputs, task_splits=splits)
        method = METHODS.create("fisher_merge", fisher="sample", examples=12, normalize=False, floor=0.0)
        return method.adapt(m0, tiny.tasks["t1"], ctx).state_dict()

    a, b, c = merged(0), merged(0), merged(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
