"""Visual prompting [prompt] with a learned pad prompt; the ``prompted`` model wrapper.

Bahng et al., "Exploring Visual Prompts for Adapting Large-Scale Models", 2022: a
learnable frame of width ``pad`` pixels is added to every (preprocessed) input image;
the backbone stays frozen and only the prompt is trained (their PadPrompter). Here it
works for any ribench backbone: ``PromptedModel`` wraps a Model, adds the prompt after
the backbone's own ``preprocess`` (so in normalised pixel space, at the model's input
size) and reuses the backbone's ``embed``. It is registered as the model ``prompted``,
whose hparams name the wrapped backbone (``base_arch``, ``base_hparams``) and ``pad``,
so ``models.checkpoint.load_model`` rebuilds it like any backbone.

The paper learns the prompt for CLIP with SGD at learning rate 40 for 1000 epochs;
ribench's shared loop is AdamW, for which such a rate does not carry over, so the
defaults below are AdamW-scaled. The paper's pad is 30 px at 224 px (13% of the side);
the default 4 px is the same fraction of ribench's 28 px digits models. The prompt is
initialised from a standard normal, as in the paper's PadPrompter. With the default
head policy ``masked`` the head stays frozen too (the paper maps the frozen model's
outputs to the task's labels; here the label spaces are shared).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.registry import MODEL_KINDS, register_adapted_model, register_method
from ..core.runtime import seed_everything
from ..core.types import Domain, InputSpec
from ..models.base import Model
from ..models.training import train_classifier
from .base import AdaptContext, Method, trainable_parameters
from .heads import HeadTrainConfig, check_positive, class_mask, prepare_head, train_only


class PromptedModel(Model):
    """A backbone whose preprocessed input gets a learned pad prompt added: ``embed(z + prompt)``.

    The wrapped backbone lives in ``backbone`` (its own head removed); ``head`` is the
    classifier. Prompt parameters: ``prompt_top``/``prompt_bottom`` [1, C, pad, S] and
    ``prompt_left``/``prompt_right`` [1, C, S - 2 pad, pad], with S = spec.size.
    """

    def __init__(self, base: Model, pad: int):
        s = base.spec.size
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 1 or 2 * pad >= s:
            raise ConfigError("pad", f"must be an integer in [1, {(s - 1) // 2}] for {s} px input, got {pad!r}")
        super().__init__(base.spec, base.num_features, base.num_classes)
        self.head = base.head
        base.head = nn.Identity()
        if base.has_pretrain_head:  # the pretraining head sees the prompted features
            self.set_pretrain_head(base.pretrain_head_weight, base.pretrain_head_bias)
            del base.pretrain_head_weight, base.pretrain_head_bias
        self.backbone = base
        self.pad = pad
        c = base.spec.channels
        self.prompt_top = nn.Parameter(torch.randn(1, c, pad, s))
        self.prompt_bottom = nn.Parameter(torch.randn(1, c, pad, s))
        self.prompt_left = nn.Parameter(torch.randn(1, c, s - 2 * pad, pad))
        self.prompt_right = nn.Parameter(torch.randn(1, c, s - 2 * pad, pad))

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.prompt_top, self.prompt_bottom, self.prompt_left, self.prompt_right]

    def prompt(self) -> torch.Tensor:
        """The full prompt image [1, C, S, S] (zero inside the frame)."""
        inner = self.spec.size - 2 * self.pad
        centre = self.prompt_top.new_zeros(1, self.spec.channels, inner, inner)
        middle = torch.cat([self.prompt_left, centre, self.prompt_right], dim=3)
        return torch.cat([self.prompt_top, middle, self.prompt_bottom], dim=2)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed(z + self.prompt())


def wrap_with_prompt(base: Model, pad: int) -> PromptedModel:
    """Wrap ``base`` (taken over, not copied) and record how to rebuild it from a checkpoint."""
    model = PromptedModel(base, pad)
    model.arch = "prompted"
    model.hparams = {"base_arch": base.arch, "base_hparams": base.hparams, "pad": pad}
    return model


@register_adapted_model("prompted")
def prompted(num_classes: int = 10, spec: InputSpec | None = None, base_arch: str = "mlp",
             base_hparams: dict | None = None, pad: int = 4) -> Model:
    """A backbone ``base_arch`` (built with ``base_hparams``) with a learned pad prompt of ``pad`` px."""
    base = MODEL_KINDS.create(base_arch, num_classes=num_classes, spec=spec, **(base_hparams or {}))
    return wrap_with_prompt(base, pad)


@dataclass(frozen=True)
class PromptConfig(HeadTrainConfig):
    epochs: float = field(default=10, metadata={"help": "passes over the task's training part (paper: 1000, CLIP)"})
    lr: float = field(default=1e-2, metadata={"help": "peak AdamW learning rate (paper: SGD at 40, see module docstring)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay (paper: 0)"})
    pad: int = field(default=4, metadata={"help": "prompt width in px at the model's input size (paper: 30 of 224 px)"})
    head: str = field(default="masked", metadata={"help": "head policy: masked (frozen, the paper's setting) | keep | "
                                                          "reinit | lp"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "pad", integer=True)


@register_method("prompt")
class VisualPrompt(Method):
    """Visual prompting: a learned pad prompt added to the input, backbone frozen (Bahng et al. 2022)."""

    name = "prompt"
    Config = PromptConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        cfg = self.config
        if not hasattr(pretrained, "arch"):
            raise ConfigError("methods.prompt", f"{type(pretrained).__name__} records no 'arch'; it cannot be rebuilt "
                              "after prompting")
        g = seed_everything(ctx.seed)
        base = self.fresh_copy(pretrained)
        head_trained = prepare_head(base, cfg.head, pretrained, task, ctx)
        try:
            model = wrap_with_prompt(base, cfg.pad)
        except ConfigError as e:
            raise ConfigError(f"methods.prompt.params.{e.field}", str(e).removeprefix(f"{e.field}: ")) from None
        model.to(next(pretrained.parameters()).device)
        params = model.prompt_parameters() + (list(model.head.parameters()) if head_trained else [])
        ctx.info["trainable_params"] = trainable_parameters(model, params)
        with class_mask(model, cfg.head, task), train_only(model, params):
            train_classifier(model, ctx.train, cfg, generator=g, params=params, progress=ctx.progress)
        return model
