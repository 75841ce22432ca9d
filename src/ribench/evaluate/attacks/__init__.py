"""Adversarial attacks and robust accuracy (docs/attacks.md).

Attack functions take ``model`` (float images in [0, 1], [B, C, H, W] -> logits
[B, K]), images ``x`` (uint8 or float in [0, 1]), labels ``y`` int64 [B] and keyword
budgets, and return adversarial images in [0, 1] inside the threat model (black-box
attacks also return the queries spent per image):

- white-box: ``fgsm``, ``pgd`` (``pgd_linf``, ``pgd_l2``), ``apgd_ce``, and
  ``autoattack`` when the optional ``torchattacks`` package is installed;
- black-box: ``square_linf`` (Linf), ``sparse_rs`` (L0, k pixels).

``robust_accuracy(model, images, labels, attack, eps, ...)`` runs one registered
attack (``ATTACKS``) on a fixed, seeded subset of an eval set; ``transfer_attack``
crafts on one model and evaluates others (``adversarial_examples`` returns the crafted
images, for caching, ``transfer_accuracy`` evaluates models on given ones);
``zero_gradient_fraction`` is the cheap masking mark of every white-box row;
``gradient_masking_checks`` flags
evaluations that gradient masking makes unreliable. ``attack_rows`` runs a spec's
``attacks`` section on one model and eval set and returns the rows a run stores.
"""

from .api import (
    ATTACKS,
    AttackResult,
    AttackSpec,
    adversarial_examples,
    attack_subset,
    get_attack,
    list_attacks,
    robust_accuracy,
    transfer_accuracy,
    transfer_attack,
)
from .autoattack import autoattack, autoattack_available
from .blackbox import fraction_schedule, sparse_rs, square_linf
from .checks import MASKED_ZERO_GRAD, gradient_masking_checks, zero_gradient_fraction
from .common import margin
from .evaluation import (MASKING_TOL, MASKING_VERSION, AttackReport, ExampleCache, add_robust_deltas, attack_rows,
                         check_attack, robust_summary, transfer_key)
from .whitebox import apgd_ce, apgd_checkpoints, fgsm, pgd, pgd_l2, pgd_linf

__all__ = [
    "ATTACKS", "AttackReport", "ExampleCache", "MASKED_ZERO_GRAD", "MASKING_TOL", "MASKING_VERSION", "AttackResult", "AttackSpec", "add_robust_deltas", "adversarial_examples", "apgd_ce",
    "apgd_checkpoints", "attack_rows", "attack_subset", "autoattack", "autoattack_available", "check_attack", "fgsm",
    "fraction_schedule", "get_attack", "gradient_masking_checks", "list_attacks", "margin", "pgd", "pgd_l2",
    "pgd_linf", "robust_accuracy", "robust_summary", "sparse_rs", "square_linf", "transfer_accuracy", "transfer_attack",
    "transfer_key", "zero_gradient_fraction",
]
