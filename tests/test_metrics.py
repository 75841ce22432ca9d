import math

import numpy as np
import pytest
import torch

from dataclasses import replace

from ribench.core import Domain, Split, Suite
from ribench.core.errors import DataError
from ribench.evaluate import ClassificationMetrics, accuracy, ece, mask_logits, nll, summarize


def test_accuracy_nll_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    assert accuracy(logits, labels) == pytest.approx(2 / 3)
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.e), math.exp(3) / (math.exp(3) + 1)]
    assert nll(logits, labels) == pytest.approx(-sum(map(math.log, p)) / 3)


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right); 15 bins: 0.9 -> bin 13, 0.6 -> bin 8.
    # float64: in float32, log(0.9) is not exact and the true ECE is 0.3999999987 (tests/test_ece_exact.py)
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert ece(probs.log(), labels) == pytest.approx(expected, abs=1e-9)


def test_ece_naive_reference_random():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g) * 3
    labels = torch.randint(0, 7, (500,), generator=g)
    p = torch.softmax(logits.double(), 1).numpy()
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    edges = np.linspace(0, 1, 16)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (conf > lo) & (conf <= hi)
        if inb.any():
            total += inb.mean() * abs((pred[inb] == labels.numpy()[inb]).mean() - conf[inb].mean())
    assert ece(logits, labels) == pytest.approx(total, abs=1e-9)


def test_accumulator_batched_equals_unbatched():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(301, 5, generator=g)
    labels = torch.randint(0, 5, (301,), generator=g)
    whole = ClassificationMetrics(5)
    whole.update(logits, labels)
    parts = ClassificationMetrics(5)
    for i in range(0, 301, 37):
        parts.update(logits[i : i + 37], labels[i : i + 37])
    a, b = whole.compute(), parts.compute()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-12)
    assert a["accuracy"] == pytest.approx(accuracy(logits, labels))
    assert a["nll"] == pytest.approx(nll(logits, labels))


def test_mask_logits_restricts_predictions():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 4.0]])
    masked = mask_logits(logits, (1, 2))
    assert masked.argmax(1).tolist() == [1, 2]
    assert mask_logits(logits, None) is logits


def _suite_for_summary() -> Suite:
    empty = Split(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
    d = lambda n: Domain(n, empty)  # noqa: E731
    return Suite("s", ("x",), d("P"), {"t1": d("t1"), "t2": d("t2"), "t3": d("t3")},
                 eval_sets={"c/a/1": d("c/a/1"), "c/a/2": d("c/a/2"), "c/b/1": d("c/b/1"), "c/b/2": d("c/b/2")},
                 corruptions={"c/a/1": ("a", 1), "c/a/2": ("a", 2), "c/b/1": ("b", 1), "c/b/2": ("b", 2)})


def test_summary_numbers_by_hand():
    suite = _suite_for_summary()
    ref = {"P": 0.9, "t1": 0.5, "t2": 0.6, "t3": 0.4, "c/a/1": 0.8, "c/a/2": 0.6, "c/b/1": 0.7, "c/b/2": 0.5}
    acc = {"P": 0.8, "t1": 0.95, "t2": 0.5, "t3": 0.5, "c/a/1": 0.7, "c/a/2": 0.5, "c/b/1": 0.7, "c/b/2": 0.3}
    s = summarize("t1", acc, ref, suite)
    assert s["id_acc"] == 0.95
    assert s["R"] == pytest.approx(0.5)
    assert s["dR"] == pytest.approx(0.5 - 0.5)
    assert s["dP"] == pytest.approx(-0.1)
    assert s["corr_acc"] == pytest.approx(np.mean([0.7, 0.5, 0.7, 0.3]))
    ce_a = (0.3 + 0.5) / (0.2 + 0.4)
    ce_b = (0.3 + 0.7) / (0.3 + 0.5)
    assert s["mCE"] == pytest.approx((ce_a + ce_b) / 2)
    rel_a = ((0.3 - 0.2) + (0.5 - 0.2)) / ((0.2 - 0.1) + (0.4 - 0.1))
    rel_b = ((0.3 - 0.2) + (0.7 - 0.2)) / ((0.3 - 0.1) + (0.5 - 0.1))
    assert s["rel_mCE"] == pytest.approx((rel_a + rel_b) / 2)
    # the reference model against itself
    s0 = summarize(None, ref, ref, suite)
    assert s0["dP"] == 0 and s0["dR"] == 0 and s0["mCE"] == pytest.approx(1.0) and "id_acc" not in s0


def _suite_with_severities(severities, reference_errors=None) -> Suite:
    empty = Split(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
    d = lambda n: Domain(n, empty)  # noqa: E731
    corr = {f"c/{c}/{s}": (c, s) for c in ("a", "b") for s in severities}
    return Suite("s", ("x",), d("P"), {"t1": d("t1"), "t2": d("t2")}, eval_sets={n: d(n) for n in corr},
                 corruptions=corr, reference_errors=reference_errors)


def test_mce_with_a_published_mean_reference():
    from ribench.data.corruptions import corruption_errors_reference

    ref = corruption_errors_reference()
    assert ref["clean"] == pytest.approx(0.4348) and len(ref["mce_corruptions"]) == 15
    # a published mean over severities 1..5 (AlexNet's form) with all five severities evaluated
    suite = _suite_with_severities([1, 2, 3, 4, 5], reference_errors={"a": (0.5,), "b": (0.8,)})
    err_a, err_b = [0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.5, 0.6, 0.9]
    acc = {"P": 0.8, "t1": 0.9, "t2": 0.5}
    acc.update({f"c/a/{s}": 1 - e for s, e in zip(range(1, 6), err_a)})
    acc.update({f"c/b/{s}": 1 - e for s, e in zip(range(1, 6), err_b)})
    s = summarize("t1", acc, acc, suite)
    # Hendrycks & Dietterich: CE_c = sum_s E(m, c, s) / sum_s E(alexnet, c, s), and sum_s = 5 x the mean
    assert s["mCE"] == pytest.approx((sum(err_a) / (5 * 0.5) + sum(err_b) / (5 * 0.8)) / 2)
    assert "rel_mCE" not in s  # needs the reference's clean error


def test_mce_with_a_published_mean_needs_all_five_severities():
    # the 'full' preset evaluates severities 1, 3, 5: a mean over 1..5 cannot normalise them
    suite = _suite_with_severities([1, 3, 5], reference_errors={"a": (0.5,), "b": (0.8,)})
    acc = {"P": 0.8, "t1": 0.9, "t2": 0.5, **{n: 0.6 for n in suite.corruptions}}
    with pytest.raises(DataError, match=r"only the mean error over severities 1..5.*\[1, 3, 5\]"):
        summarize("t1", acc, acc, suite)


def test_mce_at_some_severities_uses_the_reference_at_the_same_severities():
    # per-severity reference errors (severities 1..5); severities 1, 3, 5 evaluated
    ref_a, ref_b = (0.2, 0.3, 0.4, 0.5, 0.6), (0.1, 0.3, 0.5, 0.7, 0.9)
    suite = _suite_with_severities([1, 3, 5], reference_errors={"a": ref_a, "b": ref_b})
    err = {("a", 1): 0.1, ("a", 3): 0.3, ("a", 5): 0.5, ("b", 1): 0.2, ("b", 3): 0.2, ("b", 5): 0.6}
    acc = {"P": 0.8, "t1": 0.9, "t2": 0.5, **{f"c/{c}/{s}": 1 - e for (c, s), e in err.items()}}
    s = summarize("t1", acc, acc, suite)
    ce_a = (0.1 + 0.3 + 0.5) / (0.2 + 0.4 + 0.6)
    ce_b = (0.2 + 0.2 + 0.6) / (0.1 + 0.5 + 0.9)
    assert s["mCE"] == pytest.approx((ce_a + ce_b) / 2)
    # the pretrained model as reference, at the same severities; relative mCE with both clean errors
    ref_err = {("a", 1): 0.2, ("a", 3): 0.4, ("a", 5): 0.7, ("b", 1): 0.3, ("b", 3): 0.5, ("b", 5): 0.6}
    ref = {"P": 0.9, "t1": 0.5, "t2": 0.6, **{f"c/{c}/{s}": 1 - e for (c, s), e in ref_err.items()}}
    s = summarize("t1", acc, ref, replace(suite, reference_errors=None))
    ce_a = (0.1 + 0.3 + 0.5) / (0.2 + 0.4 + 0.7)
    ce_b = (0.2 + 0.2 + 0.6) / (0.3 + 0.5 + 0.6)
    assert s["mCE"] == pytest.approx((ce_a + ce_b) / 2)
    rel_a = ((0.1 - 0.2) + (0.3 - 0.2) + (0.5 - 0.2)) / ((0.2 - 0.1) + (0.4 - 0.1) + (0.7 - 0.1))
    rel_b = ((0.2 - 0.2) + (0.2 - 0.2) + (0.6 - 0.2)) / ((0.3 - 0.1) + (0.5 - 0.1) + (0.6 - 0.1))
    assert s["rel_mCE"] == pytest.approx((rel_a + rel_b) / 2)


def test_mce_refuses_a_reference_without_the_evaluated_severity():
    suite = _suite_with_severities([1, 3])
    acc = {"P": 0.8, "t1": 0.9, "t2": 0.5, **{n: 0.6 for n in suite.corruptions}}
    ref = {k: v for k, v in acc.items() if not k.endswith("/3")}  # the reference lacks severity 3
    with pytest.raises(DataError, match=r"no error at severities \[3\]"):
        summarize("t1", acc, ref, suite)
    wrong = replace(suite, reference_errors={"a": (0.5, 0.6), "b": (0.5, 0.6)})
    with pytest.raises(DataError, match="5 per-severity errors"):
        summarize("t1", acc, acc, wrong)
