"""Merging every task's fine-tuned model into one (``combines = "tasks"``, except task
negation), on task vectors (``ribench.methods.task_vectors``) and the merge kernels of
``ribench.methods.merging``:

- ``task_arithmetic`` (Ilharco et al., ICLR 2023, "Editing Models with Task
  Arithmetic"): ``add``: theta_0 + lambda sum_t tau_t over the run's tasks, lambda
  selected on their validation parts; ``negate``: theta_0 - lambda tau_task with the
  lambda giving the lowest accuracy on the task's validation part among those that keep
  >= 95% of m0's accuracy on a control task (the pretraining sample).
- ``ties`` (Yadav et al., NeurIPS 2023): trim, elect sign (majority sign where the mass is
  0), disjoint mean (``merging.ties``), coefficient from the reference's grid 0.8..2.5
  selected on the tasks' validation parts.
- ``fisher_merge`` (Matena & Raffel, NeurIPS 2022): the average of the fine-tuned models
  weighted by each one's diagonal Fisher (``ribench.methods.fisher``, the one EWC uses) on
  its own task's training part, floored and normalised to unit norm as the reference code
  (``merging.fisher_average``).
- ``atlas`` (Zhang et al., NeurIPS 2024, "Knowledge Composition using Task Vectors with
  Learned Anisotropic Scaling"; github.com/fredzzhang/atlas, ``src/learn_task_addition.py``
  with ``--blockwise-coef``): one coefficient per (task vector, parameter tensor), from
  zeros, learned by AdamW (lr 1e-3, weight decay 0.1, gradient norm clipped to 1) on the
  sum of the tasks' cross-entropies over their validation parts (128 examples per step,
  split evenly; an epoch is a pass over the part with the fewest batches; 20 epochs), run
  through ``torch.func.functional_call``; the coefficients of the epoch with the best mean
  normalised validation accuracy (accuracy / the fine-tuned model's) are kept, m0 when no
  epoch beats it. It also records its ``coefficients``.

A merged model's task label is ``rows.MERGED``; every merge records ``trainable_params``
= the parameters of the fine-tuned models it combines.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ...core.errors import ConfigError
from ...core.registry import register_method
from ...core.runtime import seed_everything
from ...core.types import Domain
from ...models.base import Model
from .. import merging as kernels
from ..base import AdaptContext, Method
from ..fisher import FISHER_MODES, check_mode, diagonal_fisher
from .common import (State, accuracy, apply_delta, check_grid, ft_params, ingredient_models, mean_val_accuracy,
                     model_with, select_best, state_of, steps, task_vectors_by_task)

# ------------------------------------------------------------------------ task arithmetic


@dataclass(frozen=True)
class TaskArithmeticConfig:
    mode: str = field(default="add", metadata={"help": "add (merge every task's vector) or negate (forget this task)"})
    coefficients: tuple = field(default=steps(0.0, 1.0, 0.05), metadata={"help": "grid of the scaling coefficient lambda"})
    control_fraction: float = field(default=0.95, metadata={
        "help": "negate: keep at least this fraction of m0's accuracy on the control task (pretraining sample)"})

    def __post_init__(self) -> None:
        if self.mode not in ("add", "negate"):
            raise ValueError(f"mode must be 'add' or 'negate', got {self.mode!r}")
        object.__setattr__(self, "coefficients", check_grid(self.coefficients, "coefficients", 0.0))
        if not 0.0 <= self.control_fraction <= 1.0:
            raise ValueError(f"control_fraction must be in [0, 1], got {self.control_fraction}")


def task_arithmetic_state(pretrained: Model, vectors: Sequence[Mapping[str, torch.Tensor]], coefficient: float) -> State:
    """theta_0 + coefficient * sum_t tau_t."""
    names = list(vectors[0])
    return apply_delta(state_of(pretrained), dict(kernels.task_sum(vectors, names)), coefficient)


@register_method("task_arithmetic")
class TaskArithmetic(Method):
    """Task arithmetic: add every task's vector, or negate this task's (module docstring)."""

    name = "task_arithmetic"
    # 2: negate picks the lowest target accuracy among the coefficients keeping the control (was the largest
    #    such coefficient); add is unchanged
    version = "2"
    requires = ("ft",)
    Config = TaskArithmeticConfig

    @property
    def combines(self) -> str | None:
        return "tasks" if self.config.mode == "add" else None

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        tvs = task_vectors_by_task(pretrained, ctx, task)
        ctx.info["trainable_params"] = ft_params([pretrained])
        if self.config.mode == "add":
            vectors = list(tvs.values())
            summed = dict(kernels.task_sum(vectors, list(vectors[0])))
            splits = ctx.splits(task.name)
            base = state_of(pretrained)
            lam, scores = select_best(list(self.config.coefficients),
                                      lambda c: mean_val_accuracy(pretrained, apply_delta(base, summed, c), splits))
            ctx.info.update(coefficient=lam, val_acc_by_coefficient=scores, tasks=sorted(tvs))
            return model_with(pretrained, apply_delta(base, summed, lam))
        (tv,) = tvs.values()
        base = state_of(pretrained)
        control = ctx.pretrain_sample
        floor = self.config.control_fraction * accuracy(pretrained, None, control)
        lam, target_acc = 0.0, None
        for c in sorted(self.config.coefficients):  # the lowest target accuracy that keeps the control
            state = apply_delta(base, tv, -c)
            if accuracy(pretrained, state, control) < floor:
                continue
            acc = accuracy(pretrained, state, ctx.val)
            if target_acc is None or acc < target_acc:
                lam, target_acc = c, acc
        ctx.info.update(coefficient=lam, control_floor=floor, target_val_acc=target_acc)
        return model_with(pretrained, apply_delta(base, tv, -lam))


# ------------------------------------------------------------------------ TIES


@dataclass(frozen=True)
class TIESConfig:
    density: float = field(default=0.2, metadata={"help": "fraction k of each task vector's entries kept by magnitude "
                                                          "(the reference's topk20)"})
    scope: str = field(default="global", metadata={"help": "trim over the whole task vector (global) or per tensor"})
    trim: str = field(default="kthvalue", metadata={
        "help": "kthvalue: keep magnitudes >= the (k+1)-th largest, every tie (the reference); exact: exactly k, "
                "ties by position"})
    coefficients: tuple = field(default=steps(0.8, 2.5, 0.1), metadata={
        "help": "grid of the scaling coefficient lambda (the reference's linear+0.8+2.51+0.1)"})

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.scope not in ("global", "tensor"):
            raise ValueError(f"scope must be 'global' or 'tensor', got {self.scope!r}")
        if self.trim not in kernels.TRIMS:
            raise ConfigError("trim", f"must be one of {', '.join(kernels.TRIMS)}, got {self.trim!r}")
        object.__setattr__(self, "coefficients", check_grid(self.coefficients, "coefficients", 0.0))


@register_method("ties")
class TIESMerging(Method):
    """TIES merging of every task's fine-tuned model (module docstring)."""

    name = "ties"
    # 2: the reference's trim (>= the (k+1)-th largest, ties kept), majority sign where the mass is 0,
    #    lambda grid 0.8..2.5 (was: exactly k kept, 0 where the mass is 0, grid 0.8..1.8)
    version = "2"
    requires = ("ft",)
    Config = TIESConfig

    @property
    def combines(self) -> str | None:
        return "tasks"

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        tvs = task_vectors_by_task(pretrained, ctx, task)
        vectors = list(tvs.values())
        cfg = self.config
        merged = dict(kernels.ties(vectors, cfg.density, cfg.scope, names=list(vectors[0]), trim=cfg.trim))
        base, splits = state_of(pretrained), ctx.splits(task.name)
        lam, scores = select_best(list(cfg.coefficients),
                                  lambda c: mean_val_accuracy(pretrained, apply_delta(base, merged, c), splits))
        ctx.info.update(coefficient=lam, val_acc_by_coefficient=scores, tasks=sorted(tvs),
                        trainable_params=ft_params([pretrained]))
        return model_with(pretrained, apply_delta(base, merged, lam))


# ------------------------------------------------------------------------ Fisher merging


@dataclass(frozen=True)
class FisherConfig:
    examples: int = field(default=4096, metadata={"help": "training examples per task for the Fisher (capped by the data)"})
    fisher: str = field(default="exact", metadata={
        "help": "exact (the expectation over the model's predictive distribution, summed over the classes) or "
                "sample (one label drawn per image, seeded), as ewc's fisher"})
    floor: float = field(default=1e-6, metadata={
        "help": "lower bound of every Fisher entry, max(F, floor) (the reference's fisher_floor)"})
    normalize: bool = field(default=True, metadata={
        "help": "divide each model's weight by the L2 norm of its Fisher (the reference's normalize_fishers)"})
    batch_size: int = field(default=32, metadata={"help": "examples per vectorised per-example gradient batch"})

    def __post_init__(self) -> None:
        if self.examples < 1 or self.batch_size < 1:
            raise ValueError("examples and batch_size must be positive")
        check_mode(self.fisher)
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")


# The Fisher's mode was once the hyperparameter ``labels`` ("expected" | "sampled"). Specs and
# stored cells that spell it so still load. The exact mode is written in that spelling, so the
# cells of runs made before keep their keys (its numbers did not change); the sampled mode now
# draws its labels from the run's seeded generator (it drew from torch's global one), so it is
# written as ``fisher = "sample"`` and its cells are recomputed.
LEGACY_LABELS = {"expected": "exact", "sampled": "sample"}


@register_method("fisher_merge")
class FisherMerge(Method):
    """Fisher-weighted averaging of every task's fine-tuned model (module docstring)."""

    name = "fisher_merge"
    version = "2"  # 2: max(F, floor) and Fishers normalised to unit norm, as the reference (was F + floor, unnormalised)
    requires = ("ft",)
    Config = FisherConfig

    def __init__(self, **params: Any):
        if "labels" in params:
            where = f"methods.{self.name}.params.labels"
            labels = params.pop("labels")
            if "fisher" in params:
                raise ConfigError(where, "is the former name of fisher; give only fisher")
            if not isinstance(labels, str) or labels not in LEGACY_LABELS:
                raise ConfigError(where, f"must be one of {', '.join(LEGACY_LABELS)} (the former spelling of fisher = "
                                         f"{' | '.join(FISHER_MODES)}), got {labels!r}")
            params["fisher"] = LEGACY_LABELS[labels]
        super().__init__(**params)

    def params(self) -> dict[str, Any]:
        p = super().params()
        if p["fisher"] == "exact":  # the spelling of the runs made before (comment above LEGACY_LABELS)
            del p["fisher"]
            p["labels"] = "expected"
        return p

    @property
    def combines(self) -> str | None:
        return "tasks"

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        found = ingredient_models(ctx, task)
        splits = ctx.splits(task.name)
        g = seed_everything(ctx.seed)
        params, fishers = [], []
        for ing, m in found:
            train = splits[ing.task][0] if ing.task in splits else ctx.train
            fishers.append(diagonal_fisher(m, train, mode=cfg.fisher, generator=g, examples=cfg.examples,
                                           batch_size=cfg.batch_size))
            params.append(state_of(m))
        floating = [k for k, v in params[0].items() if v.is_floating_point()]
        merged = dict(kernels.fisher_average(params, fishers, floor=cfg.floor, names=floating, normalize=cfg.normalize))
        ctx.info.update(tasks=sorted(i.task for i, _ in found), trainable_params=ft_params([pretrained]))
        return model_with(pretrained, {**state_of(pretrained), **{k: v.to(params[0][k].dtype) for k, v in merged.items()}})


# ------------------------------------------------------------------------ aTLAS


@dataclass(frozen=True)
class AtlasConfig:
    init: float = field(default=0.0, metadata={"help": "initial value of every coefficient (the reference: zeros)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the coefficients (the reference's)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay of the coefficients (the reference's)"})
    epochs: int = field(default=20, metadata={
        "help": "epochs, each a pass over the validation part with the fewest batches (the reference's 20)"})
    batch_size: int = field(default=128, metadata={
        "help": "examples per step over all tasks, split evenly: batch_size // tasks from each (the reference's)"})
    clip: float = field(default=1.0, metadata={"help": "gradient norm clip of the coefficients (the reference's)"})

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.weight_decay < 0 or self.clip <= 0:
            raise ValueError("lr, epochs, batch_size and clip must be positive, weight_decay >= 0")


def atlas_state(pretrained: Model, vectors: Sequence[Mapping[str, torch.Tensor]], coefficients: torch.Tensor,
                names: Sequence[str]) -> dict[str, torch.Tensor]:
    """theta_0[l] + sum_t coefficients[t, l] tau_t[l] for the parameter tensors ``names``
    (differentiable in ``coefficients`` [T, L]); other entries as in m0."""
    out = {k: v for k, v in state_of(pretrained).items()}
    for j, k in enumerate(names):
        base = out[k]
        delta = sum(coefficients[t, j] * v[k].to(base.device, base.dtype) for t, v in enumerate(vectors))
        out[k] = base + delta
    return out


@register_method("atlas")
class Atlas(Method):
    """aTLAS: learned coefficients per (task vector, parameter tensor) (module docstring)."""

    name = "atlas"
    # 2: the reference's recipe (zero init, weight decay 0.1, 20 epochs over the smallest validation part, 128
    #    examples per step over all tasks, summed losses, gradient clip 1, the best epoch by normalised accuracy)
    version = "2"
    requires = ("ft",)
    Config = AtlasConfig

    @property
    def combines(self) -> str | None:
        return "tasks"

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        found = ingredient_models(ctx, task)
        tvs = task_vectors_by_task(pretrained, ctx, task)
        vectors = list(tvs.values())
        names = [k for k, _ in pretrained.named_parameters() if k in vectors[0]]
        splits = ctx.splits(task.name)
        vals = [splits[t][1] if t in splits else ctx.val for t in tvs]
        ft_acc = [accuracy(m, None, v) for (_, m), v in zip(found, vals)]

        def normalised(state: State | None) -> float:
            return sum(accuracy(pretrained, state, v) / max(a, 1e-12) for v, a in zip(vals, ft_acc)) / len(vals)

        coef = torch.full((len(vectors), len(names)), float(cfg.init), device=ctx.device, requires_grad=True)
        opt = torch.optim.AdamW([coef], lr=cfg.lr, weight_decay=cfg.weight_decay)
        g = seed_everything(ctx.seed)
        per_task = max(1, cfg.batch_size // len(vals))
        n_batches = [math.ceil(len(v) / per_task) for v in vals]
        prim = n_batches.index(min(n_batches))  # the task with the fewest batches drives the epoch
        module = copy.deepcopy(pretrained).to(ctx.device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        best, best_coef, best_epoch, scores = normalised(None), torch.zeros_like(coef.detach()), 0, []
        for epoch in range(cfg.epochs):
            iters = [v.batches(per_task, shuffle=True, generator=g) for v in vals]
            for _ in range(n_batches[prim]):
                state = atlas_state(module, vectors, coef, names)
                loss = torch.zeros((), device=ctx.device)
                for it in iters:
                    x, y = next(it)
                    loss = loss + F.cross_entropy(functional_call(module, state, (x.to(ctx.device),)), y.to(ctx.device))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([coef], cfg.clip)
                opt.step()
            with torch.no_grad():
                score = normalised(atlas_state(module, vectors, coef.detach(), names))
            scores.append(score)
            if score > best:
                best, best_coef, best_epoch = score, coef.detach().clone(), epoch + 1
            ctx.progress((epoch + 1) / cfg.epochs, f"aTLAS epoch {epoch + 1}/{cfg.epochs}")
        with torch.no_grad():
            final = {k: v.detach() for k, v in atlas_state(module, vectors, best_coef, names).items()}
        ctx.info.update(coefficients=int(coef.numel()), tasks=sorted(tvs), trainable_params=ft_params([pretrained]),
                        mean_coefficient=float(best_coef.mean()), val_norm_acc_by_epoch=scores,
                        val_norm_acc=best, best_epoch=best_epoch)
        return model_with(pretrained, final)
