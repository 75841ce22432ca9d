"""Everything a report reads from a run's folder, loaded once: the one reader of the store.

``load_run(out_dir)`` opens ``<out_dir>/results.sqlite`` and returns a ``RunData``: the
flat metric rows (``ResultsStore.metric_rows``), the spec and environment of the last
`ribench run`, the suite layout (pretraining domain, tasks, eval sets, corruptions) and
the cells with their status, all read in one transaction (``ResultsStore.snapshot``), the
recorded configs of the adapt cells (a method's hyperparameters, for the leaderboard), and
the suite's identity as the cells recorded it (``suite_id``: its own name, which for a user
suite is the ``name`` of its ``[suite]`` table, not the spec's ``suite`` field).
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
from typing import Any, NamedTuple, Union

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
    suite_id: dict[str, Any] = field(default_factory=dict)  # the suite as the cells name it: name, version, data_seed
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
    def suite(self) -> SuiteHeader:
        """What the reports' headers say of the suite (``suite_header``)."""
        return suite_header(self.spec, self.suite_id)

    @property
    def recipes(self) -> list[str]:
        """The recipes that apply to the run's backbones (``applied_recipes``)."""
        return applied_recipes(self.spec)

    @property
    def fingerprint(self) -> str:
        return rows_fingerprint(self.all_rows)


RunSource = Union[RunData, str, Path]  # what every report function accepts
GIVEN_RECIPE = "given"  # the recipe label of an outside backbone (its weights come as given)


class SuiteHeader(NamedTuple):
    """``kind``: "Suite" or "User suite"; ``name``: the suite's own name; ``file``: the TOML
    file that declares a user suite (the spec itself, for an inline ``[suite]`` table), else None."""

    kind: str
    name: str
    file: str | None


def suite_header(spec: dict[str, Any], suite_id: dict[str, Any] | None = None) -> SuiteHeader:
    """How a run's suite is named: a registered suite by the spec's ``suite``; a user suite
    (``suite_file``) by its own name as its cells recorded it (``suite_id["name"]``; the file's
    stem when no cell recorded one), with its file."""
    file = spec.get("suite_file")
    if not file:
        return SuiteHeader("Suite", str(spec.get("suite", "?")), None)
    name = (suite_id or {}).get("name") or Path(str(file)).stem
    return SuiteHeader("User suite", str(name), str(file))


def applied_recipes(spec: dict[str, Any]) -> list[str]:
    """The pretraining recipes of the run's models: the spec's ``recipes`` when some backbone is
    a registered one (pretrained by ribench), and ``given`` when some is an outside backbone
    (a table: its weights are used as given, whatever ``recipes`` says)."""
    backbones = spec.get("backbones") or []
    out = [str(r) for r in spec.get("recipes") or []] if any(not isinstance(b, dict) for b in backbones) else []
    if any(isinstance(b, dict) for b in backbones) and GIVEN_RECIPE not in out:
        out.append(GIVEN_RECIPE)
    return out


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
        suite_ids = [c["config"].get("suite") for c in store.cell_configs("eval_pretrained").values()]
    finally:
        store.close()
    run = snap["run"] or {}
    env = dict(run.get("env", {}))
    layout = env.pop("suite", None) or {}
    suite_id = next((dict(i) for i in suite_ids if isinstance(i, dict)), {})
    return RunData(Path(out_dir), snap["rows"], run.get("spec", {}), env, layout, snap["cells"], run.get("started"),
                   adapt_configs, suite_id)


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
