"""The one supervised training loop, shared by pretraining and the methods.

Mini-batch AdamW with a cosine schedule and linear warm-up over images held as uint8
tensors; batches move to the device and are preprocessed (and augmented) there.

No diverged model leaves this loop: a non-finite loss raises TrainingError naming the
epoch and step; after the last step the trained weights must be finite and the loss of
the final weights on the last batch (eval mode, no gradient) too, or TrainingError
names the first bad parameter or the loss. ``TrainConfig`` checks its own ranges.

How it computes (``core.runtime.ComputeOptions``; a keyword left None takes the value of
the enclosing ``compute_options`` block, so the methods' own calls follow the run's
settings; fp32 outside any block):
- ``precision``: ``fp32`` runs no autocast (the numbers of a plain loop, bit for bit);
  ``bf16`` / ``fp16`` run the forward pass and the loss under ``torch.autocast`` (weights,
  gradients and AdamW's state stay fp32); fp16 scales the loss with a ``GradScaler``,
  which skips the steps whose gradients overflow.
- ``compile``: the forward pass goes through ``torch.compile(model)``.
- ``channels_last``: convolutional models on CUDA train in channels_last memory format
  (restored to the default format after).
- ``loader_workers``: batches are gathered (or decoded) by DataLoader worker processes:
  the same batches in the same order.
On CUDA, batches come through pinned memory with non-blocking copies, and the loss is
checked for finiteness every 10 steps rather than every step (each check waits for the
device); the error still names the first bad step.

The loop records its training curve (core.trainlog): per epoch the mean of the loss it
optimised and, when ``val`` is given, the top-1 accuracy on ``val`` after the epoch (eval
mode, under ``torch.inference_mode``, in order: no generator is drawn from and no weight
or buffer changes, so the trained weights are the same bits with or without it). The
epochs of each call go to the enclosing ``trainlog.recording()``, if any, which may also name
the ``val`` of the calls that pass none.
"""

from __future__ import annotations

import json
import math
import numbers
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, TrainingError
from ..core.runtime import (ComputeOptions, autocast, compiled, grad_scaler, pins_memory, resolve_compute,
                            wants_channels_last)
from ..core import resume, trainlog
from ..core.trainlog import EpochRecord
from ..core.types import Split, iter_batches
from ..data.augment import AugmentConfig, augment
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
    precision: str | None = None,
    compile: bool | str | None = None,
    channels_last: bool | None = None,
    loader_workers: int | None = None,
    val: Split | None = None,
) -> Model:
    """Train ``model`` in place on ``data`` and return it (in eval mode).

    ``params``: parameters to optimise (default: all). ``penalty(model)`` is added to
    every step's loss (EWC, L2-SP...). ``extra_loss(model, x, y, logits)`` too (LwF).
    ``precision``, ``compile``, ``channels_last``, ``loader_workers``: how it computes
    (module docstring; None: the enclosing ``compute_options``).
    ``val``: a validation split whose accuracy is recorded after each epoch (module
    docstring; None: the enclosing ``trainlog.recording(val=...)``'s, if any); the curve of
    the call goes to ``trainlog.recording()``.
    Raises TrainingError when the loss or the trained weights stop being finite
    (module docstring).
    """
    opts = resolve_compute(precision=precision, compile=compile, channels_last=channels_last,
                           loader_workers=loader_workers)
    val = val if val is not None else trainlog.default_val()
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise TrainingError("nothing to train: no parameter requires grad")
    device = next(model.parameters()).device
    memory_format = torch.channels_last if wants_channels_last(model, device, opts.channels_last) else None
    if memory_format is not None:  # parameters keep their identity: ``params`` still names them
        model.to(memory_format=memory_format)
    try:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
        total = max(1, int(round(cfg.epochs * steps_per_epoch)))
        warmup = int(cfg.warmup_frac * total)

        def lr_at(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        ckpt = resume.next_run()
        saver = None if ckpt is None else _Saver(ckpt, model, params, opt, sched, generator, device,
                                                 _fingerprint(model, params, data, cfg, total, opts.precision))
        with torch.enable_grad():
            last, epochs = _loop(model, data, cfg, opt, sched, total, generator, augmentation, penalty, extra_loss,
                                 progress, opts, memory_format, val, saver)
        model.eval()
        _check_final(model, params, last, cfg, total, opts.precision)
        trainlog.add_run(epochs)
    finally:
        if memory_format is not None:
            model.to(memory_format=torch.contiguous_format)
    return model


def _check_final(model: Model, params: list[torch.nn.Parameter], last: tuple[torch.Tensor, torch.Tensor] | None,
                 cfg: TrainConfig, total: int, precision: str = "fp32") -> None:
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
    with torch.no_grad(), autocast(precision, x.device):
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
    if not torch.isfinite(loss):
        raise TrainingError(f"training of model {model_name(model)!r} diverged: the loss of the final weights on the "
                            f"last batch is {loss.item()} (step {total} of {total}); lower the learning rate "
                            f"(lr = {cfg.lr:g})")


class _FiniteLoss:
    """Raises TrainingError naming the first step whose loss is not finite. On CPU each loss
    is checked at once (before its step); elsewhere every ``every`` steps, in one read."""

    def __init__(self, device: torch.device, total: int, every: int = 10):
        self.total, self.every = total, 1 if device.type == "cpu" else every
        self.pending: list[tuple[torch.Tensor, int, int]] = []  # (loss, epoch, step), not yet checked

    def add(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        self.pending.append((loss.detach(), epoch, step))
        if len(self.pending) >= self.every or step + 1 == self.total:
            self.check()

    def check(self) -> None:
        if not self.pending:
            return
        losses = self.pending[0][0][None] if len(self.pending) == 1 else torch.stack([p[0] for p in self.pending])
        if not bool(torch.isfinite(losses).all()):
            for loss, epoch, step in self.pending:
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} of "
                                        f"{self.total}")
        self.pending.clear()


def _loop(model, data, cfg, opt, sched, total, generator, augmentation, penalty, extra_loss, progress,
          opts: ComputeOptions = ComputeOptions(), memory_format: torch.memory_format | None = None,
          val: Split | None = None, saver: "_Saver | None" = None
          ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, list[EpochRecord]]:
    """Run ``total`` steps; return the last batch (float images after augmentation, labels) and
    the epochs' records (mean loss, ``val`` accuracy). ``saver``: checkpoints the loop and
    resumes it from its checkpoint (module docstring)."""
    device = next(model.parameters()).device
    scaler = grad_scaler(opts.precision, device)
    saved = saver.load(scaler) if saver is not None else None  # before compiling: weights loaded in place
    forward = compiled(model, opts.compile)
    finite = _FiniteLoss(device, total)
    pin = pins_memory(device)
    model.train()
    step = 0
    epoch = 0
    last = None
    records: list[EpochRecord] = []
    if saved is not None:
        step, epoch = int(saved["step"]), int(saved["epoch"])
        records = [EpochRecord(**r) for r in saved["records"]]
    while step < total:
        loss_sum, epoch_steps = None, 0  # summed on the device: no extra synchronisation per step
        if saved is not None:  # the epoch of the checkpoint: its order again, from its generator state
            generator.set_state(saved["epoch_generator"])
        epoch_start = generator.get_state() if saver is not None else None
        batches = iter(iter_batches(data, cfg.batch_size, shuffle=True, generator=generator,
                                    workers=opts.loader_workers, pin_memory=pin))
        if saved is not None:
            for _ in range(int(saved["epoch_steps"])):  # trained on before the checkpoint
                next(batches)
            loss_sum, epoch_steps = saver.restore_rng(saved)
            saved = None
        for xb, yb in batches:
            if step >= total:
                break
            x = to_float_images(xb.to(device, non_blocking=True))
            y = yb.to(device, non_blocking=True)
            if augmentation is not None:
                x = augment(x, augmentation, generator)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            with autocast(opts.precision, device):
                logits = forward(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                if penalty is not None:
                    loss = loss + penalty(model)
                if extra_loss is not None:
                    loss = loss + extra_loss(model, x, y, logits)
            finite.add(loss, epoch, step)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            sched.step()
            step += 1
            value = loss.detach().float()
            loss_sum = value if loss_sum is None else loss_sum + value
            epoch_steps += 1
            last = (x, y)
            if step % 10 == 0 or step == total:
                progress(step / total, f"loss {loss.item():.3f}")
            if saver is not None:
                if step < total and saver.ckpt.due(step):
                    finite.check()  # a checkpoint holds finite steps only
                    saver.save(scaler, step, epoch, epoch_start, loss_sum, epoch_steps, records)
                saver.ckpt.stepped(step)
        if last is None and not epoch_steps:  # an empty split yields no batch: no epoch would make progress
            raise TrainingError("nothing to train on: the training split is empty")
        if epoch_steps:
            finite.check()  # a non-finite loss is reported by step before any record of it
            acc = None if val is None else _accuracy(model, val, cfg.batch_size, device, opts, pin)
            records.append(EpochRecord(epoch + 1, epoch_steps, float(loss_sum) / epoch_steps, acc))
        epoch += 1
    finite.check()
    return last, records


def _accuracy(model: Model, split: Split, batch_size: int, device: torch.device, opts: ComputeOptions,
              pin: bool) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``split`` (in order, eval mode, inference mode), the
    model's train/eval mode restored after; nan for an empty split."""
    was_training = model.training
    model.eval()
    correct, n = torch.zeros((), dtype=torch.int64, device=device), 0
    try:
        with torch.inference_mode(), autocast(opts.precision, device):
            for xb, yb in iter_batches(split, batch_size, workers=opts.loader_workers, pin_memory=pin):
                x = to_float_images(xb.to(device, non_blocking=True))
                correct += (model(x).argmax(1) == yb.to(device, non_blocking=True)).sum()
                n += len(yb)
    finally:
        model.train(was_training)
    return int(correct) / n if n else float("nan")


# --------------------------------------------------------------------------- checkpoints (core.resume)

CHECKPOINT_FORMAT = 1


def _saved_tensors(model: Model, params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """The entries of the model's state dict a call can change: its trained parameters and every buffer."""
    trained = {id(p) for p in params}
    buffers = {id(b) for b in model.buffers()}
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) in trained or id(v) in buffers}


def _fingerprint(model: Model, params: list[torch.nn.Parameter], data: Split, cfg: TrainConfig, total: int,
                 precision: str) -> str:
    """What a checkpoint must agree on to be resumed: the training's size and the tensors it changes."""
    tensors = [[k, list(v.shape), str(v.dtype)] for k, v in _saved_tensors(model, params).items()]
    return json.dumps({"format": CHECKPOINT_FORMAT, "total": total, "examples": len(data), "config": asdict(cfg),
                       "precision": precision, "tensors": tensors}, sort_keys=True, default=str)


class _Saver:
    """Writes and reads the checkpoint of one ``train_classifier`` call (module docstring)."""

    def __init__(self, ckpt: resume.RunCheckpoint, model: Model, params: list[torch.nn.Parameter],
                 opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
                 device: torch.device, fingerprint: str):
        self.ckpt, self.model, self.params, self.opt, self.sched = ckpt, model, params, opt, sched
        self.generator, self.device, self.fingerprint = generator, device, fingerprint

    def save(self, scaler, step: int, epoch: int, epoch_start: torch.Tensor, loss_sum: torch.Tensor | None,
             epoch_steps: int, records: list[EpochRecord]) -> None:
        np_state = np.random.get_state()
        py_state = random.getstate()
        state = {
            "fingerprint": self.fingerprint,
            "model": {k: v.detach().cpu() for k, v in _saved_tensors(self.model, self.params).items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "step": step, "epoch": epoch, "epoch_steps": epoch_steps,
            "loss_sum": None if loss_sum is None else loss_sum.detach().cpu(),
            "records": [asdict(r) for r in records],
            "epoch_generator": epoch_start, "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        }
        self.ckpt.save(state)

    def load(self, scaler) -> dict | None:
        """The checkpoint of this training, its weights, optimiser, schedule and scaler states put back
        (the generators are put back by ``restore_rng`` once the epoch's batches are skipped); None
        when there is none (or it is of another training: then it is overwritten)."""
        state = self.ckpt.load()
        if state is None or state.get("fingerprint") != self.fingerprint:
            return None
        with torch.no_grad():
            current = _saved_tensors(self.model, self.params)
            for k, v in state["model"].items():
                current[k].copy_(v)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        return state

    def restore_rng(self, state: dict) -> tuple[torch.Tensor | None, int]:
        """Put the generators back as they were at the checkpoint; return the epoch's (loss sum, steps)."""
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
        loss_sum = state["loss_sum"]
        return (None if loss_sum is None else loss_sum.to(self.device)), int(state["epoch_steps"])
