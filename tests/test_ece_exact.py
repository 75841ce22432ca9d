"""ECE is exact for the logits it is given: float64 accumulation, a Python float back.

Golden value: the ECE of the float32 logits ``log([[.9, .1], [.1, .9], [.6, .4]])`` (labels 0),
computed with mpmath at 40 digits from the exact float32 values: 0.39999999871056167032...
(not 0.4: the float32 logits are not exactly log 0.9, log 0.1, ...). The logits are given by
their float32 bit patterns (the correctly rounded logarithms): torch's float32 ``log`` may be
one ulp off on some CPUs, which would change the input, not the ECE under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ribench.evaluate import ece

GOLDEN_FLOAT32_LOGITS = 0.3999999987105616703203748864672733073596


def test_ece_of_float32_logits_matches_the_exact_value():
    # float32 log(.9), log(.1); log(.1), log(.9); log(.6), log(.4), correctly rounded
    bits = np.array([[3185035077, 3222494606], [3222494606, 3185035077], [3204629879, 3211432455]], dtype=np.uint32)
    logits = torch.from_numpy(bits.view(np.float32).copy())
    assert torch.allclose(logits.double().exp(), torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]], dtype=torch.float64))
    value = ece(logits, torch.tensor([0, 0, 0]))
    assert type(value) is float
    assert value == pytest.approx(GOLDEN_FLOAT32_LOGITS, abs=1e-15)


def test_ece_of_float64_logits_of_the_same_probabilities_is_0_4():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]], dtype=torch.float64)
    assert ece(probs.log(), torch.tensor([0, 0, 0])) == pytest.approx(0.4, abs=1e-15)
