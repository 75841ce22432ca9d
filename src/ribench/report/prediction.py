"""Did the prediction hold? Predictors measured before fine-tuning (OTDD, transferability
scores: method ``analysis`` rows) against what fine-tuning then did (ID accuracy, ΔR, ΔP).

The numbers come from ``aggregate.prediction_tests`` (one computation, with
``analysis.statistics.grouped_spearman``); this module only lays them out as ``Table``s,
which the Markdown report and the HTML report both show, so the two agree to the digit.

- across tasks, within each (backbone, recipe, method): Spearman's ρ per group, the mean
  over groups with a bootstrap interval over tasks and a permutation p-value (task labels
  permuted alike in every group);
- across (backbone, recipe) pairs, within each (method, task), for predictors that depend
  on the model (not pixel-space OTDD);
- with fewer than ``MIN_UNITS`` units or distinct predictor values: "too few to tell".
"""

from __future__ import annotations

import math
from typing import Any

from ..analysis.statistics import MIN_UNITS
from . import aggregate as agg
from .tables import Table

LOWER_IS_BETTER = {"otdd", "otdd_features"}  # distances; every other predictor: higher = more transferable
TOO_FEW = "too few to tell"
UNIT_NAMES = {agg.ACROSS_TASKS: "tasks", agg.ACROSS_MODELS: "models"}
GROUP_HEADERS = {agg.ACROSS_TASKS: ["backbone", "recipe", "method"], agg.ACROSS_MODELS: ["method", "task"]}
TITLES = {
    agg.ACROSS_TASKS: "Across tasks, within each (backbone, recipe, method): mean Spearman ρ over groups, "
                      "95% bootstrap interval over tasks, permutation p (task labels permuted alike in every group)",
    agg.ACROSS_MODELS: "Across backbones and recipes, within each (method, task): mean Spearman ρ over groups, "
                       "95% bootstrap interval over models, permutation p (model labels permuted alike in every group)",
}

PREDICTION_GUIDE = f"""\
Before fine-tuning, ribench measures each task's distance from the pretraining data
(OTDD, on pixels and on the pretrained model's features; lower = closer) and how well the
frozen pretrained features suit it (transferability scores; higher = better). The tables
test each predictor against what fine-tuning then did, counting every task once:
Spearman's ρ over the tasks inside each (backbone, recipe, method), then the mean over
those groups; the interval resamples tasks and the p-value permutes task labels, each
alike in every group, since the groups share their tasks. Across backbones and recipes
only predictors that depend on the model are tested (pixel OTDD is the same for all of
them). With fewer than {MIN_UNITS} tasks (or models), or fewer than {MIN_UNITS} distinct
predictor values in a group, a table says "{TOO_FEW}" instead of an interval and a
p-value. Expect a distance to correlate negatively with ID acc and ΔP, a transferability
score positively. docs/analysis.md explains the statistics."""


def predictor_name(p: str) -> str:
    return agg.PREDICTOR_NAMES.get(p, p)


def stat_cells(t: agg.PredictionTest) -> list[str]:
    """[groups, units, distinct values, mean ρ, interval, p] of one test, as both reports show them."""
    r = t.result
    if r is None:
        return ["0", str(len(t.units)), "–", "–", "no complete group", "no complete group"]
    counts = [str(r.n_groups), str(r.n_units), str(r.min_distinct) if r.n_groups else "–"]
    if r.n_groups == 0:
        why = TOO_FEW if r.n_units < 2 else "undefined: constant in every group"
        return counts + ["–", why, why]
    rho = f"{r.mean_rho:+.2f}"
    if not r.enough:
        return counts + [rho, TOO_FEW, TOO_FEW]
    lo, hi = r.ci
    interval = f"[{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else "–"
    return counts + [rho, interval, f"{r.p_value:.3g}"]


def correlation_text(t: agg.PredictionTest) -> str:
    """One line for a figure title: "mean ρ = +0.58 [+0.10, +0.90], p = 0.031 (12 groups x 6 tasks)"."""
    groups, units, _, rho, interval, p = stat_cells(t)
    size = f"({groups} groups x {units} {UNIT_NAMES[t.scope]})"
    if rho == "–":
        return f"ρ {interval if t.result is not None else 'undefined'} {size}"
    if interval == TOO_FEW:
        return f"mean ρ = {rho}, {TOO_FEW} {size}"
    return f"mean ρ = {rho} {interval}, p = {p} {size}"


def _order(tests: list[agg.PredictionTest]) -> list[agg.PredictionTest]:
    """Predictors in ``predictors_present`` order (distances first), then ``TARGETS``."""
    preds = list(dict.fromkeys(t.predictor for t in tests))
    return sorted(tests, key=lambda t: (preds.index(t.predictor), agg.TARGETS.index(t.target)))


def prediction_tables(rows: list[dict[str, Any]], scope: str = agg.ACROSS_TASKS) -> tuple[Table, Table] | None:
    """(summary, per group) tables of one scope; None when the scope has no test.

    None also when every test has a single unit (one task, or one (backbone, recipe)):
    ``prediction_notes`` says so. Summary: one row per (predictor, outcome) with the groups counted, the units, the
    fewest distinct predictor values in a group, the mean ρ, its interval and p.
    Per group: ρ of each group with each outcome, its units and distinct values."""
    tests = _order(agg.prediction_tests(rows, scope))
    if not tests or all(len(t.units) < 2 for t in tests):
        return None
    unit = UNIT_NAMES[scope]
    summary = Table(TITLES[scope], ["predictor", "outcome", "groups", unit, "distinct values", "mean ρ",
                                    "95% interval", "p"],
                    [[predictor_name(t.predictor), agg.TARGET_NAMES[t.target], *stat_cells(t)] for t in tests])
    per: dict[tuple, dict[str, Any]] = {}
    for t in tests:
        if t.result is None:
            continue
        for g, rho, d in zip(t.groups, t.result.rho, t.result.distinct):
            entry = per.setdefault((t.predictor, g), {"units": t.result.n_units, "distinct": d})
            entry[t.target] = rho
    targets = [tg for tg in agg.TARGETS if any(t.target == tg for t in tests)]
    body = [[predictor_name(p), *map(str, g), str(e["units"]), str(e["distinct"]),
             *("–" if tg not in e or not math.isfinite(e[tg]) else f"{e[tg]:+.2f}" for tg in targets)]
            for (p, g), e in per.items()]
    detail = Table(f"Spearman ρ per group ({'across tasks' if scope == agg.ACROSS_TASKS else 'across models'})",
                   ["predictor", *GROUP_HEADERS[scope], unit, "distinct values",
                    *(f"ρ with {agg.TARGET_NAMES[tg]}" for tg in targets)], body)
    return summary, detail


def prediction_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Plain sentences under the tables: which predictors do not depend on the model (pixel
    OTDD: it ranks no backbone), and when there is one (backbone, recipe) only."""
    from ..analysis.predict import depends_on_model

    preds = agg.predictor_values(rows)
    notes = []
    for p in agg.predictors_present(rows):
        if depends_on_model(p) or p not in preds:
            continue
        by_task: dict[str, list[float]] = {}
        for (_, _, task), v in preds[p].items():
            by_task.setdefault(task, []).append(v)
        values = ", ".join(f"{task} {sum(v) / len(v):.3g}" for task, v in sorted(by_task.items(), key=lambda kv: str(kv[0])))
        notes.append(f"{predictor_name(p)}, `{p}`, is computed from the images alone: it is the same for every "
                     f"backbone and recipe, so it does not rank backbones or recipes, only tasks ({values}; "
                     "lower = closer to the pretraining data).")
    models = {k[:2] for p, v in preds.items() if depends_on_model(p) for k in v}
    if len(models) == 1:
        notes.append(f"Across backbones and recipes: {TOO_FEW} (this run has one backbone and recipe).")
    return notes


def ranking_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """For each task: every (backbone, recipe) with the value and rank (1 = best; ties share
    the best rank) of each predictor that depends on the model; ``prediction_notes`` says
    why the others are not ranked (``prediction_notes``). No table when no such predictor was measured."""
    from ..analysis.predict import depends_on_model

    preds = {p: v for p, v in agg.predictor_values(rows).items() if depends_on_model(p)}
    names = sorted(preds, key=lambda p: (p not in LOWER_IS_BETTER, p))
    tasks = sorted({k[2] for v in preds.values() for k in v}, key=str)
    out = []
    for task in tasks:
        models = sorted({k[:2] for v in preds.values() for k in v if k[2] == task}, key=lambda m: tuple(map(str, m)))
        ranks: dict[str, dict[tuple, int]] = {}
        for name in names:
            sign = 1.0 if name in LOWER_IS_BETTER else -1.0
            vals = {m: sign * preds[name][(*m, task)] for m in models if (*m, task) in preds[name]}
            ranks[name] = {m: 1 + sum(w < v for w in vals.values()) for m, v in vals.items()}
        body = []
        for m in models:
            cells = [str(m[0]), str(m[1])]
            for name in names:
                v = preds[name].get((*m, task))
                cells.append("–" if v is None else f"{v:.3g} (#{ranks[name][m]})")
            body.append(cells)
        out.append(Table(f"Task {task}: predictors before fine-tuning (rank 1 = predicted to transfer best)",
                         ["backbone", "recipe", *names], body))
    return out
