"""What the weight-space methods share: state-dict arithmetic, scoring candidate weights
through ``torch.func.functional_call`` on one module, grids, and the fine-tuned models
handed over by the engine.

State dicts are combined in float64 and cast back to each entry's dtype; a candidate is
scored by running the pretrained module with the candidate's tensors, never by copying
models.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ...core.errors import DataError
from ...core.types import Domain, Split
from ...models.base import Model
from ..base import AdaptContext
from ..task_vectors import state_of, task_vector  # noqa: F401  (state_of: shared by the package)

State = dict[str, torch.Tensor]


def check_grid(values: Sequence[float], name: str, lo: float | None = 0.0, hi: float | None = None) -> tuple[float, ...]:
    """``values`` as a tuple of floats, or a ValueError unless they are a non-empty list in [lo, hi]."""
    vals = tuple(float(v) for v in values)
    if not vals or any(math.isnan(v) for v in vals) or (lo is not None and min(vals) < lo) or \
            (hi is not None and max(vals) > hi):
        bounds = f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise ValueError(f"{name} must be a non-empty list of numbers{bounds}, got {list(values)}")
    return vals


def steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, ..., stop (rounded to 10 decimals, so 0.1 * 3 prints as 0.3)."""
    n = int(round((stop - start) / step))
    return tuple(round(start + i * step, 10) for i in range(n + 1))


def apply_delta(base: State, delta: Mapping[str, torch.Tensor], scale: float = 1.0) -> State:
    """base + scale * delta on the entries of delta (float64 arithmetic, base's dtype)."""
    out = dict(base)
    for k, d in delta.items():
        b = base[k]
        out[k] = (b.to(torch.float64) + scale * d.to(b.device, torch.float64)).to(b.dtype)
    return out


def average_states(states: Sequence[State], weights: Sequence[float] | None = None) -> State:
    """The (weighted) mean of state dicts over their floating entries (float64 arithmetic)."""
    w = list(weights) if weights is not None else [1.0] * len(states)
    tot = sum(w)
    out = {}
    for k, v in states[0].items():
        if not v.is_floating_point():
            out[k] = v
            continue
        acc = sum(wi * s[k].to(torch.float64) for wi, s in zip(w, states))
        out[k] = (acc / tot).to(v.dtype)
    return out


def model_with(template: Model, state: State) -> Model:
    """A copy of ``template`` holding ``state``."""
    m = copy.deepcopy(template)
    m.load_state_dict(state)
    return m


@torch.no_grad()
def accuracy(module: nn.Module, state: State | None, split: Split, batch_size: int = 512) -> float:
    """Accuracy of ``module`` (run with ``state`` through functional_call when given)."""
    device = next(module.parameters()).device
    was = module.training
    module.eval()
    correct = 0
    try:
        for x, y in split.batches(batch_size):
            x = x.to(device)
            logits = functional_call(module, state, (x,)) if state is not None else module(x)
            correct += int((logits.argmax(1).cpu() == y).sum())
    finally:
        module.train(was)
    return correct / max(1, len(split))


def mean_val_accuracy(module: nn.Module, state: State, splits: Mapping[str, tuple[Split, Split]]) -> float:
    """The mean of ``accuracy`` over the validation parts of ``splits`` (task -> (train, val))."""
    return sum(accuracy(module, state, val) for _, val in splits.values()) / len(splits)


def select_best(candidates: Sequence[float], score) -> tuple[float, dict[str, float]]:
    """The candidate with the highest score (the first on ties) and every score."""
    scores = {c: score(c) for c in candidates}
    best = max(candidates, key=lambda c: (scores[c], -candidates.index(c)))
    return best, {f"{c:g}": s for c, s in scores.items()}


def ft_params(models: Sequence[Model]) -> int:
    """What fine-tuning trained: the parameters of (the first of) the combined models."""
    return int(sum(p.numel() for p in models[0].parameters()))


def ingredient_models(ctx: AdaptContext, task: Domain, name: str = "ft") -> list[tuple[Any, Model]]:
    """The models of ``name`` handed over (``ctx.ingredients``); none is a DataError."""
    found = ctx.ingredients(name, task.name, ctx.seed)
    if not found:
        raise DataError(f"no {name!r} models were handed over (the engine runs {name!r} first)")
    return found


def task_vectors_by_task(pretrained: Model, ctx: AdaptContext, task: Domain) -> dict[str, State]:
    """One task vector per task of the fine-tuned models handed over (one seed)."""
    out: dict[str, State] = {}
    for ing, m in ingredient_models(ctx, task):
        if ing.task in out:
            raise DataError(f"two fine-tuned models of task {ing.task!r} to merge; a merge takes one per task")
        out[ing.task] = task_vector(pretrained, m)
    return out
