"""Merge kernels over task vectors, streamed tensor by tensor.

A task vector is a mapping ``name -> tensor`` (tau = theta_adapted - theta_pretrained,
``ribench.methods.task_vectors.task_vector``); a merge reads the K vectors' tensors of
one name at a time, so its memory is a few tensors, not K whole models. Mappings may be
lazy (``SafetensorsMapping`` reads one tensor per lookup from a memory-mapped file).

- Task arithmetic (Ilharco et al., ICLR 2023, "Editing Models with Task Arithmetic"):
  ``tau = sum_t tau_t`` (``task_sum``).
- TIES merging (Yadav et al., NeurIPS 2023, "TIES-Merging: Resolving Interference When
  Merging Models"; github.com/prateeky2806/ties-merging, ``src/utils/merge_utils.py``)
  (``ties``): *trim* each task vector over the whole vector (``scope="global"``, the
  reference) or per tensor (``scope="tensor"``). ``trim="kthvalue"`` (the reference's
  ``topk_values_mask``): with d entries and k = floor(density * d), keep every entry whose
  magnitude is >= the (d - k)-th smallest magnitude, i.e. >= the (k + 1)-th largest --
  k + 1 entries, and every tie at that threshold (density 1 keeps everything).
  ``trim="exact"``: exactly k entries, ties at the threshold broken by position (tensors
  in ``names`` order, then row-major), as a stable descending sort of the concatenation.
  *Elect* per entry the sign of the total mass sum_t trimmed_t; where that sum is 0 the
  entry takes the *majority sign*, the sign of (number of entries elected + minus number
  elected -) over the whole merge (the reference's ``resolve_zero_signs``), which needs
  one extra streaming pass. *Disjoint mean*: the mean over the tasks whose trimmed value
  agrees with the elected sign -- > 0 where it is +1, < 0 where it is -1 or 0 (the
  reference's ``torch.where(sign > 0, t > 0, t < 0)``; a 0 sign is left only when the
  majority itself is 0) -- and 0 where none agrees.
- Fisher-weighted averaging (Matena & Raffel, NeurIPS 2022, "Merging Models with Fisher-
  Weighted Averaging"; github.com/mmatena/model_merging, ``model_merging/merging.py``)
  (``fisher_average``): theta = sum_i c_i F'_i theta_i / sum_i c_i F'_i with
  F'_i = max(F_i, floor) and c_i = w_i / ||F_i||_2 (the reference's defaults
  ``fisher_floor`` 1e-6, ``normalize_fishers``). The reference floors only its target
  model's Fisher (``favor_target_model``); a merge here has no target, so every Fisher is
  floored.

The global threshold is found without materialising the vector (``global_topk``):
magnitudes are float32; the int32 bit pattern of a non-negative float32 orders like its
value. Pass 1 histograms the high 16 bits of every entry (``torch.bincount``, 32,768
bins) and finds the bin holding the k-th largest; pass 2 histograms the low 16 bits of
the entries in that bin, giving the exact k-th largest value T. Entries > T are kept,
and of those equal to T the first (k - #greater) in tensor order (``trim="exact"``) or
all of them (``trim="kthvalue"``, called with k + 1). Magnitudes compared as float32
order the entries as the reference's float32 task vectors do: the float64 delta of two
float32 weights rounds to the float32 difference.

No library is used: the merging libraries (mergekit, PEFT's ``merge_utils``) work on
whole tensors or whole models in memory and trim per tensor only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from ..core.errors import ConfigError, DataError

TaskVector = Mapping[str, torch.Tensor]
_HI = 1 << 15  # high-16-bit bins of a non-negative int32 (the sign bit is 0)
_LO = 1 << 16


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


class SafetensorsMapping(Mapping):
    """A read-only mapping over a safetensors file that reads one tensor per lookup.

    Tensors are read with plain file reads into fresh memory (no memory map), so a merge
    holds only the tensors it is working on: mapped pages of every file it touched would
    stay resident and count towards the process's memory."""

    def __init__(self, path: str):
        import json
        import struct

        self.path = str(path)
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error) as e:
            raise DataError(f"{self.path} is not a readable safetensors file: {e}") from None
        header.pop("__metadata__", None)
        self._start = 8 + n
        self._entries = header

    def __getitem__(self, key: str) -> torch.Tensor:
        e = self._entries[key]
        dtype = _DTYPES.get(e["dtype"])
        if dtype is None:
            raise DataError(f"{self.path}: tensor {key!r} has unsupported dtype {e['dtype']}")
        begin, end = e["data_offsets"]
        out = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self._start + begin)
            if f.readinto(memoryview(out.numpy())) != end - begin:
                raise DataError(f"{self.path}: tensor {key!r} is truncated")
        return out.view(dtype).view(e["shape"])

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """|t| as float32, viewed as int32 (monotone in the magnitude), flattened."""
    return t.detach().reshape(-1).to(torch.float32).abs().view(torch.int32)


@dataclass(frozen=True)
class Threshold:
    """Keep entries with magnitude bits > ``bits``, and ``ties`` of those == ``bits``
    (the first in order). ``bits`` -1 keeps everything, ``keep_none`` nothing."""

    bits: int
    ties: int
    keep_none: bool = False


def global_topk(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> Threshold:
    """The exact threshold of the k largest magnitudes over every tensor ``chunks()``
    yields (called twice: two streaming passes). See the module docstring."""
    if k <= 0:
        return Threshold(0, 0, keep_none=True)
    hist = None
    total = 0
    for t in chunks():
        b = _bits(t)
        total += b.numel()
        h = torch.bincount((b >> 16).long(), minlength=_HI)
        hist = h if hist is None else hist + h.to(hist.device)
    if hist is None or k >= total:
        return Threshold(-1, 0)
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # above[i]: entries in bins >= i
    hi = int(torch.nonzero(above >= k).max())  # the highest bin with >= k entries at or above it
    greater_hi = int(above[hi + 1]) if hi + 1 < _HI else 0
    low = None
    for t in chunks():
        b = _bits(t)
        sel = b[(b >> 16) == hi]
        if sel.numel():
            h = torch.bincount((sel & 0xFFFF).long(), minlength=_LO)
            low = h if low is None else low + h.to(low.device)
    assert low is not None
    above_lo = torch.flip(torch.cumsum(torch.flip(low, [0]), 0), [0]) + greater_hi
    lo = int(torch.nonzero(above_lo >= k).max())
    greater = int(above_lo[lo + 1]) if lo + 1 < _LO else greater_hi
    return Threshold((hi << 16) | lo, k - greater)


class Trimmer:
    """Applies a Threshold to the tensors of one vector, in order, spending the tie budget."""

    def __init__(self, th: Threshold):
        self.th, self.ties_left = th, th.ties

    def mask(self, t: torch.Tensor) -> torch.Tensor:
        if self.th.keep_none:
            return torch.zeros(t.shape, dtype=torch.bool, device=t.device)
        if self.th.bits < 0:
            return torch.ones(t.shape, dtype=torch.bool, device=t.device)
        b = _bits(t)
        keep = b > self.th.bits
        eq = b == self.th.bits
        if self.ties_left > 0 and bool(eq.any()):
            take = eq & (torch.cumsum(eq, 0) <= self.ties_left)
            self.ties_left -= int(take.sum())
            keep |= take
        return keep.view(t.shape)


def _check(vectors: Sequence[TaskVector], names: Sequence[str] | None) -> list[str]:
    if not vectors:
        raise DataError("no task vectors to merge")
    names = list(names) if names is not None else list(vectors[0])
    for i, v in enumerate(vectors):
        missing = [n for n in names if n not in v]
        if missing:
            raise DataError(f"task vector {i} has no entry {missing[0]!r}")
    return names


def task_sum(vectors: Sequence[TaskVector], names: Sequence[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, sum_t tau_t[name]) for each name, one tensor at a time."""
    for n in _check(vectors, names):
        acc = vectors[0][n].clone()
        for v in vectors[1:]:
            acc += v[n].to(acc.device, acc.dtype)
        yield n, acc


TRIMS = ("kthvalue", "exact")
_ALL_TIES = 1 << 62


def _threshold(chunks: Callable[[], Iterable[torch.Tensor]], size: int, density: float, trim: str) -> Threshold:
    """The trim threshold of one vector (or tensor) of ``size`` entries (module docstring)."""
    k = int(density * size)
    if trim == "exact":
        return global_topk(chunks, k)
    th = global_topk(chunks, k + 1)  # the (k + 1)-th largest = the (size - k)-th smallest
    return th if th.keep_none or th.bits < 0 else Threshold(th.bits, _ALL_TIES)


def trim_thresholds(vectors: Sequence[TaskVector], names: Sequence[str], density: float,
                    trim: str = "kthvalue") -> list[Threshold]:
    """Per task vector, its global trim threshold over the entries ``names``."""
    out = []
    for v in vectors:
        size = sum(v[n].numel() for n in names)
        out.append(_threshold(lambda v=v: (v[n] for n in names), size, density, trim))
    return out


def _ordered_sum(stacked: torch.Tensor) -> torch.Tensor:
    """sum over dim 0 added in order (row 0 + row 1 + ...): the same float result whatever
    the shape of the rows, so a merge streamed per tensor equals one over the flat vector."""
    acc = stacked[0].clone()
    for row in stacked[1:]:
        acc += row
    return acc


def elect_disjoint_mean(trimmed: torch.Tensor, zero_sign: float = 0.0) -> torch.Tensor:
    """[K, ...] trimmed task vectors -> the elected-sign disjoint mean [...].

    The elected sign is sign(sum_t trimmed_t), ``zero_sign`` where that sum is 0; an entry
    of task t agrees when it is > 0 under sign +1, < 0 under sign -1 or 0."""
    zero = torch.zeros((), dtype=trimmed.dtype, device=trimmed.device)
    sign = torch.sign(_ordered_sum(trimmed))
    sign = torch.where(sign == 0, torch.full_like(sign, zero_sign), sign)
    agree = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    count = agree.sum(0)
    total = _ordered_sum(torch.where(agree, trimmed, zero))
    return torch.where(count > 0, total / count.clamp(min=1), zero)


def ties(vectors: Sequence[TaskVector], density: float = 0.2, scope: str = "global",
         names: Sequence[str] | None = None, trim: str = "kthvalue") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, merged tau[name]) of TIES merging, one tensor at a time (module docstring).

    Three streaming passes over the vectors: thresholds (two reads when ``scope`` is
    global), the majority sign, the merge."""
    if not 0.0 <= density <= 1.0:
        raise ConfigError("density", f"must be in [0, 1], got {density}")
    if scope not in ("global", "tensor"):
        raise ConfigError("scope", f"must be 'global' or 'tensor', got {scope!r}")
    if trim not in TRIMS:
        raise ConfigError("trim", f"must be one of {', '.join(TRIMS)}, got {trim!r}")
    names = _check(vectors, names)
    thresholds = trim_thresholds(vectors, names, density, trim) if scope == "global" else None

    def trimmed_tensors() -> Iterator[tuple[str, torch.Tensor]]:
        trimmers = [Trimmer(th) for th in thresholds] if thresholds is not None else None
        for n in names:
            parts = []
            for i, v in enumerate(vectors):
                t = v[n]
                if trimmers is not None:
                    m = trimmers[i].mask(t)
                else:
                    m = Trimmer(_threshold(lambda t=t: [t], t.numel(), density, trim)).mask(t)
                parts.append(torch.where(m, t, torch.zeros((), dtype=t.dtype, device=t.device)))
            yield n, torch.stack(parts)

    balance = 0
    for _, stacked in trimmed_tensors():
        balance += int(torch.sign(_ordered_sum(stacked)).sum())
    majority = float((balance > 0) - (balance < 0))
    for n, stacked in trimmed_tensors():
        yield n, elect_disjoint_mean(stacked, majority)


def fisher_average(params: Sequence[TaskVector], fishers: Sequence[TaskVector], weights: Sequence[float] | None = None,
                   floor: float = 1e-6, names: Sequence[str] | None = None,
                   normalize: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, sum_i c_i max(F_i, floor) theta_i / sum_i c_i max(F_i, floor)), one tensor at a time.

    ``weights`` w_i (default uniform); ``normalize``: c_i = w_i / ||F_i||_2 with the norm
    over every entry of Fisher i (the reference's ``normalize_fishers``), else c_i = w_i.
    ``floor`` keeps the denominator positive where every Fisher is 0 (there the result is
    the c-weighted plain average). Entries without a Fisher (buffers) are the w-weighted
    plain average."""
    names = _check(params, names)
    if len(fishers) != len(params):
        raise DataError(f"{len(params)} models but {len(fishers)} Fishers")
    w = list(weights) if weights is not None else [1.0] * len(params)
    if len(w) != len(params) or any(x < 0 for x in w) or sum(w) <= 0:
        raise ConfigError("weights", "need one non-negative weight per model, not all zero")
    c = list(w)
    if normalize:
        for i, f in enumerate(fishers):
            norm = float(sum(float(f[k].double().square().sum()) for k in f) ** 0.5)
            if not norm > 0 or norm == float("inf"):
                raise DataError(f"the Fisher of model {i} has norm {norm}: it cannot be normalised "
                                "(pass normalize=False)")
            c[i] = w[i] / norm
    for n in names:
        num = den = None
        for wi, ci, p, f in zip(w, c, params, fishers):
            fi = ci * f[n].to(p[n].dtype).clamp(min=floor) if n in f else torch.full_like(p[n], wi)
            num = fi * p[n] if num is None else num + fi * p[n]
            den = fi if den is None else den + fi
        yield n, num / den
