"""Tables of results, built from the store's flat metric rows.

- ``summary_table``: one row per (backbone, recipe, method), mean and 95% t-interval over
  (task, seed) runs of the protocol's numbers; the pretrained model m0 is the first row
  of each (backbone, recipe) group.
- ``inheritance_tables``: per (backbone, recipe, method), fine-tuning task (rows) by
  eval set (columns): accuracy, and its change from m0. Corruption sets are folded into
  one column, their mean accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

SUMMARY = "*"
ANALYSIS = "analysis"  # rows of dataset distances and transferability scores, not of a model
OPTIONAL_COLUMNS = {"robust_acc", "transfer_robust_acc"}  # shown only when some row has them
SUMMARY_COLUMNS = [
    ("id_acc", "ID acc"), ("R", "R"), ("dR", "ΔR"), ("P_acc", "P acc"), ("dP", "ΔP"),
    ("corr_acc", "corr acc"), ("mCE", "mCE"), ("robust_acc", "robust acc"),
    ("transfer_robust_acc", "transfer acc"), ("id_ece", "ECE"), ("id_nll", "NLL"),
    ("trainable_params", "trainable"), ("train_seconds", "train s"),
]


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


def _fmt(values: list[float], metric: str, spread: bool = True) -> str:
    if not values:
        return "–"
    m = float(np.mean(values))
    if metric == "trainable_params":
        return f"{m:,.0f}"
    if metric == "train_seconds":
        return f"{m:.1f}"
    if metric in ("id_nll", "mCE", "rel_mCE"):
        text = f"{m:.3f}"
    elif metric in ("dR", "dP"):
        text = f"{100 * m:+.1f}"
    else:
        text = f"{100 * m:.1f}"
    if spread and len(values) > 1:
        s = float(np.std(values, ddof=1))
        text += f" ± {s:.3f}" if metric in ("id_nll", "mCE", "rel_mCE") else f" ± {100 * s:.1f}"
    return text


def _method_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(r["method"])
    return sorted(seen, key=lambda m: (m != "pretrained", seen.index(m)))


CONSOLE_COLUMNS = ("id_acc", "R", "dR", "P_acc", "dP", "corr_acc", "mCE", "id_ece")
NO_INTERVAL = {"trainable_params", "train_seconds"}  # settings and costs, not results: means only
ONE_RUN = "n/a: one run"
INTERVAL_NOTE = ("Each cell: the mean over the row's (task, seed) runs and, in brackets, its 95% t-interval "
                 "(mean ± t(0.975, n−1)·s/√n over those n runs, each run one unit); \"n/a: one run\" where the row "
                 "has a single run (m0, or one task and one seed). Parameters and seconds: means only.")


def _unit(metric: str):
    """The formatter of one value of ``metric``: %, signed points (ΔR, ΔP) or a ratio."""
    if metric in ("id_nll", "mCE", "rel_mCE"):
        return lambda v: f"{v:.3f}"
    if metric in ("dR", "dP"):
        return lambda v: f"{100 * v:+.1f}"
    return lambda v: f"{100 * v:.1f}"


def format_stat(stat, metric: str, interval: bool = True) -> str:
    """A summary cell from an ``aggregate.Stat``: the mean in the metric's unit and, with
    ``interval``, its 95% t-interval in brackets ("n/a: one run" for a single run).
    Parameters and seconds (``NO_INTERVAL``): the mean only."""
    if stat is None or stat.n == 0:
        return "–"
    if metric == "trainable_params":
        return f"{stat.mean:,.0f}"
    if metric == "train_seconds":
        return f"{stat.mean:.1f}"
    fmt = _unit(metric)
    text = fmt(stat.mean)
    if interval:
        if stat.n < 2:
            text += f" ({ONE_RUN})"
        elif np.isfinite(stat.lo) and np.isfinite(stat.hi):
            text += f" [{fmt(stat.lo)}, {fmt(stat.hi)}]"
    return text


def summary_table(rows: list[dict[str, Any]], compact: bool = False) -> Table:
    """One row per (backbone, recipe, method) (``aggregate.summarize_methods``, as the HTML
    report): the mean and 95% t-interval of each summary metric over tasks and seeds.
    ``compact``: the console's version, means only and fewer columns."""
    from .aggregate import summarize_methods

    summaries = summarize_methods(rows)
    present = {m for s in summaries for m in s.stats}
    cols = [(m, h) for m, h in SUMMARY_COLUMNS
            if (not compact or m in CONSOLE_COLUMNS) and (m not in OPTIONAL_COLUMNS or m in present)]
    headers = ["backbone", "recipe", "method"] + [h for _, h in cols]
    body = [[s.backbone, s.recipe, s.method, *(format_stat(s.stats.get(m), m, interval=not compact) for m, _ in cols)]
            for s in summaries]
    what = "mean over tasks and seeds" if compact else "mean [95% t-interval] over (task, seed) runs"
    return Table(f"Summary (accuracies in %, {what})", headers, body)


def inheritance_tables(rows: list[dict[str, Any]], layout: dict[str, Any]) -> list[Table]:
    corr = set(layout.get("corruptions", {}))
    columns = [layout["pretrain"], *layout["tasks"], *[e for e in layout.get("eval_sets", []) if e not in corr]]
    if corr:
        columns.append("corruptions")

    def column(es: str) -> str | None:
        return "corruptions" if es in corr else (es if es in columns else None)

    acc: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        col = column(r["eval_set"])
        if r["metric"] == "accuracy" and col is not None and r["value"] is not None:
            acc[(r["backbone"], r["recipe"], r["method"], r["task"])][col].append(r["value"])
    out = []
    order = _method_order(rows)
    for b, rc in sorted({(k[0], k[1]) for k in acc}):
        base = acc.get((b, rc, "pretrained", None), {})
        base_mean = {c: float(np.mean(v)) for c, v in base.items()}
        for m in order:
            if m == "pretrained":
                continue
            tasks = [t for t in layout["tasks"] if (b, rc, m, t) in acc]
            if not tasks:
                continue
            body = [["m0 (pretrained)", *(f"{100 * base_mean[c]:.1f}" if c in base_mean else "–" for c in columns)]]
            for t in tasks:
                cells = []
                for c in columns:
                    v = acc[(b, rc, m, t)].get(c)
                    if not v:
                        cells.append("–")
                        continue
                    a = float(np.mean(v))
                    d = f" ({100 * (a - base_mean[c]):+.1f})" if c in base_mean else ""
                    mark = "*" if c == t else ""
                    cells.append(f"{mark}{100 * a:.1f}{d}")
                body.append([t, *cells])
            out.append(Table(f"{b} / {rc} / {m}: fine-tuned on (rows) → evaluated on (columns)",
                             ["fine-tuned on", *columns], body))
    return out


def diagnostics_table(rows: list[dict[str, Any]]) -> Table | None:
    """What changed inside the models (diagnose cells), means ± sd over tasks and seeds."""
    from .aggregate import DIAG_COLUMNS, diagnostic_summaries

    summaries = diagnostic_summaries(rows)
    if not summaries:
        return None
    present = {m for stats in summaries.values() for m in stats}
    cols = [c for c in DIAG_COLUMNS if c[0] in present]
    out = []
    for (b, rc, m), stats in summaries.items():
        cells = [str(b), str(rc), str(m)]
        for metric, *_ in cols:
            st = stats.get(metric)
            cells.append("–" if st is None or st.n == 0 else f"{st.mean:.3f}" + (f" ± {st.std:.3f}" if st.n > 1 else ""))
        out.append(cells)
    return Table("What changed inside the models (vs m0)", ["backbone", "recipe", "method", *(c[1] for c in cols)], out)


MERGED = "merged"  # task label of a model merged over the run's tasks


def merged_table(rows: list[dict[str, Any]]) -> Table | None:
    """Merged models (task label ``merged``) against the individually fine-tuned models:
    per task, accuracy of the merged model / accuracy of the fine-tuned model of that task
    (``norm_acc``, %), then the mean over tasks and the mean absolute accuracy; mean ± std
    over seeds. None when the run has no merged model."""
    vals: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    tasks: list[str] = []
    for r in rows:
        if r["task"] != MERGED or r["value"] is None:
            continue
        k = (r["backbone"], r["recipe"], r["method"])
        if r["metric"] == "norm_acc" and r["eval_set"] != SUMMARY:
            vals[k][r["eval_set"]].append(r["value"])
            if r["eval_set"] not in tasks:
                tasks.append(r["eval_set"])
        elif r["eval_set"] == SUMMARY and r["metric"] in ("norm_acc", "task_acc"):
            vals[k][f"*{r['metric']}"].append(r["value"])
    if not vals:
        return None
    tasks.sort()
    body = [[*k, *(_fmt(v.get(t, []), "norm_acc") for t in tasks), _fmt(v.get("*norm_acc", []), "norm_acc"),
             _fmt(v.get("*task_acc", []), "task_acc")] for k, v in sorted(vals.items())]
    return Table("Merged models: accuracy normalised by the individually fine-tuned models (%, mean ± std over seeds)",
                 ["backbone", "recipe", "method", *tasks, "mean normalised", "mean accuracy"], body)


def backbone_names(spec: dict) -> list[str]:
    """The spec's backbones by name (an outside backbone's table by its ``name``)."""
    return [b.get("name", "?") if isinstance(b, dict) else str(b) for b in spec.get("backbones") or []]


def failures_table(cells: list[dict[str, Any]]) -> Table | None:
    failed = [c for c in cells if c["status"] == "failed"]
    if not failed:
        return None
    body = [[c["kind"], "/".join(str(v) for v in c["labels"].values() if v is not None), c["error"] or ""] for c in failed]
    return Table("Failed cells", ["kind", "cell", "error"], body)
