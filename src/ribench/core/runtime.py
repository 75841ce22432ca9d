"""Seeding, device choice, the thread count a cell runs with, and how it computes.

``ComputeOptions`` (precision, ``torch.compile``, DataLoader workers, channels_last) are
set for a block by ``compute_options`` and read by the training loop and the evaluator
when their own keyword arguments leave them unset (None); outside any block they are
fp32, no compile, no workers: the numbers of a plain CPU run.
"""

from __future__ import annotations

import hashlib
import random
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import ConfigError


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError("device", f"{name!r} is not a device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available")
    return dev


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run the block with exactly ``n`` intra-op threads in torch and in the BLAS/OpenMP
    pools NumPy, SciPy and POT use; restore the previous settings after.

    A cell's numbers depend on how many threads computed them (parallel reductions add in
    another order), so the engine runs every cell under the spec's ``threads``, whichever
    runner and however many workers (docs/results.md, "Reproducibility").
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- compute options

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class ComputeOptions:
    """How training and evaluation compute, whatever they compute (docs/scaling.md, "GPU options").

    ``precision``: ``fp32`` (no autocast: today's numbers), ``bf16`` or ``fp16`` (forward and
    loss under ``torch.autocast``; fp16 training scales the loss with a GradScaler).
    ``compile``: wrap the model in ``torch.compile`` for the loop (True: the default backend;
    a string names the backend). ``loader_workers``: worker processes that read batches
    through a torch DataLoader (0: each split's own path). ``channels_last``: None picks it
    for convolutional models on CUDA (``wants_channels_last``); True/False force it.
    """

    precision: str = "fp32"
    compile: bool | str = False
    loader_workers: int = 0
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if isinstance(self.loader_workers, bool) or not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            raise ConfigError("loader_workers", f"must be an integer >= 0, got {self.loader_workers!r}")
        if not isinstance(self.compile, (bool, str)):
            raise ConfigError("compile", f"must be true, false or a torch.compile backend name, got {self.compile!r}")


_COMPUTE: ContextVar[ComputeOptions] = ContextVar("ribench_compute", default=ComputeOptions())


def current_compute() -> ComputeOptions:
    """The options set by the innermost ``compute_options`` block (the defaults outside any)."""
    return _COMPUTE.get()


@contextmanager
def compute_options(options: ComputeOptions | None = None, **changes: object) -> Iterator[ComputeOptions]:
    """Run the block with ``options`` (or the current ones with ``changes``) as the defaults of
    every ``train_classifier`` and ``evaluate`` call inside it, however deep (the methods'
    own training loops included); restore the previous ones after."""
    opts = options if options is not None else current_compute()
    if changes:
        opts = replace(opts, **changes)
    token = _COMPUTE.set(opts)
    try:
        yield opts
    finally:
        _COMPUTE.reset(token)


def resolve_compute(**given: object) -> ComputeOptions:
    """The current options with every keyword that is not None put in (a layer function's
    keyword arguments override the block it runs in)."""
    changes = {k: v for k, v in given.items() if v is not None}
    return replace(current_compute(), **changes) if changes else current_compute()


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` to the precision's dtype on ``device``; fp32: no autocast at all."""
    if check_precision(precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> "torch.amp.GradScaler | None":
    """A GradScaler for fp16 training (its gradients underflow without one); None otherwise
    (bf16 has fp32's exponent range and needs none)."""
    if check_precision(precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def pins_memory(device: torch.device) -> bool:
    """Host batches bound for ``device`` go through pinned memory (CUDA only: the copy then
    runs asynchronously, overlapping the previous batch's compute)."""
    return device.type == "cuda"


def wants_channels_last(model: torch.nn.Module, device: torch.device, setting: bool | None = None) -> bool:
    """Whether to run ``model`` in channels_last memory format: ``setting`` when given, else
    True on CUDA for a convolutional model (one ``Conv2d`` whose kernel is wider than its
    stride, i.e. not only a patchifying stem) and False on every other device."""
    if setting is not None:
        return bool(setting)
    if device.type != "cuda":
        return False
    return any(isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) != tuple(m.stride) for m in model.modules())


def compiled(model: torch.nn.Module, setting: bool | str) -> Callable[..., torch.Tensor]:
    """``model`` itself, or ``torch.compile(model)`` (a wrapper sharing its parameters)."""
    if setting is False:
        return model
    return torch.compile(model) if setting is True else torch.compile(model, backend=setting)
