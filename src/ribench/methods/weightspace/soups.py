"""``soup_uniform`` / ``soup_greedy`` (Wortsman et al., ICML 2022, "Model soups";
mlfoundations/model-soups ``main.py``): the average of models fine-tuned with different
seeds (and optionally hyperparameters, ``variants``).

The greedy soup adds ingredients in order of held-out accuracy (equal ones in reverse
ingredient order, as the reference's sort), each only if the held-out accuracy of the
soup strictly improves. Both combine seeds (``combines = "seeds"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core.registry import register_method
from ...core.types import Domain
from ...models.base import Model
from ..base import AdaptContext, Method
from .common import accuracy, average_states, ft_params, ingredient_models, model_with, state_of


@dataclass(frozen=True)
class SoupConfig:
    variants: tuple = field(default=(), metadata={
        "help": "extra ingredients: hyperparameter overrides of ft, e.g. [{lr = 1e-4}], each fine-tuned for every seed"})

    def __post_init__(self) -> None:
        vs = tuple(dict(v) for v in self.variants) if isinstance(self.variants, (list, tuple)) else None
        if vs is None or any(not v for v in vs):
            raise ValueError(f"variants must be a list of non-empty tables of ft hyperparameters, got {self.variants!r}")
        object.__setattr__(self, "variants", vs)


class _Soup(Method):
    requires = ("ft",)
    Config = SoupConfig

    @property
    def combines(self) -> str | None:
        return "seeds"

    def input_variants(self) -> list[dict[str, Any]]:
        return [{}, *self.config.variants]

    def _ingredients(self, task: Domain, ctx: AdaptContext) -> list[tuple[Any, Model]]:
        found = ingredient_models(ctx, task)
        ctx.info.update(ingredients=len(found), trainable_params=ft_params([m for _, m in found]))
        return found


@register_method("soup_uniform")
class UniformSoup(_Soup):
    """Uniform model soup: the plain average of every ingredient (module docstring)."""

    name = "soup_uniform"

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        models = [m for _, m in self._ingredients(task, ctx)]
        return model_with(pretrained, average_states([state_of(m) for m in models]))


@register_method("soup_greedy")
class GreedySoup(_Soup):
    """Greedy model soup: add ingredients by held-out accuracy while it strictly improves."""

    name = "soup_greedy"
    version = "2"  # 2: ingredients of equal held-out accuracy tried in reverse order, as the reference

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:
        found = self._ingredients(task, ctx)
        states = [state_of(m) for _, m in found]
        accs = [accuracy(pretrained, s, ctx.val) for s in states]
        # descending accuracy; equal accuracies in reverse ingredient order (the reference's
        # ascending stable sort, then reverse())
        order = sorted(range(len(states)), key=lambda i: accs[i])[::-1]
        chosen = [order[0]]
        best = accs[order[0]]
        for i in order[1:]:
            acc = accuracy(pretrained, average_states([states[j] for j in chosen + [i]]), ctx.val)
            if acc > best:
                chosen.append(i)
                best = acc
        ctx.info.update(selected=[list(found[i][0]) for i in chosen], val_acc=best)
        return model_with(pretrained, average_states([states[j] for j in chosen]))
