"""What adaptation changed inside a model: the rows of the engine's ``diagnose`` cells.

One call compares a pretrained model with an adapted one of the same architecture on
a few fixed image samples (the task's test images and the pretraining domain's) and
returns store rows ``{eval_set: {metric: value}}``, every eval set prefixed ``diag/``
so that no protocol summary reads them by mistake:

- ``diag/linear_cka/<sample>``, ``diag/rbf_cka/<sample>``, ``diag/mutual_knn/<sample>``:
  per layer (the metric is the layer name; ``features`` is the penultimate
  representation), the similarity of the two models' representations of the same
  images (``similarity.linear_cka``, ``rbf_cka``, ``mutual_knn``), all three from one
  Gram matrix per layer and model (``similarity.similarities_from_grams``).
- ``diag/path/<sample>``: loss and error at each alpha of the linear path from the
  pretrained to the adapted weights (``weightspace.linear_path``), metrics
  ``loss@<alpha>`` and ``error@<alpha>``.
- ``diag/filter_kl``, ``diag/filter_ks``: per 3x3 convolution layer, the shift of the
  kernels' distribution (``weightspace.filter_shift``); absent for models without one.
- ``diag/layers``: the position of each compared layer (metric: layer name), so a
  report draws them in network order.
- ``diag/summary``: ``task_vector_norm`` (||theta_adapted - theta_pretrained||) and
  ``task_vector_relative_norm`` (divided by ||theta_pretrained||), both over every entry,
  the head's included; the same split into the backbone's entries and the head's
  (``head.*``): ``task_vector_norm_backbone``, ``task_vector_relative_norm_backbone``
  (||tau_backbone|| / ||theta0_backbone||), ``task_vector_norm_head``,
  ``task_vector_relative_norm_head`` (||tau_head|| / ||theta0_head||), so that a new head
  trained from scratch (lp, ncm) does not stand for a moved backbone; and per sample
  ``linear_cka_features/<sample>``, ``mutual_knn_features/<sample>``,
  ``loss_barrier/<sample>``, ``error_barrier/<sample>``; ``filter_kl`` and
  ``filter_ks`` as means over layers.

``task_vector_cosine_rows`` gives ``diag/cosine`` rows (metric ``<task a>|<task b>``)
for the task vectors of one method adapted to several tasks.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..core import rows as row_names
from ..core.errors import DataError
from ..core.types import Split
from .similarity import default_layers, layer_features, similarities_from_grams
from .weightspace import filter_shift, is_head_entry, linear_path, task_vector, task_vector_cosines, task_vector_norms

__all__ = ["diagnose", "task_vector_cosine_rows", "PREFIX"]

PREFIX = row_names.DIAG_PREFIX


def _layers(pretrained: nn.Module, adapted: nn.Module, layers: Sequence[str] | None) -> list[str]:
    if layers is None:  # network order: the body's layers, the features, the head's
        names_b = dict(adapted.named_modules())
        shared = [n for n in default_layers(pretrained) if n in names_b]
        is_head = [n == "head" or n.startswith("head.") for n in shared]
        return [n for n, h in zip(shared, is_head) if not h] + ["features"] + [n for n, h in zip(shared, is_head) if h]
    return list(layers)


def _same_architecture(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(sa[k].shape == sb[k].shape for k in sa)


def _weight_norms(model: nn.Module) -> dict[str, float]:
    """L2 norms of the floating-point state-dict entries: ``total``, ``backbone``, ``head`` (``head.*``)."""
    sq = {"backbone": 0.0, "head": 0.0}
    for k, p in model.state_dict().items():
        if p.is_floating_point():
            sq["head" if is_head_entry(k) else "backbone"] += float((p.detach().double() ** 2).sum())
    return {"total": (sq["backbone"] + sq["head"]) ** 0.5, **{k: v ** 0.5 for k, v in sq.items()}}


def diagnose(pretrained: nn.Module, adapted: nn.Module, samples: Mapping[str, Split],
             layers: Sequence[str] | None = None, barrier_points: int = 11, knn_k: int = 10,
             batch_size: int = 256, paths: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Store rows comparing ``adapted`` with ``pretrained`` (see the module docstring).

    ``samples``: named image samples (e.g. {"task": ..., "pretrain": ...}), at least 4
    images each (mutual k-NN uses k = min(``knn_k``, images - 1)). ``layers``: module names present in both models
    (None: every conv and linear layer, "features" before the head's). Models whose weights do not
    line up (a prompt wrapper, a replaced head module) get the similarity rows only. ``paths``: the
    samples whose loss/error path is measured (None: every one; a sample labelled in another label
    space than the models' heads has none).
    """
    names = _layers(pretrained, adapted, layers)
    rows: dict[str, dict[str, float]] = {row_names.DIAG_LAYERS: {n: float(i) for i, n in enumerate(names)}}
    summary: dict[str, float] = {}
    same = _same_architecture(pretrained, adapted)  # else (a prompt, a new head module): no weight-space rows
    for name, split in samples.items():
        if len(split) < 4:
            raise DataError(f"diagnostics sample {name!r} has {len(split)} images; need at least 4")
        fa = layer_features(pretrained, split.images, names, batch_size)
        fb = layer_features(adapted, split.images, names, batch_size)
        k = min(knn_k, len(split) - 1)  # a small sample: every other image is a neighbour
        per_layer = {}
        for n in names:  # one Gram matrix per layer and model serves the three measures
            a, b = fa.pop(n), fb.pop(n)
            per_layer[n] = similarities_from_grams(a @ a.T, b @ b.T, knn_k=k)
        for measure in ("linear_cka", "rbf_cka", "mutual_knn"):
            rows[row_names.diag(measure, name)] = {n: v[measure] for n, v in per_layer.items()}
        last = "features" if "features" in names else names[-1]
        summary[f"linear_cka_{last}/{name}"] = rows[row_names.diag("linear_cka", name)][last]
        summary[f"mutual_knn_{last}/{name}"] = rows[row_names.diag("mutual_knn", name)][last]
        if not same or (paths is not None and name not in paths):
            continue
        path = linear_path(pretrained, adapted, split, barrier_points, batch_size)
        rows[row_names.diag("path", name)] = {
            **{f"loss@{a:g}": float(v) for a, v in zip(path.alphas, path.losses)},
            **{f"error@{a:g}": float(v) for a, v in zip(path.alphas, path.errors)},
        }
        summary[f"loss_barrier/{name}"] = path.loss_barrier
        summary[f"error_barrier/{name}"] = path.error_barrier
    rows[row_names.DIAG_SUMMARY] = summary
    if not same:
        return rows
    norms = task_vector_norms(task_vector(pretrained, adapted))
    bases = _weight_norms(pretrained)
    for part, suffix in (("total", ""), ("backbone", "_backbone"), ("head", "_head")):
        summary[f"task_vector_norm{suffix}"] = norms[part]
        base = bases[part]
        summary[f"task_vector_relative_norm{suffix}"] = norms[part] / base if base > 0 else float("nan")
    try:
        shift = filter_shift(pretrained, adapted)
    except DataError:  # no 3x3 convolution (mlp, vit): no filter rows
        shift = {}
    if shift:
        rows[f"{PREFIX}filter_kl"] = {k: v["kl"] for k, v in shift.items()}  # per model, no sample
        rows[f"{PREFIX}filter_ks"] = {k: v["ks"] for k, v in shift.items()}
        summary["filter_kl"] = sum(v["kl"] for v in shift.values()) / len(shift)
        summary["filter_ks"] = sum(v["ks"] for v in shift.values()) / len(shift)
    return rows


def task_vector_cosine_rows(pretrained: nn.Module, adapted: Mapping[str, nn.Module]) -> dict[str, dict[str, float]]:
    """``{"diag/cosine": {"<a>|<b>": cos}}`` for every pair of the named adapted models
    (their task vectors from ``pretrained``), pairs in the mapping's order, a before b.
    Models whose weights do not line up with ``pretrained``'s are left out."""
    names = [n for n in adapted if _same_architecture(pretrained, adapted[n])]  # others have no task vector
    if len(names) < 2:
        return {}
    cos = task_vector_cosines([task_vector(pretrained, adapted[n]) for n in names])
    return {f"{PREFIX}cosine": {f"{a}|{b}": float(cos[i, j])
                                for i, a in enumerate(names) for j, b in enumerate(names) if i < j}}
