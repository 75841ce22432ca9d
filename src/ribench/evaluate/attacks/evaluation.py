"""The attack evaluation of one model on one eval set, as stored rows (docs/attacks.md).

``attack_rows(model, domain, attacks, seed)`` runs every attack of a run's ``attacks``
section (``check_attack`` validates one when the run is planned) on the domain's test
split and returns its rows:

- ``attack(name, eps[, task])``: ``robust_accuracy`` on the seeded ``subset`` of the test
  split (``robust_acc``, ``clean_acc``, ``n``, ``seconds``, ``queries_mean``);
- ``transfer(name, eps)``: with ``source`` (the pretrained model), the accuracy under
  examples crafted on ``source`` (``robust_acc``), for attacks with ``transfer``;
- ``masking(name[, task])``: once per attack name, the number of gradient-masking
  warnings (``warnings``) on the first 100 test images, for Linf and L2 attacks with
  ``check_masking``.

``task`` names the domain in the rows (the pretrained model is attacked on every task,
each row naming its task); an adapted model's rows name none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from ...core import rows
from ...core.timing import phase
from ...core.types import Domain
from .api import _resolve, attack_subset, get_attack, robust_accuracy, transfer_attack
from .checks import gradient_masking_checks
from .common import Classifier

MASKING_IMAGES = 100  # test images the gradient-masking checks look at


@dataclass
class AttackReport:
    """Rows of one model's attack evaluation. ``warnings``: the gradient-masking warnings, each
    prefixed with its attack (and task); ``checked``: whether any masking check ran."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checked: bool = False


def check_attack(name: str, eps: Sequence[float], params: Mapping[str, Any]) -> str:
    """The code version of attack ``name`` once its budgets are checked for every radius in ``eps``.

    Raises UnknownNameError (listing the attacks) for an unknown name, ConfigError for a
    bad radius or budget: what running it would refuse, found before anything runs."""
    version = get_attack(name).version
    for e in eps:
        _resolve(name, e, params, None)
    return version


def attack_rows(model: Classifier, domain: Domain, attacks: Sequence[Mapping[str, Any]], seed: int,
                task: str | None = None, source: Classifier | None = None) -> AttackReport:
    """Every attack of ``attacks`` (entries of a spec's ``attacks``: name, eps, subset,
    transfer, check_masking, params) on ``model`` over ``domain``'s test split, seeded by ``seed``."""
    out = AttackReport()
    test_split = domain.test
    for a in attacks:
        norm = get_attack(a["name"]).norm
        masking = rows.masking(a["name"], task)
        if a.get("check_masking", True) and norm in ("linf", "l2") and masking not in out.rows:
            head = test_split.subset(torch.arange(min(MASKING_IMAGES, len(test_split))))
            with phase("masking_checks"):
                found = gradient_masking_checks(model, head.images, head.labels, eps=max(a["eps"]), norm=norm,
                                                class_subset=domain.class_subset, seed=seed)
            out.rows[masking] = {"warnings": float(len(found))}
            out.warnings += [f"{masking.removeprefix(rows.MASKING_PREFIX)}: {w}" for w in found]
            out.checked = True
        # the seeded subset robust_accuracy would draw, taken first so a streaming split decodes only it
        test = test_split.subset(attack_subset(len(test_split), a["subset"], seed))
        for eps in a["eps"]:
            kw = dict(subset=None, seed=seed, class_subset=domain.class_subset, options=None, **a["params"])
            r = robust_accuracy(model, test.images, test.labels, a["name"], eps, **kw)
            out.rows[rows.attack(a["name"], eps, task)] = r.metrics()
            if a["transfer"] and source is not None:
                robust = transfer_attack(source, {"target": model}, test.images, test.labels, a["name"], eps,
                                         **kw)["target"]
                out.rows[rows.transfer(a["name"], eps)] = {"robust_acc": robust}
    return out


def robust_summary(attacked: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``robust_acc``: mean robust accuracy over the attack rows; ``transfer_robust_acc``: over the
    transfer rows (each only when there are such rows)."""
    out = {}
    for is_kind, metric in ((rows.is_attack, "robust_acc"), (rows.is_transfer, "transfer_robust_acc")):
        vals = [r["robust_acc"] for k, r in attacked.items() if is_kind(k)]
        if vals:
            out[metric] = sum(vals) / len(vals)
    return out


def add_robust_deltas(attacked: Mapping[str, dict[str, float]], reference: Mapping[str, Mapping[str, float]],
                      task: str) -> None:
    """Add ``delta_robust_acc`` to each attack row of an adapted model: its robust accuracy minus
    the pretrained model's on the same images (``reference``: the pretrained model's rows,
    per task), where the reference has that row."""
    for name, row in attacked.items():
        parsed = rows.parse_attack(name)
        if parsed is None or parsed.transfer:
            continue
        ref = reference.get(rows.attack(parsed.name, parsed.eps, task))
        if ref:
            row["delta_robust_acc"] = row["robust_acc"] - ref["robust_acc"]
