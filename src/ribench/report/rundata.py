"""Everything a report reads from a run's folder, loaded once: the one reader of the store.

``load_run(out_dir)`` opens ``<out_dir>/results.sqlite`` and returns a ``RunData``: the
flat metric rows (``ResultsStore.metric_rows``), the spec and environment of the last
`ribench run`, the suite layout (pretraining domain, tasks, eval sets, corruptions) and
the cells with their status, all read in one transaction (``ResultsStore.snapshot``), and the
recorded configs of the adapt cells (a method's hyperparameters, for the leaderboard).
Every report function takes a ``RunData`` or a folder (``as_run``), so a caller that writes
several reports of one run (``pipeline.write_reports``) loads the store once and hands the
same ``RunData`` to each. ``fingerprint`` is a hash of every stored number, used to tell
whether figures on disk were made from the numbers now in the store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..core.errors import DataError
from ..engine.store import ResultsStore

FIGURES_DIR = "figures"
FIGURE_INDEX = "index.json"
STORE_FILE = "results.sqlite"


@dataclass
class RunData:
    """``all_rows``: every stored row; ``rows``: those with a value (SQLite stores NaN as
    NULL, read back as None), which is what tables and figures average."""

    out_dir: Path
    all_rows: list[dict[str, Any]]
    spec: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    layout: dict[str, Any] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    started: float | None = None
    adapt_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> kind, labels, config
    _rows: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = [r for r in self.all_rows if r["value"] is not None]
        return self._rows

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.out_dir.name)

    @property
    def fingerprint(self) -> str:
        return rows_fingerprint(self.all_rows)


RunSource = Union[RunData, str, Path]  # what every report function accepts


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """SHA-256 (hex, 16 chars) of every (labels, eval_set, metric, value) row, order-independent."""
    keys = ("backbone", "recipe", "method", "task", "seed", "eval_set", "metric", "value")
    blob = json.dumps(sorted(json.dumps([r.get(k) for k in keys], default=str) for r in rows))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def open_store(out_dir: str | Path) -> ResultsStore:
    """The results store of the run in ``out_dir``; DataError when the folder has none."""
    path = Path(out_dir) / STORE_FILE
    if not path.is_file():
        raise DataError(f"{out_dir} holds no results (no {path.name}); run `ribench run --out {out_dir}` first")
    return ResultsStore(path)


def load_run(out_dir: str | Path) -> RunData:
    """Load a run's numbers, spec, environment and cells. Raises DataError if none."""
    store = open_store(out_dir)
    try:
        snap = store.snapshot()
        adapt_configs = store.cell_configs("adapt")
    finally:
        store.close()
    run = snap["run"] or {}
    env = dict(run.get("env", {}))
    layout = env.pop("suite", None) or {}
    return RunData(Path(out_dir), snap["rows"], run.get("spec", {}), env, layout, snap["cells"], run.get("started"),
                   adapt_configs)


def as_run(source: RunSource) -> RunData:
    """``source`` itself when it is a ``RunData``, else the run loaded from that folder."""
    return source if isinstance(source, RunData) else load_run(source)


def read_figure_index(out_dir: str | Path, check: bool = True, fingerprint: str | None = None) -> dict[str, Any]:
    """``<out_dir>/figures/index.json`` ({} if none). With ``check``, {} unless it was made
    from the numbers now stored (``fingerprint``, computed from the store if not given)."""
    path = Path(out_dir) / FIGURES_DIR / FIGURE_INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if check and index.get("fingerprint") != (fingerprint or load_run(out_dir).fingerprint):
        return {}
    return index
