"""The task-vector norm split into the backbone's entries and the head's
(``weightspace.task_vector_norms``, the ``diag/summary`` rows of ``diagnose``), against
hand computations on tiny models."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ribench.analysis import diagnose
from ribench.analysis.weightspace import is_head_entry, task_vector_norms
from ribench.core import Split
from ribench.models import create_model


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    m = create_model("cnn", num_classes=3, widths=[4, 8], features=16).eval()
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(16, 1, 12, 12, generator=g) * 255).to(torch.uint8)
    return m, Split(x, torch.arange(16) % 3)


def test_head_entries_are_the_head_module_only():
    assert is_head_entry("head.weight") and is_head_entry("head.bias") and is_head_entry("head")
    assert not is_head_entry("header.weight") and not is_head_entry("body.head.weight")


def test_norms_of_a_hand_made_task_vector():
    tv = {"body.w": torch.tensor([3.0, 0.0]), "head.weight": torch.tensor([[1.0, 2.0], [2.0, 0.0]]),
          "head.bias": torch.tensor([4.0])}
    n = task_vector_norms(tv)
    assert n["backbone"] == 3.0 and n["head"] == 5.0  # sqrt(1 + 4 + 4 + 16)
    assert n["total"] == pytest.approx(math.sqrt(34.0), rel=1e-12)
    assert task_vector_norms({"body.w": torch.ones(4)}) == {"total": 2.0, "backbone": 2.0, "head": 0.0}


def test_a_new_head_moves_the_head_part_only(model_and_data):
    """As lp and ncm do: the backbone is the pretrained one, the head is new."""
    a, data = model_and_data
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        b.head.weight.copy_(torch.randn(b.head.weight.shape, generator=g) * 10)
        b.head.bias.copy_(torch.randn(b.head.bias.shape, generator=g))
    s = diagnose(a, b, {"s": data}, layers=["features"], barrier_points=2)["diag/summary"]
    # by hand, from the parameters themselves
    sa, sb = a.state_dict(), b.state_dict()  # differences in float64, as tau is
    dw, db = (sb[k].double() - sa[k].double() for k in ("head.weight", "head.bias"))
    head_tv = math.sqrt(float((dw ** 2).sum() + (db ** 2).sum()))
    head_0 = math.sqrt(float((sa["head.weight"].double() ** 2).sum() + (sa["head.bias"].double() ** 2).sum()))
    sd = sa
    body_0 = math.sqrt(sum(float((v.double() ** 2).sum()) for k, v in sd.items()
                           if v.is_floating_point() and not k.startswith("head.")))
    assert s["task_vector_norm_backbone"] == 0.0 and s["task_vector_relative_norm_backbone"] == 0.0
    assert s["task_vector_norm_head"] == pytest.approx(head_tv, rel=1e-12)
    assert s["task_vector_relative_norm_head"] == pytest.approx(head_tv / head_0, rel=1e-12)
    # the old total keeps its meaning: every entry, the head's included
    assert s["task_vector_norm"] == pytest.approx(head_tv, rel=1e-12)
    assert s["task_vector_relative_norm"] == pytest.approx(head_tv / math.hypot(head_0, body_0), rel=1e-12)


def test_parts_add_up_in_squares_when_both_move(model_and_data):
    a, data = model_and_data
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    s = diagnose(a, b, {"s": data}, layers=["features"], barrier_points=2)["diag/summary"]
    assert s["task_vector_norm_backbone"] > 0 and s["task_vector_norm_head"] > 0
    assert s["task_vector_norm"] ** 2 == pytest.approx(
        s["task_vector_norm_backbone"] ** 2 + s["task_vector_norm_head"] ** 2, rel=1e-12)
