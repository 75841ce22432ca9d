"""``wise_ft`` (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models";
mlfoundations/wise-ft ``src/wise_ft.py``): theta(alpha) = theta_0 + alpha (theta_ft - theta_0).

alpha is selected on the task's validation part over a grid (the first best on ties), or
fixed; the evaluate cell also evaluates the whole curve, one ``curve(alpha)`` row per
alpha of the grid (``Method.extra_models``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ...core import rows
from ...core.registry import register_method
from ...core.types import Domain
from ...models.base import Model
from ..base import AdaptContext, Method
from ..task_vectors import task_vector
from .common import accuracy, apply_delta, check_grid, ft_params, model_with, select_best, state_of, steps


@dataclass(frozen=True)
class WiSEFTConfig:
    alphas: tuple = field(default=steps(0.0, 1.0, 0.1),
                          metadata={"help": "mixing coefficients (weight of the fine-tuned model) of the grid and curve"})
    alpha: float | None = field(default=None, metadata={"help": "fixed alpha; None selects it on the validation part"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", check_grid(self.alphas, "alphas", 0.0, 1.0))
        if self.alpha is not None and not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def interpolate(pretrained: Model, finetuned: Model, alpha: float) -> Model:
    """theta_0 + alpha (theta_ft - theta_0), a new model."""
    return model_with(pretrained, apply_delta(state_of(pretrained), task_vector(pretrained, finetuned), alpha))


@register_method("wise_ft")
class WiSEFT(Method):
    """WiSE-FT: interpolate m0 and the fine-tuned model in weight space (module docstring)."""

    name = "wise_ft"
    requires = ("ft",)
    Config = WiSEFTConfig

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        ft = ctx.inputs["ft"]
        base, tv = state_of(pretrained), task_vector(pretrained, ft)
        alpha = self.config.alpha
        if alpha is None:
            alpha, scores = select_best(list(self.config.alphas),
                                        lambda a: accuracy(pretrained, apply_delta(base, tv, a), ctx.val))
            ctx.info["val_acc_by_alpha"] = scores
        ctx.info.update(alpha=float(alpha), trainable_params=ft_params([ft]))
        return model_with(pretrained, apply_delta(base, tv, alpha))

    def extra_models(self, pretrained: Model, adapted: Model, inputs: Mapping[str, Model]) -> dict[str, Model]:
        """The whole curve: the row ``rows.curve(a)`` for every alpha of the grid."""
        return {rows.curve(a): interpolate(pretrained, inputs["ft"], a) for a in self.config.alphas}
