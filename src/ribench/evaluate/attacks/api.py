"""The attack registry and the common entry points ``robust_accuracy`` and ``transfer_attack``.

Both run on a fixed, seeded subset of the given eval set (``attack_subset``): the same
images for every model given the same seed and set size, so numbers of models adapted
from one pretrained model are paired. Attacks draw their random numbers from a CPU
generator seeded by ``(attack, seed)``: same spec and seed, same numbers.

``precision`` (every entry point; None: the current compute options, core/runtime.py) runs
the model's forward passes under ``autocast``: bf16/fp16 matmuls, while the images, the
perturbation, its projection and the input gradient stay float32. fp32 runs no autocast.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ...core.errors import ConfigError, DataError, RibenchError, UnknownNameError
from ...core.runtime import autocast, derive_seed, resolve_compute
from .autoattack import LABEL as AUTOATTACK_LABEL
from .autoattack import autoattack, autoattack_available
from .blackbox import sparse_rs, square_linf
from .common import Classifier, ClassSubset, check_subset, flat_norm, logits_of, model_device
from .whitebox import apgd_ce, fgsm, pgd_l2, pgd_linf

BUDGET_KEYS = ("steps", "step_size", "restarts", "queries")


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack.

    ``fn(model, x, y, **kwargs)`` returns adversarial images (``blackbox=False``) or
    ``(images, queries [B])`` (``blackbox=True``). ``budget`` holds the defaults of
    ``eps`` and of those of ``steps``, ``step_size``, ``restarts``, ``queries`` the attack
    takes. ``norm`` is "linf", "l2" or "l0" (``eps`` counts pixels for "l0").
    """

    fn: Callable[..., Any]
    budget: Mapping[str, Any]
    norm: str
    blackbox: bool
    label: str
    paper: str
    eps_arg: str = "eps"  # the keyword of ``fn`` that receives ``eps``
    version: str = "1"  # code version, part of the key of every cell that runs the attack
    # 2 (pgd_*, apgd_ce, square_linf, sparse_rs): step for step as their reference code


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(fgsm, {"eps": 0.1}, "linf", False, "FGSM",
                       "Goodfellow, Shlens & Szegedy 2015, Explaining and Harnessing Adversarial Examples"),
    "pgd_linf": AttackSpec(pgd_linf, {"eps": 0.1, "steps": 20, "step_size": None, "restarts": 1}, "linf", False,
                           "PGD-Linf",
                           "Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks",
                           version="2"),
    "pgd_l2": AttackSpec(pgd_l2, {"eps": 1.5, "steps": 20, "step_size": None, "restarts": 1}, "l2", False,
                         "PGD-L2", "Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks",
                         version="2"),
    "apgd_ce": AttackSpec(apgd_ce, {"eps": 0.1, "steps": 100, "restarts": 1}, "linf", False, "APGD-CE",
                          "Croce & Hein 2020, Reliable Evaluation of Adversarial Robustness with an Ensemble of "
                          "Diverse Parameter-free Attacks", version="2"),
    "square_linf": AttackSpec(square_linf, {"eps": 0.1, "queries": 1000}, "linf", True, "Square-Linf",
                              "Andriushchenko et al. 2020, Square Attack: a Query-efficient Black-box Adversarial "
                              "Attack via Random Search", version="2"),
    "sparse_rs": AttackSpec(sparse_rs, {"eps": 10, "queries": 1000}, "l0", True, "Sparse-RS-L0",
                            "Croce et al. 2022, Sparse-RS: a Versatile Framework for Query-Efficient Sparse "
                            "Black-Box Adversarial Attacks", eps_arg="k", version="2"),
}
if autoattack_available():
    ATTACKS["autoattack"] = AttackSpec(autoattack, {"eps": 0.1}, "linf", False, AUTOATTACK_LABEL,
                                       "Croce & Hein 2020 (implementation: torchattacks)")


def list_attacks() -> list[str]:
    """Names of the registered attacks, sorted."""
    return sorted(ATTACKS)


def get_attack(name: str) -> AttackSpec:
    try:
        return ATTACKS[name]
    except KeyError:
        raise UnknownNameError("attack", name, list_attacks()) from None


@dataclass(frozen=True)
class AttackResult:
    """Robust accuracy of one model under one attack on a fixed subset of an eval set.

    ``robust_acc``: fraction of the ``n`` images classified correctly both clean and
    after the attack (so never above ``clean_acc``). ``queries_mean``: for black-box
    attacks, mean model queries per attacked (clean-correct) image, else None.
    ``indices`` [n]: the images of the eval set used; ``clean`` / ``robust`` [n]: per image.
    """

    attack: str
    label: str
    norm: str
    eps: float
    robust_acc: float
    clean_acc: float
    n: int
    queries_mean: float | None
    seconds: float
    seed: int
    budget: dict[str, Any] = field(default_factory=dict)
    indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64), repr=False)
    clean: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool), repr=False)
    robust: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool), repr=False)

    @property
    def success_rate(self) -> float:
        """Fraction of clean-correct images the attack fooled (nan if none was correct)."""
        return 1.0 - self.robust_acc / self.clean_acc if self.clean_acc > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a results store."""
        out = {"robust_acc": self.robust_acc, "clean_acc": self.clean_acc, "n": float(self.n),
               "seconds": self.seconds}
        if self.queries_mean is not None:
            out["queries_mean"] = self.queries_mean
        return out


def attack_subset(n: int, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` images drawn from ``n`` by ``seed`` (all of them if
    ``size`` is None or >= n). Depends on nothing else, so every model gets the same images."""
    if size is None or size >= n:
        return torch.arange(n)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError("subset", f"must be a positive integer or None, got {size!r}")
    g = torch.Generator().manual_seed(derive_seed("attack-subset", seed))
    return torch.sort(torch.randperm(n, generator=g)[:size]).values


def _resolve(attack: str, eps: float | None, given: Mapping[str, Any], options: Mapping[str, Any] | None
             ) -> tuple[AttackSpec, float, dict[str, Any]]:
    """(spec, eps, keyword arguments of ``spec.fn``) with defaults filled in and checked."""
    spec = get_attack(attack)
    for key, value in given.items():
        if value is not None and key not in spec.budget:
            takes = ", ".join(k for k in spec.budget if k != "eps")
            raise ConfigError(f"{attack}.{key}",
                              f"the {attack} attack does not take {key} (it takes {takes or 'only eps'})")
    eps = spec.budget["eps"] if eps is None else eps
    if spec.norm == "l0":
        if isinstance(eps, bool) or not float(eps).is_integer() or eps < 1:
            raise ConfigError(f"{attack}.eps", f"counts pixels for an L0 attack: a positive integer, got {eps!r}")
        eps = int(eps)
    elif isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise ConfigError(f"{attack}.eps", f"must be a finite number >= 0, got {eps!r}")
    kwargs = {k: (given.get(k) if given.get(k) is not None else v) for k, v in spec.budget.items() if k != "eps"}
    for key, value in kwargs.items():
        _check_budget(attack, key, value)
    kwargs[spec.eps_arg] = eps
    accepted = inspect.signature(spec.fn).parameters
    for key in options or {}:
        reserved = ("model", "x", "y", "norm", "class_subset", "generator", "seed", spec.eps_arg)
        if key not in accepted or key in reserved:
            raise ConfigError(f"{attack}.options.{key}", f"is not an option of the {attack} attack")
    kwargs.update(options or {})
    return spec, eps, kwargs


def _check_budget(attack: str, key: str, value: Any) -> None:
    """steps, restarts, queries: integers >= 1; step_size: a finite number > 0 (or None: the default rule)."""
    if key == "step_size":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value < math.inf):
            raise ConfigError(f"{attack}.step_size", f"must be a finite number > 0, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attack}.{key}", f"must be an integer >= 1, got {value!r}")


def _check_eval_set(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not (
            images.dtype == torch.uint8 or torch.is_floating_point(images)):
        got = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"images must be a uint8 or float tensor [N, C, H, W], got {got} "
                        f"with shape {tuple(getattr(images, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise DataError(f"labels must be an int64 tensor [N], got {getattr(labels, 'dtype', type(labels).__name__)}")
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError("the eval set is empty: nothing to attack")


def _to_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _check_threat_model(spec: AttackSpec, name: str, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> None:
    """Refuse an attack output outside [0, 1] or outside the eps-ball (a broken attack)."""
    if x_adv.shape != x.shape or not torch.isfinite(x_adv).all() or x_adv.min() < 0 or x_adv.max() > 1:
        raise RibenchError(f"attack {name} returned images outside [0, 1] or of the wrong shape")
    d = x_adv - x
    if spec.norm == "linf":
        size, bound = d.abs().flatten(1).amax(1), eps + 1e-5
    elif spec.norm == "l2":
        size, bound = flat_norm(d, 2), eps * (1 + 1e-4) + 1e-5
    else:
        size, bound = (d != 0).any(1).flatten(1).sum(1).float(), eps
    if len(size) and size.max() > bound:
        raise RibenchError(f"attack {name} left its {spec.norm} ball: perturbation {size.max().item():.6g} > eps {eps}")


def _craft(model: Classifier, images: torch.Tensor, labels: torch.Tensor, attack: str, spec: AttackSpec, eps: float,
           kwargs: dict[str, Any], class_subset: tuple[int, ...] | None, seed: int, batch_size: int,
           precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Attack ``model`` batch by batch: (clean-correct bool [n], adversarial-correct bool [n],
    adversarial images float [n, C, H, W] on the CPU, queries int64 [n] or None)."""
    device = model_device(model, images.device)
    generator = torch.Generator().manual_seed(derive_seed("attack", attack, seed))
    takes = inspect.signature(spec.fn).parameters
    extra = {"generator": generator} if "generator" in takes else {"seed": seed} if "seed" in takes else {}
    clean, adv_ok, advs, queries = [], [], [], []
    for start in range(0, len(labels), batch_size):
        xb = _to_float(images[start:start + batch_size], device)
        yb = labels[start:start + batch_size].to(device)
        with autocast(precision, device):
            out = spec.fn(model, xb, yb, class_subset=class_subset, **kwargs, **extra)
        x_adv, q = out if spec.blackbox else (out, None)
        _check_threat_model(spec, attack, xb, x_adv, eps)
        with torch.no_grad(), autocast(precision, device):
            clean.append((logits_of(model, xb, class_subset).argmax(1) == yb).cpu())
            adv_ok.append((logits_of(model, x_adv, class_subset).argmax(1) == yb).cpu())
        advs.append(x_adv.detach().cpu())
        if q is not None:
            queries.append(q.cpu())
    return torch.cat(clean), torch.cat(adv_ok), torch.cat(advs), (torch.cat(queries) if queries else None)


def _budget_batch(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", f"must be a positive integer, got {batch_size!r}")
    return batch_size


def _run(model: Classifier, images: torch.Tensor, labels: torch.Tensor, attack: str, eps: float | None,
         budgets: Mapping[str, Any], options: Mapping[str, Any] | None, subset: int | None, seed: int,
         class_subset: ClassSubset, batch_size: int, precision: str | None = None) -> tuple:
    """Check the arguments, draw the seeded subset and craft on it with ``model`` in eval
    mode (restored after): ``(spec, eps, kwargs, index, (clean, adv_ok, x_adv, queries))``."""
    spec, eps, kwargs = _resolve(attack, eps, budgets, options)
    _check_eval_set(images, labels)
    batch_size = _budget_batch(batch_size)
    precision = resolve_compute(precision=precision).precision
    index = attack_subset(len(labels), subset, seed)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            num_classes = model(_to_float(images[:1], model_device(model, images.device))).shape[1]
        subset_classes = check_subset(class_subset, num_classes)
        crafted = _craft(model, images[index], labels[index], attack, spec, eps, kwargs, subset_classes, seed,
                         batch_size, precision)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return spec, eps, kwargs, index, crafted


def robust_accuracy(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: str = "pgd_linf",
    eps: float | None = None,
    *,
    steps: int | None = None,
    step_size: float | None = None,
    restarts: int | None = None,
    queries: int | None = None,
    subset: int | None = 500,
    seed: int = 0,
    class_subset: ClassSubset = None,
    batch_size: int = 250,
    options: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> AttackResult:
    """Robust accuracy of ``model`` under ``attack`` (a name in ``ATTACKS``).

    images: uint8 [N, C, H, W] or float in [0, 1]; labels: int64 [N].
    eps: radius of the threat model in the attack's norm (pixels for sparse_rs);
    ``steps``, ``step_size``, ``restarts``, ``queries``: budgets, for the attacks that
    take them; None (and every budget not given) uses the attack's default in
    ``ATTACKS[attack].budget``. ``subset``: images drawn by ``seed`` (``attack_subset``);
    None attacks all. ``class_subset``: logits of other classes are masked.
    ``options``: further keyword arguments of the attack function (e.g. ``{"loss": "margin"}``).
    ``precision``: the forward passes' autocast ("fp32", "bf16", "fp16"; None: the current
    compute options). The model is put in eval mode and restored after.
    """
    return _robust(model, images, labels, attack, eps, {"steps": steps, "step_size": step_size,
                                                       "restarts": restarts, "queries": queries},
                   options, subset, seed, class_subset, batch_size, precision)[0]


def _robust(model: Classifier, images: torch.Tensor, labels: torch.Tensor, attack: str, eps: float | None,
            budgets: Mapping[str, Any], options: Mapping[str, Any] | None, subset: int | None, seed: int,
            class_subset: ClassSubset, batch_size: int, precision: str | None = None
            ) -> tuple[AttackResult, torch.Tensor]:
    """``robust_accuracy`` and the adversarial images it crafted (float32 [n, C, H, W], on the CPU):
    the very images ``adversarial_examples`` returns for the same arguments."""
    start = time.perf_counter()
    spec, eps, kwargs, index, (clean, adv_ok, x_adv, q) = _run(
        model, images, labels, attack, eps, budgets, options, subset, seed, class_subset, batch_size, precision)
    seconds = time.perf_counter() - start
    robust = clean & adv_ok
    n = len(index)
    queries_mean = None
    if q is not None:
        queries_mean = float(q[clean].float().mean()) if clean.any() else 0.0
    return AttackResult(
        attack=attack, label=spec.label, norm=spec.norm, eps=float(eps),
        robust_acc=robust.float().mean().item() if n else float("nan"),
        clean_acc=clean.float().mean().item() if n else float("nan"),
        n=n, queries_mean=queries_mean, seconds=seconds, seed=seed, budget=dict(kwargs),
        indices=index, clean=clean, robust=robust,
    ), x_adv


def adversarial_examples(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: str = "pgd_linf",
    eps: float | None = None,
    *,
    steps: int | None = None,
    step_size: float | None = None,
    restarts: int | None = None,
    queries: int | None = None,
    subset: int | None = 500,
    seed: int = 0,
    class_subset: ClassSubset = None,
    batch_size: int = 250,
    options: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices int64 [n], adversarial images float32 [n, C, H, W] on the CPU)`` of
    ``attack`` on ``model`` for the seeded subset of the eval set, arguments as
    ``robust_accuracy``. For caching one model's adversarial images and evaluating
    other models on them (what ``transfer_attack`` does in one call)."""
    *_, index, (_, _, x_adv, _) = _run(
        model, images, labels, attack, eps, {"steps": steps, "step_size": step_size, "restarts": restarts,
                                             "queries": queries}, options, subset, seed, class_subset, batch_size,
        precision)
    return index, x_adv


def transfer_attack(
    source: Classifier,
    targets: Mapping[str, Classifier],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str = "pgd_linf",
    eps: float | None = None,
    *,
    steps: int | None = None,
    step_size: float | None = None,
    restarts: int | None = None,
    queries: int | None = None,
    subset: int | None = None,
    seed: int = 0,
    class_subset: ClassSubset = None,
    batch_size: int = 250,
    options: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> dict[str, float]:
    """Craft adversarial examples on ``source`` (e.g. the pretrained model) and evaluate
    every model of ``targets`` (e.g. each model adapted from it) on them.

    Returns target name -> robust accuracy: the fraction of images the target classifies
    correctly both clean and after the source's attack. Arguments as ``robust_accuracy``
    (``subset`` defaults to every image of ``x``).
    """
    index, x_adv = adversarial_examples(source, x, y, attack, eps, steps=steps, step_size=step_size,
                                        restarts=restarts, queries=queries, subset=subset, seed=seed,
                                        class_subset=class_subset, batch_size=batch_size, options=options,
                                        precision=precision)
    return transfer_accuracy(targets, x[index], y[index], x_adv, class_subset=class_subset, batch_size=batch_size,
                             precision=precision)


def transfer_accuracy(targets: Mapping[str, Classifier], x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                      class_subset: ClassSubset = None, batch_size: int = 250, precision: str | None = None
                      ) -> dict[str, float]:
    """Target name -> the fraction of images each target classifies correctly both clean
    (``x``: uint8 or float [n, C, H, W], labels ``y`` int64 [n]) and as ``x_adv`` (float [n, C, H, W]
    in [0, 1], e.g. crafted on another model by ``adversarial_examples``, or read from a cache)."""
    _check_eval_set(x, y)
    if x_adv.shape != x.shape or not torch.is_floating_point(x_adv):
        raise DataError(f"adversarial images must be float {tuple(x.shape)}, got {x_adv.dtype} {tuple(x_adv.shape)}")
    batch_size = _budget_batch(batch_size)
    precision = resolve_compute(precision=precision).precision
    out: dict[str, float] = {}
    for name, target in targets.items():
        was_training = getattr(target, "training", False)
        if hasattr(target, "eval"):
            target.eval()
        device = model_device(target, x.device)
        try:
            with torch.no_grad():
                num_classes = target(_to_float(x[:1], device)).shape[1]
                subset_classes = check_subset(class_subset, num_classes)
                hits = []
                for start in range(0, len(y), batch_size):
                    yb = y[start:start + batch_size].to(device)
                    with autocast(precision, device):
                        ok_clean = logits_of(target, _to_float(x[start:start + batch_size], device),
                                             subset_classes).argmax(1) == yb
                        ok_adv = logits_of(target, x_adv[start:start + batch_size].to(device),
                                           subset_classes).argmax(1) == yb
                    hits.append((ok_clean & ok_adv).cpu())
        finally:
            if hasattr(target, "train"):
                target.train(was_training)
        out[name] = torch.cat(hits).float().mean().item()
    return out
