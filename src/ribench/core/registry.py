"""Name -> factory registries for models, methods, suites, corruptions, estimators.

A user adds a component with one decorated function or class::

    @register_model("mymodel")
    def mymodel(num_classes=10, **kw): ...

or, without touching the package, through an entry point in the group
``ribench.<kind>s`` (for example ``ribench.models``) whose value is the object to
register under the entry point's name, or by naming modules to import in the
environment variable ``RIBENCH_PLUGINS`` (comma-separated), which worker processes of
the pool and Ray runners inherit.

Every component has a code **version** (``register_estimator("gbc", version="2")``, or a
``version`` attribute of the registered object; default ``"1"``). It is part of the key of
every cell that uses the component, so bumping it when the component's numbers change
recomputes exactly the cells that depend on it.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str | None = None, *, version: str | int | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: its ``name`` attribute or
        ``__name__``); ``version`` (if given) is stored as ``obj.version``."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            if version is not None:
                obj.version = str(version)  # type: ignore[attr-defined]
            self._items[key] = obj
            return obj

        return deco

    def version(self, name: str) -> str:
        """The code version of ``name`` (its ``version`` attribute; ``"1"`` if it has none)."""
        return str(getattr(self.get(name), "version", "1"))

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        load_plugins()
        for ep in entry_points(group=f"ribench.{self.kind}s"):
            self._items.setdefault(ep.name, ep.load())

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self, pattern: str = "*") -> list[str]:
        self._load_entry_points()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def create(self, name: str, /, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(**kwargs)  # type: ignore[operator]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._items


def load_plugins() -> None:
    """Import the modules named in ``RIBENCH_PLUGINS`` (once each)."""
    for name in filter(None, (m.strip() for m in os.environ.get("RIBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            from .errors import ConfigError

            raise ConfigError("RIBENCH_PLUGINS", f"cannot import plugin module {name!r}: {e}") from None


MODELS: Registry = Registry("model")
METHODS: Registry = Registry("method")
SUITES: Registry = Registry("suite")
CORRUPTIONS: Registry = Registry("corruption")
ESTIMATORS: Registry = Registry("estimator")

register_model = MODELS.register
register_method = METHODS.register
register_suite = SUITES.register
register_corruption = CORRUPTIONS.register
register_estimator = ESTIMATORS.register
