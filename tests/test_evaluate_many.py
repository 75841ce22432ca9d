"""evaluate_many: several models over the eval sets in one pass, each batch read once, each
model's numbers those of evaluating it alone."""

from __future__ import annotations

import torch

from ribench.core import Domain, Split
from ribench.core.types import StreamingSplit
from ribench.evaluate import evaluate, evaluate_many
from ribench.models import create_model


class _CountingDecode:
    """A picklable decoder that counts the images it decodes."""

    def __init__(self):
        self.decoded = 0

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        self.decoded += len(rows)
        return (rows * 13 % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 12, 12).contiguous()


def _models():
    torch.manual_seed(0)
    return {f"m{i}": create_model("mlp", num_classes=3, width=8, depth=1) for i in range(3)}


def test_each_model_gets_exactly_what_evaluate_gives_it_alone():
    g = torch.Generator().manual_seed(1)
    sets = {"a": Domain("a", Split(torch.randint(0, 256, (70, 1, 12, 12), generator=g, dtype=torch.uint8),
                                   torch.randint(0, 3, (70,), generator=g))),
            "b": Domain("b", Split(torch.randint(0, 256, (33, 3, 12, 12), generator=g, dtype=torch.uint8),
                                   torch.randint(0, 2, (33,), generator=g)), class_subset=(0, 1))}
    models = _models()
    seconds: dict[str, float] = {}
    together = evaluate_many(models, sets, batch_size=16, max_per_set=40, seconds=seconds)
    for label, m in models.items():
        assert together[label] == evaluate(m, sets, batch_size=16, max_per_set=40)
    assert set(seconds) == set(models) and all(v > 0 for v in seconds.values())
    assert len({str(together[k]) for k in models}) == 3  # three different models, three different results


def test_a_streaming_set_is_decoded_once_for_all_models():
    decode = _CountingDecode()
    labels = torch.arange(90) % 3
    sets = {"s": Domain("s", StreamingSplit(decode, labels, num_workers=0))}
    evaluate_many(_models(), sets, batch_size=32)
    assert decode.decoded == 90  # not 3 x 90
    decode.decoded = 0
    for m in _models().values():
        evaluate(m, sets, batch_size=32)
    assert decode.decoded == 270
