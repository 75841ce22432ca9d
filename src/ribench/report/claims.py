"""Paired comparisons across tasks, and their figures: the numbers behind docs/findings.md.

A published claim about adaptation ("EWC keeps more robustness than fine-tuning") is a
claim about tasks. So the unit of every interval here is a task:

- a method's value on a task is the mean over its seeds (``task_means``): the seeds of one
  task share its data, its split and its pretrained model, so they are not independent
  units of a claim about tasks, and counting them as such would shrink the interval;
- two methods are compared by their difference on each task they share (``paired``): the
  estimate is the mean difference, the interval the Student-t interval over the tasks
  (``analysis.statistics.t_interval``), and ``wins`` counts the tasks where the difference
  is positive; the seed-to-seed spread is reported beside it (``seed_sd``), not folded in;
- a claim holds when the interval lies on the claimed side of 0, fails when it lies on the
  other side, and is "too close to tell" when it contains 0 (``verdict``).

Rows are ``ResultsStore.metric_rows()`` dicts; accuracies are fractions here and
percentage points in the figures. The figures use matplotlib's object API (no pyplot),
in the report's style (``report.plots.STYLE``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from ..analysis.statistics import t_interval
from ..core import rows as names

CONFIDENCE = 0.95
Rows = Iterable[Mapping[str, Any]]


@dataclass(frozen=True)
class Comparison:
    """A mean over tasks with its t-interval: of one method's values (``summary``) or of the
    per-task difference between two methods (``paired``)."""

    per_task: dict[str, float]
    mean: float
    lo: float
    hi: float
    seed_sd: float = math.nan  # mean over tasks of the standard deviation over seeds
    wins: int = 0  # tasks with a value > 0

    @property
    def n(self) -> int:
        return len(self.per_task)

    def verdict(self, claimed: str = "greater") -> str:
        """``"holds"`` when the interval lies on the claimed side of 0 (``"greater"`` or
        ``"less"``), ``"fails"`` when it lies on the other side, else ``"too close to tell"``
        (also with fewer than 2 tasks, where there is no interval)."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return "too close to tell"
        sign = 1 if claimed == "greater" else -1
        lo, hi = sorted((sign * self.lo, sign * self.hi))
        return "holds" if lo > 0 else "fails" if hi < 0 else "too close to tell"

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"+3.1 [+1.2, +5.0]"`` in percentage points by default."""
        f = f"{{:+.{digits}f}}"
        if not math.isfinite(self.lo):
            return f.format(self.mean * scale)
        return f"{f.format(self.mean * scale)} [{f.format(self.lo * scale)}, {f.format(self.hi * scale)}]"


def _interval(values: list[float]) -> tuple[float, float, float]:
    mean = float(np.mean(values)) if values else math.nan
    lo, hi = t_interval(values, CONFIDENCE) if len(values) > 1 else (math.nan, math.nan)
    return mean, lo, hi


def seed_values(rows: Rows, metric: str, *, method: str, backbone: str | None = None, recipe: str | None = None,
                eval_set: str = names.SUMMARY, seeds: Iterable[int] | None = None) -> dict[str, list[float]]:
    """task -> the values of ``metric`` on ``eval_set`` of every seed of ``method`` (NaN left out).
    ``backbone``/``recipe``/``seeds`` None: any."""
    keep = set(seeds) if seeds is not None else None
    out: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if (r["method"] == method and r["eval_set"] == eval_set and r["metric"] == metric
                and (keep is None or r["seed"] in keep)
                and (backbone is None or r["backbone"] == backbone) and (recipe is None or r["recipe"] == recipe)
                and r["value"] is not None and math.isfinite(r["value"])):
            out[r["task"]].append(float(r["value"]))
    return dict(out)


def task_means(per_seed: Mapping[str, list[float]]) -> dict[str, float]:
    """task -> mean over seeds."""
    return {t: float(np.mean(v)) for t, v in per_seed.items() if v}


def _seed_sd(*per_seed: Mapping[str, list[float]]) -> float:
    sds = [float(np.std(v, ddof=1)) for p in per_seed for v in p.values() if len(v) > 1]
    return float(np.mean(sds)) if sds else math.nan


def summary(per_seed: Mapping[str, list[float]]) -> Comparison:
    """One method's values over its tasks (seeds averaged first)."""
    means = task_means(per_seed)
    mean, lo, hi = _interval(list(means.values()))
    return Comparison(means, mean, lo, hi, _seed_sd(per_seed), sum(v > 0 for v in means.values()))


def paired(a: Mapping[str, list[float]], b: Mapping[str, list[float]]) -> Comparison:
    """a − b on every task both have (seeds averaged first on each side)."""
    ma, mb = task_means(a), task_means(b)
    diff = {t: ma[t] - mb[t] for t in ma if t in mb}
    mean, lo, hi = _interval(list(diff.values()))
    return Comparison(diff, mean, lo, hi, _seed_sd(a, b), sum(v > 0 for v in diff.values()))


def pretrained_accuracy(rows: Rows, *, backbone: str | None = None, recipe: str | None = None,
                        eval_sets: Iterable[str] | None = None) -> dict[str, list[float]]:
    """eval set -> [accuracy of the pretrained model m0] (one value: m0 has no fine-tuning seed)."""
    keep = set(eval_sets) if eval_sets is not None else None
    out: dict[str, list[float]] = {}
    for r in rows:
        if (r["method"] == names.PRETRAINED and r["metric"] == "accuracy" and not names.is_special(r["eval_set"])
                and (keep is None or r["eval_set"] in keep)
                and (backbone is None or r["backbone"] == backbone) and (recipe is None or r["recipe"] == recipe)):
            out.setdefault(r["eval_set"], []).append(float(r["value"]))
    return out


def curve(rows: Rows, metric: str = "R", *, method: str = "wise_ft", backbone: str | None = None,
          recipe: str | None = None) -> dict[str, dict[float, list[float]]]:
    """task -> alpha -> [value of every seed] of the interpolation curve rows (``curve/alpha=<a>``)."""
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        a = names.parse_curve(r["eval_set"]) if r["method"] == method and r["metric"] == metric else None
        if (a is not None and r["value"] is not None and (backbone is None or r["backbone"] == backbone)
                and (recipe is None or r["recipe"] == recipe)):
            out[r["task"]][a].append(float(r["value"]))
    return {t: dict(sorted(v.items())) for t, v in out.items()}


def at_alpha(curves: Mapping[str, Mapping[float, list[float]]], alpha: float) -> dict[str, list[float]]:
    """task -> the seeds' values at one alpha of ``curve``'s result."""
    return {t: list(c[alpha]) for t, c in curves.items() if alpha in c}


def merged_values(rows: Rows, method: str, metric: str = "norm_acc", *, backbone: str | None = None,
                  recipe: str | None = None) -> list[float]:
    """The summary ``metric`` of every seed's model merged over all tasks (one value per seed)."""
    return [float(r["value"]) for r in rows
            if r["method"] == method and r["task"] == names.MERGED and r["eval_set"] == names.SUMMARY
            and r["metric"] == metric and r["value"] is not None
            and (backbone is None or r["backbone"] == backbone) and (recipe is None or r["recipe"] == recipe)]


def over_seeds(values: list[float]) -> Comparison:
    """Mean and t-interval over seeds, for a quantity with one value per seed (a merged model)."""
    mean, lo, hi = _interval(values)
    return Comparison({str(i): v for i, v in enumerate(values)}, mean, lo, hi, wins=sum(v > 0 for v in values))


# --- figures --------------------------------------------------------------------------------------------------
def _style():
    from .plots import STYLE

    return rc_context(STYLE)


def _figure(width: float = 6.4, height: float = 3.4) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def intervals_figure(items: list[tuple[str, Comparison]], *, xlabel: str, title: str, scale: float = 100.0,
                     zero: bool = True) -> Figure:
    """One row per item: its tasks as small grey dots, the mean as a dot and its 95% interval as a bar."""
    with _style():
        fig = _figure(6.4, 0.5 + 0.42 * len(items))
        ax = fig.add_subplot()
        for i, (label, c) in enumerate(items):
            y = len(items) - 1 - i
            ax.scatter([v * scale for v in c.per_task.values()], [y] * c.n, s=10, color="#b0b0b0", zorder=1)
            if math.isfinite(c.lo):
                ax.plot([c.lo * scale, c.hi * scale], [y, y], color="#1f77b4", lw=2.5, zorder=2)
            ax.scatter([c.mean * scale], [y], s=36, color="#1f77b4", zorder=3)
        ax.set_yticks(range(len(items)), [label for label, _ in reversed(items)])
        if zero:
            ax.axvline(0, color="#444444", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    return fig


def per_task_figure(series: Mapping[str, Mapping[str, float]], *, ylabel: str, title: str, scale: float = 100.0,
                    order: list[str] | None = None) -> Figure:
    """Grouped bars: one group per task, one bar per series (e.g. a method's ΔR on each task)."""
    from .plots import PALETTE

    tasks = order or sorted({t for s in series.values() for t in s})
    with _style():
        fig = _figure(7.2, 3.2)
        ax = fig.add_subplot()
        width = 0.8 / max(len(series), 1)
        for j, (label, s) in enumerate(series.items()):
            xs = [i + (j - (len(series) - 1) / 2) * width for i, t in enumerate(tasks) if t in s]
            ax.bar(xs, [s[t] * scale for t in tasks if t in s], width, label=label, color=PALETTE[j % len(PALETTE)])
        ax.axhline(0, color="#444444", lw=0.8)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if len(series) > 1:
            ax.legend(frameon=False, fontsize=8)
    return fig


def scatter_figure(points: list[tuple[str, float, float]], *, xlabel: str, ylabel: str, title: str,
                   xscale: float = 1.0, yscale: float = 100.0, diagonal: bool = False) -> Figure:
    """Labelled points (label, x, y), optionally with the y = x line."""
    return scatter_panels([(title, points, xlabel)], ylabel=ylabel, xscale=xscale, yscale=yscale, diagonal=diagonal)


def scatter_panels(panels: list[tuple[str, list[tuple[str, float, float]], str]], *, ylabel: str,
                   xscale: float = 1.0, yscale: float = 100.0, diagonal: bool = False) -> Figure:
    """Side-by-side scatter plots sharing the y axis, one per (title, points, xlabel)."""
    with _style():
        fig = _figure(5.2 * len(panels), 4.0)
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (title, points, xlabel) in zip(axes, panels):
            _scatter(ax, points, xlabel, title, xscale, yscale, diagonal)
        axes[0].set_ylabel(ylabel)
    return fig


def _scatter(ax, points, xlabel, title, xscale, yscale, diagonal) -> None:
    xs = [x * xscale for _, x, _ in points]
    ys = [y * yscale for _, _, y in points]
    ax.scatter(xs, ys, s=28, color="#1f77b4", zorder=2)
    for (label, _, _), x, y in zip(points, xs, ys):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    if diagonal and points:
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], color="#444444", lw=0.8, ls="--", zorder=1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)


def lines_figure(series: Mapping[str, list[tuple[float, Comparison]]], *, xlabel: str, ylabel: str, title: str,
                 scale: float = 100.0) -> Figure:
    """One line per series through (x, mean) with the 95% interval as a band (a curve over a
    mixing coefficient, accuracy against the number of tasks merged...)."""
    from .plots import PALETTE

    with _style():
        fig = _figure(5.6, 3.6)
        ax = fig.add_subplot()
        for j, (label, pts) in enumerate(series.items()):
            color = PALETTE[j % len(PALETTE)]
            xs = [x for x, _ in pts]
            ax.plot(xs, [c.mean * scale for _, c in pts], marker="o", ms=3.5, color=color, label=label)
            lo = [c.lo * scale for _, c in pts]
            if all(math.isfinite(v) for v in lo):
                ax.fill_between(xs, lo, [c.hi * scale for _, c in pts], color=color, alpha=0.15, lw=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if len(series) > 3:  # many lines: the legend beside the axes, never over the data
            ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        elif series:
            ax.legend(frameon=False, fontsize=8)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (parent folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _style():
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
    return path
