"""``dawin`` (Oh et al., ICLR 2025, "DaWin: Training-free Dynamic Weight Interpolation for
Robust Adaptation"; github.com/naver-ai/dawin, ``dawin_rft/main_dawin.py``).

Per sample, lambda(x) = exp(-H_ft(x)) / (exp(-H_0(x)) + exp(-H_ft(x))) from the
prediction entropies (nats) of m0 and the fine-tuned model (the reference's default
expertise ``negexp_ent_ratio``, without offset adjustment or mixture model, as its
defaults), and the prediction of theta_0 + lambda(x) (theta_ft - theta_0).
``expertise="entropy_ratio"`` gives lambda = H_0 / (H_0 + H_ft). The result is a
``DaWinModel`` (registered model ``dawin``) holding both models; its ``hparams`` record
what rebuilds it (the base model's kind and hparams), so it is saved and loaded like any
other model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ...core.errors import ConfigError, DataError
from ...core.registry import MODEL_KINDS, register_adapted_model, register_method
from ...core.types import Domain, InputSpec
from ...models.base import Model
from ..base import AdaptContext, Method
from .common import State, ft_params

DAWIN_EXPERTISE = ("negexp_entropy", "entropy_ratio")


def _entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Prediction entropy [B] (nats) of softmax(logits / temperature), logits [B, C] (float64)."""
    logp = F.log_softmax(logits.double() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def dawin_coefficients(h0: torch.Tensor, h1: torch.Tensor, expertise: str = "negexp_entropy") -> torch.Tensor:
    """The weight lambda [B] of the fine-tuned model from the entropies h0, h1 [B] (nats)
    of m0 and the fine-tuned model.

    ``negexp_entropy`` (the reference code's default ``negexp_ent_ratio``):
    exp(-h1) / (exp(-h0) + exp(-h1)) = sigmoid(h0 - h1). ``entropy_ratio``:
    h0 / (h0 + h1), 0.5 where both are 0."""
    if expertise == "negexp_entropy":
        return torch.sigmoid(h0 - h1)
    if expertise == "entropy_ratio":
        tot = h0 + h1
        return torch.where(tot > 0, h0 / tot.clamp(min=1e-300), torch.full_like(tot, 0.5))
    raise ConfigError("expertise", f"must be one of {', '.join(DAWIN_EXPERTISE)}, got {expertise!r}")


class DaWinModel(Model):
    """Two models of one architecture, m0 and m1 (fine-tuned), combined per sample:
    lambda(x) = ``dawin_coefficients(H_0(x), H_1(x), expertise)`` from the entropies of
    softmax(logits / T) with ``temperatures`` (T_0, T_1), and the output of
    theta_0 + lambda(x) (theta_1 - theta_0). ``groups`` 0 runs one interpolated model per
    distinct lambda; k > 0 bins lambda into k equal-width bins on [0, 1] and runs each
    bin's mean lambda (fewer forward passes)."""

    arch = "dawin"

    def __init__(self, m0: Model, m1: Model, groups: int = 0, expertise: str = "negexp_entropy",
                 temperatures: Sequence[float] = (1.0, 1.0)):
        super().__init__(m0.spec, m0.num_features, m0.num_classes)
        del self.head  # the head is each inner model's own
        if expertise not in DAWIN_EXPERTISE:
            raise ConfigError("expertise", f"must be one of {', '.join(DAWIN_EXPERTISE)}, got {expertise!r}")
        self.m0, self.m1, self.groups = m0, m1, int(groups)
        self.expertise, self.temperatures = expertise, tuple(float(t) for t in temperatures)
        self.hparams = {"base": getattr(m0, "arch", ""), "base_hparams": getattr(m0, "hparams", {}), "groups": self.groups,
                        "expertise": self.expertise, "temperatures": list(self.temperatures)}

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]
        return self.m1.head

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """lambda(x) [B] in [0, 1], the weight of the fine-tuned model per sample."""
        t0, t1 = self.temperatures
        with torch.no_grad():
            lam = dawin_coefficients(_entropy(self.m0(x), t0), _entropy(self.m1(x), t1), self.expertise)
        if self.groups > 0:
            b = torch.clamp((lam * self.groups).long(), max=self.groups - 1)
            means = torch.zeros(self.groups, dtype=lam.dtype, device=lam.device).index_add_(0, b, lam)
            counts = torch.bincount(b, minlength=self.groups).to(lam.dtype)
            lam = (means / counts.clamp(min=1))[b]
        return lam.float()

    def _run(self, x: torch.Tensor, fn: str) -> torch.Tensor:
        lam = self.coefficients(x)
        p0 = {**dict(self.m0.named_parameters()), **dict(self.m0.named_buffers())}
        p1 = {**dict(self.m1.named_parameters()), **dict(self.m1.named_buffers())}
        out = None
        for v in torch.unique(lam):
            idx = torch.nonzero(lam == v).flatten()
            a = float(v)
            params = {k: (p0[k] + a * (p1[k] - p0[k]) if p0[k].is_floating_point() else p0[k]) for k in p0}
            y = _call(self.m0, params, fn, x[idx])
            if out is None:
                out = torch.empty((len(x), *y.shape[1:]), dtype=y.dtype, device=y.device)
            out[idx] = y
        assert out is not None
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "forward")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "features")

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        raise DataError("a DaWin model interpolates per image: call features(images), not embed")

    @property
    def pretrain_num_classes(self) -> int | None:
        return self.m0.pretrain_num_classes

    def pretrain_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over the pretraining classes of the model interpolated per image with the
        same lambda(x) as ``forward`` (taken from the task heads' entropies)."""
        return self._run(x, "pretrain_logits")


class _Method(nn.Module):
    """``forward`` = the wrapped model's method ``fn`` (so functional_call can run it)."""

    def __init__(self, model: Model, fn: str):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.fn)(x)


def _call(module: Model, params: State, fn: str, x: torch.Tensor) -> torch.Tensor:
    """``module.<fn>(x)`` with ``params`` in place of its own (torch.func.functional_call)."""
    if fn == "forward":
        return functional_call(module, params, (x,))
    return functional_call(_Method(module, fn), {f"model.{k}": v for k, v in params.items()}, (x,))


@register_adapted_model("dawin")
def dawin_model(num_classes: int = 10, spec: InputSpec | None = None, base: str = "mlp",
                base_hparams: dict | None = None, groups: int = 0, expertise: str = "negexp_entropy",
                temperatures: Sequence[float] = (1.0, 1.0)) -> DaWinModel:
    """A DaWin model of two ``base`` models (rebuilt from a checkpoint's metadata)."""
    kw = dict(base_hparams or {})
    m0 = MODEL_KINDS.create(base, num_classes=num_classes, spec=spec, **kw)
    m1 = MODEL_KINDS.create(base, num_classes=num_classes, spec=spec, **kw)
    return DaWinModel(m0, m1, groups, expertise, temperatures)


@dataclass(frozen=True)
class DaWinConfig:
    expertise: str = field(default="negexp_entropy", metadata={
        "help": "negexp_entropy: lambda = exp(-H_ft) / (exp(-H_0) + exp(-H_ft)) (the reference code's default); "
                "entropy_ratio: lambda = H_0 / (H_0 + H_ft)"})
    temperatures: tuple = field(default=(1.0, 1.0), metadata={
        "help": "(T_0, T_ft): logits divided by these before the entropies (the reference code uses calibrated "
                "values of its CLIP models; 1 = none)"})
    groups: int = field(default=0, metadata={
        "help": "0: one interpolation per distinct per-sample coefficient; k: bin coefficients into k groups"})

    def __post_init__(self) -> None:
        if self.expertise not in DAWIN_EXPERTISE:
            raise ConfigError("expertise", f"must be one of {', '.join(DAWIN_EXPERTISE)}, got {self.expertise!r}")
        temps = tuple(self.temperatures) if isinstance(self.temperatures, (list, tuple)) else ()
        if len(temps) != 2 or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps):
            raise ConfigError("temperatures", f"must be two positive numbers (T_0, T_ft), got {self.temperatures!r}")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in temps))
        if not isinstance(self.groups, int) or self.groups < 0:
            raise ValueError(f"groups must be an integer >= 0, got {self.groups!r}")


@register_method("dawin")
class DaWin(Method):
    """DaWin: per-sample entropy-based interpolation of m0 and the fine-tuned model (module docstring)."""

    name = "dawin"
    version = "2"  # 2: lambda = exp(-H_ft) / (exp(-H_0) + exp(-H_ft)) by default (was H_0 / (H_0 + H_ft))
    requires = ("ft",)
    Config = DaWinConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        ft = ctx.inputs["ft"]
        if not hasattr(pretrained, "arch"):
            raise ConfigError("methods.dawin", "the pretrained model records no architecture (model.arch)")
        ctx.info["trainable_params"] = ft_params([ft])
        cfg = self.config
        return DaWinModel(copy.deepcopy(pretrained), copy.deepcopy(ft), cfg.groups, cfg.expertise, cfg.temperatures)
