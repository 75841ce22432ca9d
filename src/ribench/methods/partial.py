"""Training a subset of the model's own parameters, in plain PyTorch: [bitfit], [head_only].

Neither needs PEFT: the subset is selected by name (the biases) or by module (the head),
and trained by the shared loop (``heads.train_params``) under the head policy.

- BitFit: Ben Zaken et al., "BitFit: Simple Parameter-efficient Fine-tuning for
  Transformer-based Masked Language-models", ACL 2022: the backbone's bias terms, and
  the head per the head policy. Own code: selecting the bias parameters is one line,
  PEFT has no BitFit tuner.
- Head-only: the classifier head trained by SGD epochs through the frozen backbone
  (the gradient-trained counterpart of [lp]). Own code, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ConfigError
from ..core.registry import register_method
from ..core.types import Domain
from ..models.base import Model
from .base import AdaptContext, Method
from .heads import HeadTrainConfig, prepare_head, train_params



@dataclass(frozen=True)
class BitFitConfig(HeadTrainConfig):
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate (BitFit paper: 1e-4..1e-3)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay (none on biases)"})


@register_method("bitfit")
class BitFit(Method):
    """BitFit: train only the bias terms of the backbone (and the head, per the head policy) (Ben Zaken et al. 2022)."""

    name = "bitfit"
    Config = BitFitConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        model = self.fresh_copy(pretrained)
        head_trained = prepare_head(model, cfg.head, pretrained, task, ctx)
        head_ids = {id(p) for p in model.head.parameters()}
        biases = [p for n, p in model.named_parameters() if id(p) not in head_ids and n.endswith("bias")]
        if not biases:
            raise ConfigError("methods.bitfit", f"the {getattr(model, 'arch', type(model).__name__)} backbone has no bias terms")
        params = biases + (list(model.head.parameters()) if head_trained else [])
        return train_params(model, params, cfg, task, ctx)


@dataclass(frozen=True)
class HeadOnlyConfig(HeadTrainConfig):
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    head_policies = ("keep", "reinit", "lp")


@register_method("head_only")
class HeadOnly(Method):
    """Head-only: train the classifier head by SGD epochs through the frozen backbone."""

    name = "head_only"
    Config = HeadOnlyConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        model = self.fresh_copy(pretrained)
        prepare_head(model, cfg.head, pretrained, task, ctx)
        return train_params(model, list(model.head.parameters()), cfg, task, ctx)
