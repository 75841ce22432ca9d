"""Callables a `module:` source may name that are no model factories (tests/test_messages.py)."""

from __future__ import annotations

from os import system as os_system  # noqa: F401  (standard-library callables re-exported by a user module)
from shutil import rmtree  # noqa: F401

NOT_A_FACTORY = "a string"


class PlainClass:
    """A class that is not an nn.Module."""
