"""The head policy shared by the gradient-trained methods, and their common validation.

When a task's classes differ from (or are a subset of) the pretraining classes, what
happens to the classifier head must be explicit. One hyperparameter, ``head``, names
the policy, and one function, ``prepare_head``, applies it:

- ``keep``:   start from the pretrained head and train it (the ImageNet-RIB protocol,
              where tasks share the pretraining label space).
- ``reinit``: start from a freshly initialised head (seeded) and train it.
- ``lp``:     start from the linear probe's head, fitted in closed form on cached
              frozen features by the ``lp`` method (as LP-FT, Kumar et al. 2022), and
              train it.
- ``masked``: keep the pretrained head frozen; while training, logits of classes the
              task does not cover (``task.class_subset``) are masked out of the loss.

The policy is recorded in ``ctx.info["head_policy"]``, so it is stored with the result.

Suites whose pretraining domain has its own label space (``Suite.pretrain_classes``):
every method starts from ``task_start_model(m0, suite)``, a copy of m0 that keeps m0's
head as its frozen *pretraining head* (``Model.set_pretrain_head``; the pretraining
domain is evaluated through it) and has a task-sized ``head``: the rows of m0's head
that ``Suite.class_map`` names (``head_origin = "mapped"``), or, without a class map, a
seeded fresh initialisation (``head_origin = "unset"``). ``keep`` and ``masked`` need a
pretrained task head, so without a class map they are a ConfigError naming the
mismatch (``check_head_for_suite``); ``reinit`` and ``lp`` work with either.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..core.errors import ConfigError
from ..core.registry import METHODS
from ..core.types import Domain, Suite
from ..models.base import Model
from ..core.runtime import seed_everything
from ..models.training import TrainConfig, train_classifier
from .base import AdaptContext, trainable_parameters

HEAD_POLICIES = ("keep", "reinit", "lp", "masked")


def check_head_policy(policy: str, allowed: tuple[str, ...] = HEAD_POLICIES, name: str = "head") -> None:
    if policy not in allowed:
        raise ConfigError(name, f"head policy must be one of {', '.join(allowed)}; got {policy!r}")


def check_positive(cfg: object, *names: str, integer: bool = False, allow_zero: bool = False) -> None:
    for name in names:
        v = getattr(cfg, name)
        ok = isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)
        if not ok or isinstance(v, bool) or v < 0 or (v == 0 and not allow_zero):
            kind = "integer" if integer else "number"
            raise ConfigError(name, f"must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {v!r}")


@dataclass(frozen=True)
class HeadTrainConfig(TrainConfig):
    """TrainConfig plus the head policy, both validated."""

    head: str = field(default="keep", metadata={"help": "head policy: keep | reinit | lp (linear-probe initialised) | "
                                                        "masked (pretrained head frozen, logits masked to the task's classes)"})

    head_policies = HEAD_POLICIES  # class attribute (not a field): the policies this method accepts

    def __post_init__(self) -> None:
        super().__post_init__()  # TrainConfig's ranges
        check_head_policy(self.head, type(self).head_policies)


NEEDS_PRETRAINED_HEAD = ("keep", "masked")


def task_start_model(m0: Model, suite: Suite, seed: int = 0) -> Model:
    """m0 made ready for tasks of another label space (module docstring): a copy keeping m0's
    head as the pretraining head, with a head over ``suite.classes`` taken from m0's rows by
    ``suite.class_map`` or, without one, initialised from ``seed``."""
    k = len(suite.pretrain_label_space)
    if m0.num_classes != k:
        raise ConfigError("suite.pretrain.classes", f"the pretrained model has {m0.num_classes} outputs but the "
                                                    f"pretraining domain of suite {suite.name!r} has {k} classes")
    model = copy.deepcopy(m0)
    old = model.head
    model.set_pretrain_head(old.weight, old.bias)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(model.num_features, suite.num_classes).to(old.weight.device)
    if suite.class_map is not None:
        rows = torch.tensor(suite.class_map, dtype=torch.long, device=old.weight.device)
        with torch.no_grad():
            head.weight.copy_(old.weight[rows])
            head.bias.copy_(old.bias[rows])
    model.head, model.num_classes = head, suite.num_classes
    model.head_origin = "mapped" if suite.class_map is not None else "unset"
    return model


def check_head_for_suite(policy: str, suite: Suite, where: str = "head") -> None:
    """ConfigError when ``policy`` needs a pretrained task head that ``suite`` cannot give: the
    pretraining domain has its own classes and the suite has no class map."""
    if policy in NEEDS_PRETRAINED_HEAD and suite.separate_pretrain_labels and suite.class_map is None:
        raise ConfigError(where, _mismatch(policy, len(suite.pretrain_label_space), suite.num_classes, suite.name))


def _mismatch(policy: str, k: int, n: int, suite: str | None = None) -> str:
    of = f" of suite {suite!r}" if suite else ""
    return (f"head = {policy!r} needs a pretrained head over the task classes, but the pretraining domain{of} has "
            f"its own {k} classes, not the tasks' {n}, and the suite gives no class_map from one to the other; "
            f"use head = 'reinit' or 'lp', or declare the suite's class_map")


def prepare_head(model: Model, policy: str, pretrained: Model, task: Domain, ctx: AdaptContext) -> bool:
    """Apply ``policy`` to ``model.head`` (in place); return whether the head is trained.

    ``model`` is the copy being adapted, ``pretrained`` the untouched pretrained model.
    """
    check_head_policy(policy)
    if policy in NEEDS_PRETRAINED_HEAD and getattr(pretrained, "head_origin", None) == "unset":
        raise ConfigError("head", _mismatch(policy, pretrained.pretrain_num_classes, pretrained.num_classes))
    ctx.info["head_policy"] = policy
    head = model.head
    if policy == "reinit":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            head.reset_parameters()
    elif policy == "lp":
        probe_ctx = dataclasses.replace(ctx, info={}, inputs={})
        probe = METHODS.create("lp").adapt(pretrained, task, probe_ctx)
        with torch.no_grad():
            head.weight.copy_(probe.head.weight)
            head.bias.copy_(probe.head.bias)
        ctx.info["head_lp_l2"] = probe_ctx.info.get("selected_l2")
    return policy != "masked"


@contextlib.contextmanager
def class_mask(model: Model, policy: str, task: Domain) -> Iterator[None]:
    """While active, under the ``masked`` policy, logits of classes outside ``task.class_subset``
    are -inf (so the training loss covers the task's classes only). A no-op otherwise."""
    subset = getattr(task, "class_subset", None)
    if policy != "masked" or subset is None:
        yield
        return
    keep = torch.zeros(model.num_classes, dtype=torch.bool)
    keep[list(subset)] = True

    def hook(module, inputs, out):
        return out.masked_fill(~keep.to(out.device), float("-inf"))

    handle = model.head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def train_params(model: Model, params: list, cfg: HeadTrainConfig, task: Domain, ctx: AdaptContext,
                 penalty=None, extra_loss=None) -> Model:
    """Train only ``params`` of ``model`` on the task (the head policy's class mask on),
    seeded by ``ctx.seed``; record their count as ``trainable_params``."""
    ctx.info["trainable_params"] = trainable_parameters(model, params)
    g = seed_everything(ctx.seed)
    with class_mask(model, cfg.head, task), train_only(model, params):
        train_classifier(model, ctx.train, cfg, generator=g, params=params, penalty=penalty, extra_loss=extra_loss,
                         progress=ctx.progress)
    return model


@contextlib.contextmanager
def train_only(model: torch.nn.Module, params) -> Iterator[list[torch.nn.Parameter]]:
    """While active, only ``params`` require grad (no gradient work for the rest); restored after."""
    params = list(params)
    keep = {id(p) for p in params}
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        yield params
    finally:
        for p, flag in before:
            p.requires_grad_(flag)
            p.grad = None
