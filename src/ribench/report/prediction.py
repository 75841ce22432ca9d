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

The ranking tables and the notes on predictors that rank no backbone come from
``aggregate.predictor_ranks`` and ``aggregate.model_free_task_values``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from . import aggregate as agg
from .catalogue import MISSING, TOO_FEW, predictor_title
from .tables import Table

UNIT_NAMES = {agg.ACROSS_TASKS: "tasks", agg.ACROSS_MODELS: "models"}
GROUP_HEADERS = {agg.ACROSS_TASKS: ["backbone", "recipe", "method"], agg.ACROSS_MODELS: ["method", "task"]}
TITLES = {
    agg.ACROSS_TASKS: "Across tasks, within each (backbone, recipe, method): mean Spearman ρ over groups, "
                      "95% bootstrap interval over tasks, permutation p (task labels permuted alike in every group)",
    agg.ACROSS_MODELS: "Across backbones and recipes, within each (method, task): mean Spearman ρ over groups, "
                       "95% bootstrap interval over models, permutation p (model labels permuted alike in every group)",
}
TABLE_IDS = {agg.ACROSS_TASKS: "correlation-table", agg.ACROSS_MODELS: "model-correlation-table"}


def stat_cells(t: agg.PredictionTest) -> list[str]:
    """[groups, units, distinct values, mean ρ, interval, p] of one test, as both reports show them."""
    r = t.result
    if r is None:
        return ["0", str(len(t.units)), MISSING, MISSING, "no complete group", "no complete group"]
    counts = [str(r.n_groups), str(r.n_units), str(r.min_distinct) if r.n_groups else MISSING]
    if r.n_groups == 0:
        why = TOO_FEW if r.n_units < 2 else "undefined: constant in every group"
        return counts + [MISSING, why, why]
    rho = f"{r.mean_rho:+.2f}"
    if not r.enough:
        return counts + [rho, TOO_FEW, TOO_FEW]
    lo, hi = r.ci
    interval = f"[{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else MISSING
    return counts + [rho, interval, f"{r.p_value:.3g}"]


def correlation_text(t: agg.PredictionTest) -> str:
    """One line for a figure title: "mean ρ = +0.58 [+0.10, +0.90], p = 0.031 (12 groups x 6 tasks)"."""
    groups, units, _, rho, interval, p = stat_cells(t)
    size = f"({groups} groups x {units} {UNIT_NAMES[t.scope]})"
    if rho == MISSING:
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
                    [[predictor_title(t.predictor), agg.TARGET_NAMES[t.target], *stat_cells(t)] for t in tests],
                    label_columns=2, table_id=TABLE_IDS[scope])
    per: dict[tuple, dict[str, Any]] = {}
    for t in tests:
        if t.result is None:
            continue
        for g, rho, d in zip(t.groups, t.result.rho, t.result.distinct):
            entry = per.setdefault((t.predictor, g), {"units": t.result.n_units, "distinct": d})
            entry[t.target] = rho
    targets = [tg for tg in agg.TARGETS if any(t.target == tg for t in tests)]
    body = [[predictor_title(p), *map(str, g), str(e["units"]), str(e["distinct"]),
             *(MISSING if tg not in e or not math.isfinite(e[tg]) else f"{e[tg]:+.2f}" for tg in targets)]
            for (p, g), e in per.items()]
    detail = Table(f"Spearman ρ per group ({'across tasks' if scope == agg.ACROSS_TASKS else 'across models'})",
                   ["predictor", *GROUP_HEADERS[scope], unit, "distinct values",
                    *(f"ρ with {agg.TARGET_NAMES[tg]}" for tg in targets)], body,
                   label_columns=len(GROUP_HEADERS[scope]) + 1, table_id=f"{TABLE_IDS[scope]}-groups")
    return summary, detail


def prediction_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Plain sentences under the tables: which predictors do not depend on the model (pixel
    OTDD: it ranks no backbone), and when there is one (backbone, recipe) only."""
    notes = []
    for p, by_task in agg.model_free_task_values(rows).items():
        values = ", ".join(f"{task} {v:.3g}" for task, v in by_task.items())
        notes.append(f"{predictor_title(p)}, `{p}`, is computed from the images alone: it is the same for every "
                     f"backbone and recipe, so it does not rank backbones or recipes, only tasks ({values}; "
                     "lower = closer to the pretraining data).")
    models = {m for per_model in agg.predictor_ranks(rows).tasks.values() for m in per_model}
    if len(models) == 1:
        notes.append(f"Across backbones and recipes: {TOO_FEW} (this run has one backbone and recipe).")
    return notes


def ranking_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """For each task: every (backbone, recipe) with the value and rank (1 = best; ties share
    the best rank) of each predictor that depends on the model (``aggregate.predictor_ranks``);
    ``prediction_notes`` says why the others are not ranked. No table when no such predictor
    was measured."""
    ranks = agg.predictor_ranks(rows)
    out = []
    for task, per_model in ranks.tasks.items():
        body = [[str(m[0]), str(m[1]),
                 *(f"{v[p][0]:.3g} (#{v[p][1]})" if p in v else MISSING for p in ranks.predictors)]
                for m, v in per_model.items()]
        out.append(Table(f"Task {task}: predictors before fine-tuning (rank 1 = predicted to transfer best)",
                         ["backbone", "recipe", *ranks.predictors], body, label_columns=2,
                         table_id="ranking-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(task))))
    return out


@dataclass(frozen=True)
class PredictionSection:
    """What "Did the prediction hold?" shows, in both reports: the (summary, per group)
    tables of each scope with data, the notes, and the per-task ranking tables."""

    tables: list[Table]
    notes: list[str]
    rankings: list[Table]


def prediction_section(rows: list[dict[str, Any]]) -> PredictionSection | None:
    """The section's content; None when the run has no test across tasks (no analysis rows)."""
    across = [prediction_tables(rows, scope) for scope in agg.SCOPES]
    if across[0] is None:
        return None
    return PredictionSection([t for pair in across if pair for t in pair], prediction_notes(rows), ranking_tables(rows))
