"""Cell keys of the built-in presets are fixed: a refactor of the engine must not change them,
or every stored run would recompute from scratch (and old runs would no longer resume).

The golden file was written by ``write_golden()`` below from the code of the commit that
added it. A deliberate change of a key (a component's version bump, which must recompute
its cells) regenerates it with ``python tests/test_cell_keys_golden.py`` and says why in the
commit.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

from ribench.engine import parse_spec
from ribench.engine.plan import plan

GOLDEN = Path(__file__).parent / "data" / "cell_keys_golden.json"
SUITE_ID = {"name": "digits", "version": "2", "data_seed": 0}
TASKS = ["mnist-v2", "uci", "fonts"]


def _preset(name: str) -> dict:
    return tomllib.loads(resources.files("ribench.presets").joinpath(f"{name}.toml").read_text())


def specs() -> dict[str, dict]:
    """Every kind of cell: the quick preset, and the full preset (all methods, corruptions made
    by the engine, PGD with transfer) cut to one backbone, two tasks and two seeds."""
    full = {**_preset("full"), "backbones": ["cnn"], "seeds": [0, 1], "tasks": TASKS[1:]}
    return {"quick": {**_preset("quick"), "tasks": TASKS}, "full-cut": full}


def table() -> dict[str, list[str]]:
    out = {}
    for name, d in specs().items():
        cells = plan(parse_spec({**d, "device": "cpu"}), TASKS, SUITE_ID)
        out[name] = sorted(f"{c.kind} {json.dumps(c.labels, sort_keys=True)} {c.key}" for c in cells)
    return out


def write_golden() -> None:
    GOLDEN.write_text(json.dumps(table(), indent=0) + "\n")


def test_preset_cell_keys_are_unchanged():
    golden = json.loads(GOLDEN.read_text())
    now = table()
    for name in golden:
        lost = sorted(set(golden[name]) - set(now[name]))
        new = sorted(set(now[name]) - set(golden[name]))
        assert not lost and not new, (f"{name}: {len(lost)} cell keys changed, e.g. {lost[:2]} -> {new[:2]}; "
                                      "a deliberate change regenerates the golden file (module docstring)")


if __name__ == "__main__":
    write_golden()
