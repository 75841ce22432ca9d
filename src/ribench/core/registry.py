"""Name -> factory registries for models, methods, suites, corruptions, estimators.

``MODELS`` holds the backbones (what a spec's ``backbones`` may name, what ``ribench list
models`` shows); ``ADAPTED_MODELS`` the model kinds that methods make (wrappers such as
``prompted`` or ``dawin``), which are never backbones. ``MODEL_KINDS`` reads both, for
what rebuilds any model from its checkpoint.

A user adds a component with one decorated function or class::

    @register_model("mymodel")
    def mymodel(num_classes=10, **kw): ...

or, without touching the package, through an entry point in the group
``ribench.<kind>s`` (for example ``ribench.models``; ``ribench.adapted_models`` for the
kinds a plugin's methods make, ``@register_adapted_model``) whose value is the object to
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
    """``kind`` names the components in messages; ``group`` is the entry-point group
    (default ``ribench.<kind>s``)."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group or f"ribench.{kind}s"
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
        for ep in entry_points(group=self.group):
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


class RegistryUnion:
    """Several registries read as one, the first that holds a name winning (``MODEL_KINDS``);
    registering goes through the registries themselves."""

    def __init__(self, kind: str, *parts: Registry):
        self.kind = kind
        self.parts = parts

    def get(self, name: str) -> Any:
        for reg in self.parts:
            if name in reg:
                return reg.get(name)
        raise UnknownNameError(self.kind, name, self.names())

    def names(self, pattern: str = "*") -> list[str]:
        return sorted({n for reg in self.parts for n in reg.names(pattern)})

    def create(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def version(self, name: str) -> str:
        return str(getattr(self.get(name), "version", "1"))

    def __contains__(self, name: str) -> bool:
        return any(name in reg for reg in self.parts)


def load_plugins() -> None:
    """Import the modules named in ``RIBENCH_PLUGINS`` (once each)."""
    for name in filter(None, (m.strip() for m in os.environ.get("RIBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            from .errors import ConfigError

            raise ConfigError("RIBENCH_PLUGINS", f"cannot import plugin module {name!r}: {e}") from None


MODELS: Registry = Registry("model")  # backbones
ADAPTED_MODELS: Registry = Registry("adapted model", group="ribench.adapted_models")  # kinds methods make
MODEL_KINDS = RegistryUnion("model kind", MODELS, ADAPTED_MODELS)  # every kind a checkpoint may name
METHODS: Registry = Registry("method")
SUITES: Registry = Registry("suite")
CORRUPTIONS: Registry = Registry("corruption")
ESTIMATORS: Registry = Registry("estimator")

register_model = MODELS.register
register_adapted_model = ADAPTED_MODELS.register
register_method = METHODS.register
register_suite = SUITES.register
register_corruption = CORRUPTIONS.register
register_estimator = ESTIMATORS.register
