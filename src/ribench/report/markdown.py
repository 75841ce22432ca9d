"""The Markdown report and the console table of a finished (or partial) run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from ..core.errors import DataError
from ..engine.store import ResultsStore
from .aggregate import SCOPES
from .prediction import PREDICTION_GUIDE, prediction_notes, prediction_tables, ranking_tables
from .tables import (
    INTERVAL_NOTE,
    Table,
    backbone_names,
    diagnostics_table,
    failures_table,
    inheritance_tables,
    merged_table,
    summary_table,
)

GUIDE = """\
How to read this: *ID acc* is accuracy on the task the model was adapted to; *R* is the
mean accuracy on the other tasks of the suite and *ΔR* its change from the pretrained
model m0 (negative: robustness lost); *P acc* and *ΔP* are accuracy on the pretraining
task and its change (negative: forgetting); *corr acc* is mean accuracy over the
corrupted pretraining sets and *mCE* the mean corruption error relative to the
reference model (m0 here: 1.000 means as robust as m0, lower is better). ECE and NLL
are measured on the ID task. In the inheritance tables, `*` marks the fine-tuning task
and brackets give the change from m0 in points.
"""


INSIDE_GUIDE = """\
Each adapted model against m0: *CKA* is the linear CKA of their penultimate features on
the task's (or pretraining) test images (1 = the same representation up to rotation and
scale); *mkNN* the share of shared nearest neighbours; *‖τ‖/‖θ0‖* how far the weights
moved; *barrier* the loss bump (nats) on the straight line from m0 to the adapted
weights (0 = one basin); *filter KL* the shift of the 3x3 filters' distribution. Per
layer numbers: `ribench results DIR`, eval sets `diag/*`; docs/analysis.md defines each."""

MERGED_GUIDE = """\
A merged model (task arithmetic, TIES, Fisher merging, aTLAS) is one model for every task
of the run. Each task's column is its accuracy there divided by the accuracy of the model
fine-tuned on that task alone (same seed): 100 means merging lost nothing on that task."""


def _md(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(r) + " |" for r in t.rows]
    return "\n".join(lines) + "\n"


def prediction_markdown(rows: list) -> list[str]:
    """The "Did the prediction hold?" section (the tables the HTML report shows too), or []
    when the run has no analysis rows."""
    across = [prediction_tables(rows, scope) for scope in SCOPES]
    if across[0] is None:
        return []
    parts = ["## Did the prediction hold?", "", PREDICTION_GUIDE, ""]
    for tables in across:
        if tables is not None:
            parts += [_md(t) for t in tables]
    for note in prediction_notes(rows):
        parts += [note, ""]
    parts += [_md(t) for t in ranking_tables(rows)]
    return parts


def open_store(out_dir: str | Path) -> ResultsStore:
    path = Path(out_dir) / "results.sqlite"
    if not path.is_file():
        raise DataError(f"{out_dir} holds no results (no {path.name}); run `ribench run --out {out_dir}` first")
    return ResultsStore(path)


def figures_markdown(out_dir: str | Path, rows: list) -> list[str]:
    """Links to ``figures/*.png`` listed in ``figures/index.json``, when that index was made
    from the numbers now stored (stale figures are not linked); [] otherwise."""
    from .rundata import FIGURES_DIR, read_figure_index, rows_fingerprint

    index = read_figure_index(out_dir, fingerprint=rows_fingerprint(rows))
    entries = [e for e in index.get("figures", []) if (Path(out_dir) / FIGURES_DIR / e["file"]).is_file()]
    if not entries:
        return []
    parts = ["## Figures", "", "Also in `report.html`, with sortable tables and vector plots.", ""]
    for e in entries:
        parts += [f"### {e['title']}", "", f"![{e['title']}]({FIGURES_DIR}/{e['file']})", "", e["caption"], ""]
    return parts


def write_report(out_dir: str | Path, figures: bool = False) -> Path:
    """Write ``<out_dir>/report.md`` and return its path.

    Figures under ``<out_dir>/figures/`` made from the stored numbers are linked; with
    ``figures`` they are (re)drawn first (``plots.write_figures``, a few seconds).
    """
    if figures:
        from .plots import write_figures

        write_figures(out_dir)
    store = open_store(out_dir)
    try:
        rows, run, cells = store.metric_rows(), store.last_run(), store.cells()
    finally:
        store.close()
    spec, env = (run or {}).get("spec", {}), (run or {}).get("env", {})
    parts = [f"# ribench report: {spec.get('name', 'run')}", "",
             f"Suite `{spec.get('suite')}`, backbones {', '.join(backbone_names(spec))}, recipes {spec.get('recipes')}, "
             f"seeds {spec.get('seeds')}. {sum(c['status'] == 'done' for c in cells)} cells done, "
             f"{sum(c['status'] == 'failed' for c in cells)} failed.", "", GUIDE, "## Summary per method", "",
             INTERVAL_NOTE, "", _md(summary_table(rows))]
    if env.get("suite"):
        parts += ["## Inheritance tables (accuracy %, change from m0 in brackets)", ""]
        parts += [_md(t) for t in inheritance_tables(rows, env["suite"])]
    merged = merged_table(rows)
    if merged is not None:
        parts += ["## Merged models", "", MERGED_GUIDE, "", _md(merged)]
    parts += prediction_markdown(rows)
    inside = diagnostics_table(rows)
    if inside is not None:
        parts += ["## What changed inside the models", "", INSIDE_GUIDE, "", _md(inside)]
    parts += figures_markdown(out_dir, rows)
    fails = failures_table(cells)
    if fails:
        parts += ["## Failures", "", _md(fails)]
    parts += ["## Environment", "", *(f"- {k}: {v}" for k, v in env.items() if k != "suite"), ""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(parts))
    return path


def print_summary(out_dir: str | Path, console: Console | None = None) -> None:
    store = open_store(out_dir)
    try:
        t = summary_table(store.metric_rows(), compact=True)
    finally:
        store.close()
    rt = RichTable(title=t.title)
    for h in t.headers:
        rt.add_column(h, justify="left" if h in ("backbone", "recipe", "method") else "right", no_wrap=True)
    for r in t.rows:
        rt.add_row(*r)
    if console is None:
        console = Console()
        if console.width < 110:  # pipes and CI logs default to 80 columns: too narrow for the table
            console = Console(width=110)
    console.print(rt)
