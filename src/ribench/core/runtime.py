"""Seeding, device choice and the thread count a cell runs with."""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from typing import Iterator

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
