"""Seeded, class-stratified evaluation subsets (``[eval] max_per_set``).

RobustBench evaluates ImageNet models on 5,000 of the 50,000 validation images; ribench
does the same with ``max_per_set = N``: each eval set with more than N images is
evaluated on N of them, chosen so that

- every class keeps its share of the set (proportional allocation, below);
- the choice depends only on the seed, the eval set's name and its labels: every model
  of a run (the pretrained one and each adapted one) sees the same images of a set, so
  their accuracies are paired and their differences (dR, dP) carry no selection noise;
- the chosen rows are returned in ascending order, so the images are evaluated in the
  set's own order, and a set of at most N images is evaluated whole (exactly as without
  ``max_per_set``).

Allocation (largest remainder, Hamilton's method, exact in integers): with n_c images of
class c out of n, class c first gets floor(N n_c / n); the N - sum of those images left
go, one each, to the classes with the largest remainders N n_c mod n; equal remainders
go to the class with the smaller index first. Every class so gets floor or ceil of its
exact quota N n_c / n, never more images than it has.

Within class c the images are a uniform draw: the first k_c of a ``torch.randperm`` of
the class's rows, seeded with ``derive_seed("eval-subset", seed, name, c)`` (one
generator per class, so a class's draw does not depend on the others).

A process remembers the rows chosen for each labels tensor (weakly: forgotten with the
tensor), so evaluating many models on the same sets chooses each subset once; a split's
labels are never changed in place.
"""

from __future__ import annotations

import weakref

import torch

from ..core.errors import ConfigError
from ..core.runtime import derive_seed


def proportional_allocation(counts: list[int], total: int) -> list[int]:
    """How many of ``total`` draws each class gets, by the largest-remainder rule above.

    ``counts``: images per class (>= 0), ``total`` <= sum(counts)."""
    n = sum(counts)
    if not 0 <= total <= n:
        raise ValueError(f"cannot draw {total} of {n} images")
    if n == 0:
        return [0] * len(counts)
    quota = [total * c // n for c in counts]
    remainder = [total * c % n for c in counts]
    left = total - sum(quota)
    for i in sorted(range(len(counts)), key=lambda i: (-remainder[i], i))[:left]:
        quota[i] += 1
    return quota


def stratified_subset(labels: torch.Tensor, max_n: int, seed: int, name: str) -> torch.Tensor | None:
    """Ascending row indices (int64) of the subset of at most ``max_n`` rows of a set with
    ``labels`` int64 [n] named ``name``; None when the set has at most ``max_n`` rows
    (evaluate it whole)."""
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ConfigError("eval.max_per_set", f"must be a positive integer, got {max_n!r}")
    if len(labels) <= max_n:
        return None
    entry = _CHOSEN.get(id(labels))
    if entry is None or entry[0]() is not labels:
        entry = _CHOSEN[id(labels)] = (weakref.ref(labels, lambda _, i=id(labels): _CHOSEN.pop(i, None)), {})
    known, key = entry[1], (max_n, seed, name)
    if key not in known:
        known[key] = _choose(labels, max_n, seed, name)
    return known[key]


# id(labels) -> (a weak reference to the labels tensor, {(max_n, seed, name): rows}); an entry
# goes when its tensor does (tensors compare elementwise, so they cannot key a WeakKeyDictionary)
_CHOSEN: dict[int, tuple[weakref.ref, dict[tuple[int, int, str], torch.Tensor]]] = {}


def _choose(labels: torch.Tensor, max_n: int, seed: int, name: str) -> torch.Tensor:
    classes = torch.unique(labels).tolist()
    rows = [torch.nonzero(labels == c).flatten() for c in classes]
    take = proportional_allocation([len(r) for r in rows], max_n)
    chosen = []
    for c, r, k in zip(classes, rows, take):
        g = torch.Generator().manual_seed(derive_seed("eval-subset", seed, name, c))
        chosen.append(r[torch.randperm(len(r), generator=g)[:k]])
    return torch.sort(torch.cat(chosen)).values
