"""Regularised fine-tuning: [ewc], [lwf], [l2sp], [l2_init].

All four fine-tune every parameter with the shared loop (``train_classifier``) and add
a term through its hooks: ``penalty(model)`` for the weight-space pulls (EWC, L2-SP,
L2-init) and ``extra_loss(model, x, y, logits)`` for LwF's distillation. AdamW's
weight decay defaults to 0 here, since it would pull towards the origin against the
pull towards the pretrained weights.

- EWC: Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks",
  PNAS 2017. Penalty ``lambda/2 * sum_i F_i (theta_i - theta*_i)^2`` with the diagonal
  Fisher ``F`` of the pretrained model on the whole ``ctx.pretrain_sample``
  (``ribench.methods.fisher.diagonal_fisher``, the one Fisher merging uses). ``F`` is the
  *expected* Fisher of the model's own predictive distribution: by default
  (``fisher="exact"``) the expectation over labels is summed exactly,
  ``F_i = mean_x sum_c p(c|x) (d log p(c|x) / d theta_i)^2``; ``fisher="sample"``
  draws one label per image from ``p(.|x)`` (a generator seeded with the run's seed),
  which costs one gradient per image instead of one per class.
- LwF: Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017. Adds
  ``lambda_o * KL(softmax(t/T) || softmax(s/T))`` between the pretrained model's logits
  ``t`` and the adapted model's ``s`` on the task's own images (T = 2, lambda_o = 1 as
  in the paper). The paper writes the term as a cross-entropy with soft targets; the KL
  differs by the targets' entropy, a constant, so the gradients are identical and the
  term is 0 when the two models agree. The targets are computed on the fly (the paper
  records them once before training; without augmentation this is the same). The
  paper's optional warm-up (training the new head alone first) is the ``head="lp"``
  policy here.
- L2-SP: Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with
  Convolutional Networks", ICML 2018: ``alpha/2 ||w_S - w0_S||^2 + beta/2 ||w_head||^2``
  (w_S: backbone), alpha = 0.1, beta = 0.01 as in the paper.
- L2-init: ``lambda/2 ||theta - theta0||^2``, an unweighted pull to the pretrained
  weights. ImageNet-RIB (Hwang et al. 2024) reports this baseline as "EWC"; it is EWC
  with the Fisher replaced by the identity, so it is listed here under the name of the
  plain method (as in Kumar et al., "Maintaining Plasticity in Continual Learning via
  Regenerative Regularization", 2024, "L2 Init").

The head policy (``head``, see methods/heads.py) applies to all four. The weight-space
penalties cover the backbone, and the head too under ``keep`` (the only policy where
the pretrained head is a meaningful anchor and is trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.registry import register_method
from ..core.types import Domain
from ..models.base import Model
from .base import AdaptContext, Method
from .fisher import check_mode, diagonal_fisher
from .heads import HeadTrainConfig, check_positive, prepare_head, train_params


def _anchored_names(model: Model, head_policy: str) -> list[str]:
    """Parameters pulled towards their pretrained values: the backbone, plus the head under ``keep``."""
    return [n for n, _ in model.named_parameters() if head_policy == "keep" or not n.startswith("head.")]


def _quadratic_pull(model: Model, anchor: dict[str, torch.Tensor], weight: dict[str, torch.Tensor] | None,
                    scale: float) -> Callable[[Model], torch.Tensor]:
    """penalty(model) = scale/2 * sum_i weight_i (theta_i - anchor_i)^2 (weight 1 when None)."""
    def penalty(m: Model) -> torch.Tensor:
        params = dict(m.named_parameters())
        total = 0.0
        for n, a in anchor.items():
            d = (params[n] - a).square()
            total = total + (d * weight[n]).sum() if weight is not None else total + d.sum()
        return 0.5 * scale * total

    return penalty


class _RegularisedFT(Method):
    """Shared adapt(): copy, apply the head policy, train all parameters with the method's terms."""

    def terms(self, model: Model, pretrained: Model, ctx: AdaptContext):  # -> (penalty, extra_loss)
        raise NotImplementedError  # pragma: no cover

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        model = self.fresh_copy(pretrained)
        head_trained = prepare_head(model, cfg.head, pretrained, task, ctx)
        penalty, extra = self.terms(model, pretrained, ctx)
        params = model.backbone_parameters() + (list(model.head.parameters()) if head_trained else [])
        return train_params(model, params, cfg, task, ctx, penalty=penalty, extra_loss=extra)


@dataclass(frozen=True)
class RegularisedConfig(HeadTrainConfig):
    lr: float = field(default=3e-4, metadata={"help": "peak AdamW learning rate (as ft)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay (0: the penalty replaces it)"})


@dataclass(frozen=True)
class EWCConfig(RegularisedConfig):
    lam: float = field(default=1e3, metadata={"help": "penalty strength lambda (the paper tunes it per experiment; "
                                                      "its value here is a starting point, not the paper's)"})
    fisher: str = field(default="exact", metadata={"help": "exact (sum over the model's softmax) or sample (one label "
                                                          "drawn per image)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "lam", allow_zero=True)
        check_mode(self.fisher)


@register_method("ewc")
class EWC(_RegularisedFT):
    """EWC: fine-tuning with a Fisher-weighted pull to the pretrained weights (Kirkpatrick et al. 2017)."""

    name = "ewc"
    Config = EWCConfig

    def terms(self, model, pretrained, ctx):
        if len(ctx.pretrain_sample) == 0:
            raise ConfigError("pretrain_sample", "EWC needs pretraining images to compute the Fisher; the sample is empty")
        names = _anchored_names(model, self.config.head)
        g = torch.Generator().manual_seed(ctx.seed)
        fisher = diagonal_fisher(pretrained, ctx.pretrain_sample, names, self.config.fisher, generator=g)
        anchor = {n: p.detach().clone() for n, p in pretrained.named_parameters() if n in fisher}
        ctx.info["fisher_mean"] = float(sum(f.sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values()))
        return _quadratic_pull(model, anchor, fisher, self.config.lam), None


@dataclass(frozen=True)
class L2InitConfig(RegularisedConfig):
    lam: float = field(default=1e-2, metadata={"help": "penalty strength lambda (L2 Init, Kumar et al. 2024: 1e-2 "
                                                      "is the top of its grid)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "lam", allow_zero=True)


@register_method("l2_init")
class L2Init(_RegularisedFT):
    """L2-init: fine-tuning with an unweighted L2 pull to the pretrained weights (ImageNet-RIB's "EWC")."""

    name = "l2_init"
    Config = L2InitConfig

    def terms(self, model, pretrained, ctx):
        names = set(_anchored_names(model, self.config.head))
        anchor = {n: p.detach().clone() for n, p in pretrained.named_parameters() if n in names}
        return _quadratic_pull(model, anchor, None, self.config.lam), None


@dataclass(frozen=True)
class L2SPConfig(RegularisedConfig):
    alpha: float = field(default=0.1, metadata={"help": "pull of the backbone to its pretrained weights (paper: 0.1)"})
    beta: float = field(default=0.01, metadata={"help": "L2 decay of the head to 0 (paper: 0.01)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "alpha", "beta", allow_zero=True)


@register_method("l2sp")
class L2SP(_RegularisedFT):
    """L2-SP: pull the backbone to its pretrained weights, decay the head (Li et al. 2018)."""

    name = "l2sp"
    Config = L2SPConfig

    def terms(self, model, pretrained, ctx):
        alpha, beta = self.config.alpha, self.config.beta
        anchor = {n: p.detach().clone() for n, p in pretrained.named_parameters() if not n.startswith("head.")}
        pull = _quadratic_pull(model, anchor, None, alpha)

        def penalty(m: Model) -> torch.Tensor:
            return pull(m) + 0.5 * beta * sum(p.square().sum() for p in m.head.parameters())

        return penalty, None


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of KL(softmax(teacher/T) || softmax(student/T)); logits [B, C].

    Classes masked out (-inf in the student's logits) are left out of both distributions.
    """
    keep = torch.isfinite(student).all(0)
    if not keep.all():
        student, teacher = student[:, keep], teacher[:, keep]
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


@dataclass(frozen=True)
class LwFConfig(RegularisedConfig):
    temperature: float = field(default=2.0, metadata={"help": "distillation temperature T (paper: 2)"})
    lam: float = field(default=1.0, metadata={"help": "weight lambda_o of the distillation term (paper: 1)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "temperature")
        check_positive(self, "lam", allow_zero=True)


@register_method("lwf")
class LwF(_RegularisedFT):
    """LwF: fine-tuning while distilling the pretrained model's outputs on the task images (Li & Hoiem 2016)."""

    name = "lwf"
    Config = LwFConfig

    def terms(self, model, pretrained, ctx):
        teacher = pretrained
        t, lam = self.config.temperature, self.config.lam

        # where the tasks have another label space, the old task is the pretraining head's (Li & Hoiem's
        # recorded old-task outputs); it is kept frozen (Model.set_pretrain_head), so it is distilled through
        old_task = teacher.has_pretrain_head

        def extra(m: Model, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            was_training = teacher.training
            teacher.eval()
            with torch.no_grad():
                target = teacher.pretrain_logits(x) if old_task else teacher(x)
            teacher.train(was_training)
            return lam * distillation_loss(m.pretrain_logits(x) if old_task else logits, target, t)

        return None, extra
