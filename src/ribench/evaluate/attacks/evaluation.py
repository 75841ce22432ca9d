"""The attack evaluation of one model on one eval set, as stored rows (docs/attacks.md).

``attack_rows(model, domain, attacks, seed)`` runs every attack of a run's ``attacks``
section (``check_attack`` validates one when the run is planned) on the domain's test
split and returns its rows:

- ``attack(name, eps[, task])``: ``robust_accuracy`` on the seeded ``subset`` of the test
  split (``robust_acc``, ``clean_acc``, ``n``, ``seconds``, ``queries_mean``).
  White-box attack rows also hold ``zero_grad_frac``, the share of those images whose
  input gradient of the loss is exactly zero or not finite (checks.zero_gradient_fraction,
  once per attack entry: the images do not depend on eps), and ``masked``: 1.0 when it
  exceeds ``MASKED_ZERO_GRAD`` (the row is suspect of gradient masking), else 0.0;
- ``transfer(name, eps)``: with ``source`` (the pretrained model), the accuracy under
  examples crafted on ``source`` (``robust_acc``), for attacks with ``transfer``;
- ``masking(name[, task])``: once per attack name (whatever its radii: it checks at the
  largest), the number of gradient-masking warnings (``warnings``) on the first 100 test
  images, for Linf and L2 attacks with ``check_masking``, and ``full_checks``: 1.0 when all
  seven checks ran, 0.0 when only the cheap ones did (outputs finite and deterministic,
  gradients present), because the attack's robust accuracy at every radius of the entry is
  already at most ``MASKING_TOL``: gradient masking can only make a robust accuracy look higher,
  and one that low cannot be overestimated by more than the checks' own slack (checks 3-7
  cost about ten times the attack itself).

Transfer examples are crafted once per source. With a ``cache`` (``ExampleCache``: the
engine's is the run's artifact store) and ``source_key`` (the cell key of the source
model), the examples of each (source, domain, attack, eps, budgets, images, seed,
precision, code version) are stored under ``transfer_key``: the pretrained model's own
evaluation (``source`` None, ``model`` the source) stores the images its attack crafted,
and every model adapted from it reads them instead of attacking the source again. A
cached entry whose shape or values do not fit is crafted again and replaced.

``task`` names the domain in the rows (the pretrained model is attacked on every task,
each row naming its task); an adapted model's rows name none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from ...core import rows
from ...core.runtime import autocast, current_compute
from ...core.timing import phase
from ...core.types import Domain
from .api import _resolve, _robust, adversarial_examples, attack_subset, get_attack, transfer_accuracy
from .checks import MASKED_ZERO_GRAD, gradient_masking_checks, zero_gradient_fraction
from .common import Classifier, model_device

MASKING_IMAGES = 100  # test images the gradient-masking checks look at
MASKING_TOL = 0.02  # the checks' slack, and the robust accuracy at or below which only the cheap ones run
MASKING_VERSION = "2"  # of the checks as attack_rows runs them (2: cheap ones only at robust accuracy <= MASKING_TOL),
# in the key of every evaluate cell that runs them
TRANSFER_CACHE_VERSION = "1"  # layout of a cached transfer entry; part of every transfer_key


class ExampleCache(Protocol):
    """Where crafted transfer examples are kept: ``get`` returns what ``put`` stored under a key
    (None when absent, or when what is stored cannot be read intact)."""

    def get(self, key: str) -> dict[str, torch.Tensor] | None: ...

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None: ...


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def transfer_key(source_key: str, domain: str, attack: Mapping[str, Any], eps: float, seed: int,
                 images: torch.Tensor, labels: torch.Tensor, class_subset: Sequence[int] | None,
                 precision: str) -> str:
    """SHA-256 naming the transfer examples of attack entry ``attack`` at radius ``eps``,
    crafted on the model of cell ``source_key`` from ``images`` / ``labels`` (the attacked
    subset, hashed: the same images give the same key whatever split or subset rule chose them)."""
    payload = {"kind": "transfer-examples", "layout": TRANSFER_CACHE_VERSION, "source": source_key,
               "domain": domain, "attack": attack["name"], "version": get_attack(attack["name"]).version,
               "eps": float(eps), "params": {k: v for k, v in sorted(dict(attack.get("params") or {}).items())},
               "seed": seed, "images": _digest(images), "labels": _digest(labels),
               "class_subset": None if class_subset is None else [int(c) for c in class_subset],
               "precision": precision}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fits(entry: Mapping[str, torch.Tensor] | None, images: torch.Tensor) -> bool:
    """A cached entry holds float32 images of the attacked set's shape, finite and in [0, 1]."""
    x = None if entry is None else entry.get("x_adv")
    return (isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == images.shape
            and bool(torch.isfinite(x).all()) and (x.numel() == 0 or (x.min() >= 0 and x.max() <= 1)))


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
                task: str | None = None, source: Classifier | None = None, cache: ExampleCache | None = None,
                source_key: str | None = None, progress: Callable[[float, str], None] | None = None
                ) -> AttackReport:
    """Every attack of ``attacks`` (entries of a spec's ``attacks``: name, eps, subset,
    transfer, check_masking, params) on ``model`` over ``domain``'s test split, seeded by ``seed``.

    ``source``: the model transfer examples are crafted on. ``cache`` and ``source_key`` (the
    cell key of ``source``, or of ``model`` itself when ``source`` is None): keep those
    examples, crafted once (module docstring). ``progress(fraction, what)``: after the checks of
    each attack and after each of its radii (a progress bar that moves during the attacks)."""
    out = AttackReport()
    steps = sum(len(a["eps"]) + 1 for a in attacks) + len({a["name"] for a in attacks if _checks_masking(a)})
    done = [0]

    def step(what: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0] / steps, what + (f" ({task})" if task else ""))

    test_split = domain.test
    precision = current_compute().precision
    device = model_device(model, torch.device("cpu"))
    caching = cache is not None and source_key is not None
    for a in attacks:
        spec = get_attack(a["name"])
        norm = spec.norm
        masking = rows.masking(a["name"], task)
        # the seeded subset robust_accuracy would draw, taken first so a streaming split decodes only it
        test = test_split.subset(attack_subset(len(test_split), a["subset"], seed))
        flat = None
        if not spec.blackbox:
            with phase("masking_checks"), autocast(precision, device):
                flat = zero_gradient_fraction(model, test.images, test.labels, class_subset=domain.class_subset)
        step(f"{a['name']}: gradient checks")
        for eps in a["eps"]:
            kw = dict(subset=None, seed=seed, class_subset=domain.class_subset, options=None, **a["params"])
            r, x_adv = _robust(model, test.images, test.labels, a["name"], eps, dict(a["params"]), None, None, seed,
                               domain.class_subset, 250)  # robust_accuracy(model, ..., **kw), and its images
            row = r.metrics()
            if flat is not None:
                row.update(zero_grad_frac=flat, masked=float(flat > MASKED_ZERO_GRAD))
            out.rows[rows.attack(a["name"], eps, task)] = row
            if not a["transfer"]:
                step(f"{a['name']} eps={eps:g}")
                continue
            key = (transfer_key(source_key, domain.name, a, eps, seed, test.images, test.labels,
                                domain.class_subset, precision) if caching else None)
            if source is None:
                if key is not None and not _fits(cache.get(key), test.images):
                    with phase("save"):
                        cache.put(key, {"x_adv": x_adv})
                step(f"{a['name']} eps={eps:g}")
                continue
            entry = cache.get(key) if key is not None else None
            if _fits(entry, test.images):
                crafted = entry["x_adv"]
            else:
                _, crafted = adversarial_examples(source, test.images, test.labels, a["name"], eps, **kw)
                if key is not None:
                    with phase("save"):
                        cache.put(key, {"x_adv": crafted})
            robust = transfer_accuracy({"target": model}, test.images, test.labels, crafted,
                                       class_subset=domain.class_subset)["target"]
            out.rows[rows.transfer(a["name"], eps)] = {"robust_acc": robust}
            step(f"{a['name']} eps={eps:g}, transfer")
        if _checks_masking(a) and masking not in out.rows:
            # every radius of the entry: checks 4-7 also speak for the rows at its smaller radii
            robust = max(out.rows[rows.attack(a["name"], e, task)]["robust_acc"] for e in a["eps"])
            full = robust > MASKING_TOL
            head = test_split.subset(torch.arange(min(MASKING_IMAGES, len(test_split))))
            with phase("masking_checks"), autocast(precision, device):
                found = gradient_masking_checks(model, head.images, head.labels, eps=max(a["eps"]), norm=norm,
                                                class_subset=domain.class_subset, seed=seed, tol=MASKING_TOL,
                                                full=full)
            out.rows[masking] = {"warnings": float(len(found)), "full_checks": float(full)}
            out.warnings += [f"{masking.removeprefix(rows.MASKING_PREFIX)}: {w}" for w in found]
            out.checked = True
            step(f"{a['name']}: masking checks" + ("" if full else " (cheap ones: robust accuracy ~0)"))
    return out


def _checks_masking(a: Mapping[str, Any]) -> bool:
    """Whether attack entry ``a`` gets gradient-masking checks (Linf and L2 attacks with check_masking)."""
    return bool(a.get("check_masking", True)) and get_attack(a["name"]).norm in ("linf", "l2")


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
