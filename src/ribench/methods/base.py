"""The Method interface: ``adapt(pretrained, task, ctx) -> Model``.

A method is a class registered with ``@register_method("name")``. Its
hyperparameters live in a frozen dataclass ``Config`` whose fields carry
``metadata={"help": ...}`` and documented defaults. ``Method(**params)`` checks every
value against its field's annotation (``check_value``: numbers finite, integers
integral, strings, Literal choices, lists of those, Optional) before the dataclass is
built, so a spec's ``lr = "fast"`` fails naming ``methods.<name>.params.lr``; ranges
are the Config's own ``__post_init__`` checks. ``requires`` names the methods
whose adapted models it consumes (LP-FT needs LP); the engine runs those first, on the
same task and seed, and hands their models over in ``ctx.inputs``.

A method that combines several adapted models says so with ``combines`` (derived from
its config): ``"seeds"`` (model soups: the required methods' models of the same task
over every seed of the run, and over ``input_variants()`` of their hyperparameters) or
``"tasks"`` (merging: their models of every task of the run, same seed). The engine
then runs it once per task (``"seeds"``) or once per seed (``"tasks"``, task label
``core.rows.MERGED``) and keys ``ctx.inputs`` by ``Ingredient(method, task, seed, variant)``;
``ctx.task_splits`` holds every task's (train, val) splits. ``ctx.ingredients(name)``
lists them either way (a plain ``ctx.inputs[name]`` counts as one ingredient).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, ClassVar, Literal, Mapping, NamedTuple, Union

import torch

from ..core.errors import ConfigError
from ..core.runtime import autocast, current_compute
from ..core.types import Domain, Split
from ..models.base import Model
from ..models.training import Progress, no_progress

FeatureFn = Callable[[Model, str, Split], torch.Tensor]


def compute_features(model: Model, name: str, split: Split, batch_size: int = 512) -> torch.Tensor:
    """Uncached features [N, D] of ``split`` under ``model`` (float32, on the model's device), under
    the precision of the enclosing compute options (core.runtime: autocast for bf16/fp16)."""
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode(), autocast(current_compute().precision, device):
        out = [model.features(x.to(device)).float() for x, _ in split.batches(batch_size)]
    return torch.cat(out).clone()


class Ingredient(NamedTuple):
    """Which adapted model a combining method got: required method, task, seed, and the
    index of its hyperparameter variant (0: the spec's own parameters)."""

    method: str
    task: str
    seed: int
    variant: int = 0


@dataclass
class AdaptContext:
    """What a method may use besides the pretrained model and the task.

    ``train``/``val``: the task's training split, divided by the engine into a
    training part and a held-out validation part (stratified, seeded).
    ``pretrain_sample``: a sample of the pretraining data (for EWC, LwF...).
    ``features(model, name, split)``: frozen-backbone features [N, D], cached by the
    engine under the pretrained model's key and ``name`` when ``model`` is the
    pretrained model.
    """

    train: Split
    val: Split
    pretrain_sample: Split
    seed: int
    device: torch.device
    num_classes: int
    inputs: Mapping[Any, Model] = field(default_factory=dict)  # by method name, or by Ingredient
    progress: Progress = no_progress
    features: FeatureFn = compute_features
    info: dict[str, Any] = field(default_factory=dict)  # the method records extra facts here
    task_splits: Mapping[str, tuple[Split, Split]] = field(default_factory=dict)  # every task's (train, val)

    def ingredients(self, method: str, task: str = "", seed: int = 0) -> list[tuple[Ingredient, Model]]:
        """The models of ``method`` handed over, as (Ingredient, model) in a fixed order.

        Keys ``Ingredient`` (a combining method run by the engine) come sorted; a plain
        ``inputs[method]`` is one ingredient labelled (method, ``task``, ``seed``)."""
        found = sorted(((k, m) for k, m in self.inputs.items() if isinstance(k, Ingredient) and k.method == method),
                       key=lambda km: (km[0].task, km[0].seed, km[0].variant))
        if not found and method in self.inputs:
            found = [(Ingredient(method, task, seed), self.inputs[method])]
        return found

    def splits(self, task: str) -> dict[str, tuple[Split, Split]]:
        """``task_splits``, or {task: (train, val)} when the engine gave none."""
        return dict(self.task_splits) if self.task_splits else {task: (self.train, self.val)}


class Method:
    """Base class. Subclasses set ``Config``, may set ``requires`` and ``version``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    requires: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = object

    @property
    def combines(self) -> str | None:
        """None (one model per task and seed), ``"seeds"`` or ``"tasks"`` (module docstring)."""
        return None

    def input_variants(self) -> list[dict[str, Any]]:
        """Hyperparameter overrides of the required methods, one ingredient set each
        (``"seeds"`` combiners only); ``[{}]``: the spec's own parameters."""
        return [{}]

    def extra_models(self, pretrained: Model, adapted: Model, inputs: Mapping[str, Model]
                     ) -> dict[str, Model]:
        """More models the evaluate cell evaluates on every eval set, by eval-set prefix
        (WiSE-FT's curve, ``{rows.curve(0.5): model}``, names from ``core.rows``);
        ``inputs``: the required methods' models by name. Methods that override it get
        those inputs."""
        return {}

    def __init__(self, **params: Any):
        fields = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ConfigError(
                f"methods.{self.name}.params.{unknown[0]}",
                f"unknown hyperparameter; valid: {', '.join(sorted(fields))}",
            )
        hints = config_annotations(self.Config)
        for key, value in params.items():
            if key in hints:
                check_value(value, hints[key], f"methods.{self.name}.params.{key}")
        try:
            self.config = self.Config(**params)
        except ConfigError as e:  # raised by a Config's __post_init__ with the bare field name
            raise ConfigError(f"methods.{self.name}.params.{e.field}", str(e).removeprefix(f"{e.field}: ")) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"methods.{self.name}.params", str(e)) from None

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def adapt(self, pretrained: Model, task: Domain, ctx: AdaptContext) -> Model:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def fresh_copy(model: Model) -> Model:
        """A deep copy to adapt, so the pretrained model is never modified."""
        return copy.deepcopy(model)


@lru_cache(maxsize=None)
def config_annotations(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a Config dataclass ({} when they cannot be resolved)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation naming something its module does not define: leave checks to the Config
        return {}
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name in hints}


def _describe(annotation: Any) -> str:
    """What a value of ``annotation`` is, in the words of a spec file."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if annotation is type(None):
        return "none"
    simple = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if annotation in simple:
        return simple[annotation]
    if annotation in (tuple, list) or origin in (tuple, list):
        return "a list"
    if annotation is dict or origin in (dict, Mapping):
        return "a table"
    return getattr(annotation, "__name__", str(annotation))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(value: Any, annotation: Any, where: str) -> None:
    """Raise ConfigError at ``where`` unless ``value`` fits ``annotation``.

    Understood: bool, int, float (finite; ints accepted), str, Literal, None, unions
    (Optional), tuple[X, ...], tuple[X, Y], list[X], bare tuple/list, dict/Mapping.
    Other annotations are left to the Config's own checks. Elements are named
    ``where[i]``.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return
    if origin in (Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if value is None and len(others) < len(args):
            return
        if len(others) == 1:  # Optional[X]: the error of X, with its element path
            check_value(value, others[0], where)
            return
        for a in others:
            try:
                check_value(value, a, where)
                return
            except ConfigError:
                continue
        raise ConfigError(where, f"expected {_describe(annotation)}, got {_shown(value)}")
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise ConfigError(where, f"expected {_describe(annotation)}, got {_shown(value)}")
        return
    if annotation is type(None):
        ok = value is None
    elif annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok and isinstance(value, str) and _parses_as_float(value):
            raise ConfigError(where, f"expected {_describe(float)}, got the string {value!r} (write it without "
                                     "quotes; in YAML, 1e-3 needs a dot: 1.0e-3)")
    elif annotation is str:
        ok = isinstance(value, str)
    elif annotation in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected {_describe(annotation)}, got {_shown(value)}")
        _check_elements(value, args, where)
        return
    elif annotation is dict or origin in (dict, Mapping):
        ok = isinstance(value, Mapping)
    else:
        return
    if not ok:
        raise ConfigError(where, f"expected {_describe(annotation)}, got {_shown(value)}")


def _check_elements(value: list | tuple, args: tuple, where: str) -> None:
    if not args:
        return
    if len(args) == 2 and args[1] is Ellipsis:
        kinds = [args[0]] * len(value)
    elif len(args) == 1:  # list[X]
        kinds = [args[0]] * len(value)
    else:  # tuple[X, Y, ...] of a fixed length
        if len(value) != len(args):
            raise ConfigError(where, f"expected a list of {len(args)} values, got {len(value)}: {_shown(value)}")
        kinds = list(args)
    for i, (item, kind) in enumerate(zip(value, kinds)):
        check_value(item, kind, f"{where}[{i}]")


def _parses_as_float(text: str) -> bool:
    """Whether ``text`` spells a finite number (YAML 1.1 reads ``1e-3`` as a string)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def trainable_parameters(model: Model, params=None) -> int:
    ps = params if params is not None else model.parameters()
    return int(sum(p.numel() for p in ps if p.requires_grad))


def describe_config(cls: type) -> list[dict[str, Any]]:
    """Rows (name, default, help) of a Config dataclass, for `ribench list methods`."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        rows.append({"name": f.name, "default": default, "help": f.metadata.get("help", "")})
    return rows
