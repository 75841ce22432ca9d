"""The reading guide: what each section and column of a report means, written once.

report.md and report.html show the same texts: ``GUIDE[section]`` under a section's
heading, and for the summary's columns each metric's line of the catalogue
(``catalogue.Metric.guide``, listed by ``tables.Table.column_notes``), so a new metric
brings its own line.
"""

from __future__ import annotations

from ..analysis.statistics import MIN_UNITS
from .catalogue import ONE_RUN, TOO_FEW

INTERVAL_NOTE = ("Each cell: the mean over the row's (task, seed) runs and, in brackets, its 95% t-interval "
                 f"(mean ± t(0.975, n−1)·s/√n over those n runs, each run one unit); \"{ONE_RUN}\" where the row "
                 "has a single run (m0, or one task and one seed). Parameters and seconds: means only.")

WILSON_NOTE = ("Square brackets after an accuracy: its 95% Wilson score interval over the n images of that eval set "
               "(with `[eval] max_per_set`, n is the evaluated subset), shown where the number is one model on one "
               "eval set; a mean over seeds or over the corruption sets keeps none.")

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

GUIDE = {
    "summary": "One row per backbone, pretraining recipe and method; the m0 (pretrained) row of each group is the "
               "pretrained model itself, the reference of every Δ. " + INTERVAL_NOTE + " Accuracies in %, ΔR and ΔP "
               "in points (negative: robustness lost, forgetting).",
    "inheritance": "How adaptation to one task changes accuracy everywhere else: rows are the task each model was "
                   "fine-tuned on (m0 first), columns the eval sets, every corruption set folded into one column "
                   "(their mean). Each cell: accuracy (%) and, in brackets, its change from m0 in points; the "
                   "fine-tuning task's own cell is marked (`*` in the tables, outlined in the heatmaps).",
    "radar": "The shape of robustness: how far each method's polygon falls inside m0's, and on which eval sets.",
    "corruptions": "Which corruptions, at which severity, lose the most accuracy after adaptation.",
    "attacks": "Accuracy under adversarial attack as the budget grows.",
    "predictors": PREDICTION_GUIDE.replace("\n", " "),
    "wise_ft": "Weight-space ensembles of m0 and the fine-tuned model: how much OOD robustness interpolation "
               "buys back for how much ID accuracy.",
    "merged": "One merged model (task arithmetic, TIES, Fisher merging, aTLAS...) serves every task of the run. Each "
              "cell: its accuracy on a task divided by the accuracy of the model fine-tuned on that task alone (%, "
              "same seed; 100 = nothing lost by merging), mean ± standard deviation over seeds; then the mean over "
              "tasks and the mean accuracy itself.",
    "inside": "What adaptation changed inside each model, compared with m0: CKA is the linear CKA of their "
              "penultimate features on the task's (or pretraining) test images (1 = the same representation up to "
              "rotation and scale), mkNN the share of shared nearest neighbours, ‖τ‖/‖θ0‖ how far the weights moved, "
              "barrier the loss bump (nats) on the straight line from m0 to the adapted weights (0 = one basin), "
              "filter KL the shift of the 3x3 filters' distribution. Mean ± standard deviation over tasks and seeds; "
              "per-layer numbers are the eval sets `diag/*` of `ribench results DIR`, docs/analysis.md defines each.",
    "training": "How training went, epoch by epoch: the loss each training run optimised and, for adaptation, the "
                "accuracy on the task's validation part after each epoch (top-1, unmasked). A validation accuracy "
                "that peaks and falls marks overfitting; a loss still falling at the last epoch, training cut short.",
    "cost": "Where the run's time went: per kind of cell, how many finished and their wall-clock seconds, in total "
            "and (in brackets) per cell; then the same for each phase the cells measured (load: models read from "
            "disk; clean_eval and corruption_eval: the clean and the corrupted eval sets; attacks; masking_checks; "
            "extra_models: e.g. the WiSE-FT curve; save: artifacts written; other: the rest of the cell). Cells of "
            "runs made before phases were measured count in the cell column only. `ribench status DIR --timing` "
            "prints the same numbers.",
}

