"""One pass of a model over many eval sets, under ``torch.inference_mode()``.

How it computes (``core.runtime.ComputeOptions``; each keyword left None takes the value
of the enclosing ``compute_options`` block, fp32 outside any): ``precision`` bf16/fp16
runs the model under ``torch.autocast`` (metrics are still accumulated in float64 from
the logits); ``channels_last`` (default: convolutional models on CUDA) and ``compile``
change only how the same numbers are computed; ``loader_workers`` reads each set's
batches through a DataLoader. On CUDA, batches come through pinned memory with
non-blocking copies, and the metrics of one batch are taken while the next one computes
(one batch of lag, same numbers). With every option at its default the numbers are
those of a plain ``model(x)`` loop.

``evaluate_many`` runs several models over the sets in one pass (each batch read once).

``max_per_set`` evaluates each set on a seeded, class-stratified subset of at most that
many images (``evaluate.subsets``); every metrics dict carries ``n``, the images it counts,
and the accuracy's 95% Wilson interval ``acc_lo`` / ``acc_hi``.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping

import torch
from torch import nn

from ..core.errors import TrainingError
from ..core.runtime import autocast, compiled, pins_memory, resolve_compute, wants_channels_last
from ..core.types import Domain, iter_batches
from ..models.base import Model, model_name
from .metrics import ClassificationMetrics, class_mask
from .subsets import stratified_subset


def evaluate(
    model: Model,
    eval_sets: Mapping[str, Domain],
    batch_size: int = 512,
    progress: Callable[[float, str], None] | None = None,
    **options,
) -> dict[str, dict[str, float]]:
    """Metrics (accuracy, acc_lo, acc_hi, ece, nll, n) of ``model`` on each domain's test split.

    Logits are masked to a domain's ``class_subset`` when it has one. ``max_per_set``:
    evaluate at most that many images of each set, a subset chosen from ``subset_seed``
    and the set's name (None: every image). A NaN metric of a non-empty eval set (logits
    that are NaN or infinite: diverged weights) raises TrainingError naming the model and
    the eval set, so no such number is stored. An empty eval set gives NaN metrics with
    ``n = 0``. The other keywords are ``evaluate_many``'s.
    """
    return evaluate_many({"model": model}, eval_sets, batch_size, progress, **options)["model"]


def evaluate_many(
    models: Mapping[str, nn.Module],
    eval_sets: Mapping[str, Domain],
    batch_size: int = 512,
    progress: Callable[[float, str], None] | None = None,
    *,
    max_per_set: int | None = None,
    subset_seed: int = 0,
    precision: str | None = None,
    compile: bool | str | None = None,
    channels_last: bool | None = None,
    loader_workers: int | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``evaluate`` of several models in one pass: label -> eval set -> metrics.

    Each batch of each set is read once (decoded once, for a streaming split) and given to
    every model, so the models of one cell (an adapted model and its WiSE-FT curve points)
    cost one read of the data; each model's numbers are exactly those ``evaluate`` gives it
    alone. ``seconds``: when given, each label's forward-pass seconds are added to it
    (how a caller charges them apart from reading the data). ``progress(fraction, set)``
    after each set.
    """
    opts = resolve_compute(precision=precision, compile=compile, channels_last=channels_last,
                           loader_workers=loader_workers)
    runs = []  # (label, model, device, memory format, forward)
    for label, model in models.items():
        device = next(model.parameters()).device
        model.eval()
        memory_format = torch.channels_last if wants_channels_last(model, device, opts.channels_last) else None
        if memory_format is not None:
            model.to(memory_format=memory_format)
        runs.append((label, model, device, memory_format, compiled(model, opts.compile)))
    pin = any(pins_memory(r[2]) for r in runs)
    out: dict[str, dict[str, dict[str, float]]] = {label: {} for label in models}
    clock = time.perf_counter
    try:
        with torch.inference_mode():
            for i, (name, dom) in enumerate(eval_sets.items()):
                split = dom.test
                if max_per_set is not None:
                    rows = stratified_subset(split.labels, max_per_set, subset_seed, name)
                    split = split if rows is None else split.subset(rows)
                masks: dict[str, torch.Tensor] = {}  # per model, on its device, from its first logits
                metrics = {label: ClassificationMetrics(model.num_classes) for label, model, *_ in runs}
                pending: dict[str, tuple] = {}  # a model's previous batch: its metrics wait for the next forward
                for x, y in iter_batches(split, batch_size, workers=opts.loader_workers, pin_memory=pin):
                    on_device: dict[tuple, torch.Tensor] = {}
                    for label, model, device, memory_format, forward in runs:
                        t0 = clock() if seconds is not None else 0.0
                        xd = on_device.get((device, memory_format))
                        if xd is None:
                            xd = x.to(device, non_blocking=True)
                            if memory_format is not None:
                                xd = xd.contiguous(memory_format=memory_format)
                            on_device[(device, memory_format)] = xd
                        with autocast(opts.precision, device):
                            logits = forward(xd)
                        if dom.class_subset is not None:
                            if label not in masks:
                                masks[label] = class_mask(logits.shape[1], dom.class_subset, logits.device)
                            logits = logits.masked_fill(masks[label], float("-inf"))
                        if label in pending:
                            metrics[label].update(*pending[label])
                        pending[label] = (logits, y)
                        if seconds is not None:
                            seconds[label] = seconds.get(label, 0.0) + clock() - t0
                for label, model, *_ in runs:
                    if label in pending:
                        metrics[label].update(*pending[label])
                    out[label][name] = _checked(metrics[label].compute(), model, name, opts.precision)
                if progress is not None:
                    progress((i + 1) / len(eval_sets), name)
    finally:
        for _, model, _, memory_format, _ in runs:
            if memory_format is not None:
                model.to(memory_format=torch.contiguous_format)
    return out


def _checked(metrics: dict[str, float], model: Model, eval_set: str, precision: str = "fp32") -> dict[str, float]:
    if metrics["n"] > 0:
        bad = [k for k in ("accuracy", "ece", "nll") if math.isnan(metrics[k])]
        if bad:
            hint = " (or its logits overflow fp16: evaluate in bf16 or fp32)" if precision == "fp16" else ""
            raise TrainingError(f"model {model_name(model)!r} gives a NaN {bad[0]} on eval set {eval_set!r} "
                                f"({int(metrics['n'])} images): its logits are not finite, so its weights have "
                                f"probably diverged{hint}; no metric of it is stored")
    return metrics
