"""The catalogue of what reports show: every summary metric, diagnostic and predictor, once.

A ``Metric`` describes one stored summary metric (eval_set ``*``, docs/results.md): its
column header, the ``Unit`` it is shown in (how a stored fraction becomes % or points, how
many decimals), which way is better (``direction``) and what it means (``tooltip``: the
column's tooltip in report.html and its line in the reading guide of both reports). The
Markdown report, the HTML report, the console table and the leaderboard all read
``SUMMARY_METRICS``: **a new summary metric is added here, as one ``Metric(...)`` entry**,
and appears in every one of them. ``DIAGNOSTICS`` does the same for the diagnose cells'
``diag/summary`` metrics, ``PREDICTORS`` for the analysis cells' predictors.

This module only describes and formats single values; ``aggregate`` turns rows into
numbers, ``tables`` lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import rows as names

HIGHER, LOWER = "higher", "lower"  # which way a metric is better; None: a setting or a cost
MISSING = "–"  # a cell without a value
ONE_RUN = "n/a: one run"  # in place of an interval over a single (task, seed) run
TOO_FEW = "too few to tell"  # in place of an interval and p-value that too few units cannot support
M0_LABEL = "m0 (pretrained)"
M0_PROBE_LABEL = "m0 (linear probe per task)"  # m0 where it is measured through a linear probe per task
MASK_MARK = "†"  # after a robust accuracy whose attack rows are suspect of gradient masking
OWN_TASK_MARK = "*"  # before an inheritance table's cell of the fine-tuning task itself


@dataclass(frozen=True)
class Unit:
    """How a stored value is shown: ``scale`` times the stored value (100 for a fraction
    shown in % or points), with ``decimals`` digits, a sign (changes) or thousands
    separators (counts). ``name`` is the unit as the leaderboard's ``units`` say it."""

    name: str
    scale: float = 1.0
    decimals: int = 3
    signed: bool = False
    grouped: bool = False

    def shown(self, stored: float) -> float:
        """The stored value in this unit, unrounded (what report.html sorts by)."""
        return self.scale * stored

    def text(self, stored: float) -> str:
        """The stored value as the reports print it: ``0.912`` -> ``"91.2"`` (%)."""
        spec = f"{'+' if self.signed else ''}{',' if self.grouped else ''}.{self.decimals}f"
        return format(self.shown(stored), spec)

    def spread(self, stored: float) -> str:
        """A standard deviation in this unit (never signed)."""
        return format(self.shown(stored), f"{',' if self.grouped else ''}.{self.decimals}f")

    def rounded(self, stored: float) -> float | int:
        """The leaderboard's number: one decimal more than the reports print, counts as integers."""
        if self.grouped:
            return int(round(self.shown(stored)))
        return round(self.shown(stored), self.decimals + 1)


PERCENT = Unit("%", 100.0, 1)
POINTS = Unit("points", 100.0, 1, signed=True)
REFERENCE_RATIO = Unit("ratio to the reference model", 1.0, 3)
NATS = Unit("nats", 1.0, 3)
RATIO = Unit("ratio", 1.0, 3)
COUNT = Unit("count", 1.0, 0, grouped=True)
SECONDS = Unit("s", 1.0, 1)


@dataclass(frozen=True)
class Metric:
    """One summary metric as every report shows it.

    ``always``: a column even when no row has the metric (the protocol's own numbers);
    others only when some row has it. ``console``: in the console's compact table.
    ``interval``: False for settings and costs, shown as a mean without interval.
    ``board``: the leaderboard's field name (None: not on the leaderboard), ``board_header``
    its column in leaderboard.md (default: ``header``), ``board_std``: with a ``<board>_std``
    field, ``reference``: also given for the pretrained models m0."""

    name: str
    header: str
    unit: Unit
    direction: str | None
    tooltip: str
    always: bool = False
    console: bool = False
    interval: bool = True
    board: str | None = None
    board_header: str | None = None
    board_std: bool = False
    reference: bool = False

    @property
    def guide(self) -> str:
        """The metric's line in the reading guide."""
        return self.tooltip + ("; lower is better" if self.direction == LOWER else "")

    @property
    def board_column(self) -> str:
        """Its leaderboard.md header: ``board_header`` (or ``header``), with "%" for percentages."""
        h = self.board_header or self.header
        return f"{h} %" if self.unit is PERCENT else h


SUMMARY_METRICS: tuple[Metric, ...] = (
    Metric("id_acc", "ID acc", PERCENT, HIGHER, "accuracy on the task the model was adapted to (%)",
           always=True, console=True, board="clean_acc", board_header="clean acc", board_std=True),
    Metric("R", "R", PERCENT, HIGHER, "mean accuracy on the suite's other tasks: OOD robustness (%)",
           always=True, console=True, board="ood_robustness", board_std=True, reference=True),
    Metric("dR", "ΔR", POINTS, HIGHER, "R minus m0's R on the same tasks (points; negative: robustness lost)",
           always=True, console=True, board="delta_R", board_std=True),
    Metric("P_acc", "P acc", PERCENT, HIGHER, "accuracy on the pretraining task (%)",
           always=True, console=True, board="pretrain_acc", reference=True),
    Metric("dP", "ΔP", POINTS, HIGHER, "change of P acc from m0 (points; negative: forgetting)",
           always=True, console=True, board="delta_P", board_std=True),
    Metric("corr_acc", "corr acc", PERCENT, HIGHER, "mean accuracy over every corruption and severity (%)",
           console=True, board="corruption_acc", reference=True),
    Metric("mCE", "mCE", REFERENCE_RATIO, LOWER,
           "mean corruption error relative to the reference model (m0 for the built-in suites: 1.000 is as "
           "robust as m0)", console=True, board="mCE", reference=True),
    Metric("robust_acc", "robust acc", PERCENT, HIGHER, "accuracy under attack, mean over attacks and budgets (%)",
           board="robust_acc", reference=True),
    Metric("transfer_robust_acc", "transfer acc", PERCENT, HIGHER,
           "accuracy under attacks crafted on m0 (transfer), mean (%)", board="transfer_robust_acc"),
    Metric("id_ece", "ECE", PERCENT, LOWER, "15-bin expected calibration error on the ID task (%)",
           console=True, board="ece", board_header="ECE"),
    Metric("id_nll", "NLL", NATS, LOWER, "negative log-likelihood on the ID task (nats)"),
    Metric("trainable_params", "trainable", COUNT, None, "trainable parameters during adaptation",
           always=True, interval=False, board="trainable_params", board_header="trainable params"),
    Metric("train_seconds", "train s", SECONDS, None, "adaptation wall time (seconds)",
           always=True, interval=False, board="train_seconds"),
)
BY_NAME = {m.name: m for m in SUMMARY_METRICS}

_IMAGES = {"task": "the task's test images", "pretrain": "pretraining test images"}  # samples of diag metrics
DIAGNOSTICS: tuple[Metric, ...] = (  # metrics of the diag/summary rows
    *(Metric(f"linear_cka_features/{s}", f"CKA {s}", RATIO, HIGHER,
             f"linear CKA between m0's and the adapted model's features on {images} (1: unchanged)")
      for s, images in _IMAGES.items()),
    Metric("mutual_knn_features/pretrain", "mkNN pretrain", RATIO, HIGHER,
           "mutual k-nearest-neighbour alignment of the features on pretraining test images"),
    Metric("task_vector_relative_norm_backbone", "‖τ‖/‖θ0‖ backbone", RATIO, None,
           "task-vector norm of the backbone relative to the pretrained backbone's norm (the head left out)"),
    Metric("task_vector_relative_norm_head", "‖τ‖/‖θ0‖ head", RATIO, None,
           "task-vector norm of the head relative to the pretrained head's norm"),
    Metric("task_vector_relative_norm", "‖τ‖/‖θ0‖ incl. head", RATIO, None,
           "task-vector norm relative to the pretrained weights' norm, the head included (runs stored before "
           "the backbone and head parts were)"),
    *(Metric(f"loss_barrier/{s}", f"barrier {s}", NATS, LOWER, f"loss barrier (nats) on the linear path m0 → adapted, "
             f"on {images}") for s, images in _IMAGES.items()),
    Metric("filter_kl", "filter KL", RATIO, None, "mean KL shift of the 3x3 convolution filters' distribution"),
)


@dataclass(frozen=True)
class Predictor:
    """A predictor of the analysis rows: its display name and which way predicts better
    transfer (``LOWER`` for distances, ``HIGHER`` for transferability scores)."""

    name: str
    title: str
    direction: str = HIGHER


# in display order (distances first); any other analysis metric follows, by name
PREDICTORS: tuple[Predictor, ...] = tuple(Predictor(*p) for p in (
    ("otdd", "OTDD (pixels)", LOWER), ("otdd_features", "OTDD (features)", LOWER),
    ("logme", "LogME"), ("leep", "LEEP"), ("nce", "NCE"), ("hscore", "H-score"), ("gbc", "GBC"),
    ("knn", "kNN accuracy"),
))
PREDICTOR_BY_NAME = {p.name: p for p in PREDICTORS}


def predictor_title(name: str) -> str:
    """``"otdd"`` -> ``"OTDD (pixels)"``; an unknown predictor by its own name."""
    p = PREDICTOR_BY_NAME.get(name)
    return p.title if p else name


def lower_is_better(predictor: str) -> bool:
    p = PREDICTOR_BY_NAME.get(predictor)
    return p is not None and p.direction == LOWER


def method_label(method: str) -> str:
    """A method as the reports name it: m0 is ``"m0 (pretrained)"``."""
    return M0_LABEL if method == names.PRETRAINED else method

