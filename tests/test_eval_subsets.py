"""Evaluation subsets (``max_per_set``) and the Wilson interval of every accuracy."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from ribench.core import Domain, Split
from ribench.core.errors import ConfigError
from ribench.core.types import StreamingSplit
from ribench.evaluate import ClassificationMetrics, evaluate
from ribench.evaluate.metrics import wilson_interval
from ribench.evaluate.subsets import proportional_allocation, stratified_subset
from ribench.models import create_model

# ------------------------------------------------------------------ Wilson interval


def test_wilson_interval_by_hand():
    # 7 hits of 10: centre (p + z^2/2n) / (1 + z^2/n), half-width z/(1 + z^2/n) sqrt(p(1-p)/n + z^2/4n^2)
    z = 1.959963984540054
    p, n = 0.7, 10
    centre = (p + z * z / 20) / (1 + z * z / 10)
    half = (z / (1 + z * z / 10)) * math.sqrt(p * (1 - p) / 10 + z * z / 400)
    lo, hi = wilson_interval(7, 10)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-15)
    assert (lo, hi) == pytest.approx((0.3967781474611453, 0.8922087325936990), abs=1e-12)  # scipy binomtest(7, 10).proportion_ci(method="wilson")
    assert wilson_interval(0, 25)[0] == 0.0 and wilson_interval(25, 25)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    cases = [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (4321, 5000), (49999, 50000)]
    cases += [(k, n) for n in (rng.randint(1, 20000) for _ in range(40)) for k in [rng.randint(0, n)]]
    for k, n in cases:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12), (k, n)


def test_every_metrics_dict_carries_the_interval_of_its_accuracy(tiny):
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    out = evaluate(model, tiny.all_eval_sets())
    for name, row in out.items():
        hits = round(row["accuracy"] * row["n"])
        assert (row["acc_lo"], row["acc_hi"]) == wilson_interval(hits, int(row["n"])), name
        assert row["acc_lo"] <= row["accuracy"] <= row["acc_hi"]
    empty = ClassificationMetrics(3).compute()
    assert math.isnan(empty["acc_lo"]) and math.isnan(empty["acc_hi"]) and empty["n"] == 0


# ------------------------------------------------------------------ allocation


def test_proportional_allocation_by_hand():
    # quotas 5 * (5, 3, 2) / 10 = 2.5, 1.5, 1: floors 2, 1, 1; one image left, remainders
    # tie between classes 0 and 1 -> the smaller index gets it
    assert proportional_allocation([5, 3, 2], 5) == [3, 1, 1]
    # quotas 10 * (7, 7, 6) / 20 = 3.5, 3.5, 3: floors 3, 3, 3 and one left for class 0
    assert proportional_allocation([7, 7, 6], 10) == [4, 3, 3]
    # quotas 4 * (1, 1, 98) / 100 = .04, .04, 3.92: class 2 takes the one left
    assert proportional_allocation([1, 1, 98], 4) == [0, 0, 4]
    assert proportional_allocation([3, 0, 2], 5) == [3, 0, 2]
    assert proportional_allocation([], 0) == []
    with pytest.raises(ValueError):
        proportional_allocation([2, 2], 5)


def test_proportional_allocation_is_the_largest_remainder_rule():
    """Against an independent transcription with exact fractions."""
    rng = random.Random(1)
    for _ in range(300):
        counts = [rng.randint(0, 60) for _ in range(rng.randint(1, 12))]
        if sum(counts) == 0:
            continue
        total = rng.randint(0, sum(counts))
        exact = [Fraction(total * c, sum(counts)) for c in counts]
        ref = [math.floor(q) for q in exact]
        order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - ref[i]), i))
        for i in order[: total - sum(ref)]:
            ref[i] += 1
        got = proportional_allocation(counts, total)
        assert got == ref
        assert sum(got) == total and all(math.floor(q) <= g <= math.ceil(q) for g, q in zip(got, exact))


# ------------------------------------------------------------------ subsets


def _labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    y = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


def test_a_subset_is_stratified_seeded_by_name_and_sorted():
    y = _labels([50, 30, 20, 7])
    rows = stratified_subset(y, 40, seed=0, name="mnist-c/fog/3")
    assert rows.dtype == torch.int64 and len(rows) == 40 and len(torch.unique(rows)) == 40
    assert torch.equal(rows, torch.sort(rows).values)
    per_class = torch.bincount(y[rows], minlength=4).tolist()
    # quotas 40 * (50, 30, 20, 7) / 107 = 18.69, 11.21, 7.48, 2.62: floors 18, 11, 7, 2 leave two
    # images, for the largest remainders (.69 and .62): classes 0 and 3
    assert per_class == proportional_allocation([50, 30, 20, 7], 40) == [19, 11, 7, 3]
    assert torch.equal(rows, stratified_subset(y.clone(), 40, seed=0, name="mnist-c/fog/3"))  # deterministic
    assert not torch.equal(rows, stratified_subset(y, 40, seed=1, name="mnist-c/fog/3"))
    assert not torch.equal(rows, stratified_subset(y, 40, seed=0, name="svhn"))


def test_each_class_is_a_uniform_draw():
    """Every image of a class is about equally likely to be chosen over many seeds."""
    y = _labels([40, 20])
    hits = torch.zeros(len(y))
    for seed in range(400):
        hits[stratified_subset(y, 15, seed, "s")] += 1
    # class 0 gets 10 of 40 (p = 1/4), class 1 gets 5 of 20 (p = 1/4): 100 hits expected,
    # binomial sd sqrt(400 * 1/4 * 3/4) = 8.7; 5 sd either side
    assert hits.min() > 100 - 5 * 8.7 and hits.max() < 100 + 5 * 8.7


def test_a_small_set_is_evaluated_whole_and_a_bad_size_is_refused():
    assert stratified_subset(_labels([3, 3]), 6, 0, "s") is None
    with pytest.raises(ConfigError, match="max_per_set"):
        stratified_subset(_labels([3, 3]), 0, 0, "s")


def test_evaluate_on_subsets(tiny):
    model = create_model("cnn", num_classes=3, widths=(4, 8), features=16)
    sets = tiny.all_eval_sets()
    whole = evaluate(model, sets)
    assert evaluate(model, sets, max_per_set=10_000) == whole  # every set is smaller: identical numbers
    sub = evaluate(model, sets, max_per_set=50, subset_seed=3)
    for name, dom in sets.items():
        rows = stratified_subset(dom.test.labels, 50, 3, name)
        if rows is None:
            assert sub[name] == whole[name]
        else:
            assert sub[name]["n"] == 50
            assert sub[name] == evaluate(model, {name: Domain(name, dom.test.subset(rows), None, dom.class_subset)})[name]
    assert any(sub[n] != whole[n] for n in sets)


def _decode(rows: torch.Tensor) -> torch.Tensor:
    return (rows * 7 % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 12, 12).contiguous()


def test_a_streaming_set_gives_the_subset_of_its_in_memory_copy():
    labels = _labels([40, 35, 25])
    stream = StreamingSplit(_decode, labels, num_workers=0)
    mem = Split(_decode(torch.arange(len(labels))), labels)
    model = create_model("mlp", num_classes=3, width=8, depth=1)
    a = evaluate(model, {"s": Domain("s", stream)}, max_per_set=30, subset_seed=0)
    b = evaluate(model, {"s": Domain("s", mem)}, max_per_set=30, subset_seed=0)
    assert a == b and a["s"]["n"] == 30
