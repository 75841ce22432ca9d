"""The predictors of one (pretrained model, task) pair, as a run's analysis cell stores them.

``task_predictors`` computes, before any fine-tuning (docs/analysis.md):

- ``otdd``: OTDD between the pretraining data and the task's training part, in pixels;
- ``otdd_features``: the same in the pretrained model's feature space;
- one score per transferability estimator of ``cfg["estimators"]`` (LogME, LEEP, ...), on a
  seeded sample of the task's training part.

Every task of a run shares one source sample and one eps unit (the source's mean self
cost), so the distances of one backbone's tasks are comparable.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..core.runtime import derive_seed
from ..core.types import Split
from ..models.base import Model
from .otdd import otdd_splits
from .predict import score_model


def seeded_sample(split: Split, n: int, seed: int) -> Split:
    """``n`` images of ``split`` (all of them when it has fewer) drawn by ``seed``, in their order in the split."""
    g = torch.Generator().manual_seed(seed)
    return split.subset(torch.sort(torch.randperm(len(split), generator=g)[:n]).values)


def task_predictors(model: Model, source: Split, train: Split, cfg: Mapping[str, Any], data_seed: int, task: str
                    ) -> dict[str, float]:
    """Predictors of adapting ``model`` to ``task`` (its training part ``train``) from the
    pretraining data ``source``.

    ``cfg``: a spec's ``analysis`` section (max_per_class, otdd_inner, max_samples) with
    ``estimators`` the names to compute. ``data_seed``: the run's, which fixes the samples.
    """
    kw = dict(max_per_class=cfg["max_per_class"], seed=derive_seed("analysis", data_seed),
              inner=cfg["otdd_inner"], cost_scale="source")
    out = {"otdd": otdd_splits(source, train, None, **kw), "otdd_features": otdd_splits(source, train, model, **kw)}
    sample = seeded_sample(train, cfg["max_samples"], derive_seed("analysis", data_seed, task))
    out.update(score_model(model, sample, list(cfg["estimators"])))
    return out
