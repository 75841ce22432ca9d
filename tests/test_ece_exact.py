"""ECE is exact for the logits it is given: float64 accumulation, a Python float back.

Golden value: the ECE of the float32 logits ``log([[.9, .1], [.1, .9], [.6, .4]])`` (labels 0),
computed with mpmath at 40 digits from the exact float32 values: 0.39999999871056167032...
(not 0.4: the float32 logits are not exactly log 0.9, log 0.1, ...).
"""

from __future__ import annotations

import pytest
import torch

from ribench.evaluate import ece

GOLDEN_FLOAT32_LOGITS = 0.3999999987105616703203748864672733073596


def test_ece_of_float32_logits_matches_the_exact_value():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    value = ece(probs.log(), torch.tensor([0, 0, 0]))
    assert type(value) is float
    assert value == pytest.approx(GOLDEN_FLOAT32_LOGITS, abs=1e-15)


def test_ece_of_float64_logits_of_the_same_probabilities_is_0_4():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]], dtype=torch.float64)
    assert ece(probs.log(), torch.tensor([0, 0, 0])) == pytest.approx(0.4, abs=1e-15)
