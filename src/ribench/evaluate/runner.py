"""One pass of a model over many eval sets, under ``torch.inference_mode()``."""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from ..core.errors import TrainingError
from ..core.types import Domain
from ..models.base import Model, model_name
from .metrics import ClassificationMetrics, mask_logits


def evaluate(
    model: Model,
    eval_sets: Mapping[str, Domain],
    batch_size: int = 512,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics (accuracy, ece, nll, n) of ``model`` on each domain's test split.

    Logits are masked to a domain's ``class_subset`` when it has one. A NaN metric of
    a non-empty eval set (logits that are NaN or infinite: diverged weights) raises
    TrainingError naming the model and the eval set, so no such number is stored.
    An empty eval set gives NaN metrics with ``n = 0``.
    """
    device = next(model.parameters()).device
    model.eval()
    out: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for i, (name, dom) in enumerate(eval_sets.items()):
            m = ClassificationMetrics(model.num_classes)
            for x, y in dom.test.batches(batch_size):
                logits = mask_logits(model(x.to(device, non_blocking=True)), dom.class_subset)
                m.update(logits, y)
            out[name] = _checked(m.compute(), model, name)
            if progress is not None:
                progress((i + 1) / len(eval_sets), name)
    return out


def _checked(metrics: dict[str, float], model: Model, eval_set: str) -> dict[str, float]:
    if metrics["n"] > 0:
        bad = [k for k in ("accuracy", "ece", "nll") if math.isnan(metrics[k])]
        if bad:
            raise TrainingError(f"model {model_name(model)!r} gives a NaN {bad[0]} on eval set {eval_set!r} "
                                f"({int(metrics['n'])} images): its logits are not finite, so its weights have "
                                "probably diverged; no metric of it is stored")
    return metrics
