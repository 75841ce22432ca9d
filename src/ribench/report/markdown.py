"""The Markdown report and the console table of a finished (or partial) run.

Both format the tables of ``tables`` and ``prediction`` (the numbers of ``aggregate``)
and the texts of ``guide``, the very ones report.html shows. Every function takes a
``RunData`` or a run's folder (``rundata.as_run``).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from .guide import GUIDE, PREDICTION_GUIDE, WILSON_NOTE
from .prediction import prediction_section
from .rundata import FIGURES_DIR, RunData, RunSource, as_run, read_figure_index
from .rundata import open_store  # noqa: F401  (`ribench status` opens the store through here)
from .tables import (
    Table,
    backbone_names,
    cost_table,
    diagnostics_table,
    failures_table,
    has_wilson,
    inheritance_tables,
    label_space_line,
    merged_table,
    summary_table,
)

REPORT_FILE = "report.md"


def _md(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(r) + " |" for r in t.rows]
    if t.notes:
        lines += ["", *(f"{n}  " for n in t.notes)]
    return "\n".join(lines) + "\n"


def prediction_markdown(rows: list) -> list[str]:
    """The "Did the prediction hold?" section (``prediction.prediction_section``, as the HTML
    report shows it), or [] when the run has no analysis rows."""
    section = prediction_section(rows)
    if section is None:
        return []
    parts = ["## Did the prediction hold?", "", PREDICTION_GUIDE, "", *(_md(t) for t in section.tables)]
    for note in section.notes:
        parts += [note, ""]
    return parts + [_md(t) for t in section.rankings]


def figures_markdown(run: RunData) -> list[str]:
    """Links to ``figures/*.png`` listed in ``figures/index.json``, when that index was made
    from the numbers now stored (stale figures are not linked); [] otherwise."""
    index = read_figure_index(run.out_dir, fingerprint=run.fingerprint)
    entries = [e for e in index.get("figures", []) if (run.out_dir / FIGURES_DIR / e["file"]).is_file()]
    if not entries:
        return []
    parts = ["## Figures", "", "Also in `report.html`, with sortable tables and vector plots.", ""]
    for e in entries:
        parts += [f"### {e['title']}", "", f"![{e['title']}]({FIGURES_DIR}/{e['file']})", "", e["caption"], ""]
    return parts


def suite_markdown(run: RunData) -> str:
    """``Suite `digits` `` or ``User suite `pets` (from `pets.toml`)`` (``rundata.suite_header``)."""
    kind, name, file = run.suite
    return f"{kind} `{name}`" + (f" (from `{file}`)" if file else "")


def render_markdown(run: RunData) -> str:
    """The text of report.md."""
    spec, rows, cells = run.spec, run.rows, run.cells
    summary = summary_table(rows)
    parts = [f"# ribench report: {spec.get('name', 'run')}", "",
             f"{suite_markdown(run)}, backbones {', '.join(backbone_names(spec))}, recipes {', '.join(run.recipes)}, "
             f"seeds {spec.get('seeds')}. {sum(c['status'] == 'done' for c in cells)} cells done, "
             f"{sum(c['status'] == 'failed' for c in cells)} failed.", "",
             *([label_space_line(run.layout, "`"), ""] if label_space_line(run.layout) else []),
             "## Summary per method", "", GUIDE["summary"], "", "How to read the columns:", "",
             *(f"- *{h}*: {text}" for h, text in summary.column_notes()), "", _md(summary)]
    if run.layout:
        parts += ["## Inheritance tables (accuracy %, change from m0 in brackets)", "", GUIDE["inheritance"], ""]
        if has_wilson(rows, run.layout):
            parts += [WILSON_NOTE, ""]
        parts += [_md(t) for t in inheritance_tables(rows, run.layout)]
    merged = merged_table(rows)
    if merged is not None:
        parts += ["## Merged models", "", GUIDE["merged"], "", _md(merged)]
    parts += prediction_markdown(rows)
    inside = diagnostics_table(rows)
    if inside is not None:
        parts += ["## What changed inside the models", "", GUIDE["inside"], "", _md(inside)]
    parts += figures_markdown(run)
    fails = failures_table(cells)
    if fails:
        parts += ["## Failures", "", _md(fails)]
    cost = cost_table(cells)
    if cost is not None:
        parts += ["## Cost (seconds)", "", GUIDE["cost"], "", _md(cost)]
    parts += ["## Environment", "", *(f"- {k}: {v}" for k, v in run.env.items()), ""]
    return "\n".join(parts)


def write_report(source: RunSource, figures: bool = False) -> Path:
    """Write ``<out_dir>/report.md`` and return its path.

    Figures under ``<out_dir>/figures/`` made from the stored numbers are linked; with
    ``figures`` they are (re)drawn first (``plots.write_figures``, a few seconds).
    """
    run = as_run(source)
    if figures:
        from .plots import write_figures

        write_figures(run.out_dir, run=run)
    path = run.out_dir / REPORT_FILE
    path.write_text(render_markdown(run))
    return path


def print_summary(source: RunSource, console: Console | None = None) -> None:
    """The console's summary table (``summary_table(compact=True)``) of a run."""
    t = summary_table(as_run(source).rows, compact=True)
    rt = RichTable(title=t.title)
    for i, h in enumerate(t.headers):
        rt.add_column(h, justify="left" if i < t.label_columns else "right", no_wrap=True)
    for r in t.rows:
        rt.add_row(*r)
    if console is None:
        console = Console()
        if console.width < 110:  # pipes and CI logs default to 80 columns: too narrow for the table
            console = Console(width=110)
    console.print(rt)
