"""Tiny seeded backbones and an AdaptContext on the tiny suite, shared by the method tests."""

from __future__ import annotations

import copy

import torch

from ribench.core import METHODS
from ribench.methods.base import AdaptContext
from ribench.models import create_model

TINY_ARCHS = {
    "mlp": dict(width=16, depth=2),
    "cnn": dict(widths=(4, 8), features=16),
    "resnet": dict(width=4),
    "vit": dict(patch=7, dim=16, depth=1, heads=2),
}


def tiny_model(arch: str = "cnn", seed: int = 0):
    torch.manual_seed(seed)
    return create_model(arch, num_classes=3, **TINY_ARCHS[arch]).eval()


def make_ctx(tiny, task: str = "t1", seed: int = 0, inputs=None) -> AdaptContext:
    train, val = tiny.tasks[task].train.holdout(0.2, seed=1)
    return AdaptContext(train=train, val=val, pretrain_sample=tiny.pretrain.train, seed=seed,
                        device=torch.device("cpu"), num_classes=3, inputs=inputs or {})


def run_method(name: str, pretrained, tiny, task: str = "t1", **params):
    method = METHODS.create(name, **params)
    inputs = {r: run_method(r, pretrained, tiny, task)[0] for r in method.requires}
    ctx = make_ctx(tiny, task, inputs=inputs)
    return method.adapt(pretrained, tiny.tasks[task], ctx), ctx


def perturbed(model, seed: int, scale: float = 0.05):
    """A deep copy of ``model`` with seeded Gaussian noise of std ``scale`` added to every parameter."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return m
