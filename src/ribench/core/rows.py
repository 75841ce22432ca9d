"""The names of stored result rows: one place that writers and readers share.

Every number ribench stores is a row (backbone, recipe, method, task, seed, eval_set,
metric, value) of the results store (docs/results.md). The eval-set names and the
method/task labels that carry meaning are built and parsed only here:

- ``SUMMARY`` (``"*"``): a model's summary numbers (id_acc, R, dR, dP, ...);
- method ``ANALYSIS``: predictors (otdd, logme, ...) of a (backbone, recipe, task);
- method ``PRETRAINED``: the pretrained model m0, the reference of every Δ;
- task ``MERGED``: a model merged over every task (task arithmetic, TIES, ...);
- ``curve(alpha)`` -> ``"curve/alpha=<a>"``: a point of an interpolation curve (WiSE-FT);
- ``attack(name, eps, task)`` -> ``"attack/<name>/eps=<eps>[/<task>]"`` and
  ``transfer(name, eps)`` -> ``"transfer/<name>/eps=<eps>"`` (crafted on m0);
- ``masking(name, task)`` -> ``"masking/<name>[/<task>]"``: gradient-masking warnings of an attack;
- ``diag(measure, sample)`` -> ``"diag/<measure>/<sample>"``, ``DIAG_SUMMARY``,
  ``DIAG_LAYERS``: per-model diagnostics;
- ``probe(task, eval_set)`` -> ``"probe/<task>/<eval set>"``: m0 with a linear probe fitted on
  ``task``, on an eval set of the tasks' label space (suites whose pretraining domain has its
  own classes and no class map: the reference of the models adapted on ``task``);
- ``train_epoch(epoch, run)`` -> ``"train/epoch=<e>"`` (``"train/run=<r>/epoch=<e>"`` for a
  cell's later training runs): a point of the training curve of an adapt or pretrain cell
  (metrics ``train_loss``, ``val_acc``).

The strings are part of the stored format: a run made by an earlier version reads the
same, so they never change; a new family is added here with its builder and parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUMMARY = "*"
ANALYSIS = "analysis"
PRETRAINED = "pretrained"
MERGED = "merged"

CURVE_PREFIX = "curve/alpha="
ATTACK_PREFIX = "attack/"
TRANSFER_PREFIX = "transfer/"
MASKING_PREFIX = "masking/"
DIAG_PREFIX = "diag/"
DIAG_SUMMARY = "diag/summary"
DIAG_LAYERS = "diag/layers"
TRAIN_PREFIX = "train/"
PROBE_PREFIX = "probe/"
TRAIN_LOSS = "train_loss"
VAL_ACC = "val_acc"


def curve(alpha: float) -> str:
    """``curve(0.5)`` -> ``"curve/alpha=0.5"``."""
    return f"{CURVE_PREFIX}{alpha:g}"


def parse_curve(eval_set: str) -> float | None:
    """The alpha of a curve row, None for any other eval set."""
    if not eval_set.startswith(CURVE_PREFIX):
        return None
    try:
        return float(eval_set[len(CURVE_PREFIX):])
    except ValueError:
        return None


def attack(name: str, eps: float, task: str | None = None) -> str:
    """``attack("pgd_linf", 0.1)`` -> ``"attack/pgd_linf/eps=0.1"``; m0's per-task rows add ``/<task>``."""
    return f"{ATTACK_PREFIX}{name}/eps={eps:g}" + (f"/{task}" if task else "")


def transfer(name: str, eps: float) -> str:
    """``transfer("pgd_linf", 0.1)`` -> ``"transfer/pgd_linf/eps=0.1"`` (examples crafted on m0)."""
    return f"{TRANSFER_PREFIX}{name}/eps={eps:g}"


def masking(name: str, task: str | None = None) -> str:
    """``masking("pgd_linf")`` -> ``"masking/pgd_linf"``: the gradient-masking checks of an attack; m0's add ``/<task>``."""
    return f"{MASKING_PREFIX}{name}" + (f"/{task}" if task else "")


@dataclass(frozen=True)
class AttackRow:
    """A parsed attack or transfer row name."""

    name: str
    eps: float
    transfer: bool = False
    task: str | None = None


_ATTACK = re.compile(r"^(?P<kind>attack|transfer)/(?P<name>[^/]+)/eps=(?P<eps>[^/]+)(?:/(?P<task>.+))?$")


def parse_attack(eval_set: str) -> AttackRow | None:
    """The attack, budget, kind and (m0's rows) task of an attack/transfer row; None otherwise."""
    m = _ATTACK.match(eval_set)
    if not m:
        return None
    try:
        eps = float(m["eps"])
    except ValueError:
        return None
    return AttackRow(m["name"], eps, m["kind"] == "transfer", m["task"])


def is_attack(eval_set: str) -> bool:
    return eval_set.startswith(ATTACK_PREFIX)


def is_transfer(eval_set: str) -> bool:
    return eval_set.startswith(TRANSFER_PREFIX)


def diag(measure: str, sample: str) -> str:
    """``diag("linear_cka", "task")`` -> ``"diag/linear_cka/task"``."""
    return f"{DIAG_PREFIX}{measure}/{sample}"


def is_diag(eval_set: str) -> bool:
    return eval_set.startswith(DIAG_PREFIX)


def probe(task: str, eval_set: str) -> str:
    """``probe("svhn", "usps")`` -> ``"probe/svhn/usps"``: m0 probed on task ``svhn``, on eval set ``usps``."""
    return f"{PROBE_PREFIX}{task}/{eval_set}"


def parse_probe(eval_set: str) -> tuple[str, str] | None:
    """(task, eval set) of a probe row; None for any other row. Task names hold no ``/``."""
    if not eval_set.startswith(PROBE_PREFIX):
        return None
    task, sep, name = eval_set[len(PROBE_PREFIX):].partition("/")
    return (task, name) if sep and task and name else None


def train_epoch(epoch: int, run: int = 0) -> str:
    """``train_epoch(3)`` -> ``"train/epoch=3"``; a cell's later training runs (``run`` >= 1, in
    call order) -> ``"train/run=1/epoch=3"``. Epochs count from 1."""
    return f"{TRAIN_PREFIX}" + (f"run={run}/" if run else "") + f"epoch={epoch}"


_TRAIN = re.compile(r"^train/(?:run=(?P<run>[1-9][0-9]*)/)?epoch=(?P<epoch>[1-9][0-9]*)$")


def parse_train_epoch(eval_set: str) -> tuple[int, int] | None:
    """(run, epoch) of a training-curve row (run 0: the cell's first training run); None otherwise."""
    m = _TRAIN.match(eval_set)
    if not m:
        return None
    return int(m["run"] or 0), int(m["epoch"])


def is_train_curve(eval_set: str) -> bool:
    return eval_set.startswith(TRAIN_PREFIX)


def is_special(eval_set: str) -> bool:
    """True for every row that is not a plain eval-set accuracy row (summary, curve, attack, transfer, diag,
    training curve, probe)."""
    return (eval_set == SUMMARY or eval_set.startswith((CURVE_PREFIX, ATTACK_PREFIX, TRANSFER_PREFIX,
                                                        DIAG_PREFIX, TRAIN_PREFIX, PROBE_PREFIX)))
