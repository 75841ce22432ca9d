"""Attack evaluation of adapted models: transfer examples crafted on m0 every time against once.

An evaluate cell of a run with ``attacks = [{name = "pgd_linf", transfer = true, ...}]``
attacks each adapted model white-box and evaluates it on examples crafted on the pretrained
model m0. Before the transfer cache, every evaluate cell crafted those examples on m0
again; now m0's own evaluation stores them (engine TransferCache over the artifact store)
and each evaluate cell only reads them. Measured here, in one run:

- data: scikit-learn's 1797 UCI digits (8x8, upsampled to 16x16 uint8), split 1000 / 797;
  the adaptation task is the same digits under uniform pixel noise (+-32 grey levels), on
  which m0 stays accurate (an attack stops on an image once it is misclassified, so a task
  m0 cannot read would make crafting on m0 nearly free);
- m0: the built-in ``cnn`` (widths 16, 32; 64 features) trained 3 epochs on the digits;
  ``--models`` (5) adapted models: m0 fine-tuned 1 epoch on the noisy task, seeds 1..5;
- the attack: PGD-Linf, eps 0.05, ``--steps`` (10) steps, ``--subset`` (300) images of the task's
  test split, transfer on, masking checks off (their cost does not change);
- per model, ``attack_rows`` as the evaluate cell calls it, without a cache (crafted on m0
  every time: the old path) and with the cache m0's evaluation filled (a fresh TransferCache
  over a temporary artifact folder: SHA-256 checked and safetensors read every time), and
  ``attack_rows`` with transfer off (the white-box part alone, which the cache does not touch).
  The two sides alternate, ``--repeats`` times; each model's best time counts.

Reported: seconds per model of the transfer part (total minus white-box) before and after,
and of the whole attack evaluation; ``ratio`` = transfer seconds before / after (target >= 3).
Then the same with the gradient-masking checks on (``check_masking = true``, the default) at
each radius of ``--masking-eps`` (0.05 0.2): before = crafted on m0 every time and all seven
checks for every model (the old path), after = the cache and the checks as they run now (the
cheap ones only where the robust accuracy is already at most ``MASKING_TOL``).
The stored numbers must agree: cached and crafted transfer robust accuracy are asserted
bit-identical for every model.

Usage: python bench/attacks.py [--models 5] [--steps 10] [--subset 300] [--repeats 3] [--threads 1]
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from ribench.core import Domain, InputSpec, Split
from ribench.engine.artifacts import ArtifactStore
from ribench.engine.execute import TransferCache
from ribench.evaluate.attacks import attack_rows, evaluation
from ribench.models import create_model
from ribench.models.training import TrainConfig, train_classifier


def digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1000], perm[1000:]
    return Split(x[tr], y[tr]), Split(x[te], y[te])


def noisy(split: Split, seed: int) -> Split:
    """The same digits under uniform noise of +-32 grey levels: a nearby task m0 still reads."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-32, 33, split.images.shape, generator=g)
    return Split((split.images.long() + noise).clamp(0, 255).to(torch.uint8), split.labels)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--subset", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--masking-eps", type=float, nargs="*", default=[0.05, 0.2])
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    train, test = digits()
    pre = Domain("digits", test, train)
    task = Domain("noisy", noisy(test, 1), noisy(train, 2))
    spec = InputSpec(channels=1, size=16, mean=(0.5,), std=(0.5,))
    torch.manual_seed(0)
    m0 = create_model("cnn", num_classes=10, spec=spec, widths=(16, 32), features=64)
    train_classifier(m0, pre.train, TrainConfig(epochs=3, batch_size=64, lr=3e-3), generator=torch.Generator())
    m0.eval()
    adapted = []
    for seed in range(1, a.models + 1):
        m = copy.deepcopy(m0)
        train_classifier(m, task.train, TrainConfig(epochs=1, batch_size=64, lr=1e-3),
                         generator=torch.Generator().manual_seed(seed))
        adapted.append(m.eval())

    pgd = {"name": "pgd_linf", "eps": [0.05], "subset": a.subset, "transfer": True, "check_masking": False,
           "params": {"steps": a.steps}}
    white = {**pgd, "transfer": False}
    with tempfile.TemporaryDirectory() as root:
        store = ArtifactStore(root)
        t_fill = timed(lambda: attack_rows(m0, task, [pgd], seed=0, task="noisy", cache=TransferCache(store),
                                           source_key="m0"))

        def before(m):
            return attack_rows(m, task, [pgd], seed=0, source=m0)

        def after(m):
            return attack_rows(m, task, [pgd], seed=0, source=m0, cache=TransferCache(store), source_key="m0")

        for m in adapted:  # warm-up, and the stored numbers must not depend on the cache
            b, c = before(m).rows, after(m).rows
            assert b["transfer/pgd_linf/eps=0.05"] == c["transfer/pgd_linf/eps=0.05"]
            assert b["attack/pgd_linf/eps=0.05"]["robust_acc"] == c["attack/pgd_linf/eps=0.05"]["robust_acc"]
        inf = float("inf")
        best = {k: [inf] * len(adapted) for k in ("before", "after", "white")}
        for rep in range(a.repeats):
            for i, m in enumerate(adapted):
                sides = [("before", lambda: before(m)), ("after", lambda: after(m)),
                         ("white", lambda: attack_rows(m, task, [white], seed=0))]
                for name, fn in sides[::1 if rep % 2 == 0 else -1]:
                    best[name][i] = min(best[name][i], timed(fn))
        masked = {}
        for eps in a.masking_eps:  # the whole attack evaluation with the masking checks on
            on = {**pgd, "eps": [eps], "check_masking": True}
            attack_rows(m0, task, [on], seed=0, task="noisy", cache=TransferCache(store), source_key="m0")
            old_tol, old, new, robust = evaluation.MASKING_TOL, [], [], []
            for m in adapted:
                evaluation.MASKING_TOL = -1.0  # every check for every model, as before
                try:
                    old.append(timed(lambda: attack_rows(m, task, [on], seed=0, source=m0)))
                finally:
                    evaluation.MASKING_TOL = old_tol
                rows = {}
                new.append(timed(lambda: rows.update(attack_rows(m, task, [on], seed=0, source=m0,
                                                                 cache=TransferCache(store), source_key="m0").rows)))
                robust.append(rows[f"attack/pgd_linf/eps={eps:g}"]["robust_acc"])
            masked[eps] = {"before": sum(old) / len(old), "after": sum(new) / len(new),
                           "robust_acc_mean": sum(robust) / len(robust)}
    per = {k: sum(v) / len(v) for k, v in best.items()}
    tr_before, tr_after = per["before"] - per["white"], max(per["after"] - per["white"], 1e-6)
    ratio = tr_before / tr_after
    total_ratio = per["before"] / per["after"]
    print(f"threads {torch.get_num_threads()}; {a.models} adapted cnn models; PGD-Linf eps 0.05, {a.steps} steps, "
          f"{a.subset} images; m0's evaluation stored the examples in {t_fill:.2f} s (its own attack included)")
    print(f"{'seconds per model':<28} {'before':>8} {'after':>8} {'ratio':>7}")
    print(f"{'transfer part':<28} {tr_before:>8.3f} {tr_after:>8.3f} {ratio:>7.1f}")
    print(f"{'whole attack evaluation':<28} {per['before']:>8.3f} {per['after']:>8.3f} {total_ratio:>7.2f}")
    print(f"white-box part (unchanged): {per['white']:.3f} s per model")
    for eps, m in masked.items():
        print(f"with masking checks, eps {eps:g} (adapted models' robust accuracy {100 * m['robust_acc_mean']:.1f}%): "
              f"{m['before']:.3f} s -> {m['after']:.3f} s per model, ratio {m['before'] / m['after']:.2f}")
    print(f"ratio transfer before / after: {ratio:.1f} (target >= 3)")
    print(json.dumps({"metric": "transfer_attack_seconds_ratio_recraft_vs_cached (digits 16px, cnn, pgd_linf)",
                      "value": round(ratio, 2), "reference": 1.0, "ratio": round(ratio, 2), "target": 3.0,
                      "models": a.models, "steps": a.steps, "subset": a.subset,
                      "transfer_seconds_before": round(tr_before, 4), "transfer_seconds_after": round(tr_after, 4),
                      "attack_seconds_before": round(per["before"], 4), "attack_seconds_after": round(per["after"], 4),
                      "whole_ratio": round(total_ratio, 3), "threads": torch.get_num_threads(),
                      "with_masking_checks": {f"{e:g}": {"before": round(m["before"], 4), "after": round(m["after"], 4),
                                                         "ratio": round(m["before"] / m["after"], 3),
                                                         "robust_acc": round(m["robust_acc_mean"], 4)}
                                              for e, m in masked.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
