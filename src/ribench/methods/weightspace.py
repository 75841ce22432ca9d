"""Weight-space adaptation methods: interpolation, soups, task arithmetic, merging.

All of them combine models fine-tuned by ``ft`` (``requires = ("ft",)``) with the
pretrained model m0 in weight space; none trains the network's weights itself.

- ``wise_ft`` (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models"):
  theta(alpha) = theta_0 + alpha (theta_ft - theta_0); alpha selected on the task's
  validation part over a grid; the evaluate cell also evaluates the whole curve.
- ``soup_uniform`` / ``soup_greedy`` (Wortsman et al., ICML 2022, "Model soups"): the
  average of models fine-tuned with different seeds (and optionally hyperparameters);
  the greedy soup adds ingredients in order of held-out accuracy (equal ones in reverse
  ingredient order, as the reference's sort), each only if the held-out accuracy of the
  soup strictly improves.
- ``task_arithmetic`` (Ilharco et al., ICLR 2023, "Editing Models with Task
  Arithmetic"): ``add``: theta_0 + lambda sum_t tau_t over the run's tasks, lambda
  selected on their validation parts; ``negate``: theta_0 - lambda tau_task with the
  lambda giving the lowest accuracy on the task's validation part among those that keep
  >= 95% of m0's accuracy on a control task (the pretraining sample).
- ``ties`` (Yadav et al., NeurIPS 2023): trim, elect sign (majority sign where the mass is
  0), disjoint mean (``ribench.methods.merging``), coefficient from the reference's grid
  0.8..2.5 selected on the tasks' validation parts.
- ``fisher_merge`` (Matena & Raffel, NeurIPS 2022): the average of the fine-tuned models
  weighted by each one's diagonal Fisher on its own task's training part, floored and
  normalised to unit norm as the reference code (``merging.fisher_average``).
- ``atlas`` (Zhang et al., NeurIPS 2024, "Knowledge Composition using Task Vectors with
  Learned Anisotropic Scaling"; github.com/fredzzhang/atlas, ``src/learn_task_addition.py``
  with ``--blockwise-coef``): one coefficient per (task vector, parameter tensor), from
  zeros, learned by AdamW (lr 1e-3, weight decay 0.1, gradient norm clipped to 1) on the
  sum of the tasks' cross-entropies over their validation parts (128 examples per step,
  split evenly; an epoch is a pass over the part with the fewest batches; 20 epochs), run
  through ``torch.func.functional_call``; the coefficients of the epoch with the best mean
  normalised validation accuracy (accuracy / the fine-tuned model's) are kept, m0 when no
  epoch beats it.
- ``dawin`` (Oh et al., ICLR 2025, "DaWin: Training-free Dynamic Weight Interpolation for
  Robust Adaptation"; github.com/naver-ai/dawin, ``dawin_rft/main_dawin.py``): per sample,
  lambda(x) = exp(-H_ft(x)) / (exp(-H_0(x)) + exp(-H_ft(x))) from the prediction
  entropies (nats) of m0 and the fine-tuned model (the reference's default expertise
  ``negexp_ent_ratio``, without offset adjustment or mixture model, as its defaults), and
  the prediction of theta_0 + lambda(x) (theta_ft - theta_0). ``expertise="entropy_ratio"``
  gives lambda = H_0 / (H_0 + H_ft). The result is a ``DaWinModel`` (registered model
  ``dawin``) holding both models, saved and loaded like any other model.

Task vectors come from ``ribench.analysis.weightspace.task_vector`` (float64 deltas);
the merged weights are cast back to each entry's dtype. Candidate weights are scored
through ``torch.func.functional_call`` on one module, never by copying models.
Weight-space methods record ``trainable_params`` = the parameters of the fine-tuned
models they combine (what fine-tuning trained); aTLAS also records its ``coefficients``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..analysis.weightspace import task_vector
from ..core.errors import ConfigError, DataError
from ..core.registry import MODELS, register_method, register_model
from ..core.runtime import seed_everything
from ..core.types import Domain, InputSpec, Split
from ..models.base import Model
from . import merging
from .base import AdaptContext, Method

State = dict[str, torch.Tensor]


def _grid(values: Sequence[float], name: str, lo: float | None = 0.0, hi: float | None = None) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if not vals or any(math.isnan(v) for v in vals) or (lo is not None and min(vals) < lo) or \
            (hi is not None and max(vals) > hi):
        bounds = f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise ValueError(f"{name} must be a non-empty list of numbers{bounds}, got {list(values)}")
    return vals


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    n = int(round((stop - start) / step))
    return tuple(round(start + i * step, 10) for i in range(n + 1))


# ------------------------------------------------------------------------ helpers


def _state(model: nn.Module) -> State:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _apply(base: State, delta: Mapping[str, torch.Tensor], scale: float = 1.0) -> State:
    """base + scale * delta on the entries of delta (float64 arithmetic, base's dtype)."""
    out = dict(base)
    for k, d in delta.items():
        b = base[k]
        out[k] = (b.to(torch.float64) + scale * d.to(b.device, torch.float64)).to(b.dtype)
    return out


def _average(states: Sequence[State], weights: Sequence[float] | None = None) -> State:
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


def _model_with(template: Model, state: State) -> Model:
    m = copy.deepcopy(template)
    m.load_state_dict(state)
    return m


@torch.no_grad()
def _accuracy(module: nn.Module, state: State | None, split: Split, batch_size: int = 512) -> float:
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


def _mean_val_accuracy(module: nn.Module, state: State, splits: Mapping[str, tuple[Split, Split]]) -> float:
    return sum(_accuracy(module, state, val) for _, val in splits.values()) / len(splits)


def _select(candidates: Sequence[float], score) -> tuple[float, dict[str, float]]:
    """The candidate with the highest score (the first on ties) and every score."""
    scores = {c: score(c) for c in candidates}
    best = max(candidates, key=lambda c: (scores[c], -candidates.index(c)))
    return best, {f"{c:g}": s for c, s in scores.items()}


def _ft_params(models: Sequence[Model]) -> int:
    return int(sum(p.numel() for p in models[0].parameters()))


def _ingredient_models(ctx: AdaptContext, task: Domain, name: str = "ft") -> list[tuple[Any, Model]]:
    found = ctx.ingredients(name, task.name, ctx.seed)
    if not found:
        raise DataError(f"no {name!r} models were handed over (the engine runs {name!r} first)")
    return found


def _task_vectors_by_task(pretrained: Model, ctx: AdaptContext, task: Domain) -> dict[str, State]:
    """One task vector per task of the fine-tuned models handed over (one seed)."""
    out: dict[str, State] = {}
    for ing, m in _ingredient_models(ctx, task):
        if ing.task in out:
            raise DataError(f"two fine-tuned models of task {ing.task!r} to merge; a merge takes one per task")
        out[ing.task] = task_vector(pretrained, m)
    return out


# ------------------------------------------------------------------------ WiSE-FT


@dataclass(frozen=True)
class WiSEFTConfig:
    alphas: tuple = field(default=_steps(0.0, 1.0, 0.1),
                          metadata={"help": "mixing coefficients (weight of the fine-tuned model) of the grid and curve"})
    alpha: float | None = field(default=None, metadata={"help": "fixed alpha; None selects it on the validation part"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", _grid(self.alphas, "alphas", 0.0, 1.0))
        if self.alpha is not None and not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def interpolate(pretrained: Model, finetuned: Model, alpha: float) -> Model:
    """theta_0 + alpha (theta_ft - theta_0), a new model."""
    return _model_with(pretrained, _apply(_state(pretrained), task_vector(pretrained, finetuned), alpha))


@register_method("wise_ft")
class WiSEFT(Method):
    """WiSE-FT: interpolate m0 and the fine-tuned model in weight space (module docstring)."""

    name = "wise_ft"
    requires = ("ft",)
    Config = WiSEFTConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        ft = ctx.inputs["ft"]
        base, tv = _state(pretrained), task_vector(pretrained, ft)
        alpha = self.config.alpha
        if alpha is None:
            alpha, scores = _select(list(self.config.alphas), lambda a: _accuracy(pretrained, _apply(base, tv, a), ctx.val))
            ctx.info["val_acc_by_alpha"] = scores
        ctx.info.update(alpha=float(alpha), trainable_params=_ft_params([ft]))
        return _model_with(pretrained, _apply(base, tv, alpha))

    def extra_models(self, pretrained: Model, adapted: Model, inputs: Mapping[str, Model]) -> dict[str, Model]:
        """The whole curve: ``curve/alpha=<a>`` for every alpha of the grid."""
        return {f"curve/alpha={a:g}": interpolate(pretrained, inputs["ft"], a) for a in self.config.alphas}


# ------------------------------------------------------------------------ soups


@dataclass(frozen=True)
class SoupConfig:
    variants: tuple = field(default=(), metadata={
        "help": "extra ingredients: hyperparameter overrides of ft, e.g. [{lr = 1e-4}], each fine-tuned for every seed"})

    def __post_init__(self) -> None:
        vs = tuple(dict(v) for v in self.variants) if isinstance(self.variants, (list, tuple)) else None
        if vs is None or any(not v for v in vs):
            raise ValueError(f"variants must be a list of non-empty tables of ft hyperparameters, got {self.variants!r}")
        object.__setattr__(self, "variants", vs)


class _Soup(Method):
    requires = ("ft",)
    Config = SoupConfig

    @property
    def combines(self) -> str | None:
        return "seeds"

    def input_variants(self) -> list[dict[str, Any]]:
        return [{}, *self.config.variants]

    def _ingredients(self, task: Domain, ctx: AdaptContext) -> list[tuple[Any, Model]]:
        found = _ingredient_models(ctx, task)
        ctx.info.update(ingredients=len(found), trainable_params=_ft_params([m for _, m in found]))
        return found


@register_method("soup_uniform")
class UniformSoup(_Soup):
    """Uniform model soup: the plain average of every ingredient (module docstring)."""

    name = "soup_uniform"

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        models = [m for _, m in self._ingredients(task, ctx)]
        return _model_with(pretrained, _average([_state(m) for m in models]))


@register_method("soup_greedy")
class GreedySoup(_Soup):
    """Greedy model soup: add ingredients by held-out accuracy while it strictly improves."""

    name = "soup_greedy"
    version = "2"  # 2: ingredients of equal held-out accuracy tried in reverse order, as the reference

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        found = self._ingredients(task, ctx)
        states = [_state(m) for _, m in found]
        accs = [_accuracy(pretrained, s, ctx.val) for s in states]
        # descending accuracy; equal accuracies in reverse ingredient order (the reference's
        # ascending stable sort, then reverse())
        order = sorted(range(len(states)), key=lambda i: accs[i])[::-1]
        chosen = [order[0]]
        best = accs[order[0]]
        for i in order[1:]:
            acc = _accuracy(pretrained, _average([states[j] for j in chosen + [i]]), ctx.val)
            if acc > best:
                chosen.append(i)
                best = acc
        ctx.info.update(selected=[list(found[i][0]) for i in chosen], val_acc=best)
        return _model_with(pretrained, _average([states[j] for j in chosen]))


# ------------------------------------------------------------------------ task arithmetic


@dataclass(frozen=True)
class TaskArithmeticConfig:
    mode: str = field(default="add", metadata={"help": "add (merge every task's vector) or negate (forget this task)"})
    coefficients: tuple = field(default=_steps(0.0, 1.0, 0.05), metadata={"help": "grid of the scaling coefficient lambda"})
    control_fraction: float = field(default=0.95, metadata={
        "help": "negate: keep at least this fraction of m0's accuracy on the control task (pretraining sample)"})

    def __post_init__(self) -> None:
        if self.mode not in ("add", "negate"):
            raise ValueError(f"mode must be 'add' or 'negate', got {self.mode!r}")
        object.__setattr__(self, "coefficients", _grid(self.coefficients, "coefficients", 0.0))
        if not 0.0 <= self.control_fraction <= 1.0:
            raise ValueError(f"control_fraction must be in [0, 1], got {self.control_fraction}")


def task_arithmetic_state(pretrained: Model, vectors: Sequence[Mapping[str, torch.Tensor]], coefficient: float) -> State:
    """theta_0 + coefficient * sum_t tau_t."""
    names = list(vectors[0])
    return _apply(_state(pretrained), dict(merging.task_sum(vectors, names)), coefficient)


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
        tvs = _task_vectors_by_task(pretrained, ctx, task)
        ctx.info["trainable_params"] = _ft_params([pretrained])
        if self.config.mode == "add":
            vectors = list(tvs.values())
            summed = dict(merging.task_sum(vectors, list(vectors[0])))
            splits = ctx.splits(task.name)
            base = _state(pretrained)
            lam, scores = _select(list(self.config.coefficients),
                                  lambda c: _mean_val_accuracy(pretrained, _apply(base, summed, c), splits))
            ctx.info.update(coefficient=lam, val_acc_by_coefficient=scores, tasks=sorted(tvs))
            return _model_with(pretrained, _apply(base, summed, lam))
        (tv,) = tvs.values()
        base = _state(pretrained)
        control = ctx.pretrain_sample
        floor = self.config.control_fraction * _accuracy(pretrained, None, control)
        lam, target_acc = 0.0, None
        for c in sorted(self.config.coefficients):  # the lowest target accuracy that keeps the control
            state = _apply(base, tv, -c)
            if _accuracy(pretrained, state, control) < floor:
                continue
            acc = _accuracy(pretrained, state, ctx.val)
            if target_acc is None or acc < target_acc:
                lam, target_acc = c, acc
        ctx.info.update(coefficient=lam, control_floor=floor, target_val_acc=target_acc)
        return _model_with(pretrained, _apply(base, tv, -lam))


# ------------------------------------------------------------------------ TIES


@dataclass(frozen=True)
class TIESConfig:
    density: float = field(default=0.2, metadata={"help": "fraction k of each task vector's entries kept by magnitude "
                                                          "(the reference's topk20)"})
    scope: str = field(default="global", metadata={"help": "trim over the whole task vector (global) or per tensor"})
    trim: str = field(default="kthvalue", metadata={
        "help": "kthvalue: keep magnitudes >= the (k+1)-th largest, every tie (the reference); exact: exactly k, "
                "ties by position"})
    coefficients: tuple = field(default=_steps(0.8, 2.5, 0.1), metadata={
        "help": "grid of the scaling coefficient lambda (the reference's linear+0.8+2.51+0.1)"})

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.scope not in ("global", "tensor"):
            raise ValueError(f"scope must be 'global' or 'tensor', got {self.scope!r}")
        if self.trim not in merging.TRIMS:
            raise ConfigError("trim", f"must be one of {', '.join(merging.TRIMS)}, got {self.trim!r}")
        object.__setattr__(self, "coefficients", _grid(self.coefficients, "coefficients", 0.0))


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
        tvs = _task_vectors_by_task(pretrained, ctx, task)
        vectors = list(tvs.values())
        cfg = self.config
        merged = dict(merging.ties(vectors, cfg.density, cfg.scope, names=list(vectors[0]), trim=cfg.trim))
        base, splits = _state(pretrained), ctx.splits(task.name)
        lam, scores = _select(list(cfg.coefficients),
                              lambda c: _mean_val_accuracy(pretrained, _apply(base, merged, c), splits))
        ctx.info.update(coefficient=lam, val_acc_by_coefficient=scores, tasks=sorted(tvs),
                        trainable_params=_ft_params([pretrained]))
        return _model_with(pretrained, _apply(base, merged, lam))


# ------------------------------------------------------------------------ Fisher merging


@dataclass(frozen=True)
class FisherConfig:
    examples: int = field(default=4096, metadata={"help": "training examples per task for the Fisher (capped by the data)"})
    labels: str = field(default="expected", metadata={
        "help": "expected (exact expectation over the model's predictive distribution) or sampled (one label drawn)"})
    floor: float = field(default=1e-6, metadata={
        "help": "lower bound of every Fisher entry, max(F, floor) (the reference's fisher_floor)"})
    normalize: bool = field(default=True, metadata={
        "help": "divide each model's weight by the L2 norm of its Fisher (the reference's normalize_fishers)"})
    batch_size: int = field(default=32, metadata={"help": "examples per vectorised per-example gradient batch"})

    def __post_init__(self) -> None:
        if self.examples < 1 or self.batch_size < 1:
            raise ValueError("examples and batch_size must be positive")
        if self.labels not in ("expected", "sampled"):
            raise ValueError(f"labels must be 'expected' or 'sampled', got {self.labels!r}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")


def diagonal_fisher(model: Model, split: Split, examples: int, labels: str = "expected", batch_size: int = 32,
                    generator: torch.Generator | None = None) -> State:
    """Diagonal Fisher of ``model``'s parameters: the mean over examples x of
    E_{y ~ p(y|x)} (d log p(y|x) / d theta)^2 (``labels="expected"``: the exact sum over
    classes; ``"sampled"``: one y drawn from p(y|x))."""
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    n = min(examples, len(split))
    idx = torch.sort(torch.randperm(len(split), generator=generator)[:n]).values
    sub = split.subset(idx)
    was = model.training
    model.eval()

    def log_probs(p, x):
        return F.log_softmax(functional_call(model, (p, buffers), (x.unsqueeze(0),)), dim=-1)[0]

    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    try:
        for x, _ in sub.batches(batch_size):
            x = x.to(device)
            with torch.no_grad():
                probs = F.softmax(model(x), dim=-1)
            if labels == "expected":
                jac = torch.func.vmap(torch.func.jacrev(log_probs), in_dims=(None, 0))(params, x)  # [B, C, ...]
                for k, g in jac.items():
                    w = probs.view(*probs.shape, *([1] * (g.dim() - 2)))
                    fisher[k] += (w * g.pow(2)).sum((0, 1))
            else:
                y = torch.multinomial(probs, 1, generator=None).squeeze(1)

                def logp_y(p, xi, yi):
                    return log_probs(p, xi)[yi]

                grads = torch.func.vmap(torch.func.grad(logp_y), in_dims=(None, 0, 0))(params, x, y)
                for k, g in grads.items():
                    fisher[k] += g.pow(2).sum(0)
    finally:
        model.train(was)
    return {k: v / n for k, v in fisher.items()}


@register_method("fisher_merge")
class FisherMerge(Method):
    """Fisher-weighted averaging of every task's fine-tuned model (module docstring)."""

    name = "fisher_merge"
    version = "2"  # 2: max(F, floor) and Fishers normalised to unit norm, as the reference (was F + floor, unnormalised)
    requires = ("ft",)
    Config = FisherConfig

    @property
    def combines(self) -> str | None:
        return "tasks"

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        found = _ingredient_models(ctx, task)
        splits = ctx.splits(task.name)
        g = seed_everything(ctx.seed)
        params, fishers = [], []
        for ing, m in found:
            train = splits[ing.task][0] if ing.task in splits else ctx.train
            fishers.append(diagonal_fisher(m, train, self.config.examples, self.config.labels, self.config.batch_size, g))
            params.append(_state(m))
        floating = [k for k, v in params[0].items() if v.is_floating_point()]
        merged = dict(merging.fisher_average(params, fishers, floor=self.config.floor, names=floating,
                                             normalize=self.config.normalize))
        ctx.info.update(tasks=sorted(i.task for i, _ in found), trainable_params=_ft_params([pretrained]))
        return _model_with(pretrained, {**_state(pretrained), **{k: v.to(params[0][k].dtype) for k, v in merged.items()}})


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
    out = {k: v for k, v in _state(pretrained).items()}
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
        found = _ingredient_models(ctx, task)
        tvs = _task_vectors_by_task(pretrained, ctx, task)
        vectors = list(tvs.values())
        names = [k for k, _ in pretrained.named_parameters() if k in vectors[0]]
        splits = ctx.splits(task.name)
        vals = [splits[t][1] if t in splits else ctx.val for t in tvs]
        ft_acc = [_accuracy(m, None, v) for (_, m), v in zip(found, vals)]

        def normalised(state: State | None) -> float:
            return sum(_accuracy(pretrained, state, v) / max(a, 1e-12) for v, a in zip(vals, ft_acc)) / len(vals)

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
        ctx.info.update(coefficients=int(coef.numel()), tasks=sorted(tvs), trainable_params=_ft_params([pretrained]),
                        mean_coefficient=float(best_coef.mean()), val_norm_acc_by_epoch=scores,
                        val_norm_acc=best, best_epoch=best_epoch)
        return _model_with(pretrained, final)


# ------------------------------------------------------------------------ DaWin

DAWIN_EXPERTISE = ("negexp_entropy", "entropy_ratio")


def _entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Prediction entropy [B] (nats) of softmax(logits / temperature), logits [B, C] (float64)."""
    logp = F.log_softmax(logits.double() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def dawin_coefficients(h0: torch.Tensor, h1: torch.Tensor, expertise: str = "negexp_entropy") -> torch.Tensor:
    """The weight lambda [B] of the fine-tuned model from the entropies h0, h1 [B] (nats)
    of m0 and the fine-tuned model.

    ``negexp_entropy`` (the reference code's default ``negexp_ent_ratio``):
    exp(-h1) / (exp(-h0) + exp(-h1)) = sigmoid(h0 - h1). ``entropy_ratio``:
    h0 / (h0 + h1), 0.5 where both are 0."""
    if expertise == "negexp_entropy":
        return torch.sigmoid(h0 - h1)
    if expertise == "entropy_ratio":
        tot = h0 + h1
        return torch.where(tot > 0, h0 / tot.clamp(min=1e-300), torch.full_like(tot, 0.5))
    raise ConfigError("expertise", f"must be one of {', '.join(DAWIN_EXPERTISE)}, got {expertise!r}")


class DaWinModel(Model):
    """Two models of one architecture, m0 and m1 (fine-tuned), combined per sample:
    lambda(x) = ``dawin_coefficients(H_0(x), H_1(x), expertise)`` from the entropies of
    softmax(logits / T) with ``temperatures`` (T_0, T_1), and the output of
    theta_0 + lambda(x) (theta_1 - theta_0). ``groups`` 0 runs one interpolated model per
    distinct lambda; k > 0 bins lambda into k equal-width bins on [0, 1] and runs each
    bin's mean lambda (fewer forward passes)."""

    arch = "dawin"

    def __init__(self, m0: Model, m1: Model, groups: int = 0, expertise: str = "negexp_entropy",
                 temperatures: Sequence[float] = (1.0, 1.0)):
        super().__init__(m0.spec, m0.num_features, m0.num_classes)
        del self.head  # the head is each inner model's own
        if expertise not in DAWIN_EXPERTISE:
            raise ConfigError("expertise", f"must be one of {', '.join(DAWIN_EXPERTISE)}, got {expertise!r}")
        self.m0, self.m1, self.groups = m0, m1, int(groups)
        self.expertise, self.temperatures = expertise, tuple(float(t) for t in temperatures)
        self.hparams = {"base": getattr(m0, "arch", ""), "base_hparams": getattr(m0, "hparams", {}), "groups": self.groups,
                        "expertise": self.expertise, "temperatures": list(self.temperatures)}

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]
        return self.m1.head

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """lambda(x) [B] in [0, 1], the weight of the fine-tuned model per sample."""
        t0, t1 = self.temperatures
        with torch.no_grad():
            lam = dawin_coefficients(_entropy(self.m0(x), t0), _entropy(self.m1(x), t1), self.expertise)
        if self.groups > 0:
            b = torch.clamp((lam * self.groups).long(), max=self.groups - 1)
            means = torch.zeros(self.groups, dtype=lam.dtype, device=lam.device).index_add_(0, b, lam)
            counts = torch.bincount(b, minlength=self.groups).to(lam.dtype)
            lam = (means / counts.clamp(min=1))[b]
        return lam.float()

    def _run(self, x: torch.Tensor, fn: str) -> torch.Tensor:
        lam = self.coefficients(x)
        p0 = {**dict(self.m0.named_parameters()), **dict(self.m0.named_buffers())}
        p1 = {**dict(self.m1.named_parameters()), **dict(self.m1.named_buffers())}
        out = None
        for v in torch.unique(lam):
            idx = torch.nonzero(lam == v).flatten()
            a = float(v)
            params = {k: (p0[k] + a * (p1[k] - p0[k]) if p0[k].is_floating_point() else p0[k]) for k in p0}
            y = _call(self.m0, params, fn, x[idx])
            if out is None:
                out = torch.empty((len(x), *y.shape[1:]), dtype=y.dtype, device=y.device)
            out[idx] = y
        assert out is not None
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "forward")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "features")

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        raise DataError("a DaWin model interpolates per image: call features(images), not embed")


class _Features(nn.Module):
    """``forward`` = the wrapped model's ``features`` (so functional_call can run it)."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def _call(module: Model, params: State, fn: str, x: torch.Tensor) -> torch.Tensor:
    """``module.<fn>(x)`` with ``params`` in place of its own (torch.func.functional_call)."""
    if fn == "forward":
        return functional_call(module, params, (x,))
    return functional_call(_Features(module), {f"model.{k}": v for k, v in params.items()}, (x,))


@register_model("dawin")
def dawin_model(num_classes: int = 10, spec: InputSpec | None = None, base: str = "mlp",
                base_hparams: dict | None = None, groups: int = 0, expertise: str = "negexp_entropy",
                temperatures: Sequence[float] = (1.0, 1.0)) -> DaWinModel:
    """A DaWin model of two ``base`` models (rebuilt from a checkpoint's metadata)."""
    kw = dict(base_hparams or {})
    m0 = MODELS.create(base, num_classes=num_classes, spec=spec, **kw)
    m1 = MODELS.create(base, num_classes=num_classes, spec=spec, **kw)
    return DaWinModel(m0, m1, groups, expertise, temperatures)


@dataclass(frozen=True)
class DaWinConfig:
    expertise: str = field(default="negexp_entropy", metadata={
        "help": "negexp_entropy: lambda = exp(-H_ft) / (exp(-H_0) + exp(-H_ft)) (the reference code's default); "
                "entropy_ratio: lambda = H_0 / (H_0 + H_ft)"})
    temperatures: tuple = field(default=(1.0, 1.0), metadata={
        "help": "(T_0, T_ft): logits divided by these before the entropies (the reference code uses calibrated "
                "values of its CLIP models; 1 = none)"})
    groups: int = field(default=0, metadata={
        "help": "0: one interpolation per distinct per-sample coefficient; k: bin coefficients into k groups"})

    def __post_init__(self) -> None:
        if self.expertise not in DAWIN_EXPERTISE:
            raise ConfigError("expertise", f"must be one of {', '.join(DAWIN_EXPERTISE)}, got {self.expertise!r}")
        temps = tuple(self.temperatures) if isinstance(self.temperatures, (list, tuple)) else ()
        if len(temps) != 2 or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps):
            raise ConfigError("temperatures", f"must be two positive numbers (T_0, T_ft), got {self.temperatures!r}")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in temps))
        if not isinstance(self.groups, int) or self.groups < 0:
            raise ValueError(f"groups must be an integer >= 0, got {self.groups!r}")


@register_method("dawin")
class DaWin(Method):
    """DaWin: per-sample entropy-based interpolation of m0 and the fine-tuned model (module docstring)."""

    name = "dawin"
    version = "2"  # 2: lambda = exp(-H_ft) / (exp(-H_0) + exp(-H_ft)) by default (was H_0 / (H_0 + H_ft))
    requires = ("ft",)
    Config = DaWinConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        ft = ctx.inputs["ft"]
        if not hasattr(pretrained, "arch"):
            raise ConfigError("methods.dawin", "the pretrained model records no architecture (model.arch)")
        ctx.info["trainable_params"] = _ft_params([ft])
        cfg = self.config
        return DaWinModel(copy.deepcopy(pretrained), copy.deepcopy(ft), cfg.groups, cfg.expertise, cfg.temperatures)
