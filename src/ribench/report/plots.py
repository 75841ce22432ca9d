"""The report's figures, drawn with matplotlib's object API (no pyplot, no global backend).

``build_plots(run)`` returns every figure the run has data for, as ``Plot`` objects
(a slug for file names, the report section, a title, a caption, the matplotlib Figure);
a section without data has no plots. ``figure_svg`` renders one as inline SVG (text kept
as text, ids prefixed so several SVGs can share one page), ``write_figures`` saves each as
``<out_dir>/figures/<slug>.png`` with an ``index.json`` listing them for the Markdown report.

Accuracies are plotted in %, changes in percentage points.
"""

from __future__ import annotations

import io
import json
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from . import aggregate as agg
from .catalogue import M0_PROBE_LABEL, MASK_MARK, method_label, predictor_title
from .prediction import correlation_text
from ..core.rows import TRAIN_LOSS, VAL_ACC
from .rundata import FIGURE_INDEX, FIGURES_DIR, RunData, load_run, read_figure_index

SECTIONS = {
    "inheritance": "Inheritance matrices",
    "radar": "Accuracy per eval set before and after adaptation",
    "corruptions": "Corruption breakdown",
    "attacks": "Robust accuracy under attack",
    "predictors": "Predicting the damage: ΔP and ΔR against dataset distance and transferability",
    "wise_ft": "WiSE-FT: ID against OOD accuracy over the mixing coefficient",
    "inside": "What changed inside the models",
    "training": "Training curves",
}
STYLE = {
    "svg.fonttype": "none",  # text stays text in SVG: small, selectable, no glyph definitions
    "svg.hashsalt": "ribench",  # deterministic ids, so the same numbers give the same file
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.family": "DejaVu Sans",
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
DIVERGING = "RdBu"  # red: accuracy lost against m0, blue: gained
PNG_DPI = 110
TITLE_CHARS = 48  # a line of a 9-pt title in one of two panels of an 8-inch figure


@dataclass
class Plot:
    slug: str
    section: str
    title: str
    caption: str
    figure: Figure


def _slug(*parts: object) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def method_colors(methods: list[str]) -> dict[str, str]:
    """A fixed colour per method (m0 black) so every figure of a report agrees."""
    others = [m for m in methods if m != agg.PRETRAINED]
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}
    colors[agg.PRETRAINED] = "#000000"
    return colors


def _style_for(method: str) -> dict:
    return {"linestyle": "--", "linewidth": 1.6} if method == agg.PRETRAINED else {"linewidth": 1.4}


def _pct(x: float) -> float:
    return 100.0 * x


# --- single figures -------------------------------------------------------------------
def inheritance_figure(run: RunData, backbone: str, recipe: str, methods: list[str]) -> Figure | None:
    """One heatmap per method: fine-tuning task (rows) by eval set (columns), coloured by
    the change from m0 (points; on the columns m0 is measured through a linear probe per
    task, from the probe fitted on the row's task: ``aggregate.Inheritance.ref``), each
    cell showing accuracy and change; the top row is m0 (``aggregate.m0_row``)."""
    mats = []
    for m in methods:
        res = agg.inheritance_matrix(run.rows, run.layout, backbone, recipe, m)
        if res is not None:
            mats.append((m, res))
    if not mats:
        return None
    deltas = np.concatenate([(res.acc - res.ref).ravel() for _, res in mats])
    lim = max(1.0, float(np.nanmax(np.abs(deltas))) * 100.0) if np.isfinite(deltas).any() else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    n_cols = len(mats[0][1].columns)
    panel_w = 1.0 + 0.78 * n_cols
    ncols = 2 if len(mats) > 1 and panel_w <= 6.0 else 1
    nrows = math.ceil(len(mats) / ncols)
    heights = [0.45 * (len(res.tasks) + 1) + 0.9 for _, res in mats]
    fig = Figure(figsize=(panel_w * ncols + 1.0, sum(heights[::ncols]) + 0.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for ax, (m, res) in zip(axes.ravel(), mats):
        tasks, columns, acc, base = res.tasks, res.columns, res.acc, res.base
        delta = np.vstack([np.full_like(base, np.nan), (acc - res.ref) * 100.0])
        # pcolormesh, not imshow: vector cells in SVG (imshow would embed a raster image)
        im = ax.pcolormesh(np.arange(delta.shape[1] + 1) - 0.5, np.arange(delta.shape[0] + 1) - 0.5,
                           np.ma.masked_invalid(delta), cmap=_cmap(), norm=norm)
        ax.set_xlim(-0.5, delta.shape[1] - 0.5)
        ax.set_ylim(delta.shape[0] - 0.5, -0.5)
        values = np.vstack([base, acc])
        labels = ["m0 (probe)" if res.probed else "m0"] + tasks
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if not np.isfinite(v):
                    ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="#555555")
                    continue
                text = f"{_pct(v):.1f}"
                if i > 0 and np.isfinite(delta[i, j]):
                    text += f"\n({delta[i, j]:+.1f})"
                dark = i > 0 and np.isfinite(delta[i, j]) and abs(delta[i, j]) > 0.6 * lim
                weight = "bold" if i > 0 and columns[j] == tasks[i - 1] else "normal"
                ax.text(j, i, text, ha="center", va="center", fontsize=7.5, fontweight=weight,
                        color="white" if dark else "#111111")
        for i, t in enumerate(tasks, start=1):
            if t in columns:  # outline the in-distribution cell
                j = columns.index(t)
                ax.add_patch(_rect(j, i))
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylabel("fine-tuned on")
        ax.set_title(f"{m}")
        ax.spines[:].set_visible(False)
        ax.tick_params(length=0)
    for ax in axes.ravel()[len(mats):]:
        ax.set_visible(False)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
    cb.set_label("change from m0 (points)")
    cb.solids.set_rasterized(False)  # all-vector SVG ...
    cb.solids.set_edgecolor("face")  # ... without hairline seams between the colour steps
    fig.suptitle(f"{backbone} / {recipe}: accuracy % (change from m0)", fontsize=10)
    return fig


def _cmap():
    from matplotlib import colormaps

    return colormaps[DIVERGING].with_extremes(bad="#eeeeee")


def _rect(j: int, i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#111111", linewidth=1.5)


def radar_figure(run: RunData, backbone: str, recipe: str, colors: dict[str, str]) -> Figure | None:
    """Accuracy on each eval set: m0 and one polygon per method (means over fine-tuning tasks)."""
    columns, values = agg.radar_values(run.rows, run.layout, backbone, recipe)
    if len(values) < 1 or len(columns) < 3:
        return None
    probed = agg.m0_row(run.rows, run.layout, backbone, recipe)[1]
    angles = np.linspace(0, 2 * np.pi, len(columns), endpoint=False)
    fig = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = fig.add_subplot(projection="polar")
    for m, vals in values.items():
        v = np.array([_pct(x) for x in vals])
        closed_a, closed_v = np.append(angles, angles[0]), np.append(v, v[0])
        label = M0_PROBE_LABEL if m == agg.PRETRAINED and probed else method_label(m)
        ax.plot(closed_a, closed_v, color=colors.get(m, "#444444"), label=label, marker="o", markersize=3,
                **_style_for(m))
        if m != agg.PRETRAINED:
            ax.fill(closed_a, np.nan_to_num(closed_v), color=colors.get(m, "#444444"), alpha=0.06)
    ax.set_xticks(angles, columns)
    ax.set_ylim(0, 100)
    ax.set_yticks([25, 50, 75, 100], ["25", "50", "75", "100%"], fontsize=7, color="#666666")
    ax.set_rlabel_position(360 / len(columns) / 2)  # between the first two axes, clear of the polygons' labels
    ax.set_title(f"{backbone} / {recipe}: accuracy % per eval set")
    ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1.0), frameon=False, fontsize=8)
    return fig


def _curves_figure(curves: dict[str, dict[str, list]], colors: dict[str, str], methods: list[str], title: str,
                   xlabel: str, ylabel: str, panel_title: str, log_x: bool = False,
                   marked: frozenset = frozenset()) -> Figure | None:
    """One panel per curve name, one line per method. ``marked``: (name, method, x) points
    suspect of gradient masking, ringed in red, their method's label followed by ``†``."""
    if not curves:
        return None
    flagged = {m for _, m, _ in marked}
    names = sorted(curves, key=lambda n: (n.endswith("(transfer from m0)"), n))  # white-box before transfer
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(2.7 * ncols + 1.6, 2.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, name in zip(axes.ravel(), names):
        for m in [m for m in methods if m in curves[name]]:
            pts = curves[name][m]
            ax.plot([p[0] for p in pts], [_pct(p[1]) for p in pts], marker="o", markersize=3,
                    color=colors.get(m, "#444444"), label=method_label(m) + (MASK_MARK if m in flagged else ""),
                    **_style_for(m))
            ring = [p for p in pts if (name, m, p[0]) in marked]
            if ring:
                ax.plot([p[0] for p in ring], [_pct(p[1]) for p in ring], linestyle="none", marker="o",
                        markersize=9, markerfacecolor="none", markeredgecolor="#d62728", markeredgewidth=1.4)
        ax.set_title(panel_title.format(name))
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("symlog", linthresh=1e-3)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def predictor_figure(run: RunData, predictor: str, colors: dict[str, str]) -> tuple[Figure, str] | None:
    """ΔP and ΔR of every adapted model against one predictor; the titles give the test
    across tasks of the report's tables (``prediction.correlation_text``), not a pooled ρ."""
    pts = agg.predictor_points(run.rows, predictor)
    if not pts:
        return None
    name = predictor_title(predictor)
    fig = Figure(figsize=(8.2, 3.3), layout="constrained")
    axes = fig.subplots(1, 2)
    summary = []
    methods = [m for m in agg.method_order(run.rows) if any(p.method == m for p in pts)]
    tests = {t.target: t for t in agg.prediction_tests(run.rows, agg.ACROSS_TASKS, predictor)}
    backbones = sorted({p.backbone for p in pts}, key=str)
    markers = {b: BACKBONE_MARKERS[i % len(BACKBONE_MARKERS)] for i, b in enumerate(backbones)}
    for ax, target, label in ((axes[0], "dP", "ΔP (points)"), (axes[1], "dR", "ΔR (points)")):
        for m in methods:
            for b in backbones:
                sel = [p for p in pts if p.method == m and p.backbone == b]
                if sel:
                    ax.scatter([p.x for p in sel], [100 * getattr(p, target) for p in sel], s=22, marker=markers[b],
                               color=colors.get(m, "#444444"), edgecolors="white", linewidths=0.5)
        rho_text = correlation_text(tests[target]) if target in tests else "ρ undefined"
        summary.append(f"{label.split()[0]} {rho_text}")
        # wrapped to the panel's width, so the two panels' titles never run into each other
        ax.set_title("\n".join(textwrap.wrap(f"{label.split()[0]} vs {name}, across tasks: Spearman {rho_text}",
                                             TITLE_CHARS)), fontsize=9)
        ax.axhline(0, color="#999999", linewidth=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    # colour: method; marker: backbone (its shape shown in grey)
    handles = [Line2D([], [], marker="o", linestyle="", color=colors.get(m, "#444444")) for m in methods]
    handles += [Line2D([], [], marker=markers[b], linestyle="", color="#555555") for b in backbones]
    fig.legend(handles, [method_label(m) for m in methods] + [f"backbone {b}" for b in backbones],
               loc="outside right center", frameon=False)
    return fig, "; ".join(summary)


def wise_ft_figure(run: RunData, backbone: str, recipe: str,
                   curves: dict[str, list[tuple[float, float, float]]]) -> Figure:
    fig = Figure(figsize=(5.8, 4.0), layout="constrained")
    ax = fig.add_subplot()
    labels, seen = [], set()
    for i, (task, pts) in enumerate(sorted(curves.items())):
        c = PALETTE[i % len(PALETTE)]
        xs, ys = [_pct(p[1]) for p in pts], [_pct(p[2]) for p in pts]
        ax.plot(xs, ys, marker="o", markersize=4, color=c, label=f"fine-tuned on {task}")
        for (alpha, _, _), x, y in zip(pts, xs, ys):
            key = (f"α={alpha:g}", round(x, 6), round(y, 6))  # α = 0 is m0 itself, shared by every curve
            if key not in seen:
                seen.add(key)
                labels.append((ax, x, y, key[0], c if alpha else "#111111"))
    ax.set_xlabel("ID accuracy (%)")
    ax.set_ylabel("OOD robustness R (%)")
    ax.set_title(f"{backbone} / {recipe}: WiSE-FT, α = weight of the fine-tuned model")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    _place_labels(fig, labels)
    return fig


def similarity_figure(curves: dict[str, dict[str, list[tuple[int, str, float]]]], colors: dict[str, str],
                      methods: list[str], title: str) -> Figure | None:
    """Linear CKA with m0 per layer (x, network order), one panel per image sample."""
    samples = [s for s in ("task", "pretrain") if s in curves] + sorted(set(curves) - {"task", "pretrain"})
    if not samples:
        return None
    fig = Figure(figsize=(3.6 * len(samples) + 1.6, 3.2), layout="constrained")
    axes = fig.subplots(1, len(samples), squeeze=False, sharey=True)[0]
    for ax, sample in zip(axes, samples):
        layers: dict[int, str] = {}
        for m in [m for m in methods if m in curves[sample]]:
            pts = curves[sample][m]
            layers.update({p[0]: p[1] for p in pts})
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", markersize=3, color=colors.get(m, "#444444"),
                    label=method_label(m), **_style_for(m))
        ax.set_xticks(sorted(layers), [layers[i] for i in sorted(layers)], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{'task' if sample == 'task' else 'pretraining'} test images")
        ax.set_ylim(top=1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear CKA with m0")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def _loss_scale(ax, values: list[float]) -> None:
    """A log y axis for losses spanning more than a factor of 30 (a curve from 2.3 to 0.01 stays readable)."""
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    if pos and len(pos) == len(values) and max(pos) / min(pos) > 30:
        ax.set_yscale("log")


def training_figure(curves: dict[str, dict[str, list[agg.CurvePoint]]], colors: dict[str, str],
                    methods: list[str], title: str) -> Figure | None:
    """Training curves of one (backbone, recipe) (``aggregate.training_curves``): panels for the
    pretraining loss, the adaptation loss and the validation accuracy (each when stored); one
    line per method, the mean over its tasks and seeds, with a band from the lowest to the
    highest (task, seed) value where there are several."""
    loss, val = curves.get(TRAIN_LOSS, {}), curves.get(VAL_ACC, {})
    panels = []  # (lines, ylabel, title, percent)
    if agg.PRETRAINING in loss:
        panels.append(({agg.PRETRAINING: loss[agg.PRETRAINING]}, "training loss", "pretraining (m0)", False))
    adapt_loss = {k: v for k, v in loss.items() if k != agg.PRETRAINING}
    if adapt_loss:
        panels.append((adapt_loss, "training loss", "adaptation: training loss", False))
    if val:
        panels.append((val, "validation accuracy (%)", "adaptation: validation accuracy", True))
    if not panels:
        return None
    fig = Figure(figsize=(3.3 * len(panels) + 1.8, 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    order = {m: i for i, m in enumerate(methods)}

    def base(line: str) -> str:
        return line.split(" · run ")[0]

    handles: dict[str, object] = {}
    for ax, (lines, ylabel, panel_title, percent) in zip(axes, panels):
        shown, epochs = [], set()
        for line in sorted(lines, key=lambda n: (order.get(base(n), len(order)), n)):
            pts = lines[line]
            scale = 100.0 if percent else 1.0
            xs = [p.epoch for p in pts]
            color = "#000000" if line == agg.PRETRAINING else colors.get(base(line), "#444444")
            style = {"linestyle": ":"} if " · run " in line else {}
            (h,) = ax.plot(xs, [scale * p.mean for p in pts], marker="o", markersize=3, linewidth=1.4, color=color,
                           label=line if line == agg.PRETRAINING else method_label(base(line)) + line[len(base(line)):],
                           **style)
            if any(p.n > 1 for p in pts):
                lo, hi = [scale * p.lo for p in pts], [scale * p.hi for p in pts]
                if len(xs) > 1:
                    ax.fill_between(xs, lo, hi, color=color, alpha=0.12, linewidth=0)
                else:  # one epoch: the band is a bar
                    ax.vlines(xs, lo, hi, color=color, alpha=0.35, linewidth=3)
            epochs.update(xs)
            handles.setdefault(h.get_label(), h)
            shown += [scale * v for p in pts for v in (p.lo, p.hi)]
        if not percent:
            _loss_scale(ax, shown)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if len(epochs) <= 12:
            ax.set_xticks(sorted(epochs))
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


# --- per-method scatters --------------------------------------------------------------
RECIPE_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
BACKBONE_MARKERS = RECIPE_MARKERS
LABEL_OFFSETS = [(5, 4), (5, -10), (-5, 4), (-5, -10), (0, 9), (0, -14), (10, 0), (-10, 0)]  # points, tried in turn


def _errorbar(stat: agg.Stat | None) -> list[list[float]] | None:
    """[[below], [above]] of the 95% interval in points (%), None where there is none."""
    if stat is None or not (math.isfinite(stat.lo) and math.isfinite(stat.hi)):
        return None
    return [[_pct(stat.mean - stat.lo)], [_pct(stat.hi - stat.mean)]]


def _place_labels(fig: Figure, labels: list[tuple]) -> None:
    """Annotate each ``(ax, x, y, text, color)`` point, choosing for every label the first
    offset whose box overlaps no text placed before it (titles, ticks, other labels); the
    labels do not take part in the layout, so the layout drawn here is the one saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    taken = [t.get_window_extent(renderer) for t in _texts(fig)]
    for ax, x, y, text, color in labels:
        for k, (dx, dy) in enumerate(LABEL_OFFSETS * 2):
            far = k >= len(LABEL_OFFSETS)  # second round: twice as far, with a leader line
            off = (dx * 2.2, dy * 2.2) if far else (dx, dy)
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=off, fontsize=7.5, color=color,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom" if dy > 0 else "top"
                              if dy < 0 else "center", annotation_clip=False,
                              arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6} if far else None)
            ann.set_in_layout(False)
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in taken) or k == 2 * len(LABEL_OFFSETS) - 1:
                taken.append(box)
                break
            ann.remove()


def _texts(fig: Figure) -> list:
    """Every text the figure draws (titles, axis labels, tick labels, legends, annotations):
    visible, not empty, and for tick labels only those of ticks inside the view limits
    (matplotlib keeps the others' artists, undrawn, at stale positions)."""
    from matplotlib.text import Text

    hidden = set()
    for ax in fig.axes:
        for axis, i in ((ax.xaxis, 0), (ax.yaxis, 1)):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(1.0, abs(hi - lo))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - tol <= tick.get_loc() <= hi + tol:
                    hidden.update(id(t) for t in (tick.label1, tick.label2))
    return [t for t in fig.findobj(Text) if id(t) not in hidden and t.get_visible() and t.get_text().strip()]


def method_scatter_figure(summaries: list[agg.MethodSummary], backbone: str, colors: dict[str, str]) -> Figure | None:
    """Two scatters of one backbone, one point per (recipe, method), mean over tasks and seeds
    with the 95% interval as error bars: ΔR against ΔP (robustness change against
    forgetting; m0 at (0, 0)), and OOD robustness R against ID accuracy (m0's R a dashed
    line: the effective robustness of a method is its height above it at equal ID accuracy)."""
    rows = [s for s in summaries if s.backbone == backbone]
    recipes = sorted({s.recipe for s in rows}, key=str)
    markers = {rc: RECIPE_MARKERS[i % len(RECIPE_MARKERS)] for i, rc in enumerate(recipes)}
    panels = (("dP", "dR", "ΔP, retention of the pretraining task (points)", "ΔR, robustness change (points)",
               "forgetting against robustness"),
              ("id_acc", "R", "ID accuracy (%)", "OOD robustness R (%)", "ID against OOD accuracy"))
    drawn = [s for s in rows if s.method == agg.PRETRAINED or all(k in s.stats for k in ("dP", "dR"))]
    if not any(s.method != agg.PRETRAINED for s in drawn):
        return None
    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2)
    labels = []
    for ax, (xk, yk, xlabel, ylabel, title) in zip(axes, panels):
        for s in rows:
            text = method_label(s.method) + (f" · {s.recipe}" if len(recipes) > 1 else "")
            color = colors.get(s.method, "#444444")
            if s.method == agg.PRETRAINED:
                if xk == "dP":  # the reference of every Δ
                    x, y, xerr, yerr = 0.0, 0.0, None, None
                else:
                    r = s.stats.get("R")
                    if r is not None and math.isfinite(r.mean):
                        ax.axhline(_pct(r.mean), color=color, linestyle="--", linewidth=1.0)
                        labels.append((ax, ax.get_xlim()[0], _pct(r.mean), text, color))
                    continue
            elif xk in s.stats and yk in s.stats:
                x, y = _pct(s.stats[xk].mean), _pct(s.stats[yk].mean)
                xerr, yerr = _errorbar(s.stats[xk]), _errorbar(s.stats[yk])
            else:
                continue
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=markers[s.recipe], color=color, markersize=6,
                        markeredgecolor="white", markeredgewidth=0.6, elinewidth=0.9, capsize=2, label=text)
            labels.append((ax, x, y, text, color))
        if xk == "dP":
            ax.axhline(0, color="#999999", linewidth=0.8)
            ax.axvline(0, color="#999999", linewidth=0.8)
        ax.margins(0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{backbone}: one point per {'recipe and ' if len(recipes) > 1 else ''}method, mean over tasks and "
                 f"seeds (bars: 95% interval)", fontsize=10)
    if len(recipes) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker=markers[rc], linestyle="", color="#555555") for rc in recipes]
        fig.legend(handles, [f"recipe {rc}" for rc in recipes], loc="outside right center", frameon=False)
    # the m0 line's label sits at the left edge, fixed once the limits are
    labels = [(ax, ax.get_xlim()[0] if text.startswith(method_label(agg.PRETRAINED)) and ax is axes[1] else x, y, text, c)
              for ax, x, y, text, c in labels]
    _place_labels(fig, labels)
    return fig


# --- all of a run's figures -----------------------------------------------------------
CAPTIONS = {
    "inheritance": "Rows: the task each model was fine-tuned on (top row: m0). Columns: eval sets, corruption sets "
                   "folded into one. Colour: change of accuracy from m0 in points (blue gained, red lost); outlined: "
                   "the fine-tuning task itself.",
    "methods": "Left: ΔR (y) against ΔP (x) of each method, points; m0, the reference of both, at (0, 0); up is "
               "robustness gained, left is forgetting. Right: OOD robustness R (y) against ID accuracy (x), %; the "
               "dashed line is m0's R, so a point's height above it is the robustness the method kept or gained. One "
               "point per recipe and method, mean over fine-tuning tasks and seeds; bars: 95% t-interval over the "
               "(task, seed) runs, none with a single run.",
    "radar": "Dashed black: m0. One polygon per method, mean over the tasks it was fine-tuned on; on a task's own axis "
             "only models fine-tuned on other tasks count, so every axis is out-of-distribution.",
    "corruptions": "Accuracy per corruption (panels) and severity (x), mean over fine-tuning tasks and seeds; dashed "
                   "black: m0.",
    "attacks": "Accuracy under each attack (panels) against its budget ε (x), mean over fine-tuning tasks and seeds; "
               "dashed black: m0.",
    "wise_ft": "ID accuracy (x) against OOD robustness R (y) of the weight-space mixture (1 − α)·m0 + α·fine-tuned, "
               "one line per fine-tuning task, seeds averaged.",
    "inside": "Linear CKA between m0 and each adapted model at every layer (x, input to head), on the fine-tuning "
              "task's test images (left) and on pretraining test images (right), mean over tasks and seeds. A "
              "method that keeps the representation stays near 1.",
    "training": "Per epoch (x): the mean training loss of the pretraining run of m0, the mean training loss of each "
                "method's adaptation runs and their accuracy (%) on the task's validation part. One line per method, "
                "the mean over its fine-tuning tasks and seeds; the band spans the lowest to the highest (task, seed) "
                "value. Closed-form and training-free methods have no curve.",
}
MASKED_CAPTION = (f"Ringed in red, and {MASK_MARK} after the method: gradient masking suspected (more than half of "
                  "the attacked images of some row averaged there have a zero input gradient); that robust accuracy "
                  "overstates robustness.")
PROBE_CAPTION = ("Top row m0 (probe): on the tasks' label space m0 is measured through a linear probe per task; per "
                 "column, the mean over the probes fitted on the other tasks; each row's change is against the probe "
                 "fitted on its own task.")


def masked_points(rows: list[dict]) -> dict[tuple, frozenset]:
    """(backbone, recipe) -> the (attack, method, eps) points of ``aggregate.attack_curves`` whose
    rows include one marked ``masked`` (``aggregate.masking_marks`` by budget)."""
    out: dict[tuple, set] = {}
    for (b, rc, m, attack, eps), mark in agg.masking_marks(rows, by_budget=True).items():
        if mark.suspect:
            out.setdefault((b, rc), set()).add((attack, m, eps))
    return {k: frozenset(v) for k, v in out.items()}


TITLES = {"inheritance": "Inheritance matrices", "radar": "Accuracy per eval set",
          "corruptions": "Corruption breakdown", "attacks": "Robust accuracy", "wise_ft": "WiSE-FT curves", "inside": "Layer-by-layer similarity with m0",
          "training": "Training curves"}


def _integer_x(fig: Figure | None) -> Figure | None:
    for ax in fig.axes if fig is not None else []:
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def build_plots(run: RunData) -> list[Plot]:
    """Every figure the run has data for, in report order; sections without data give none."""
    methods = agg.method_order(run.rows)
    colors = method_colors(methods)
    adapted = [m for m in methods if m != agg.PRETRAINED]
    plots: list[Plot] = []
    with rc_context(STYLE):
        per_group = []  # (section, function of (backbone, recipe) -> figure or None)
        if run.layout:
            corr = agg.corruption_curves(run.rows, run.layout)
            per_group += [
                ("inheritance", lambda b, rc: inheritance_figure(run, b, rc, adapted)),
                ("radar", lambda b, rc: radar_figure(run, b, rc, colors)),
                ("corruptions", lambda b, rc: _integer_x(_curves_figure(
                    corr.get((b, rc), {}), colors, methods, f"{b} / {rc}: accuracy under corruption", "severity",
                    "accuracy (%)", "{}"))),
            ]
        attacks = agg.attack_curves(run.rows)
        masked = masked_points(run.rows)
        per_group.append(("attacks", lambda b, rc: _curves_figure(
            attacks.get((b, rc), {}), colors, methods, f"{b} / {rc}: robust accuracy under attack", "ε (attack budget)",
            "robust accuracy (%)", "{}", marked=masked.get((b, rc), frozenset()))))
        for section, draw in per_group:
            for b, rc in agg.backbone_recipes(run.rows):
                fig = draw(b, rc)
                if fig is not None:
                    caption = CAPTIONS[section]
                    if section == "attacks" and masked.get((b, rc)):
                        caption += " " + MASKED_CAPTION
                    elif section == "inheritance" and agg.m0_row(run.rows, run.layout, b, rc)[1]:
                        caption += " " + PROBE_CAPTION
                    plots.append(Plot(_slug(section, b, rc), section, f"{TITLES[section]}: {b} / {rc}", caption, fig))
        summaries = agg.summarize_methods(run.rows)
        scatters = []
        for b in sorted({s.backbone for s in summaries}, key=str):
            fig = method_scatter_figure(summaries, b, colors)
            if fig is not None:
                scatters.append(Plot(_slug("methods", b), "inheritance", f"Methods compared: {b}",
                                     CAPTIONS["methods"], fig))
        at = sum(p.section == "inheritance" for p in plots)  # after the heatmaps, in page order
        plots[at:at] = scatters
        for p in agg.predictors_present(run.rows):
            res = predictor_figure(run, p, colors)
            if res is not None:
                fig, summary = res
                name = predictor_title(p)
                plots.append(Plot(_slug("predictor", p), "predictors", f"ΔP and ΔR against {name}",
                                  f"One point per adapted model (backbone, recipe, method, task; seeds averaged), "
                                  f"x: {name} of the fine-tuning task. {summary}.", fig))
        wise = agg.wise_ft_curves(run.rows)
        sim = agg.similarity_by_layer(run.rows)
        train = agg.training_curves(run.rows)
        for section, figs in (("wise_ft", {k: wise_ft_figure(run, *k, wise[k]) for k in sorted(wise)}),
                              ("inside", {k: similarity_figure(sim[k], colors, methods,
                                                               f"{k[0]} / {k[1]}: representation similarity with m0")
                                          for k in sorted(sim)}),
                              ("training", {k: training_figure(train[k], colors, methods,
                                                               f"{k[0]} / {k[1]}: training curves")
                                            for k in sorted(train, key=lambda k: (str(k[0]), str(k[1])))})):
            for (b, rc), fig in figs.items():
                if fig is not None:
                    plots.append(Plot(_slug(section, b, rc), section,
                                      f"{TITLES[section]}: {b} / {rc}", CAPTIONS[section], fig))
    return plots


_ID_ATTR = re.compile(r'\bid="([^"]+)"')


def figure_svg(fig: Figure, prefix: str) -> str:
    """The figure as an ``<svg>`` element for inlining in HTML; every id is prefixed with
    ``prefix`` so that many figures can share one page without clashing references."""
    buf = io.StringIO()
    with rc_context(STYLE):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    ids = set(_ID_ATTR.findall(svg))
    if ids:
        pattern = re.compile(r'(id="|href="#|url\(#)(' + "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)) + r')(?=["\)])')
        svg = pattern.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    return svg


def save_png(fig: Figure, path: Path, dpi: int = PNG_DPI) -> Path:
    with rc_context(STYLE):
        fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    return path


def write_figures(out_dir: str | Path, plots: list[Plot] | None = None, run: RunData | None = None) -> list[Path]:
    """Save every plot as ``<out_dir>/figures/<slug>.png`` and list them in ``index.json``
    (slug, file, section, title, caption and the fingerprint of the numbers they show).
    PNGs listed by an earlier index but not made now are removed, so none is stale."""
    run = run or load_run(out_dir)
    plots = build_plots(run) if plots is None else plots
    fig_dir = Path(out_dir) / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    old = read_figure_index(out_dir, check=False)
    paths = [save_png(p.figure, fig_dir / f"{p.slug}.png") for p in plots]
    keep = {p.name for p in paths}
    for entry in old.get("figures", []):
        f = fig_dir / entry["file"]
        if entry["file"] not in keep and f.parent == fig_dir and f.suffix == ".png" and f.is_file():
            f.unlink()
    index = {"fingerprint": run.fingerprint,
             "figures": [{"slug": p.slug, "file": f"{p.slug}.png", "section": p.section, "title": p.title,
                          "caption": p.caption} for p in plots]}
    (fig_dir / FIGURE_INDEX).write_text(json.dumps(index, indent=1, ensure_ascii=False))
    return paths
