"""Every number of a report, from flat metric rows: the one place rows become numbers.

Rows are ``ResultsStore.metric_rows()`` dicts (backbone, recipe, method, task, seed,
eval_set, metric, value); rows without a value (a NaN, stored as NULL) are left out.
Accuracies stay fractions in [0, 1] here; ``catalogue`` says how the reports show them.
Seeds are averaged first where a value per (backbone, recipe, method, task) is needed.
Method summaries (``Stat``) take the mean, sample standard deviation and 95% t-interval
over every (task, seed) value. Whether a predictor held (``prediction_tests``) is computed
here once, with ``analysis.statistics``. The Markdown report, the HTML report, the console
table, the figures and the leaderboard read these functions and only format what they return.

Row families (``core.rows``, docs/results.md):
- eval_set ``SUMMARY`` (``"*"``): summary numbers of a model (id_acc, R, dR, dP, ...);
- method ``ANALYSIS``: predictors (otdd, logme, ...) per (backbone, recipe, task);
- method ``"wise_ft"``, eval_set ``curve(alpha)``: WiSE-FT curve points;
- eval_set ``attack(name, eps[, task])`` and ``transfer(name, eps)``, metric ``robust_acc``;
  white-box attack rows also ``zero_grad_frac`` and ``masked`` (``masking_marks``);
- method ``PRETRAINED``, eval_set ``probe(task, eval set)``: m0 with a linear probe fitted on
  the task, on the tasks' label space of a suite whose pretraining domain has its own classes
  (``probe_accuracy``, ``m0_row``; the reference of ``Inheritance.ref``);
- eval_set ``DIAG_SUMMARY``, ``DIAG_LAYERS`` and ``diag(measure, sample)``: diagnostics;
- task ``MERGED``: a model merged over every task;
- eval_set ``train_epoch(epoch, run)``, metrics ``train_loss`` and ``val_acc``: training
  curves of adapt cells and (method, task and seed null) of pretrain cells.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np

from ..core import rows as names
from ..core.errors import ConfigError
from ..core.rows import ANALYSIS, DIAG_LAYERS, DIAG_SUMMARY, MERGED, PRETRAINED, SUMMARY
from .catalogue import BY_NAME, PREDICTORS, lower_is_better

WISE_FT = "wise_ft"  # the method whose curve rows are drawn
CORRUPTIONS = "corruptions"  # the folded column of every corruption set
ACCURACY = "accuracy"  # the per-eval-set metric of the inheritance tables and figures

Key = tuple  # (backbone, recipe, method) or (backbone, recipe)
CONFIDENCE = 0.95  # of every interval in the reports


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (0 for one value) and 95% t-interval
    (``analysis.statistics.t_interval``; NaN for fewer than 2 values) of ``n`` values, each
    one independent unit (a (task, seed) run of one method)."""

    mean: float
    std: float
    n: int
    lo: float = math.nan
    hi: float = math.nan

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        from ..analysis.statistics import t_interval

        v = [float(x) for x in values]
        if not v:
            return cls(math.nan, math.nan, 0)
        if not all(math.isfinite(x) for x in v):  # an infinite value: no interval
            return cls(float(np.mean(v)), math.nan, len(v))
        lo, hi = t_interval(v, CONFIDENCE)
        return cls(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v), lo, hi)


@dataclass
class MethodSummary:
    """Summary numbers of one (backbone, recipe, method) over its tasks and seeds."""

    backbone: str
    recipe: str
    method: str
    stats: dict[str, Stat] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.backbone, self.recipe, self.method)


def is_model_row(r: dict[str, Any]) -> bool:
    """A number about a model (not an analysis predictor)."""
    return r["method"] != ANALYSIS


def _valued(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """The rows with a value (SQLite stores NaN as NULL, read back as None)."""
    return (r for r in rows if r["value"] is not None)


def _sorted_points(out: dict) -> dict:
    """Sort every point list two levels below the (backbone, recipe) keys of ``out``."""
    for per_panel in out.values():
        for per_line in per_panel.values():
            for line in per_line:
                per_line[line].sort()
    return out


def method_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Methods of model rows: ``pretrained`` first, then in order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        if is_model_row(r) and r["method"] is not None:  # a pretrain cell's curve rows carry no method
            seen.setdefault(r["method"], None)
    found = list(seen)
    return sorted(found, key=lambda m: (m != PRETRAINED, found.index(m)))


def _in_method_order(keys: Iterable[tuple], rows: Iterable[dict[str, Any]]) -> list[tuple]:
    """(backbone, recipe, method) keys by backbone and recipe, then ``method_order``."""
    order = method_order(rows)
    return sorted(keys, key=lambda k: (str(k[0]), str(k[1]), order.index(k[2]) if k[2] in order else len(order)))


def backbone_recipes(rows: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted({(r["backbone"], r["recipe"]) for r in rows if is_model_row(r)}, key=lambda k: (str(k[0]), str(k[1])))


def summarize_methods(rows: list[dict[str, Any]]) -> list[MethodSummary]:
    """One entry per (backbone, recipe, method) with summary rows, m0 first in each group."""
    values: dict[Key, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    tasks: dict[Key, set] = defaultdict(set)
    seeds: dict[Key, set] = defaultdict(set)
    for r in _valued(rows):
        if r["eval_set"] != SUMMARY or not is_model_row(r):
            continue
        k = (r["backbone"], r["recipe"], r["method"])
        values[k][r["metric"]].append(r["value"])
        if r["task"] is not None:
            tasks[k].add(r["task"])
        if r["seed"] is not None:
            seeds[k].add(r["seed"])
    keys = _in_method_order(values, rows)
    return [MethodSummary(*k, {m: Stat.of(v) for m, v in values[k].items()}, sorted(tasks[k]), sorted(seeds[k]))
            for k in keys]


def has_metric(rows: Iterable[dict[str, Any]], metric: str, eval_set: str | None = SUMMARY) -> bool:
    return any(r["metric"] == metric and (eval_set is None or r["eval_set"] == eval_set) for r in rows)


# --- accuracy per eval set ------------------------------------------------------------
def layout_columns(layout: dict[str, Any]) -> list[str]:
    """Eval-set columns: pretraining domain, tasks, other eval sets, then ``corruptions``."""
    corr = set(layout.get("corruptions", {}))
    cols = [layout["pretrain"], *layout["tasks"], *[e for e in layout.get("eval_sets", []) if e not in corr]]
    return cols + ([CORRUPTIONS] if corr else [])


def accuracy_by_column(rows: list[dict[str, Any]], layout: dict[str, Any]) -> dict[tuple, dict[str, float]]:
    """(backbone, recipe, method, task) -> column -> mean accuracy over seeds (and, for the
    corruptions column, over every corruption and severity)."""
    corr = set(layout.get("corruptions", {}))
    columns = set(layout_columns(layout))
    acc: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _valued(rows):
        if r["metric"] != ACCURACY or not is_model_row(r):
            continue
        col = CORRUPTIONS if r["eval_set"] in corr else r["eval_set"]
        if col in columns:
            acc[(r["backbone"], r["recipe"], r["method"], r["task"])][col].append(r["value"])
    return {k: {c: float(np.mean(v)) for c, v in cols.items()} for k, cols in acc.items()}


ACC_LO, ACC_HI = "acc_lo", "acc_hi"  # the Wilson 95% interval of an accuracy row (evaluate.runner)


def wilson_by_column(rows: list[dict[str, Any]], layout: dict[str, Any]) -> dict[tuple, dict[str, tuple[float, float]]]:
    """(backbone, recipe, method, task) -> column -> (acc_lo, acc_hi): the stored Wilson 95%
    interval of the accuracy, only where the column's number is one model on one eval set
    (a single seed; never the folded corruptions column) and the row has one (runs made
    before intervals were stored have none)."""
    corr = set(layout.get("corruptions", {}))
    columns = set(layout_columns(layout)) - {CORRUPTIONS}
    bounds: dict[tuple, dict[str, float]] = defaultdict(dict)
    count: dict[tuple, int] = defaultdict(int)
    for r in _valued(rows):
        if r["eval_set"] in corr or r["eval_set"] not in columns or not is_model_row(r):
            continue
        k = (r["backbone"], r["recipe"], r["method"], r["task"])
        if r["metric"] == ACCURACY:
            count[(*k, r["eval_set"])] += 1
        elif r["metric"] in (ACC_LO, ACC_HI):
            bounds[(*k, r["seed"], r["eval_set"])][r["metric"]] = r["value"]
    out: dict[tuple, dict[str, tuple[float, float]]] = defaultdict(dict)
    for (b, rc, m, t, _, col), v in bounds.items():
        if count.get((b, rc, m, t, col)) == 1 and ACC_LO in v and ACC_HI in v:
            out[(b, rc, m, t)][col] = (float(v[ACC_LO]), float(v[ACC_HI]))
    return dict(out)


def probe_accuracy(rows: list[dict[str, Any]], layout: dict[str, Any]) -> dict[tuple, dict[tuple[str, str], float]]:
    """(backbone, recipe) -> (task t, column) -> accuracy of m0 with the linear probe fitted on t
    (rows ``probe/<t>/<eval set>``, ``core.rows.probe``; mean over seeds, and over every
    corruption and severity for the corruptions column). Empty for a suite of one label space,
    or one whose pretraining domain's classes map to the tasks' (``class_map``)."""
    corr = set(layout.get("corruptions", {}))
    columns = set(layout_columns(layout))
    vals: dict[tuple, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _valued(rows):
        parsed = names.parse_probe(r["eval_set"]) if r["metric"] == ACCURACY and r["method"] == PRETRAINED else None
        if parsed is None:
            continue
        task, e = parsed
        col = CORRUPTIONS if e in corr else e
        if col in columns:
            vals[(r["backbone"], r["recipe"])][(task, col)].append(r["value"])
    return {k: {tc: float(np.mean(v)) for tc, v in per.items()} for k, per in vals.items()}


def m0_row(rows: list[dict[str, Any]], layout: dict[str, Any], backbone: str, recipe: str) -> tuple[dict[str, float], set[str]]:
    """(column -> m0's accuracy as its one row in the reports shows it, the probed columns).

    m0's own rows; on the columns of the tasks' label space where m0 is measured through a
    linear probe per task (``probe_accuracy``), the mean over the tasks t != column of the
    probe fitted on t (on a task's own column, only probes fitted on *other* tasks)."""
    own = dict(accuracy_by_column(rows, layout).get((backbone, recipe, PRETRAINED, None), {}))
    by_col: dict[str, list[float]] = defaultdict(list)
    for (t, col), v in probe_accuracy(rows, layout).get((backbone, recipe), {}).items():
        if t != col:
            by_col[col].append(v)
    own.update({c: float(np.mean(v)) for c, v in by_col.items()})
    return own, set(by_col)


class Inheritance(NamedTuple):
    """One method's inheritance matrix (``inheritance_matrix``).

    ``acc[i, j]``: accuracy of the model adapted on ``tasks[i]`` on ``columns[j]``; ``base[j]``:
    m0's one row (``m0_row``); ``ref[i, j]``: the reference the change of ``acc[i, j]`` is
    taken against, the very one of the summary's ΔR: m0's row, except on ``probed`` columns,
    where it is m0 with the linear probe fitted on ``tasks[i]`` (NaN where not measured)."""

    tasks: list[str]
    columns: list[str]
    acc: np.ndarray
    base: np.ndarray
    ref: np.ndarray
    probed: set[str]


def inheritance_matrix(rows: list[dict[str, Any]], layout: dict[str, Any], backbone: str, recipe: str,
                       method: str) -> Inheritance | None:
    """Fine-tuning tasks (rows) by eval-set columns for one method (``Inheritance``); None when
    the method has no evaluated task here."""
    acc = accuracy_by_column(rows, layout)
    columns = layout_columns(layout)
    tasks = [t for t in layout["tasks"] if (backbone, recipe, method, t) in acc]
    if not tasks:
        return None
    base_row, probed = m0_row(rows, layout, backbone, recipe)
    base = np.array([base_row.get(c, math.nan) for c in columns])
    probes = probe_accuracy(rows, layout).get((backbone, recipe), {})
    ref = np.array([[probes.get((t, c), math.nan) if c in probed else base_row.get(c, math.nan) for c in columns]
                    for t in tasks])
    mat = np.array([[acc[(backbone, recipe, method, t)].get(c, math.nan) for c in columns] for t in tasks])
    return Inheritance(tasks, columns, mat, base, ref, probed)


def radar_values(rows: list[dict[str, Any]], layout: dict[str, Any], backbone: str,
                 recipe: str) -> tuple[list[str], dict[str, list[float]]]:
    """Per method, mean accuracy on each column over its fine-tuning tasks; on a task's own
    column only models adapted to *other* tasks count (so every axis is out-of-distribution
    for adapted models). m0 (``pretrained``) has one value per column (``m0_row``)."""
    acc = accuracy_by_column(rows, layout)
    columns = layout_columns(layout)
    tasks = set(layout["tasks"])
    out: dict[str, list[float]] = {}
    for m in method_order(rows):
        if m == PRETRAINED:
            row, _ = m0_row(rows, layout, backbone, recipe)
            if row:
                out[m] = [row.get(c, math.nan) for c in columns]
            continue
        per_task = {t: v for (b, rc, mm, t), v in acc.items() if (b, rc, mm) == (backbone, recipe, m)}
        if not per_task:
            continue
        vals = []
        for c in columns:
            xs = [v[c] for t, v in per_task.items() if c in v and (c not in tasks or t != c)]
            vals.append(float(np.mean(xs)) if xs else math.nan)
        out[m] = vals
    return columns, out


def corruption_curves(rows: list[dict[str, Any]], layout: dict[str, Any]) -> dict[tuple, dict[str, dict[str, list]]]:
    """(backbone, recipe) -> corruption -> method -> [(severity, mean accuracy)] sorted by severity."""
    corr = {k: (c, int(s)) for k, (c, s) in layout.get("corruptions", {}).items()}
    vals: dict[tuple, list[float]] = defaultdict(list)
    for r in _valued(rows):
        if r["metric"] == ACCURACY and r["eval_set"] in corr and is_model_row(r):
            c, s = corr[r["eval_set"]]
            vals[(r["backbone"], r["recipe"], c, r["method"], s)].append(r["value"])
    out: dict[tuple, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(dict))
    for (b, rc, c, m, s), v in vals.items():
        out[(b, rc)][c].setdefault(m, []).append((s, float(np.mean(v))))
    return _sorted_points(out)


def parse_attack(eval_set: str) -> tuple[str, float] | None:
    """``"attack/pgd/eps=0.03"`` -> ``("pgd", 0.03)``; the pretrained model's per-task rows
    ``"attack/pgd/eps=0.03/<task>"`` parse the same; transfer attacks (crafted on m0)
    ``"transfer/pgd/eps=0.03"`` -> ``("pgd (transfer from m0)", 0.03)``. None for other eval sets."""
    a = names.parse_attack(eval_set)
    if a is None:
        return None
    return (f"{a.name} (transfer from m0)" if a.transfer else a.name), a.eps


def attack_curves(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, list]]]:
    """(backbone, recipe) -> attack -> method -> [(eps, mean robust accuracy)] sorted by eps;
    means over tasks and seeds (for m0, over the tasks it was attacked on)."""
    vals: dict[tuple, list[float]] = defaultdict(list)
    for r in _valued(rows):
        a = parse_attack(r["eval_set"]) if r["metric"] == "robust_acc" and is_model_row(r) else None
        if a:
            vals[(r["backbone"], r["recipe"], a[0], r["method"], a[1])].append(r["value"])
    out: dict[tuple, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(dict))
    for (b, rc, a, m, eps), v in vals.items():
        out[(b, rc)][a].setdefault(m, []).append((eps, float(np.mean(v))))
    return _sorted_points(out)


MASKED, ZERO_GRAD = "masked", "zero_grad_frac"  # the gradient-masking mark of a white-box attack row


@dataclass(frozen=True)
class MaskingMark:
    """The gradient-masking marks of the white-box attack rows behind one robust accuracy:
    ``checked`` rows carry the mark (runs stored before it have none), ``marked`` of them
    have ``masked`` = 1.0 (more than half of their attacked images with a zero or non-finite
    input gradient), ``zero_grad_frac``: the mean share of such images over the marked rows."""

    marked: int
    checked: int
    zero_grad_frac: float = math.nan

    @property
    def suspect(self) -> bool:
        return self.marked > 0


def masking_marks(rows: Iterable[dict[str, Any]], by_budget: bool = False) -> dict[tuple, MaskingMark]:
    """(backbone, recipe, method) -> ``MaskingMark`` over its white-box attack rows (every task,
    seed, attack and budget: the rows a summary's ``robust_acc`` averages); with ``by_budget``,
    (backbone, recipe, method, attack, eps) -> the mark of the rows of that one budget. Only
    models with some row carrying the mark are keys."""
    found: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in _valued(rows):
        if r["metric"] not in (MASKED, ZERO_GRAD) or not is_model_row(r):
            continue
        a = names.parse_attack(r["eval_set"])
        if a is None or a.transfer:
            continue
        found[(r["backbone"], r["recipe"], r["method"], a.name, a.eps, r["task"], a.task, r["seed"])][r["metric"]] = r["value"]
    per: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    for k, v in found.items():
        if MASKED in v:
            per[k[:5] if by_budget else k[:3]].append(v)
    out = {}
    for k, marks in per.items():
        hit = [m for m in marks if m[MASKED] >= 0.5]
        fracs = [m[ZERO_GRAD] for m in hit if ZERO_GRAD in m]
        out[k] = MaskingMark(len(hit), len(marks), float(np.mean(fracs)) if fracs else math.nan)
    return out


def wise_ft_curves(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, list[tuple[float, float, float]]]]:
    """(backbone, recipe) -> task -> [(alpha, id_acc, R)] sorted by alpha, means over seeds."""
    vals: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _valued(rows):
        alpha = names.parse_curve(r["eval_set"]) if r["method"] == WISE_FT else None
        if alpha is not None and r["metric"] in ("id_acc", "R"):
            vals[(r["backbone"], r["recipe"], r["task"], alpha)][r["metric"]].append(r["value"])
    out: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (b, rc, t, alpha), m in vals.items():
        if m.get("id_acc") and m.get("R"):
            out[(b, rc)][t].append((alpha, float(np.mean(m["id_acc"])), float(np.mean(m["R"]))))
    for per_t in out.values():
        for t in per_t:
            per_t[t].sort()
    return out


# --- training curves (adapt and pretrain cells) ------------------------------------------
PRETRAINING = "pretraining"  # the line of a pretrain cell's curve (its method label is null)


@dataclass(frozen=True)
class CurvePoint:
    """One epoch of a training curve: mean, lowest and highest value over the ``n`` (task,
    seed) cells that trained that epoch."""

    epoch: int
    mean: float
    lo: float
    hi: float
    n: int


def training_curves(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, list[CurvePoint]]]]:
    """(backbone, recipe) -> metric (``train_loss``, ``val_acc``) -> line -> points by epoch.

    A line is a method (its label), ``PRETRAINING`` for the pretrain cell, and for a cell's
    later training runs (``run`` >= 1) the method followed by `` · run <run + 1>``. Each
    point averages the (task, seed) cells of the line that trained that epoch. Empty for a
    run without curve rows (made before they were stored)."""
    vals: dict[tuple, list[float]] = defaultdict(list)
    for r in _valued(rows):
        parsed = names.parse_train_epoch(r["eval_set"]) if r["metric"] in (names.TRAIN_LOSS, names.VAL_ACC) else None
        if parsed is None or r["method"] == ANALYSIS:
            continue
        run, epoch = parsed
        line = PRETRAINING if r["method"] is None else str(r["method"])
        if run:
            line += f" · run {run + 1}"
        vals[(r["backbone"], r["recipe"], r["metric"], line, epoch)].append(float(r["value"]))
    out: dict[tuple, dict[str, dict[str, list[CurvePoint]]]] = defaultdict(lambda: defaultdict(dict))
    for (b, rc, metric, line, epoch), v in vals.items():
        out[(b, rc)][metric].setdefault(line, []).append(CurvePoint(epoch, float(np.mean(v)), min(v), max(v), len(v)))
    for per_metric in out.values():
        for per_line in per_metric.values():
            for pts in per_line.values():
                pts.sort(key=lambda p: p.epoch)
    return {k: dict(v) for k, v in out.items()}


# --- what changed inside the models (diagnose cells) ------------------------------------
def diagnostic_summaries(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Stat]]:
    """(backbone, recipe, method) -> diag/summary metric -> Stat over tasks and seeds."""
    vals: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _valued(rows):
        if r["eval_set"] == DIAG_SUMMARY:
            vals[(r["backbone"], r["recipe"], r["method"])][r["metric"]].append(r["value"])
    return {k: {m: Stat.of(v) for m, v in vals[k].items()} for k in _in_method_order(vals, rows)}


def similarity_by_layer(rows: list[dict[str, Any]], measure: str = "linear_cka"
                        ) -> dict[tuple, dict[str, dict[str, list[tuple[int, str, float]]]]]:
    """(backbone, recipe) -> sample ("task", "pretrain") -> method -> [(position, layer, mean
    similarity over tasks and seeds)] in network order."""
    position: dict[tuple, dict[str, float]] = defaultdict(dict)
    vals: dict[tuple, list[float]] = defaultdict(list)
    prefix = names.diag(measure, "")
    for r in _valued(rows):
        if r["eval_set"] == DIAG_LAYERS:
            position[(r["backbone"], r["recipe"])][r["metric"]] = r["value"]
        elif r["eval_set"].startswith(prefix):
            vals[(r["backbone"], r["recipe"], r["eval_set"][len(prefix):], r["method"], r["metric"])].append(r["value"])
    out: dict[tuple, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for (b, rc, sample, m, layer), v in vals.items():
        pos = position[(b, rc)].get(layer)
        if pos is not None:
            out[(b, rc)][sample][m].append((int(pos), layer, float(np.mean(v))))
    return _sorted_points(out)


# --- merged models ----------------------------------------------------------------------------
@dataclass
class MergedSummary:
    """One (backbone, recipe, method) merged over every task (task label ``MERGED``): its
    ``norm_acc`` on each task (accuracy / that of the model fine-tuned on the task alone),
    their mean and the mean accuracy itself, each a ``Stat`` over seeds."""

    backbone: str
    recipe: str
    method: str
    per_task: dict[str, Stat]
    norm_acc: Stat
    task_acc: Stat


def merged_summaries(rows: list[dict[str, Any]]) -> tuple[list[str], list[MergedSummary]]:
    """(the tasks merged over, sorted; one ``MergedSummary`` per merged (backbone, recipe, method))."""
    per_task: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    summary: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _valued(rows):
        if r["task"] != MERGED:
            continue
        k = (r["backbone"], r["recipe"], r["method"])
        if r["eval_set"] == SUMMARY:
            if r["metric"] in ("norm_acc", "task_acc"):
                summary[k][r["metric"]].append(r["value"])
        elif r["metric"] == "norm_acc":
            per_task[k][r["eval_set"]].append(r["value"])
    tasks = sorted({t for v in per_task.values() for t in v})
    keys = sorted(set(per_task) | set(summary))
    return tasks, [MergedSummary(*k, {t: Stat.of(v) for t, v in per_task[k].items()},
                                 Stat.of(summary[k]["norm_acc"]), Stat.of(summary[k]["task_acc"])) for k in keys]


# --- predictors ---------------------------------------------------------------------------
def predictors_present(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The run's predictors: those of ``catalogue.PREDICTORS`` in its order, then any other by name."""
    found = {r["metric"] for r in rows if r["method"] == ANALYSIS and r["eval_set"] == SUMMARY}
    known = [p.name for p in PREDICTORS]
    return [p for p in known if p in found] + sorted(found - set(known))


@dataclass(frozen=True)
class PredictorPoint:
    backbone: str
    recipe: str
    method: str
    task: str
    x: float  # the predictor's value for (backbone, recipe, task)
    dP: float  # mean over seeds, fraction
    dR: float


def predictor_points(rows: list[dict[str, Any]], predictor: str) -> list[PredictorPoint]:
    """One point per adapted (backbone, recipe, method, task) whose (backbone, recipe, task)
    has a value of ``predictor`` (for scatter plots; the statistics use ``prediction_tests``)."""
    x = predictor_values(rows).get(predictor, {})
    y = outcome_values(rows)
    points = []
    for (b, rc, m, t), dp in sorted(y.get("dP", {}).items(), key=lambda kv: tuple(map(str, kv[0]))):
        dr = y.get("dR", {}).get((b, rc, m, t))
        if (b, rc, t) in x and dr is not None:
            points.append(PredictorPoint(b, rc, m, t, x[(b, rc, t)], dp, dr))
    return points


# --- did the prediction hold? ---------------------------------------------------------------
TARGETS = ("id_acc", "dR", "dP")  # outcomes a predictor is tested against
TARGET_NAMES = {t: BY_NAME[t].header for t in TARGETS}
ACROSS_TASKS = "tasks"  # units: tasks; groups: (backbone, recipe, method)
ACROSS_MODELS = "models"  # units: (backbone, recipe); groups: (method, task); model-dependent predictors only
SCOPES = (ACROSS_TASKS, ACROSS_MODELS)


def predictor_values(rows: Iterable[dict[str, Any]]) -> dict[str, dict[tuple, float]]:
    """predictor -> {(backbone, recipe, task): value} (analysis rows; NaN values left out)."""
    vals: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["method"] == ANALYSIS and r["eval_set"] == SUMMARY and r["value"] is not None and math.isfinite(r["value"]):
            vals[r["metric"]][(r["backbone"], r["recipe"], r["task"])].append(r["value"])
    return {p: {k: float(np.mean(v)) for k, v in per.items()} for p, per in vals.items()}


def outcome_values(rows: Iterable[dict[str, Any]]) -> dict[str, dict[tuple, float]]:
    """target (``TARGETS``) -> {(backbone, recipe, method, task): mean over seeds} of the
    adapted models (not m0, not analysis rows)."""
    vals: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (r["eval_set"] == SUMMARY and r["metric"] in TARGETS and is_model_row(r) and r["method"] != PRETRAINED
                and r["task"] is not None and r["value"] is not None and math.isfinite(r["value"])):
            vals[r["metric"]][(r["backbone"], r["recipe"], r["method"], r["task"])].append(r["value"])
    return {t: {k: float(np.mean(v)) for k, v in per.items()} for t, per in vals.items()}


@dataclass(frozen=True)
class PredictionTest:
    """One predictor against one outcome in one scope (``SCOPES``).

    ``groups``: labels of the groups counted, in the order of ``result.rho``
    ((backbone, recipe, method) across tasks; (method, task) across models); ``units``:
    the units every one of them was measured on (tasks; (backbone, recipe) pairs);
    ``left_out``: groups left out because they miss a unit; ``result``: None when no
    group is complete."""

    predictor: str
    target: str
    scope: str
    groups: tuple[tuple, ...]
    units: tuple
    left_out: int
    result: Any  # analysis.statistics.GroupedSpearman | None


def _grid(x: dict[tuple, float], y: dict[tuple, float], scope: str):
    """(groups, units, X [G, U], Y [G, U], left_out) of the complete groups of one scope."""
    if scope == ACROSS_TASKS:
        units = sorted({k[2] for k in x}, key=str)
        candidates = sorted({k[:3] for k in y}, key=lambda g: tuple(map(str, g)))

        def keys(g, u):
            return (g[0], g[1], u), (g[0], g[1], g[2], u)
    else:
        units = sorted({k[:2] for k in x}, key=lambda u: tuple(map(str, u)))
        candidates = sorted({(k[2], k[3]) for k in y}, key=lambda g: tuple(map(str, g)))

        def keys(g, u):
            return (u[0], u[1], g[1]), (u[0], u[1], g[0], g[1])
    groups, xs, ys = [], [], []
    for g in candidates:
        ks = [keys(g, u) for u in units]
        if units and all(kx in x and ky in y for kx, ky in ks):
            groups.append(g)
            xs.append([x[kx] for kx, _ in ks])
            ys.append([y[ky] for _, ky in ks])
    return groups, units, np.array(xs), np.array(ys), len(candidates) - len(groups)


def prediction_tests(rows: list[dict[str, Any]], scope: str = ACROSS_TASKS,
                     predictor: str | None = None) -> list[PredictionTest]:
    """Every predictor of the run against every outcome of ``TARGETS``, in ``scope``:

    - ``"tasks"``: across the tasks, within each adapted (backbone, recipe, method): is the
      outcome worse on the tasks the predictor calls harder?
    - ``"models"``: across the (backbone, recipe) pairs, within each (method, task), for the
      predictors that depend on the model only (``analysis.predict.depends_on_model``):
      does the predictor pick the backbone that fares best?

    Each is ``analysis.statistics.grouped_spearman`` on the complete groups (seed 0, so a
    report is the same every time it is made). Order: ``predictors_present``, then ``TARGETS``;
    ``predictor``: that one only.
    """
    from ..analysis.predict import depends_on_model
    from ..analysis.statistics import grouped_spearman

    if scope not in SCOPES:
        raise ConfigError("scope", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
    preds, outcomes = predictor_values(rows), outcome_values(rows)
    out = []
    for p in predictors_present(rows):
        if (predictor is not None and p != predictor) or (scope == ACROSS_MODELS and not depends_on_model(p)):
            continue
        for target in TARGETS:
            if target not in outcomes:
                continue
            groups, units, xs, ys, left_out = _grid(preds.get(p, {}), outcomes[target], scope)
            result = grouped_spearman(xs, ys) if groups else None
            out.append(PredictionTest(p, target, scope, tuple(groups), tuple(units), left_out, result))
    return out


def model_free_task_values(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """predictor -> task -> value, for the predictors of the run that do not depend on the
    model (pixel OTDD: the same for every backbone and recipe; mean over them), in
    ``predictors_present`` order, tasks sorted."""
    from ..analysis.predict import depends_on_model

    preds = predictor_values(rows)
    out = {}
    for p in predictors_present(rows):
        if depends_on_model(p) or p not in preds:
            continue
        by_task: dict[str, list[float]] = defaultdict(list)
        for (_, _, task), v in preds[p].items():
            by_task[task].append(v)
        out[p] = {t: float(np.mean(by_task[t])) for t in sorted(by_task, key=str)}
    return out


@dataclass(frozen=True)
class PredictorRanks:
    """Per task, every (backbone, recipe) with the value and rank (1 = predicted to transfer
    best; ties share the best rank) under each predictor that depends on the model."""

    predictors: list[str]  # distances first, then by name
    tasks: dict[str, dict[tuple, dict[str, tuple[float, int]]]]  # task -> model -> predictor -> (value, rank)


def predictor_ranks(rows: list[dict[str, Any]]) -> PredictorRanks:
    """Every (backbone, recipe) ranked per task by each predictor that depends on the model."""
    from ..analysis.predict import depends_on_model

    preds = {p: v for p, v in predictor_values(rows).items() if depends_on_model(p)}
    order = sorted(preds, key=lambda p: (not lower_is_better(p), p))
    out: dict[str, dict[tuple, dict[str, tuple[float, int]]]] = {}
    for task in sorted({k[2] for v in preds.values() for k in v}, key=str):
        models = sorted({k[:2] for v in preds.values() for k in v if k[2] == task}, key=lambda m: tuple(map(str, m)))
        per_model: dict[tuple, dict[str, tuple[float, int]]] = {m: {} for m in models}
        for p in order:
            sign = 1.0 if lower_is_better(p) else -1.0
            vals = {m: preds[p][(*m, task)] for m in models if (*m, task) in preds[p]}
            for m, v in vals.items():
                per_model[m][p] = (v, 1 + sum(sign * w < sign * v for w in vals.values()))
        out[task] = per_model
    return PredictorRanks(order, out)


# --- cost: where the time of a run went ----------------------------------------------
OTHER_PHASE = "other"  # a cell's duration not inside any measured phase (set-up, sealing the artifact)


@dataclass(frozen=True)
class KindCost:
    """The done cells of one kind: ``count`` of them, ``seconds`` (their stored durations, summed)
    and, over the ``timed`` ones that recorded phases (``info["phase_seconds"]``; cells of runs
    made before phases were measured have none), the seconds of each phase summed (``phases``,
    report order, ``OTHER_PHASE`` last)."""

    kind: str
    count: int
    seconds: float
    timed: int
    phases: dict[str, float]

    def mean(self, phase: str | None = None) -> float:
        """Mean seconds per cell: of the whole cell (``phase`` None, over ``count``) or of a phase (over ``timed``)."""
        if phase is None:
            return self.seconds / self.count if self.count else math.nan
        return self.phases.get(phase, 0.0) / self.timed if self.timed else math.nan


def cell_costs(cells: Iterable[dict[str, Any]]) -> list[KindCost]:
    """Per kind of cell (in the order kinds first appear), the time its done cells took."""
    from ..core.timing import ordered

    acc: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c.get("status") != "done":
            continue
        a = acc.setdefault(c["kind"], {"count": 0, "seconds": 0.0, "timed": 0, "phases": defaultdict(float)})
        duration = float(c.get("duration") or 0.0)
        a["count"] += 1
        a["seconds"] += duration
        phases = (c.get("info") or {}).get("phase_seconds")
        if isinstance(phases, dict):
            a["timed"] += 1
            for name, s in phases.items():
                a["phases"][name] += float(s)
            a["phases"][OTHER_PHASE] += max(0.0, duration - sum(float(s) for s in phases.values()))
    out = []
    for kind, a in acc.items():
        names = ordered(n for n in a["phases"] if n != OTHER_PHASE)
        phases = {n: a["phases"][n] for n in names}
        if OTHER_PHASE in a["phases"]:
            phases[OTHER_PHASE] = a["phases"][OTHER_PHASE]
        out.append(KindCost(kind, a["count"], a["seconds"], a["timed"], phases))
    return out
