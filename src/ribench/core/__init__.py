"""Types, registries, errors, seeding and device choice shared by every layer."""

from .errors import CheckpointError, ConfigError, DataError, RibenchError, TrainingError, UnknownNameError
from .registry import (
    ADAPTED_MODELS,
    CORRUPTIONS,
    ESTIMATORS,
    METHODS,
    MODEL_KINDS,
    MODELS,
    SUITES,
    Registry,
    register_adapted_model,
    register_corruption,
    register_estimator,
    register_method,
    register_model,
    register_suite,
)
from .runtime import derive_seed, resolve_device, seed_everything
from .types import Domain, InputSpec, Split, Suite

__all__ = [
    "ADAPTED_MODELS", "CORRUPTIONS", "ESTIMATORS", "METHODS", "MODEL_KINDS", "MODELS", "SUITES", "CheckpointError",
    "ConfigError", "DataError", "Domain", "InputSpec", "Registry", "RibenchError", "Split", "Suite", "TrainingError",
    "UnknownNameError", "derive_seed", "register_adapted_model", "register_corruption", "register_estimator",
    "register_method", "register_model", "register_suite", "resolve_device", "seed_everything",
]
