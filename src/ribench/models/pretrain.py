"""Pretraining recipes: how the pretrained model m0 of a backbone is made.

- ``narrow``: the suite's pretraining domain only, light augmentation.
- ``rich``: the pretraining domain plus the suite's auxiliary ``rendered`` domain
  (digits from many fonts, disjoint from the task samples) and heavy augmentation,
  standing in for the broader pretraining data that ImageNet-RIB found to lose
  more robustness under fine-tuning.

``pretrain_backbone`` builds a registered backbone and pretrains it: what ``ribench
pretrain`` and a run's pretrain cells both call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import DataError, TrainingError, UnknownNameError
from ..core.registry import MODELS
from ..core.runtime import derive_seed, seed_everything
from ..core.types import Split, Suite
from ..data.augment import HEAVY, LIGHT, AugmentConfig
from .base import Model, first_nonfinite, model_name
from .training import Progress, TrainConfig, no_progress, train_classifier


@dataclass(frozen=True)
class Recipe:
    name: str
    aux_domains: tuple[str, ...]
    augmentation: AugmentConfig
    version: str = "1"


RECIPES: dict[str, Recipe] = {
    "narrow": Recipe("narrow", (), LIGHT),
    "rich": Recipe("rich", ("rendered",), HEAVY),
}


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    epochs: float = field(default=8, metadata={"help": "passes over the pretraining data"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW decoupled weight decay"})


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UnknownNameError("pretraining recipe", name, list(RECIPES))
    return RECIPES[name]


def pretraining_data(suite: Suite, recipe: Recipe) -> Split:
    """The pretraining domain's train split concatenated with the recipe's aux domains."""
    parts = [suite.pretrain.train]
    for name in recipe.aux_domains:
        if name not in suite.aux:
            raise DataError(f"recipe {recipe.name!r} needs aux domain {name!r}, which suite {suite.name!r} lacks")
        parts.append(suite.aux[name].train)
    if any(p is None for p in parts):
        raise DataError(f"suite {suite.name!r}: a pretraining domain has no train split")
    channels = max(p.images.shape[1] for p in parts)
    images = torch.cat([p.images.expand(-1, channels, -1, -1) for p in parts])
    return Split(images.contiguous(), torch.cat([p.labels for p in parts]))


def pretrain(
    model: Model,
    suite: Suite,
    recipe: str,
    cfg: PretrainConfig,
    seed: int,
    progress: Progress = no_progress,
) -> Model:
    """Train a freshly built ``model`` (on its device) into a pretrained model m0.

    Raises TrainingError when training diverges or leaves any tensor of the model's
    state dict non-finite (a pretraining that overflowed is never handed on).
    """
    r = get_recipe(recipe)
    g = seed_everything(seed)
    model = train_classifier(model, pretraining_data(suite, r), cfg, generator=g, augmentation=r.augmentation,
                             progress=progress)
    bad = first_nonfinite(model.state_dict().items())
    if bad is not None:
        raise TrainingError(f"pretraining of model {model_name(model)!r} (recipe {recipe!r}, suite {suite.name!r}) "
                            f"diverged: tensor {bad[0]!r} holds {bad[1]} values; lower the learning rate "
                            f"(lr = {cfg.lr:g})")
    return model


def pretrain_backbone(
    backbone: str,
    suite: Suite,
    recipe: str,
    cfg: PretrainConfig,
    seed: int,
    device: torch.device | str = "cpu",
    progress: Progress = no_progress,
) -> tuple[Model, dict[str, Any]]:
    """Build the registered ``backbone`` for the classes of ``suite``'s pretraining domain
    (``Suite.pretrain_label_space``) on ``device`` and pretrain it.

    Its initialisation and its training are seeded from ``seed`` by (backbone, recipe), so
    every backbone and recipe of one seed is made reproducibly and independently. Returns
    (m0, info): ``train_seconds`` (wall time of training) and ``params`` (parameter count).
    """
    get_recipe(recipe)
    seed_everything(derive_seed("init", seed, backbone, recipe))
    model = MODELS.create(backbone, num_classes=len(suite.pretrain_label_space)).to(device)
    t0 = time.perf_counter()
    pretrain(model, suite, recipe, cfg, derive_seed("pretrain", seed, backbone, recipe), progress)
    info = {"train_seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters())}
    return model, info
