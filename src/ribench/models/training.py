"""The one supervised training loop, shared by pretraining and the methods.

Mini-batch AdamW with a cosine schedule and linear warm-up over images held as uint8
tensors; batches move to the device and are preprocessed (and augmented) there.

No diverged model leaves this loop: a non-finite loss raises TrainingError naming the
epoch and step; after the last step the trained weights must be finite and the loss of
the final weights on the last batch (eval mode, no gradient) too, or TrainingError
names the first bad parameter or the loss. ``TrainConfig`` checks its own ranges.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ..core.errors import TrainingError
from ..core.types import Split
from ..data.augment import AugmentConfig, augment
from ..core.errors import ConfigError
from .base import Model, first_nonfinite, model_name, to_float_images

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    pass


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = field(default=5, metadata={"help": "passes over the training split (fractions allowed)"})
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay"})
    warmup_frac: float = field(default=0.05, metadata={"help": "fraction of steps of linear warm-up"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})

    def __post_init__(self) -> None:
        """ConfigError naming the first field out of range (bare field name; callers prefix it)."""
        checks = (
            ("epochs", _number(self.epochs) and self.epochs > 0, "must be a positive number"),
            ("batch_size", _integer(self.batch_size) and self.batch_size >= 1, "must be a positive integer"),
            ("lr", _number(self.lr) and self.lr > 0, "must be a positive number"),
            ("weight_decay", _number(self.weight_decay) and self.weight_decay >= 0, "must be a finite number >= 0"),
            ("warmup_frac", _number(self.warmup_frac) and 0 <= self.warmup_frac < 1, "must be in [0, 1)"),
            ("label_smoothing", _number(self.label_smoothing) and 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
        )
        for name, ok, msg in checks:
            if not ok:
                raise ConfigError(name, f"{msg}, got {getattr(self, name)!r}")


def _number(v: object) -> bool:
    """A finite real number (int, float, NumPy scalars; not a bool)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def train_classifier(
    model: Model,
    data: Split,
    cfg: TrainConfig,
    *,
    generator: torch.Generator,
    params: Iterable[torch.nn.Parameter] | None = None,
    augmentation: AugmentConfig | None = None,
    penalty: Callable[[Model], torch.Tensor] | None = None,
    extra_loss: Callable[[Model, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Progress = no_progress,
) -> Model:
    """Train ``model`` in place on ``data`` and return it (in eval mode).

    ``params``: parameters to optimise (default: all). ``penalty(model)`` is added to
    every step's loss (EWC, L2-SP...). ``extra_loss(model, x, y, logits)`` too (LwF).
    Raises TrainingError when the loss or the trained weights stop being finite
    (module docstring).
    """
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise TrainingError("nothing to train: no parameter requires grad")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup = int(cfg.warmup_frac * total)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    with torch.enable_grad():
        last = _loop(model, data, cfg, opt, sched, total, generator, augmentation, penalty, extra_loss, progress)
    model.eval()
    _check_final(model, params, last, cfg, total)
    return model


def _check_final(model: Model, params: list[torch.nn.Parameter], last: tuple[torch.Tensor, torch.Tensor] | None,
                 cfg: TrainConfig, total: int) -> None:
    """TrainingError unless the trained weights and the final weights' loss on the last batch are finite."""
    trained = {id(p) for p in params}
    bad = first_nonfinite((n, p) for n, p in model.named_parameters() if id(p) in trained)
    if bad is not None:
        raise TrainingError(f"training of model {model_name(model)!r} diverged: after the last step ({total} of "
                            f"{total}) parameter {bad[0]!r} holds {bad[1]} values; lower the learning rate "
                            f"(lr = {cfg.lr:g})")
    if last is None:
        return
    x, y = last
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
    if not torch.isfinite(loss):
        raise TrainingError(f"training of model {model_name(model)!r} diverged: the loss of the final weights on the "
                            f"last batch is {loss.item()} (step {total} of {total}); lower the learning rate "
                            f"(lr = {cfg.lr:g})")


def _loop(model, data, cfg, opt, sched, total, generator, augmentation, penalty, extra_loss, progress
          ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run ``total`` steps; return the last batch (float images after augmentation, labels)."""
    device = next(model.parameters()).device
    model.train()
    step = 0
    epoch = 0
    last = None
    while step < total:
        for xb, yb in data.batches(cfg.batch_size, shuffle=True, generator=generator):
            if step >= total:
                break
            x = to_float_images(xb.to(device, non_blocking=True))
            y = yb.to(device, non_blocking=True)
            if augmentation is not None:
                x = augment(x, augmentation, generator)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if penalty is not None:
                loss = loss + penalty(model)
            if extra_loss is not None:
                loss = loss + extra_loss(model, x, y, logits)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} of {total}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            last = (x, y)
            if step % 10 == 0 or step == total:
                progress(step / total, f"loss {loss.item():.3f}")
        epoch += 1
        if last is None:  # an empty split yields no batch: no epoch would ever make progress
            raise TrainingError("nothing to train on: the training split is empty")
    return last
