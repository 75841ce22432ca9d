"""The Model interface every backbone implements.

``Model.forward(images)`` accepts uint8 images or float images in [0, 1], shaped
``[B, C, H, W]`` with any channel count (1 or 3) and size; ``preprocess`` converts
them, batched and on the model's device, to the model's ``InputSpec`` (resize,
channels, normalise). The preprocessing is differentiable for float input, so
attacks work in [0, 1] pixel space. Subclasses implement ``embed(z) -> [B, D]`` on
preprocessed input; ``head`` is an ``nn.Linear(D, num_classes)``.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import DataError
from ..core.types import InputSpec


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is returned unchanged."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not torch.is_floating_point(x):
        raise DataError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    return x


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, str] | None:
    """``(name, "NaN" | "infinite")`` of the first floating tensor holding a NaN or an
    infinity, or None when every one is finite (non-floating tensors are skipped)."""
    for name, t in named:
        if not torch.is_floating_point(t) and not torch.is_complex(t):
            continue
        t = t.detach()
        if torch.isnan(t).any():
            return name, "NaN"
        if torch.isinf(t).any():
            return name, "infinite"
    return None


def model_name(model: nn.Module) -> str:
    """How messages name a model: its registry name (``model.arch``), the source of an
    outside backbone, else its class name."""
    arch = getattr(model, "arch", None)
    if arch is None:
        return type(model).__name__
    source = getattr(model, "hparams", {}).get("source") if isinstance(getattr(model, "hparams", None), dict) else None
    return f"{arch} ({source})" if isinstance(source, str) and source else str(arch)


PRETRAIN_HEAD_WEIGHT = "pretrain_head_weight"
PRETRAIN_HEAD_BIAS = "pretrain_head_bias"


class Model(nn.Module):
    """Backbone + linear head + input spec. See module docstring."""

    spec: InputSpec
    head: nn.Linear

    def __init__(self, spec: InputSpec, num_features: int, num_classes: int):
        super().__init__()
        self.spec = spec
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = nn.Linear(num_features, num_classes)
        self.register_buffer("_mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] uint8 or float [0, 1] -> normalised float [B, spec.channels, size, size]."""
        if x.dim() != 4:
            raise DataError(f"images must be [B, C, H, W], got shape {tuple(x.shape)}")
        x = to_float_images(x.to(self._mean.device, non_blocking=True))
        c, want = x.shape[1], self.spec.channels
        if c != want:
            if c == 1:
                x = x.expand(-1, want, -1, -1)
            elif want == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise DataError(f"cannot convert {c}-channel images to the model's {want} channels")
        if x.shape[-2:] != (self.spec.size, self.spec.size):
            x = F.interpolate(x, size=(self.spec.size, self.spec.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    def embed(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Preprocessed input [B, C, S, S] -> features [B, num_features]."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> features [B, num_features]."""
        return self.embed(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> logits [B, num_classes]."""
        return self.head(self.features(x))

    # --- the pretraining head, where the tasks have another label space ---------------
    def set_pretrain_head(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Keep a frozen copy of the pretraining head (``weight`` [K, D], ``bias`` [K]) beside
        the task head, for suites whose pretraining domain has its own K classes
        (``Suite.pretrain_classes``). It is stored as buffers, so no method trains it, no
        PEFT tuner wraps it and it travels in the state dict (``pretrain_head_weight``,
        ``pretrain_head_bias``); ``pretrain_logits`` uses it."""
        if weight.dim() != 2 or bias.shape != weight.shape[:1] or weight.shape[1] != self.num_features:
            raise DataError(f"pretraining head must be weight [K, {self.num_features}] and bias [K], got "
                            f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        self.register_buffer(PRETRAIN_HEAD_WEIGHT, weight.detach().clone())
        self.register_buffer(PRETRAIN_HEAD_BIAS, bias.detach().clone())

    @property
    def pretrain_num_classes(self) -> int | None:
        """K of the kept pretraining head, None when the model keeps none."""
        w = getattr(self, PRETRAIN_HEAD_WEIGHT, None)
        return None if w is None else int(w.shape[0])

    @property
    def has_pretrain_head(self) -> bool:
        return self.pretrain_num_classes is not None

    def pretrain_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> logits over the pretraining classes [B, K], through the kept pretraining head."""
        if not self.has_pretrain_head:
            raise DataError(f"model {model_name(self)!r} keeps no pretraining head (set_pretrain_head)")
        return F.linear(self.features(x), getattr(self, PRETRAIN_HEAD_WEIGHT), getattr(self, PRETRAIN_HEAD_BIAS))

    def backbone_parameters(self):
        """Every parameter except the head's."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]


class PretrainHeadView(nn.Module):
    """``model`` seen through its kept pretraining head: ``forward(x) = model.pretrain_logits(x)``
    (shares the model's weights; what ``evaluate`` runs on the pretraining label space's sets)."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model
        if not model.has_pretrain_head:
            raise DataError(f"model {model_name(model)!r} keeps no pretraining head (set_pretrain_head)")
        self.num_classes = model.pretrain_num_classes
        self.spec = model.spec
        self.arch = f"{model_name(model)} (pretraining head)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.pretrain_logits(x)


def attach_pretrain_heads(model: nn.Module, state_dict) -> None:
    """Give each submodule of ``model`` whose entries in ``state_dict`` hold a pretraining head
    (``<prefix>pretrain_head_weight``) a placeholder of that shape, so the state dict loads."""
    for k, w in state_dict.items():
        if not k.endswith(PRETRAIN_HEAD_WEIGHT):
            continue
        prefix = k[: -len(PRETRAIN_HEAD_WEIGHT)]
        owner = model.get_submodule(prefix.rstrip(".")) if prefix else model
        if isinstance(owner, Model) and not owner.has_pretrain_head:
            owner.set_pretrain_head(torch.zeros(tuple(w.shape)), torch.zeros(w.shape[0]))
