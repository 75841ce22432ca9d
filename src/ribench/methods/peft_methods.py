"""Parameter-efficient fine-tuning through Hugging Face PEFT: [lora], [dora], [randlora],
[vera], [bone], [ln_tuning]. (BitFit and head-only, which train a subset of the model's own
parameters without PEFT, are in ``partial.py``.)

PEFT wraps ribench's own backbones: the adapted layers are picked per architecture
(``DEFAULT_TARGETS``, overridable with the ``target_modules`` hyperparameter, a tuple of
regular expressions matched against full module names), filtered to the layer types
the PEFT method supports (LoRA and DoRA: Linear and Conv2d; VeRA, RandLoRA and
MiSS/Bone: Linear only; LN tuning: GroupNorm and LayerNorm). The classifier head is
trained alongside the adapters (PEFT ``modules_to_save``) unless the head policy is
``masked``. After training the adapters are merged into the weights
(``merge_and_unload``), so the returned model is a plain ribench Model of the
pretrained model's own class, saved and loaded like any other.
``ctx.info["trainable_params"]`` is PEFT's own count (``get_nb_trainable_parameters``).

Papers (defaults of each Config come from them, see docs/methods.md):
- LoRA: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
- DoRA: Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024.
- RandLoRA: Albert et al., "RandLoRA: Full-rank parameter-efficient fine-tuning of
  large models", ICLR 2025.
- VeRA: Kopiczko et al., "VeRA: Vector-based Random Matrix Adaptation", ICLR 2024.
- Bone: Kang, "Bone: Block-Affine Adaptation of Large Language Models", 2024. PEFT 0.21
  no longer ships ``BoneConfig``; its successor MiSS (Kang & Yin, "MiSS: Balancing LoRA
  Performance and Efficiency with Simple Shard Sharing", 2025, same author) is used:
  ``MissConfig(init_weights="bat")`` is Bone's Bat variant, ``init_weights=True`` the
  default MiSS/Bone block-sharing update.
- LN tuning: Zhao et al., "Tuning LayerNorm in Attention: Towards Efficient
  Multi-Modal LLM Finetuning", ICLR 2024 (PEFT's ``LNTuningConfig``). On a backbone
  without normalisation layers it trains the head alone (``partial.HeadOnly``).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..core.errors import ConfigError
from ..core.registry import register_method
from ..core.runtime import seed_everything
from ..core.types import Domain
from ..models.base import Model
from ..models.training import train_classifier
from .base import AdaptContext, Method
from .heads import HeadTrainConfig, check_positive, class_mask, prepare_head
from .partial import HeadOnly, HeadOnlyConfig

# Regular expressions (full match on module names) of the layers adapted by default, per backbone.
DEFAULT_TARGETS: dict[str, str] = {
    "mlp": r"body\.\d+",  # every hidden Linear
    "cnn": r"body\.\d+",  # the 3x3 convolutions and the final Linear
    "resnet": r"stem|stages\.\d+\.(conv1|conv2|shortcut)",  # every convolution
    "vit": r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.[02])",  # attention and MLP projections (not the patch embedding)
}
NORM_TARGETS = r".*"  # LN tuning: every normalisation layer of the backbone
FALLBACK_TARGETS = r".*"  # other backbones: every supported layer outside the head

LINEAR = (nn.Linear,)
LINEAR_CONV = (nn.Linear, nn.Conv2d)
NORMS = (nn.LayerNorm, nn.GroupNorm)


def _check_targets(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (tuple, list)) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError("target_modules", f"must be a non-empty list of regular expressions, got {value!r}")
    for v in value:
        try:
            re.compile(v)
        except re.error as e:
            raise ConfigError("target_modules", f"{v!r} is not a regular expression: {e}") from None


def resolve_targets(model: Model, method: str, patterns: tuple[str, ...] | None, types: tuple[type, ...],
                    default: str | None = None) -> list[str]:
    """Full names of the modules of ``model`` to adapt: matching a pattern, of a supported type, not the head."""
    arch = getattr(model, "arch", "")
    pats = list(patterns) if patterns else [default or DEFAULT_TARGETS.get(arch, FALLBACK_TARGETS)]
    names = [n for n, m in model.named_modules()
             if n and not (n == "head" or n.startswith("head.")) and isinstance(m, types)
             and any(re.fullmatch(p, n) for p in pats)]
    if not names:
        kinds = ", ".join(t.__name__ for t in types)
        raise ConfigError(f"methods.{method}.params.target_modules",
                          f"no {kinds} layer of the {arch or type(model).__name__} backbone matches {pats}; "
                          f"{method} adapts {kinds} layers only")
    return names


@dataclass(frozen=True)
class PeftTrainConfig(HeadTrainConfig):
    target_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "regexes of module names to adapt (default: per-backbone table DEFAULT_TARGETS)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_targets(self.target_modules)


class PeftMethod(Method):
    """Shared adapt(): wrap with PEFT, train, merge, unload."""

    layer_types: ClassVar[tuple[type, ...]] = LINEAR_CONV
    default_pattern: ClassVar[str | None] = None

    def peft_config(self, targets: list[str], head_trained: bool, seed: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def check_targets(self, model: Model, targets: list[str]) -> None:
        """Raise ConfigError when a hyperparameter does not fit the chosen layers."""

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        from peft import get_peft_model  # lazy: PEFT imports transformers, slow to import

        cfg = self.config
        model = self.fresh_copy(pretrained)
        head_trained = prepare_head(model, cfg.head, pretrained, task, ctx)
        targets = resolve_targets(model, self.name, cfg.target_modules, self.layer_types, self.default_pattern)
        self.check_targets(model, targets)
        g = seed_everything(ctx.seed)
        with warnings.catch_warnings():
            # LN tuning on GroupNorm and LayerNorm: PEFT's tuner copies any module it is pointed
            # at and trains the copy, but warns for types it does not list (tests check counts, merges)
            warnings.filterwarnings("ignore", message=r"Unsupported layer type .*(GroupNorm|LayerNorm)",
                                    category=UserWarning)
            peft_model = get_peft_model(model, self.peft_config(targets, head_trained, ctx.seed))
        trainable, _ = peft_model.get_nb_trainable_parameters()
        ctx.info.update(trainable_params=int(trainable), target_modules=targets)
        with class_mask(model, cfg.head, task):
            train_classifier(peft_model, ctx.train, cfg, generator=g, progress=ctx.progress)
        merged = _unwrap_modules_to_save(peft_model.merge_and_unload())
        for p in merged.parameters():
            p.requires_grad_(True)
        return merged.eval()


def _unwrap_modules_to_save(model: nn.Module) -> nn.Module:
    """Replace PEFT's ``ModulesToSaveWrapper`` (the trained head copy) by the trained module itself.

    Most tuners do this in ``merge_and_unload``; LN tuning (PEFT 0.21) leaves the wrapper.
    """
    from peft.utils import ModulesToSaveWrapper

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper)]
    for name, wrapper in wrapped:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, wrapper.modules_to_save["default"])
    return model


# ----------------------------------------------------------------------------- LoRA, DoRA


@dataclass(frozen=True)
class LoraMethodConfig(PeftTrainConfig):
    lr: float = field(default=5e-4, metadata={"help": "peak AdamW learning rate (LoRA paper, RoBERTa-base GLUE: 4e-4..5e-4)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled weight decay (LoRA paper: 0.1 for GPT-2, 0.01 common)"})
    r: int = field(default=8, metadata={"help": "rank of the update B A (LoRA paper: 8)"})
    alpha: float = field(default=8, metadata={"help": "scaling numerator: update = alpha / r * B A (paper: alpha = first r tried)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "r", integer=True)
        check_positive(self, "alpha")
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout!r}")


@register_method("lora")
class LoRA(PeftMethod):
    """LoRA: low-rank updates W + alpha/r * B A of linear and conv layers, merged after training (Hu et al. 2022)."""

    name = "lora"
    Config = LoraMethodConfig
    use_dora: ClassVar[bool] = False

    def peft_config(self, targets, head_trained, seed):
        from peft import LoraConfig

        c = self.config
        return LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=targets,
                          use_dora=self.use_dora, modules_to_save=["head"] if head_trained else None)


@dataclass(frozen=True)
class DoraMethodConfig(LoraMethodConfig):
    lr: float = field(default=2e-4, metadata={"help": "peak AdamW learning rate (DoRA paper, LLaMA commonsense: 1e-4..2e-4)"})
    r: int = field(default=8, metadata={"help": "rank of the direction update (DoRA paper: half of LoRA's rank works; 8 here)"})
    alpha: float = field(default=16, metadata={"help": "LoRA scaling numerator (DoRA paper: alpha = 2 r)"})


@register_method("dora")
class DoRA(LoRA):
    """DoRA: weight decomposed into magnitude and direction; LoRA updates the direction (Liu et al. 2024)."""

    name = "dora"
    Config = DoraMethodConfig
    use_dora = True


# ----------------------------------------------------------------------------- RandLoRA


@dataclass(frozen=True)
class RandLoraMethodConfig(PeftTrainConfig):
    lr: float = field(default=1e-4, metadata={"help": "peak AdamW learning rate (RandLoRA paper, vision: 1e-4)"})
    r: int = field(default=32, metadata={"help": "rank of each random basis (RandLoRA paper / PEFT default: 32)"})
    alpha: float = field(default=640, metadata={"help": "scaling numerator (PEFT default 20 r, as the paper recommends)"})
    sparse: bool = field(default=False, metadata={"help": "sparse ternary random bases (paper's sparse variant)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "r", integer=True)
        check_positive(self, "alpha")


@register_method("randlora")
class RandLoRA(PeftMethod):
    """RandLoRA: full-rank update from a sum of frozen random low-rank bases with learned scalings (Albert et al. 2025)."""

    name = "randlora"
    Config = RandLoraMethodConfig
    layer_types = LINEAR

    def peft_config(self, targets, head_trained, seed):
        from peft import RandLoraConfig

        c = self.config
        return RandLoraConfig(r=c.r, randlora_alpha=c.alpha, sparse=c.sparse, target_modules=targets,
                              projection_prng_key=seed, save_projection=True,
                              modules_to_save=["head"] if head_trained else None)


# ----------------------------------------------------------------------------- VeRA


@dataclass(frozen=True)
class VeraMethodConfig(PeftTrainConfig):
    lr: float = field(default=4e-3, metadata={"help": "peak AdamW learning rate (VeRA paper, RoBERTa-base GLUE: 4e-3..1e-2)"})
    r: int = field(default=256, metadata={"help": "rank of the shared frozen random matrices (VeRA paper: 256 for base models)"})
    d_initial: float = field(default=0.1, metadata={"help": "initial value of the scaling vector d (VeRA paper: 0.1)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "r", integer=True)
        check_positive(self, "d_initial")


@register_method("vera")
class VeRA(PeftMethod):
    """VeRA: frozen random low-rank matrices shared by all layers, with learned scaling vectors (Kopiczko et al. 2024)."""

    name = "vera"
    Config = VeraMethodConfig
    layer_types = LINEAR

    def peft_config(self, targets, head_trained, seed):
        from peft import VeraConfig

        c = self.config
        return VeraConfig(r=c.r, d_initial=c.d_initial, target_modules=targets, projection_prng_key=seed,
                          save_projection=True, modules_to_save=["head"] if head_trained else None)


# ----------------------------------------------------------------------------- Bone (MiSS)


@dataclass(frozen=True)
class BoneMethodConfig(PeftTrainConfig):
    lr: float = field(default=2e-5, metadata={"help": "peak AdamW learning rate (Bone paper, LLaMA2-7B: 2e-5)"})
    r: int = field(default=64, metadata={"help": "block size along the input dimension (Bone paper: 64)"})
    variant: str = field(default="bone", metadata={"help": "bone (block-sharing update, MiSS default) or bat (Bone's Bat)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "r", integer=True)
        if self.variant not in ("bone", "bat"):
            raise ConfigError("variant", f"must be 'bone' or 'bat', got {self.variant!r}")


@register_method("bone")
class Bone(PeftMethod):
    """Bone: block-affine update shared across weight blocks (Kang 2024), through PEFT's MiSS, its successor."""

    name = "bone"
    Config = BoneMethodConfig
    layer_types = LINEAR

    def check_targets(self, model, targets):
        modules = dict(model.named_modules())
        narrow = min(targets, key=lambda n: modules[n].in_features)
        if modules[narrow].in_features < self.config.r:
            raise ConfigError("methods.bone.params.r", f"block size {self.config.r} exceeds the {modules[narrow].in_features} "
                              f"input features of layer {narrow!r}; choose r <= {modules[narrow].in_features}")

    def peft_config(self, targets, head_trained, seed):
        from peft import MissConfig

        c = self.config
        return MissConfig(r=c.r, init_weights=True if c.variant == "bone" else "bat", target_modules=targets,
                          modules_to_save=["head"] if head_trained else None)


# ----------------------------------------------------------------------------- LN tuning


@dataclass(frozen=True)
class LNTuningMethodConfig(PeftTrainConfig):
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})


@register_method("ln_tuning")
class LNTuning(PeftMethod):
    """LN tuning: only the affine parameters of the normalisation layers (GroupNorm, LayerNorm) are trained (Zhao et al. 2024)."""

    name = "ln_tuning"
    Config = LNTuningMethodConfig
    layer_types = NORMS
    default_pattern = NORM_TARGETS

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        has_norms = any(isinstance(m, NORMS) for n, m in pretrained.named_modules() if not n.startswith("head"))
        if has_norms or self.config.target_modules is not None:
            return super().adapt(pretrained, task, ctx)
        # The method's trainable set on a backbone without normalisation layers is the head alone.
        arch = getattr(pretrained, "arch", type(pretrained).__name__)
        if self.config.head == "masked":
            raise ConfigError("methods.ln_tuning.params.head", f"the {arch} backbone has no normalisation layer and "
                              "the masked head is frozen: nothing to train")
        ctx.info.setdefault("warnings", []).append(f"ln_tuning: the {arch} backbone has no normalisation layer; "
                                                   "only the head is trained")
        fields = {f.name for f in dataclasses.fields(HeadOnlyConfig)}
        return HeadOnly(**{k: v for k, v in self.params().items() if k in fields}).adapt(pretrained, task, ctx)

    def peft_config(self, targets, head_trained, seed):
        from peft import LNTuningConfig

        return LNTuningConfig(target_modules=targets, modules_to_save=["head"] if head_trained else None)
