"""The numbers and figures of docs/findings.md, from the runs its "How the numbers were made"
section lists. Usage (after those runs):

    python docs/findings/make.py [RUNS_DIR]      # default: runs

prints every claim's comparisons (Markdown), writes all numbers to numbers.json and one PNG
per claim beside this file, with ribench's own plotting code (ribench.report.claims).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ribench.analysis.statistics import grouped_spearman
from ribench.core import rows as names
from ribench.engine.store import ResultsStore
from ribench.report import claims as C

HERE = Path(__file__).parent
BACKBONE = "cnn"
REGULARISED = ["ewc", "lwf"]
PREDICTOR_METHODS = ["ft", "lp", "lpft", "ewc", "lwf"]


def load(path: Path) -> list[dict]:
    store = ResultsStore(path / "results.sqlite")
    try:
        return store.metric_rows()
    finally:
        store.close()


def sv(rows, metric, method, recipe="narrow", seeds=None):
    return C.seed_values(rows, metric, method=method, backbone=BACKBONE, recipe=recipe, seeds=seeds)


def main(runs: Path) -> dict:
    main_rows = load(runs / "findings")
    reinit_rows = load(runs / "findings-reinit")
    merges = {2: load(runs / "findings-merge2"), 9: main_rows}
    tasks = sorted(sv(main_rows, "dR", "ft"))
    out: dict[str, dict] = {}
    lines: list[str] = []

    def report(claim: str, title: str, comps: dict[str, tuple[C.Comparison, str]], fig, note: str = ""):
        C.save(fig, HERE / f"{claim}.png")
        out[claim] = {}
        lines.append(f"\n### {title}\n\n| comparison | mean [95% CI] (points) | > 0 (of n) | seed sd | verdict |\n"
                     "|---|---|---|---|---|")
        for label, (c, side) in comps.items():
            out[claim][label] = {"mean": c.mean, "lo": c.lo, "hi": c.hi, "n": c.n, "wins": c.wins,
                                 "seed_sd": c.seed_sd, "per_task": c.per_task, "verdict": c.verdict(side)}
            sd = f"{c.seed_sd * 100:.1f}" if c.seed_sd == c.seed_sd else "–"
            lines.append(f"| {label} | {c.text()} | {c.wins}/{c.n} | {sd} | {c.verdict(side)} ({side} than 0) |")
        if note:
            lines.append(f"\n{note}")

    # (a) fine-tuning on one task lowers accuracy on the related tasks
    ft_dr = C.summary(sv(main_rows, "dR", "ft"))
    report("a_ft_robustness", "(a) FT lowers accuracy on the other tasks: ΔR of ft",
           {"ΔR ft": (ft_dr, "less"), "ΔP ft": (C.summary(sv(main_rows, "dP", "ft")), "less")},
           C.per_task_figure({m: C.summary(sv(main_rows, "dR", m)).per_task for m in ["ft", "lp", "lpft"]},
                             ylabel="ΔR (points)", title="ΔR on the other tasks, per fine-tuning task", order=tasks))

    # (b) EWC and LwF keep more robustness than FT
    comps = {f"ΔR {m} − ft": (C.paired(sv(main_rows, "dR", m), sv(main_rows, "dR", "ft")), "greater")
             for m in REGULARISED}
    report("b_regularised_robustness", "(b) EWC and LwF keep more robustness than FT", comps,
           C.intervals_figure([(k, c) for k, (c, _) in comps.items()], xlabel="ΔR difference (points)",
                              title="ΔR of the regularised methods minus ΔR of ft, per task"))

    # (c) richer pretraining starts more robust and loses more
    m0n = C.pretrained_accuracy(main_rows, backbone=BACKBONE, recipe="narrow", eval_sets=tasks)
    m0r = C.pretrained_accuracy(main_rows, backbone=BACKBONE, recipe="rich", eval_sets=tasks)
    comps = {"m0 accuracy rich − narrow": (C.paired(m0r, m0n), "greater"),
             "ΔR ft rich − narrow": (C.paired(sv(main_rows, "dR", "ft", "rich"), sv(main_rows, "dR", "ft")), "less"),
             "ΔP ft rich − narrow": (C.paired(sv(main_rows, "dP", "ft", "rich"), sv(main_rows, "dP", "ft")), "less")}
    report("c_rich_pretraining", "(c) Richer pretraining starts more robust and loses more", comps,
           C.intervals_figure([(k, c) for k, (c, _) in comps.items()], xlabel="rich − narrow (points)",
                              title="cnn pretrained with the rich recipe against the narrow one, per task"))

    # (d) OTDD between pretraining and task data predicts the loss on the pretraining task
    analysis = {(r["recipe"], r["task"], r["metric"]): r["value"] for r in main_rows
                if r["method"] == names.ANALYSIS and r["eval_set"] == names.SUMMARY and r["backbone"] == BACKBONE}
    preds = {}
    for p in ("otdd", "otdd_features"):
        groups = [m for m in PREDICTOR_METHODS if set(C.task_means(sv(main_rows, "dP", m))) >= set(tasks)]
        x = np.array([[analysis[("narrow", t, p)] for t in tasks] for _ in groups])
        y = np.array([[C.task_means(sv(main_rows, "dP", m))[t] for t in tasks] for m in groups])
        g = grouped_spearman(x, y, alternative="less")
        preds[p] = {"groups": groups, "rho": dict(zip(groups, g.rho)), "mean_rho": g.mean_rho, "ci": g.ci,
                    "p": g.p_value, "exact": g.exact, "n_units": g.n_units, "distinct": g.distinct[0]}
    out["d_otdd_predicts_dP"] = preds
    ftp = C.task_means(sv(main_rows, "dP", "ft"))
    fig = C.scatter_panels([(f"{name} (ft: ρ = {preds[p]['rho']['ft']:+.2f})",
                             [(t, analysis[("narrow", t, p)], ftp[t]) for t in tasks], f"OTDD(MNIST, task), {where}")
                            for p, name, where in (("otdd", "pixels", "pixel space"),
                                                   ("otdd_features", "features", "m0's feature space"))],
                           ylabel="ΔP of ft (points)")
    C.save(fig, HERE / "d_otdd_predicts_dP.png")
    lines.append("\n### (d) OTDD predicts ΔP (Spearman across the 9 tasks, per method; mean over methods)\n\n"
                 "| predictor | ρ per method | mean ρ [95% bootstrap CI] | p (tasks permuted, ρ<0) |\n|---|---|---|---|")
    for p, d in preds.items():
        per = ", ".join(f"{m} {r:+.2f}" for m, r in d["rho"].items())
        lines.append(f"| {p} | {per} | {d['mean_rho']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] | "
                     f"{d['p']:.4f} ({'exact' if d['exact'] else 'sampled'}, {d['n_units']} tasks) |")

    # LP-FT against FT from a new head (Kumar et al.) and against the protocol's FT
    reinit = {m: sv(reinit_rows, m, "ft") for m in ("R", "dP", "id_acc")}
    comps = {"R lpft − ft(reinit head)": (C.paired(sv(main_rows, "R", "lpft"), reinit["R"]), "greater"),
             "ΔP lpft − ft(reinit head)": (C.paired(sv(main_rows, "dP", "lpft"), reinit["dP"]), "greater"),
             "ID lpft − ft(reinit head)": (C.paired(sv(main_rows, "id_acc", "lpft"), reinit["id_acc"]), "greater"),
             "R lpft − ft(head kept)": (C.paired(sv(main_rows, "R", "lpft"), sv(main_rows, "R", "ft")), "greater")}
    report("lpft", "LP-FT keeps more OOD accuracy than FT", comps,
           C.intervals_figure([(k, c) for k, (c, _) in comps.items()], xlabel="difference (points)",
                              title="LP-FT minus FT, per task"))

    # WiSE-FT: the OOD accuracy of the interpolation peaks at an interior alpha
    curves = C.curve(main_rows, "R", backbone=BACKBONE, recipe="narrow")
    ends = {t: max(np.mean(c[0.0]), np.mean(c[1.0])) for t, c in curves.items()}
    interior = {t: [float(np.mean(c[0.5])) - ends[t]] for t, c in curves.items()}
    comps = {"R(α=0.5) − max(R(α=0), R(α=1))": (C.summary(interior), "greater"),
             "R(α=0.5) − R(α=1)": (C.paired(C.at_alpha(curves, 0.5), C.at_alpha(curves, 1.0)), "greater"),
             "R(α=0.5) − R(α=0)": (C.paired(C.at_alpha(curves, 0.5), C.at_alpha(curves, 0.0)), "greater"),
             "ΔR wise_ft (α on validation) − ft": (C.paired(sv(main_rows, "dR", "wise_ft"),
                                                           sv(main_rows, "dR", "ft", seeds=[0])), "greater")}
    best = {t: max(c, key=lambda a: np.mean(c[a])) for t, c in curves.items()}
    fig = C.lines_figure({t: [(a, C.over_seeds(v)) for a, v in c.items()] for t, c in sorted(curves.items())},
                         xlabel="α (0: m0, 1: ft)", ylabel="R (%)", title="WiSE-FT: R of (1−α)·m0 + α·ft")
    report("wise_ft", "WiSE-FT's OOD accuracy peaks at an interior α", comps, fig,
           "best α per task (mean over seeds): " + ", ".join(f"{t} {a:g}" for t, a in sorted(best.items())))
    out["wise_ft"]["best_alpha"] = best

    # EWC and LwF forget less of the pretraining task than FT
    comps = {f"ΔP {m} − ft": (C.paired(sv(main_rows, "dP", m), sv(main_rows, "dP", "ft")), "greater")
             for m in REGULARISED}
    comps.update({f"ID {m} − ft": (C.paired(sv(main_rows, "id_acc", m), sv(main_rows, "id_acc", "ft")), "less")
                  for m in REGULARISED})
    report("forgetting", "EWC and LwF forget less of the pretraining task than FT", comps,
           C.intervals_figure([(k, c) for k, (c, _) in comps.items()], xlabel="difference (points)",
                              title="ΔP and ID accuracy of the regularised methods minus ft's, per task"))

    # TIES against task arithmetic as tasks are added
    series = {m: [(n, C.over_seeds(C.merged_values(r, m, backbone=BACKBONE, recipe="narrow")))
                  for n, r in merges.items()] for m in ("task_arithmetic", "ties")}
    comps, gaps = {}, {}
    for n, r in merges.items():  # one value per seed, in seed order (metric_rows sorts by seed)
        ta = C.merged_values(r, "task_arithmetic", backbone=BACKBONE, recipe="narrow")
        ti = C.merged_values(r, "ties", backbone=BACKBONE, recipe="narrow")
        gaps[n] = [a - b for a, b in zip(ti, ta)]
        comps[f"norm. acc TIES − TA, {n} tasks (over seeds)"] = (C.over_seeds(gaps[n]), "greater")
    comps["(TIES − TA at 9 tasks) − (at 2 tasks), per seed"] = (
        C.over_seeds([b - a for a, b in zip(gaps[2], gaps[9])]), "greater")
    report("ties", "TIES merges better than task arithmetic as tasks are added", comps,
           C.lines_figure(series, xlabel="tasks merged", ylabel="normalised accuracy (%)",
                          title="Merged model's accuracy / each task's fine-tuned model"))
    out["ties"]["series"] = {m: [(n, c.mean, c.lo, c.hi) for n, c in s] for m, s in series.items()}

    # the method table's source: summary of every method over tasks
    table = {}
    for rec in ("narrow", "rich"):
        for m in [*PREDICTOR_METHODS, "wise_ft"]:
            vals = {k: C.summary(sv(main_rows, k, m, rec)) for k in ("id_acc", "R", "dR", "P_acc", "dP")}
            if vals["R"].n:
                table[f"{rec}/{m}"] = {k: (c.mean, c.lo, c.hi, c.n) for k, c in vals.items()}
    for rec in ("narrow", "rich"):
        m0 = {r["metric"]: r["value"] for r in main_rows if r["method"] == names.PRETRAINED
              and r["eval_set"] == names.SUMMARY and r["recipe"] == rec}
        table[f"{rec}/m0"] = m0
    table["narrow/ft(reinit)"] = {k: (c.mean, c.lo, c.hi, c.n) for k, c in
                                  ((k, C.summary(sv(reinit_rows, k, "ft"))) for k in ("id_acc", "R", "dR", "P_acc", "dP"))}
    out["table"] = table
    lines.append("\n### Every method (mean over tasks [95% t-interval over tasks], %)\n\n"
                 "| recipe / method | n tasks | ID acc | R | ΔR | P acc | ΔP |\n|---|---|---|---|---|---|---|")
    for k, v in table.items():
        if k.endswith("/m0"):
            lines.append(f"| {k} | – | – | {v['R'] * 100:.1f} | 0 | {v['P_acc'] * 100:.1f} | 0 |")
            continue
        cell = [f"{m * 100:.1f} [{lo * 100:.1f}, {hi * 100:.1f}]" if lo == lo else f"{m * 100:.1f}"
                for m, lo, hi, _ in (v[c] for c in ("id_acc", "R", "dR", "P_acc", "dP"))]
        lines.append(f"| {k} | {v['R'][3]} | " + " | ".join(cell) + " |")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    result = main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
    text = json.dumps(result, indent=1, sort_keys=True, default=str, allow_nan=True).replace("NaN", "null")
    (HERE / "numbers.json").write_text(text + "\n")
