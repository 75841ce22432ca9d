"""Task vectors (Ilharco et al., ICLR 2023, "Editing Models with Task Arithmetic"):
tau = theta_adapted - theta_pretrained, per state-dict entry, in float64.

The weight-space methods build on them (WiSE-FT, task arithmetic, TIES, aTLAS) and the
weight-space diagnostics (``ribench.analysis.weightspace``) measure them; both use this
one definition.
"""

from __future__ import annotations

import fnmatch
from typing import Mapping, Sequence

import torch
from torch import nn

from ..core.errors import CheckpointError, DataError

__all__ = ["state_of", "task_vector"]


def state_of(m: nn.Module | Mapping[str, torch.Tensor], name: str = "model") -> dict[str, torch.Tensor]:
    """The detached state dict of a module, or a state dict's tensors (values made tensors);
    anything else is a DataError naming the argument ``name``."""
    if isinstance(m, nn.Module):
        return {k: v.detach() for k, v in m.state_dict().items()}
    if isinstance(m, Mapping):
        return {k: (v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in m.items()}
    raise DataError(f"{name} must be an nn.Module or a state dict, got {type(m).__name__}")


def task_vector(pretrained, adapted, exclude: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """tau = adapted - pretrained for every floating-point state-dict entry of both (float64,
    on the pretrained entry's device).

    ``pretrained`` / ``adapted``: modules or state dicts. ``exclude``: shell-style
    patterns of entry names to leave out, e.g. ``("head.*",)`` to compare backbones of
    models whose heads differ. Entries present in only one are left out; an entry with
    different shapes is an error (exclude it).
    """
    a, b = state_of(pretrained, "pretrained"), state_of(adapted, "adapted")
    out = {}
    for key, va in a.items():
        if key not in b or not va.is_floating_point() or any(fnmatch.fnmatch(key, p) for p in exclude):
            continue
        vb = b[key]
        if vb.shape != va.shape:
            raise CheckpointError(f"state-dict entry {key!r} has shape {tuple(va.shape)} in the pretrained model "
                                  f"but {tuple(vb.shape)} in the adapted one; exclude it (exclude=({key!r},))")
        out[key] = vb.to(va.device, torch.float64) - va.to(torch.float64)
    if not out:
        raise CheckpointError("the two models share no floating-point state-dict entry")
    return out
