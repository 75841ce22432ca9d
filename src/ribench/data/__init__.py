"""Domains and suites: the built-in suites (``suites/``: ``digits``, the real-data suites,
user suites), corruptions, the data cache.

Importing this package registers the built-in suites and corruptions.
``build_suite(name, seed, cache_dir)`` returns a ``Suite`` whose images are uint8
``[N, C, H, W]`` and labels int64 ``[N]``.
"""

from __future__ import annotations

from ..core.registry import SUITES
from ..core.types import Suite
from . import corruptions, suites  # noqa: F401  (registers the suites and the corruptions)
from .corruptions import corrupt
from .show import save_domain_grid


def build_suite(name: str, seed: int = 0, cache_dir: str | None = None, data_root: str | None = None,
                suite_file: str | None = None, options: dict | None = None) -> Suite:
    """Build (or load from the cache) the registered suite ``name`` for ``seed``.

    ``data_root``: where real datasets live (default ``$RIBENCH_DATA``, else
    ``~/.cache/ribench/data``), passed to suites that read files. ``suite_file``: a
    TOML file whose ``[suite]`` table declares a user suite (``name`` is then ignored).
    ``options``: extra keyword arguments of the suite's factory (e.g. ``image_size``).
    """
    if suite_file is not None:
        from pathlib import Path

        from .suites import load_suite_table, user_suite

        table = {**load_suite_table(suite_file), **(options or {})}
        return user_suite(table, Path(suite_file).expanduser().resolve().parent, seed=seed, data_root=data_root)
    kwargs = dict(options or {})
    if data_root is not None:
        kwargs["data_root"] = data_root
    return SUITES.get(name)(seed=seed, cache_dir=cache_dir, **kwargs)


__all__ = ["build_suite", "corrupt", "save_domain_grid"]
