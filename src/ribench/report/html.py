"""A self-contained HTML report of a run: one file, no network needed to open it.

CSS, JavaScript (a small table sorter) and every plot (SVG) are inline; the page loads
nothing else. The tables are those of ``tables`` and ``prediction``, the very ones
report.md prints (a ``tables.Cell`` gives its text, and the number behind it as the
cell's ``data-value``, the sort key); the guides are ``guide``'s. Sections, each left out
when the run has no data for it:

1. summary per (backbone, recipe, method): mean and 95% t-interval over (task, seed) runs, sortable;
2. inheritance matrices (heatmaps of the change from m0) per method, and folded below them the
   inheritance tables of report.md (accuracy, its Wilson interval where one model on one set, change);
3. radar charts of accuracy per eval set, m0 against each method;
4. corruption breakdown by corruption and severity;
5. robust accuracy under attack (when attack rows exist);
6. did the prediction hold: OTDD and transferability scores against ID acc, ΔR and ΔP,
   Spearman's ρ per group of independent units, with intervals and permutation p-values
   (``prediction.prediction_section``, as in report.md; when analysis rows exist);
7. WiSE-FT curves (when curve rows exist);
8. what changed inside the models: diagnostics per method and CKA by layer (diagnose rows);
8b. training curves: loss and validation accuracy per epoch (when curve rows exist);
9. merged models against the individually fine-tuned ones (normalised accuracy);
10. failed cells; 11. cost: seconds per kind of cell and phase (``tables.cost_table``);
12. spec, environment and cell counts, to reproduce the run.

``write_html_report`` also saves every plot as a PNG under ``<out_dir>/figures/`` for the
Markdown report.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from .guide import GUIDE, WILSON_NOTE
from .plots import SECTIONS, Plot, build_plots, figure_svg, write_figures
from .prediction import prediction_section
from .rundata import RunData, RunSource, as_run
from .tables import (Cell, Table, backbone_names, cell_label, cost_table, diagnostics_table, has_wilson,
                     inheritance_tables, label_space_line, merged_table, summary_table)

REPORT_FILE = "report.html"
SORT_HINT = "Click a column header to sort (by the mean); rows without a value go last."

CSS = """
:root { --fg:#1d1f23; --muted:#5c6370; --line:#d9dce1; --bg:#ffffff; --accent:#2457a6; --m0:#f4f5f7; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1360px; padding: 24px 28px 64px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.25em; margin: 40px 0 8px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; } h3 { font-size: 1.05em; margin: 20px 0 6px; }
p.lead, p.note, figcaption, .muted { color: var(--muted); }
nav ol { columns: 2; margin: 8px 0 0; padding-left: 20px; } nav a, a { color: var(--accent); }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 7px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #fafbfc; position: sticky; top: 0; }
td.label, th.label { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th:hover { background: #eef2f8; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; font-size: .75em; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; font-size: .75em; }
tr.m0 td { background: var(--m0); }
.spread { color: var(--muted); font-size: .78em; display: block; line-height: 1.1; }
.neg { color: #b2182b; } .pos { color: #2166ac; }
.table-wrap { overflow-x: auto; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; }
figure.plot { margin: 8px 0; max-width: 100%; }
figure.plot svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: .9em; }
pre { background: #f6f8fa; padding: 10px 12px; overflow-x: auto; font-size: .85em; border-radius: 4px; }
details summary { cursor: pointer; }
@media print { body { max-width: none; padding: 0; } th { position: static; } }
"""

# Sorts a table by the clicked column: numbers by data-value (missing values last), else text.
SORT_JS = """
(function () {
  'use strict';
  function key(cell) {
    var v = cell.getAttribute('data-value');
    if (v === null) { return { num: false, text: cell.textContent.trim().toLowerCase() }; }
    if (v === '') { return { missing: true }; }
    return { num: true, value: parseFloat(v) };
  }
  function compare(a, b, dir) {
    if (a.missing || b.missing) { return (a.missing ? 1 : 0) - (b.missing ? 1 : 0); }
    if (a.num && b.num) { return dir * (a.value - b.value); }
    return dir * String(a.text).localeCompare(String(b.text));
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, col) {
      th.setAttribute('title', (th.getAttribute('title') || '') + ' (click to sort)');
      th.addEventListener('click', function () {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) { return compare(key(r1.cells[col]), key(r2.cells[col]), dir); });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def _cell_html(v: str, label: bool) -> str:
    """One ``<td>``: a label as text; a number with ``data-value`` (what the table sorts by),
    its mean, coloured when it is a change, and its spread below it."""
    if label:
        return f'<td class="label">{escape(str(v))}</td>'
    if isinstance(v, Cell):
        value = "" if v.value is None else repr(v.value)
        main = escape(v.main)
        if v.sign:
            main = f'<span class="{"neg" if v.sign < 0 else "pos"}">{main}</span>'
        spread = f' <span class="spread">{escape(v.spread)}</span>' if v.spread else ""
        return f'<td data-value="{value}">{main}{spread}</td>'
    try:
        value = repr(float(str(v).split(" ")[0]))
    except ValueError:
        value = ""
    return f'<td data-value="{value}">{escape(str(v))}</td>'


def _attrs(**attrs: str) -> str:
    """`` name="value"`` for every non-empty attribute (``cls`` for ``class``)."""
    return "".join(f' {"class" if k == "cls" else k}="{escape(v)}"' for k, v in attrs.items() if v)


def table_html(t: Table, table_id: str | None = None) -> str:
    """A ``tables.Table`` as a sortable HTML table, with the tooltips and row marks it carries."""
    tips = t.tooltips or [""] * len(t.headers)
    head = "".join(f"<th{_attrs(cls='label' if i < t.label_columns else '', title=tip)}>{escape(h)}</th>"
                   for i, (h, tip) in enumerate(zip(t.headers, tips)))
    body = []
    for i, r in enumerate(t.rows):
        cls = t.row_classes[i] if i < len(t.row_classes) else ""
        body.append(f"<tr{_attrs(cls=cls)}>" + "".join(_cell_html(v, j < t.label_columns) for j, v in enumerate(r))
                    + "</tr>")
    notes = "".join(f'<p class="note table-note">{escape(n)}</p>' for n in t.notes)
    return (f'<div class="table-wrap"><table{_attrs(cls="sortable", id=table_id or t.table_id)}><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>{notes}")


def summary_html(run: RunData) -> str:
    """The summary table and the reading guide of its columns (the one report.md shows)."""
    t = summary_table(run.rows)
    notes = "".join(f"<li><b>{escape(h)}</b>: {escape(text)}</li>" for h, text in t.column_notes())
    return (f'<p class="note">{escape(GUIDE["summary"])} {SORT_HINT}</p>' + table_html(t)
            + f'<details><summary>How to read the columns</summary><ul class="note">{notes}</ul></details>')


def prediction_html(run: RunData) -> str:
    """"Did the prediction hold?" as report.md shows it (``prediction.prediction_section``):
    each scope's summary table, its per-group table folded, the notes, the rankings folded;
    "" when the run has no analysis rows."""
    section = prediction_section(run.rows)
    if section is None:
        return ""
    parts = []
    for summary, detail in zip(section.tables[::2], section.tables[1::2]):
        parts.append(f"<h3>{escape(summary.title)}</h3>" + table_html(summary))
        parts.append(f"<details><summary>{escape(detail.title)}</summary>" + table_html(detail) + "</details>")
    parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
    parts += [f"<details><summary>{escape(t.title)}</summary>{table_html(t)}</details>" for t in section.rankings]
    return "".join(parts)


def inheritance_html(run: RunData) -> str:
    """The inheritance tables of report.md, folded (the heatmaps above them show the same numbers);
    "" when the run has no suite layout or no adapted model."""
    if not run.layout:
        return ""
    tables = inheritance_tables(run.rows, run.layout)
    if not tables:
        return ""
    note = f'<p class="note">{escape(WILSON_NOTE)}</p>' if has_wilson(run.rows, run.layout) else ""
    return ("<details><summary>Inheritance tables (accuracy %, change from m0 in brackets)</summary>" + note
            + "".join(f"<h3>{escape(t.title)}</h3>" + table_html(t) for t in tables) + "</details>")


def diagnostics_html(run: RunData) -> str:
    """Per (backbone, recipe, method): what changed inside the adapted models (columns with data)."""
    t = diagnostics_table(run.rows)
    return "" if t is None else table_html(t)


def _figures(plots: list[Plot]) -> str:
    out = []
    for p in plots:
        width = round(p.figure.get_size_inches()[0] * 96)  # CSS px; the caption wraps to the plot's width
        out.append(f'<figure class="plot" id="fig-{p.slug}" data-section="{p.section}" style="width: {width}px">'
                   f"{figure_svg(p.figure, p.slug)}<figcaption><b>{escape(p.title)}.</b> {escape(p.caption)}"
                   f"</figcaption></figure>")
    return '<div class="plots">' + "".join(out) + "</div>"


def _kv_table(items: dict[str, Any], table_id: str) -> str:
    rows = "".join(f'<tr><td class="label">{escape(str(k))}</td><td class="label">{escape(str(v))}</td></tr>'
                   for k, v in items.items())
    return f'<table id="{table_id}"><tbody>{rows}</tbody></table>'


def reproduce_html(run: RunData) -> str:
    spec = run.spec
    seeds = {"fine-tuning seeds": ", ".join(map(str, spec.get("seeds") or [])) or None, "data seed": spec.get("data_seed"),
             "pretraining seed": (spec.get("pretrain") or {}).get("seed")}
    counts = Counter((c["kind"], c["status"]) for c in run.cells)
    kinds = sorted({k for k, _ in counts})
    cell_rows = "".join(f'<tr><td class="label">{escape(k)}</td><td>{counts[(k, "done")]}</td><td>{counts[(k, "failed")]}</td></tr>'
                        for k in kinds)
    total_done, total_failed = sum(v for (_, s), v in counts.items() if s == "done"), sum(
        v for (_, s), v in counts.items() if s == "failed")
    cell_rows += f'<tr><td class="label"><b>all</b></td><td><b>{total_done}</b></td><td><b>{total_failed}</b></td></tr>'
    env = {k: v for k, v in run.env.items()}
    parts = [
        "<h3>Cells</h3>",
        f'<table id="cell-counts"><thead><tr><th class="label">kind</th><th>done</th><th>failed</th></tr></thead>'
        f"<tbody>{cell_rows}</tbody></table>",
        "<h3>Seeds</h3>", _kv_table({k: v for k, v in seeds.items() if v is not None}, "seeds"),
        "<h3>Environment</h3>", _kv_table(env, "environment") if env else '<p class="muted">not recorded</p>',
    ]
    if run.layout:
        parts += ["<h3>Suite</h3>", _kv_table({
            "pretraining domain": run.layout.get("pretrain"), "tasks": ", ".join(run.layout.get("tasks", [])),
            "eval sets": ", ".join(e for e in run.layout.get("eval_sets", []) if e not in run.layout.get("corruptions", {})),
            "corruption sets": len(run.layout.get("corruptions", {}))}, "suite")]
    parts += ["<h3>Spec</h3>", '<p class="note">As run; the same spec and seeds on the same machine give the same '
              "numbers (<code>ribench run</code> with this spec, which is also in <code>spec.json</code>).</p>",
              f'<details open><summary>spec (JSON)</summary><pre id="spec">{escape(json.dumps(spec, indent=2, default=str))}'
              "</pre></details>"]
    return "".join(parts)


def failures_html(run: RunData) -> str:
    failed = [c for c in run.cells if c["status"] == "failed"]
    items = []
    for c in failed:
        items.append(f"<li><b>{escape(c['kind'])}</b> {escape(cell_label(c))}: {escape(c['error'] or '')}"
                     f"<details><summary>traceback</summary><pre>{escape(c['traceback'] or '')}</pre></details></li>")
    return f'<ul id="failures">{"".join(items)}</ul>'


def render_html(run: RunData, plots: list[Plot]) -> str:
    """The report page as one string (see the module docstring for its sections)."""
    by_section: dict[str, list[Plot]] = {}
    for p in plots:
        by_section.setdefault(p.section, []).append(p)
    sections: list[tuple[str, str, str]] = [("summary", "Summary per method", summary_html(run))]
    tables = {"predictors": prediction_html, "inside": diagnostics_html}  # sections with tables, as in report.md
    for sec in ("inheritance", "radar", "corruptions", "attacks", "predictors", "wise_ft", "inside", "training"):
        body = tables[sec](run) if sec in tables else ""
        if sec in by_section:
            body += _figures(by_section[sec])
        if sec == "inheritance" and body:  # the numbers of the heatmaps, folded below them
            body += inheritance_html(run)
        if body:
            sections.append((sec.replace("_", "-"), SECTIONS[sec], f'<p class="note">{escape(GUIDE[sec])}</p>' + body))
    merged = merged_table(run.rows)
    if merged is not None:
        sections.append(("merged", "Merged models against the individually fine-tuned ones",
                         f'<p class="note">{escape(GUIDE["merged"])}</p>' + table_html(merged)))
    if any(c["status"] == "failed" for c in run.cells):
        sections.append(("failures", "Failed cells", failures_html(run)))
    cost = cost_table(run.cells)
    if cost is not None:
        sections.append(("cost", "Cost (seconds)", f'<p class="note">{escape(GUIDE["cost"])}</p>' + table_html(cost)))
    sections.append(("reproduce", "Reproducing this run", reproduce_html(run)))

    spec = run.spec
    n_done = sum(c["status"] == "done" for c in run.cells)
    n_failed = sum(c["status"] == "failed" for c in run.cells)
    kind, name, file = run.suite
    suite = f"{kind} <b>{escape(name)}</b>" + (f" (from <code>{escape(file)}</code>)" if file else "")
    lead = (f"{suite}; backbones {escape(', '.join(backbone_names(spec)))}; "
            f"recipes {escape(', '.join(run.recipes))}; "
            f"seeds {escape(', '.join(map(str, spec.get('seeds') or [])))}. "
            f"{n_done} cells done, {n_failed} failed. Made by ribench {escape(str(run.env.get('ribench', '')))} from "
            f"<code>results.sqlite</code>.")
    space = label_space_line(run.layout)
    if space:
        lead += f'</p><p class="lead" id="label-space">{escape(space)}'
    nav = "".join(f'<li><a href="#{sid}">{escape(title)}</a></li>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>' for sid, title, html in sections)
    title = f"ribench report: {run.name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{escape(title)}</h1><p class="lead">{lead}</p><nav><ol>{nav}</ol></nav></header>'
        f"<main>{body}</main><script>{SORT_JS}</script></body></html>\n"
    )


def write_html_report(source: RunSource, path: str | Path | None = None, figures: bool = True) -> Path:
    """Write ``<out_dir>/report.html`` (or ``path``) and return its path; ``source``: a
    ``RunData`` or the run's folder. With ``figures``, also save every plot as
    ``<out_dir>/figures/<slug>.png`` (see ``plots.write_figures``)."""
    run = as_run(source)
    plots = build_plots(run)
    try:
        if figures:
            write_figures(run.out_dir, plots, run)
        page = render_html(run, plots)
    finally:
        for p in plots:
            p.figure.clear()
    out = Path(path) if path is not None else run.out_dir / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    return out
