"""The protocol's numbers (DESIGN.md section 1) from per-eval-set accuracies.

All accuracies are fractions in [0, 1]. For a model adapted on task t:
- ``id_acc``   = a(m, t)
- ``R``        = mean over tasks e != t of a(m, e)
- ``dR``       = R(m) - mean over tasks e != t of a(m0, e)
- ``dP``       = a(m, P) - a(m0, P)     (negative = forgetting)
- ``corr_acc`` = mean accuracy over every corruption and severity
- ``mCE``      = mean over corruptions c of sum_{s in S} err(m, c, s) / sum_{s in S} err(ref, c, s)
- ``rel_mCE``  = mean over c of sum_{s in S} (err(m,c,s) - err(m,P)) / sum_{s in S} (err(ref,c,s) - err(ref,P))
  (Hendrycks & Dietterich 2019; their code sums over the five severities), where S is the
  set of severities evaluated for c: the reference's errors are taken at the same
  severities. The reference is the suite's published model where it has one
  (``Suite.reference_errors``: five per-severity errors, or one mean over severities 1..5
  as published for AlexNet on ImageNet-C, see
  ``ribench.data.corruptions.corruption_errors_reference``), else the pretrained model m0.
  A published mean serves only when all five severities were evaluated; a reference that
  lacks an evaluated severity is a ``DataError``, never a mix of severities. Fractions,
  not percentages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import numpy as np

from ..core.errors import DataError
from ..core.types import Suite

Acc = Mapping[str, float]


def corruption_errors(acc: Acc, suite: Suite) -> dict[str, dict[int, float]]:
    """corruption -> {severity: error} for the corrupted sets present in ``acc``."""
    by_c: dict[str, dict[int, float]] = defaultdict(dict)
    for name, (corr, sev) in suite.corruptions.items():
        if name in acc:
            by_c[corr][sev] = 1.0 - acc[name]
    return {c: dict(sorted(v.items())) for c, v in by_c.items()}


def _published(suite: Suite) -> dict[str, dict[int, float] | float]:
    """``Suite.reference_errors`` as corruption -> {severity: error}, or -> the mean over
    severities 1..5 where one number is given."""
    out: dict[str, dict[int, float] | float] = {}
    for c, errs in (suite.reference_errors or {}).items():
        errs = tuple(float(e) for e in errs)
        if len(errs) == 1:
            out[c] = errs[0]
        elif len(errs) == 5:
            out[c] = dict(enumerate(errs, start=1))
        else:
            raise DataError(f"suite {suite.name!r}: reference_errors[{c!r}] must hold 5 per-severity errors or one "
                            f"mean over severities 1..5, got {len(errs)} values")
    return out


def _reference_at(c: str, severities: list[int], ref: dict[int, float] | float, who: str) -> list[float]:
    """The reference's errors of corruption ``c`` at ``severities`` (one per severity)."""
    if isinstance(ref, float):
        if severities != [1, 2, 3, 4, 5]:
            raise DataError(f"mCE of {c!r}: the {who} holds only the mean error over severities 1..5, but severities "
                            f"{severities} were evaluated; evaluate all five severities or give the reference's "
                            f"per-severity errors")
        return [ref] * 5  # sum over the five = 5 x their mean
    missing = [s for s in severities if s not in ref]
    if missing:
        raise DataError(f"mCE of {c!r}: the {who} has no error at severities {missing} (it has "
                        f"{sorted(ref)}); the same severities are needed on both sides")
    return [ref[s] for s in severities]


def summarize(task: str | None, acc: Acc, ref_acc: Acc, suite: Suite) -> dict[str, float]:
    """Summary numbers of a model with accuracies ``acc`` against the pretrained ``ref_acc``.

    ``task`` None summarises the pretrained model itself (no id_acc, R over all tasks).
    """
    out: dict[str, float] = {}
    others = [e for e in suite.tasks if e != task and e in acc]
    if task is not None:
        out["id_acc"] = acc[task]
    if others:
        out["R"] = float(np.mean([acc[e] for e in others]))
        out["dR"] = out["R"] - float(np.mean([ref_acc[e] for e in others]))
    p = suite.pretrain.name
    out["P_acc"] = acc[p]
    out["dP"] = acc[p] - ref_acc[p]
    errs = corruption_errors(acc, suite)
    if errs:
        out["corr_acc"] = 1.0 - float(np.mean([e for v in errs.values() for e in v.values()]))
        if suite.reference_errors is not None:
            refs: dict = _published(suite)
            ref_clean, who = None, "suite's published reference"
        else:
            refs, ref_clean, who = corruption_errors(ref_acc, suite), 1.0 - ref_acc[p], "pretrained model (reference)"
        clean = 1.0 - acc[p]
        ce, rel = [], []
        for c, by_sev in errs.items():
            if c not in refs:
                continue
            sevs = list(by_sev)
            e = [by_sev[s] for s in sevs]
            r = _reference_at(c, sevs, refs[c], who)
            if sum(r) > 0:
                ce.append(sum(e) / sum(r))
            if ref_clean is not None:
                denom = sum(x - ref_clean for x in r)
                if denom > 0:
                    rel.append(sum(x - clean for x in e) / denom)
        if ce:
            out["mCE"] = float(np.mean(ce))
        if rel:
            out["rel_mCE"] = float(np.mean(rel))
    return out
