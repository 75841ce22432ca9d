"""The suites: the built-in ``digits`` (offline data, ``digits/``), suites over real
datasets (``mnist-rib``, ``cifar10-rib``, ``imagenet-rib``), and user suites declared in
TOML. Importing this package registers the four named suites; nothing is read or built
until a suite is built. ``suite_data_state(name, root)`` says which of
a suite's datasets are present under the data root."""

from __future__ import annotations

import os

from . import cifar10_rib, digits, imagenet_rib, mnist_rib  # noqa: F401  (registration)
from .common import data_state, require
from .user import load_suite_table, user_suite

STATES = {"mnist-rib": mnist_rib.state, "cifar10-rib": cifar10_rib.state, "imagenet-rib": imagenet_rib.state}


def suite_data_state(name: str, root: str | os.PathLike | None = None) -> dict[str, str]:
    """``{dataset: "present" | "missing"}`` for a real-data suite; ``{"built-in": "present"}`` for others."""
    if name in STATES:
        return STATES[name](root)
    return {"built-in": "present"}


__all__ = ["data_state", "load_suite_table", "require", "suite_data_state", "user_suite"]
