"""The diagonal Fisher of a model's parameters, shared by EWC and Fisher merging.

``diagonal_fisher(model, data)`` is the diagonal of the *expected* Fisher information of
the model's own predictive distribution, averaged over the images x of ``data``:

    F_i = mean_x E_{y ~ p(.|x)} (d log p(y|x) / d theta_i)^2

with one vocabulary for how the expectation over labels is taken (``FISHER_MODES``):

- ``"exact"``: summed exactly over the classes, ``sum_c p(c|x) g_c^2`` (one gradient per
  class and image);
- ``"sample"``: one label per image drawn from ``p(.|x)`` with the given generator,
  ``g_y^2`` (one gradient per image).

EWC (Kirkpatrick et al., PNAS 2017) weights its pull to the pretrained weights by it;
Fisher merging (Matena & Raffel, NeurIPS 2022) weights each model's parameters by it.
Per-image gradients come from ``torch.func`` (``vmap`` over ``jacrev`` / ``grad`` of a
``functional_call`` on the preprocessed images), in chunks, never from a Python loop
over images. Every random draw (the subset of ``examples``, the sampled labels) comes
from ``generator``, so a seed fixes the result.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.types import Split
from ..models.base import Model

FISHER_MODES = ("exact", "sample")


class _Logits(nn.Module):
    """Preprocessed images -> logits, so the per-image functions skip ``Model.preprocess``."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.embed(z))


def check_mode(mode: str, field: str = "fisher") -> str:
    """``mode`` if it is one of ``FISHER_MODES``, else a ConfigError naming ``field``."""
    if mode not in FISHER_MODES:
        raise ConfigError(field, f"must be one of {', '.join(FISHER_MODES)}, got {mode!r}")
    return mode


def diagonal_fisher(model: Model, data: Split, names: Sequence[str] | None = None, mode: str = "exact",
                    generator: torch.Generator | None = None, examples: int | None = None,
                    batch_size: int | None = None, max_chunk_floats: int = 2**25) -> dict[str, torch.Tensor]:
    """Diagonal of the expected Fisher of ``model`` on ``data``: name -> tensor shaped like the
    parameter (float32 when the model is), the mean over the images used.

    ``mode``: ``"exact"`` or ``"sample"`` (module docstring). ``names``: parameters to cover
    (default: every one). ``examples``: use a random subset of that many images (drawn with
    ``generator``, kept in their order; capped by the data), None for every image.
    ``batch_size``: images per vectorised chunk; None sizes chunks so that at most
    ``max_chunk_floats`` floats of per-image gradients are held at once (and at most 256
    images). The model is evaluated in eval mode and left in the mode it was in.
    """
    from torch.func import functional_call, grad, jacrev, vmap

    check_mode(mode)
    if len(data) == 0:
        raise DataError("cannot compute a Fisher on an empty split")
    if examples is not None:
        if examples < 1:
            raise ConfigError("examples", f"must be positive, got {examples}")
        n = min(examples, len(data))
        data = data.subset(torch.sort(torch.randperm(len(data), generator=generator)[:n]).values)
    wrapped = _Logits(model)
    device = next(model.parameters()).device
    all_params = dict(model.named_parameters())
    names = list(all_params) if names is None else list(names)
    unknown = [n for n in names if n not in all_params]
    if unknown:
        raise ConfigError("names", f"the model has no parameter {unknown[0]!r}")
    params = {f"model.{n}": all_params[n].detach() for n in names}
    fixed = {f"model.{n}": p.detach() for n, p in all_params.items() if n not in names}
    fixed.update({f"model.{n}": b for n, b in model.named_buffers()})
    if batch_size is None:
        per_image = sum(p.numel() for p in params.values()) * (model.num_classes if mode == "exact" else 1)
        batch_size = max(1, min(256, max_chunk_floats // max(1, per_image)))

    def log_probs(p: dict, z: torch.Tensor) -> torch.Tensor:  # one image [C, S, S] -> [num_classes]
        return torch.log_softmax(functional_call(wrapped, {**p, **fixed}, (z.unsqueeze(0),))[0], dim=-1)

    def log_prob_of(p: dict, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return (log_probs(p, z) * onehot).sum()  # a one-hot product: indexing by a label is not vmap-able

    per_image_jac = vmap(jacrev(log_probs), in_dims=(None, 0))  # -> name: [B, num_classes, *shape]
    per_image_grad = vmap(grad(log_prob_of), in_dims=(None, 0, 0))  # -> name: [B, *shape]
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")  # vmap over attention kernels
        try:
            for xb, _ in data.batches(batch_size):
                with torch.no_grad():
                    z = model.preprocess(xb.to(device))
                    probs = torch.softmax(wrapped(z), dim=-1)
                if mode == "exact":
                    for k, j in per_image_jac(params, z).items():
                        w = probs.view(*probs.shape, *([1] * (j.dim() - 2)))
                        total[k] += (w * j.square()).sum(dim=(0, 1))
                else:
                    y = torch.multinomial(probs.cpu(), 1, generator=generator).flatten().to(device)
                    for k, v in per_image_grad(params, z, F.one_hot(y, probs.shape[1]).to(z.dtype)).items():
                        total[k] += v.square().sum(0)
        finally:
            model.train(was_training)
    return {k.removeprefix("model."): v / len(data) for k, v in total.items()}
