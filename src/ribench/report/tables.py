"""The tables of a report, laid out once for report.md, report.html and the console.

A ``Table`` holds ``Cell``s: a ``Cell`` is the text report.md prints (a ``str``), and also
carries its parts (``main``: the mean as printed, ``spread``: its interval or standard
deviation) and the number behind it (``value``: the mean in the shown unit, unrounded) for
report.html, which prints ``main`` with ``spread`` below it and sorts by ``value``. So the
two reports show the same text from one computation (``aggregate``); the units and
decimals come from ``catalogue``.

- ``summary_table``: one row per (backbone, recipe, method), mean and 95% t-interval over
  (task, seed) runs of each summary metric (``catalogue.SUMMARY_METRICS``); the pretrained
  model m0 is the first row of each (backbone, recipe) group;
- ``inheritance_tables``: per (backbone, recipe, method), fine-tuning task (rows) by eval
  set (columns): accuracy, and its change from m0; corruption sets folded into one column;
- ``merged_table``, ``diagnostics_table``, ``failures_table``;
- ``cost_table``: per kind of cell, the count and the seconds of each phase (total, mean per cell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import aggregate as agg
from . import catalogue
from .catalogue import (
    DIAGNOSTICS,
    M0_PROBE_LABEL,
    MASK_MARK,
    MISSING,
    ONE_RUN,
    OWN_TASK_MARK,
    PERCENT,
    POINTS,
    Metric,
    Unit,
    method_label,
)

INTERVAL, SD, NONE = "interval", "sd", "none"  # the spread a cell shows after its mean


class Cell(str):
    """A table cell: the text report.md shows (``main`` and, after a space, ``spread``),
    with ``value``, the number behind it in the unit shown (None: a label or no value),
    and ``sign`` (-1, 0, +1) of a change, which report.html colours."""

    main: str
    spread: str
    value: float | None
    sign: int

    def __new__(cls, main: str, spread: str = "", value: float | None = None, sign: int = 0) -> Cell:
        cell = super().__new__(cls, f"{main} {spread}" if spread else main)
        cell.main, cell.spread, cell.value, cell.sign = main, spread, value, sign
        return cell


@dataclass
class Table:
    """``headers`` and ``rows`` (str or ``Cell``); the first ``label_columns`` are labels.
    ``tooltips``: one per header ("" for none); ``row_classes``: one per row (report.html
    marks the m0 rows); ``table_id``: its id in report.html; ``notes``: footnotes (the
    gradient-masking marks, what m0's row holds), printed below the table by every report."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    label_columns: int = 3
    tooltips: list[str] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)
    table_id: str = ""
    notes: list[str] = field(default_factory=list)  # footnotes, printed below the table

    def column_notes(self) -> list[tuple[str, str]]:
        """(header, tooltip) of every non-label column with a tooltip: the reading guide of its columns."""
        return [(h, t) for h, t in list(zip(self.headers, self.tooltips))[self.label_columns:] if t]


ROBUST_ACC = "robust_acc"  # the summary metric the gradient-masking mark applies to


def masked_cell(cell: Cell) -> Cell:
    """``cell`` with ``MASK_MARK`` after its mean."""
    return Cell(cell.main + MASK_MARK, cell.spread, cell.value, cell.sign)


def masking_note(what: str, mark: agg.MaskingMark) -> str:
    """The footnote of a marked robust accuracy (``aggregate.masking_marks``): one attack row,
    or a mean over several of which ``mark.marked`` are marked."""
    share = f"{PERCENT.text(mark.zero_grad_frac)}%" if math.isfinite(mark.zero_grad_frac) else "most"
    if mark.checked == 1:
        return (f"{MASK_MARK} {what}: gradient masking suspected: {share} of the attacked images have a zero input "
                "gradient; the robust accuracy overstates robustness.")
    return (f"{MASK_MARK} {what}: gradient masking suspected in {mark.marked} of the {mark.checked} attack rows this "
            f"mean averages ({share} of their attacked images have a zero input gradient); the robust accuracy "
            "overstates robustness.")


def stat_cell(stat: agg.Stat | None, unit: Unit, spread: str = INTERVAL) -> Cell:
    """A cell of a ``Stat`` in ``unit``: its mean, then by ``spread`` its 95% t-interval in
    brackets ("(n/a: one run)" for a single value), ``± sd`` (more than one value) or nothing."""
    if stat is None or stat.n == 0:
        return Cell(MISSING)
    mean = stat.mean
    shown_zero = unit.text(mean).lstrip("+-") == unit.text(0.0).lstrip("+-")
    sign = 0 if not unit.signed or shown_zero else (1 if mean > 0 else -1)
    value = unit.shown(mean) if math.isfinite(mean) else None
    text = ""
    if spread == INTERVAL:
        if stat.n < 2:
            text = f"({ONE_RUN})"
        elif math.isfinite(stat.lo) and math.isfinite(stat.hi):
            text = f"[{unit.text(stat.lo)}, {unit.text(stat.hi)}]"
    elif spread == SD and stat.n > 1 and math.isfinite(stat.std):
        text = f"± {unit.spread(stat.std)}"
    return Cell(unit.text(mean), text, value, sign)


def shown_metrics(summaries: Iterable[agg.MethodSummary], compact: bool = False) -> list[Metric]:
    """The summary's metric columns: the protocol's own (``always``) and every other with a
    value in some row; ``compact``: the console's (``console``) among them."""
    present = {m for s in summaries for m, st in s.stats.items() if st.n}
    return [m for m in catalogue.SUMMARY_METRICS if (m.always or m.name in present) and (not compact or m.console)]


def summary_table(rows: list[dict[str, Any]], compact: bool = False) -> Table:
    """One row per (backbone, recipe, method) (``aggregate.summarize_methods``): how many
    tasks and seeds, then the mean and 95% t-interval of each summary metric over them.
    ``compact``: the console's version, means only and fewer columns."""
    summaries = agg.summarize_methods(rows)
    metrics = shown_metrics(summaries, compact)
    counts = [] if compact else [("tasks", "how many fine-tuning tasks the row averages"),
                                 ("seeds", "how many fine-tuning seeds the row averages")]
    headers = ["backbone", "recipe", "method", *(h for h, _ in counts), *(m.header for m in metrics)]
    tooltips = ["backbone architecture", "pretraining recipe of m0", "adaptation method", *(t for _, t in counts),
                *(m.guide for m in metrics)]
    body, notes = [], []
    marks = agg.masking_marks(rows)
    for s in summaries:
        cells = [s.backbone, s.recipe, method_label(s.method)]
        if not compact:
            cells += [Cell(str(len(v)), value=len(v)) if v else Cell(MISSING) for v in (s.tasks, s.seeds)]
        spread = NONE if compact else INTERVAL
        for m in metrics:
            cell = stat_cell(s.stats.get(m.name), m.unit, spread if m.interval else NONE)
            mark = marks.get(s.key) if m.name == ROBUST_ACC else None
            if mark is not None and mark.suspect and cell.value is not None:
                cell = masked_cell(cell)
                notes.append(masking_note(f"{s.backbone}/{s.recipe}/{method_label(s.method)}", mark))
            cells.append(cell)
        body.append(cells)
    what = "mean over tasks and seeds" if compact else "mean [95% t-interval] over (task, seed) runs"
    return Table(f"Summary (accuracies in %, {what})", headers, body, tooltips=tooltips, table_id="summary-table",
                 row_classes=["m0" if s.method == agg.PRETRAINED else "" for s in summaries], notes=notes)


def inheritance_tables(rows: list[dict[str, Any]], layout: dict[str, Any]) -> list[Table]:
    """Per adapted (backbone, recipe, method): m0 and each fine-tuning task (rows) by eval set
    (columns, ``aggregate.layout_columns``): accuracy %, its Wilson 95% interval in square
    brackets where the number is one model on one eval set (one seed, not the folded
    corruptions column; stored as ``acc_lo``/``acc_hi``), and in round brackets the change
    from m0 in points; ``*`` marks the fine-tuning task's own column."""
    out = []
    wilson = agg.wilson_by_column(rows, layout)
    for b, rc in agg.backbone_recipes(rows):
        for m in agg.method_order(rows):
            res = None if m == agg.PRETRAINED else agg.inheritance_matrix(rows, layout, b, rc, m)
            if res is None:
                continue
            w0 = wilson.get((b, rc, agg.PRETRAINED, None), {})
            body = [[m0_label(res.probed), *(_accuracy_cell(v, interval=None if c in res.probed else w0.get(c))
                                             for c, v in zip(res.columns, res.base))]]
            for t, row, ref in zip(res.tasks, res.acc, res.ref):
                w = wilson.get((b, rc, m, t), {})
                body.append([t, *(_accuracy_cell(a, a0, c == t, w.get(c)) for c, a, a0 in zip(res.columns, row, ref))])
            out.append(Table(f"{b} / {rc} / {m}: fine-tuned on (rows) → evaluated on (columns)",
                             ["fine-tuned on", *res.columns], body, label_columns=1,
                             notes=[PROBE_NOTE] if res.probed else []))
    return out


PROBE_NOTE = ("m0's head is over the pretraining domain's own classes, so on the tasks' label space m0 is measured "
              "through a linear probe fitted on each task: its row shows, per column, the mean over the probes "
              "fitted on the other tasks, and each task's row is compared with the probe fitted on that task "
              "(the reference of the summary's ΔR).")


def m0_label(probed: set[str] | None = None) -> str:
    """How m0's one row is named: ``m0 (linear probe per task)`` when some of its columns are probes."""
    return M0_PROBE_LABEL if probed else method_label(agg.PRETRAINED)


def _accuracy_cell(acc: float, base: float = math.nan, own: bool = False,
                   interval: tuple[float, float] | None = None) -> Cell:
    """Accuracy % (``*`` before the fine-tuning task's own), then its Wilson 95% ``interval``
    (lo, hi) in square brackets when given, then, with a finite ``base``, its change from m0
    in round brackets: ``*71.3 [69.0, 73.5] (+1.2)``."""
    if not math.isfinite(acc):
        return Cell(MISSING)
    parts = []
    if interval is not None and all(math.isfinite(x) for x in interval):
        parts.append(f"[{PERCENT.text(interval[0])}, {PERCENT.text(interval[1])}]")
    if math.isfinite(base):
        parts.append(f"({POINTS.text(acc - base)})")
    return Cell((OWN_TASK_MARK if own else "") + PERCENT.text(acc), " ".join(parts), PERCENT.shown(acc))


def has_wilson(rows: list[dict[str, Any]], layout: dict[str, Any]) -> bool:
    """Whether some inheritance-table cell shows a Wilson interval (``aggregate.wilson_by_column``)."""
    return any(agg.wilson_by_column(rows, layout).values())


def merged_table(rows: list[dict[str, Any]]) -> Table | None:
    """Merged models (task label ``merged``) against the individually fine-tuned models:
    per task, accuracy of the merged model / accuracy of the fine-tuned model of that task
    (``norm_acc``, %), then the mean over tasks and the mean absolute accuracy; mean ± std
    over seeds. None when the run has no merged model."""
    tasks, merged = agg.merged_summaries(rows)
    if not merged:
        return None
    body = [[s.backbone, s.recipe, s.method, *(stat_cell(s.per_task.get(t), PERCENT, SD) for t in tasks),
             stat_cell(s.norm_acc, PERCENT, SD), stat_cell(s.task_acc, PERCENT, SD)] for s in merged]
    return Table("Merged models: accuracy normalised by the individually fine-tuned models (%, mean ± std over seeds)",
                 ["backbone", "recipe", "method", *tasks, "mean normalised", "mean accuracy"], body,
                 table_id="merged-table")


TV_TOTAL, TV_BACKBONE = "task_vector_relative_norm", "task_vector_relative_norm_backbone"


def diagnostics_table(rows: list[dict[str, Any]]) -> Table | None:
    """What changed inside the models (diagnose cells, ``catalogue.DIAGNOSTICS`` with data),
    means ± sd over tasks and seeds. The task-vector norm: the backbone's part and the head's
    beside it; the total (head included) only for models stored before the split."""
    summaries = agg.diagnostic_summaries(rows)
    if not summaries:
        return None
    present = {m for stats in summaries.values() for m in stats}
    metrics = [m for m in DIAGNOSTICS if m.name in present]
    if not any(TV_TOTAL in stats and TV_BACKBONE not in stats for stats in summaries.values()):
        metrics = [m for m in metrics if m.name != TV_TOTAL]  # every model has the split: the total is not shown
    body = [[str(b), str(rc), str(m), *(stat_cell(stats.get(d.name), d.unit, SD) for d in metrics)]
            for (b, rc, m), stats in summaries.items()]
    return Table("What changed inside the models (vs m0)",
                 ["backbone", "recipe", "method", *(d.header for d in metrics)], body, tooltips=["", "", "", *(d.guide for d in metrics)], table_id="diagnostics-table")


def label_space_line(layout: dict[str, Any], quote: str = "") -> str:
    """The header's sentence on a suite whose pretraining domain has its own classes (the layout
    records ``pretrain_classes``, ``classes`` and ``class_map``); "" for a suite of one label
    space. ``quote`` surrounds the domain's name (a backtick in Markdown)."""
    if not layout.get("pretrain_classes"):
        return ""
    start = "the class map" if layout.get("class_map") else "a linear probe per task"
    return (f"The pretraining domain {quote}{layout.get('pretrain')}{quote} has its own "
            f"{len(layout['pretrain_classes'])} classes; tasks have {len(layout.get('classes') or [])} classes; "
            f"the task heads start from {start}; P is measured through m0's own head, kept frozen in every adapted "
            "model.")


def backbone_names(spec: dict) -> list[str]:
    """The spec's backbones by name (an outside backbone's table by its ``name``)."""
    return [b.get("name", "?") if isinstance(b, dict) else str(b) for b in spec.get("backbones") or []]


def cell_label(cell: dict[str, Any]) -> str:
    """A stored cell's labels joined: ``mlp/narrow/ft/t1/0``."""
    return "/".join(str(v) for v in cell["labels"].values() if v is not None)


def failures_table(cells: list[dict[str, Any]]) -> Table | None:
    failed = [c for c in cells if c["status"] == "failed"]
    if not failed:
        return None
    body = [[c["kind"], cell_label(c), c["error"] or ""] for c in failed]
    return Table("Failed cells", ["kind", "cell", "error"], body, label_columns=3)


def cost_table(cells: list[dict[str, Any]]) -> Table | None:
    """Where the run's time went (``aggregate.cell_costs``): one row per kind of cell, its count,
    then the cell and each phase as "total s (mean s per cell)"; None when no cell is done."""
    costs = agg.cell_costs(cells)
    if not costs:
        return None
    from ..core.timing import ordered

    names = {p for k in costs for p in k.phases}
    phases = ordered(names - {agg.OTHER_PHASE}) + [agg.OTHER_PHASE] * (agg.OTHER_PHASE in names)

    def cell(total: float, mean: float) -> Cell:
        return Cell(f"{total:.2f}", f"({mean:.3f})" if not math.isnan(mean) else "", value=total)

    body = [[k.kind, str(k.count), cell(k.seconds, k.mean()),
             *(cell(k.phases[p], k.mean(p)) if p in k.phases else Cell(MISSING) for p in phases)] for k in costs]
    return Table("Cost", ["kind", "cells", "cell", *phases], body, label_columns=2, table_id="cost-table")
