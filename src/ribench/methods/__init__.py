"""Adaptation methods, one module per family, each registered by name."""

from . import finetune, heads, linear_probe, partial, peft_methods, prompt, regularised, training_free  # noqa: F401  (registration)
from . import weightspace  # noqa: F401  (registration)
from .base import AdaptContext, Method, describe_config, trainable_parameters

__all__ = ["AdaptContext", "Method", "describe_config", "trainable_parameters"]
