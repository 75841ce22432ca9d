"""A RobustBench-style leaderboard of a run: JSON for machines, a Markdown table for a README.

One entry per adapted (backbone, recipe, method); the pretrained models m0 are the
reference every Δ is taken against and are listed under ``"pretrained"``, not ranked.
Every field is a number (accuracies and changes in %, rounded to 2 decimals), except
the labels. Fields without data in the run (e.g. ``robust_acc`` without attacks) are
left out of the entry, never null.

The fields, their units and leaderboard.md's columns are those of ``catalogue.SUMMARY_METRICS``
with a ``board`` name; the numbers are ``aggregate.summarize_methods``'s, as in the reports.

Entries are sorted by ``SORT_KEY``: OOD robustness R (descending), then clean (ID)
accuracy (descending), then the model name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import aggregate as agg
from . import catalogue
from .catalogue import LOWER, MISSING, Metric
from .rundata import RunSource, as_run

SORT_KEY = ("ood_robustness desc", "clean_acc desc", "model asc")
COUNTS = (("n_tasks", "tasks"), ("n_seeds", "seeds"))


def board_metrics() -> list[Metric]:
    """The summary metrics on the leaderboard (those with a ``board`` name), in catalogue order."""
    return [m for m in catalogue.SUMMARY_METRICS if m.board]


def units() -> dict[str, str]:
    """field -> its unit, and "(lower is better)" where lower is better."""
    return {m.board: m.unit.name + (" (lower is better)" if m.direction == LOWER else "") for m in board_metrics()}


def _fields(stats: dict[str, agg.Stat], reference: bool = False) -> dict[str, float | int]:
    """The leaderboard fields of one summary (``reference``: those listed for m0, no spread)."""
    out: dict[str, float | int] = {}
    for m in board_metrics():
        s = stats.get(m.name)
        if s is None or s.n == 0 or not math.isfinite(s.mean) or (reference and not m.reference):
            continue
        out[m.board] = m.unit.rounded(s.mean)
        if m.board_std and not reference:
            out[f"{m.board}_std"] = m.unit.rounded(s.std)
    return out


def leaderboard_entries(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ranked entries of adapted models, reference entries of the pretrained models)."""
    entries, refs = [], []
    for s in agg.summarize_methods(rows):
        base = {"model": f"{s.backbone}/{s.recipe}/{s.method}", "backbone": s.backbone, "recipe": s.recipe,
                "method": s.method}
        if s.method == agg.PRETRAINED:
            refs.append({**base, **_fields(s.stats, reference=True)})
            continue
        entries.append({**base, **_fields(s.stats), "n_tasks": len(s.tasks), "n_seeds": len(s.seeds)})
    entries.sort(key=lambda e: (-e.get("ood_robustness", -math.inf), -e.get("clean_acc", -math.inf), e["model"]))
    return [{"rank": i, **e} for i, e in enumerate(entries, start=1)], refs


def leaderboard(source: RunSource) -> dict[str, Any]:
    """The leaderboard document of a run (``RunData`` or folder; what ``write_leaderboard`` saves)."""
    run = as_run(source)
    entries, refs = leaderboard_entries(run.rows)
    return {"benchmark": "ribench", "protocol": "robustness inheritance (ImageNet-RIB)", "run": run.name,
            "suite": run.spec.get("suite"), "sort_key": list(SORT_KEY), "units": units(),
            "entries": entries, "pretrained": refs}


def _cell(e: dict[str, Any], m: Metric) -> str:
    v = e.get(m.board)
    if v is None:
        return MISSING
    decimals = 0 if m.unit.grouped else m.unit.decimals + 1
    text = format(v, f"{'+' if m.unit.signed else ''}{',' if m.unit.grouped else ''}.{decimals}f")
    sd = e.get(f"{m.board}_std")
    return f"{text} ± {sd:.{decimals}f}" if sd else text


def leaderboard_markdown(doc: dict[str, Any]) -> str:
    """A Markdown table of the entries (columns without data left out) and a note on sorting."""
    entries = doc["entries"]
    fields = [m for m in board_metrics() if any(m.board in e for e in entries)]
    headers = ["rank", "model", *(m.board_column for m in fields), *(h for _, h in COUNTS)]
    lines = [f"Leaderboard of `{doc['run']}` (suite `{doc['suite']}`): sorted by OOD robustness R, then clean "
             "(ID) accuracy; mean ± std over tasks and seeds; ΔR and ΔP in points against the pretrained model.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join([str(e["rank"]), e["model"], *(_cell(e, m) for m in fields),
                                 *(str(e[k]) for k, _ in COUNTS)]) + " |" for e in entries]
    return "\n".join(lines) + "\n"


def write_leaderboard(source: RunSource, json_path: str | Path | None = None,
                      md_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/leaderboard.json`` and ``leaderboard.md`` (or the given paths)."""
    run = as_run(source)
    doc = leaderboard(run)
    jp = Path(json_path) if json_path is not None else run.out_dir / "leaderboard.json"
    mp = Path(md_path) if md_path is not None else run.out_dir / "leaderboard.md"
    jp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    mp.write_text(leaderboard_markdown(doc), encoding="utf-8")
    return jp, mp
