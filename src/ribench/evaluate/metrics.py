"""Classification metrics: top-1 accuracy with its Wilson interval, ECE (equal-width
confidence bins), NLL.

Each metric is a plain function of ``logits [N, C]`` and ``labels int64 [N]``, and
``ClassificationMetrics`` accumulates the same quantities batch by batch with exactly
the same result (sums, not means, are accumulated). Accuracy and ECE are fractions in
[0, 1]; NLL is in nats per example.

``acc_lo`` / ``acc_hi`` bound the accuracy with the Wilson score interval at 95%
(Wilson 1927; ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``): the
uncertainty of an accuracy measured on n images drawn from the eval set's distribution.
It is the interval to quote for an evaluation subset (``max_per_set``), and for a whole
test set it says how far another test set of the same size could fall. Unlike the
normal-approximation interval it stays inside [0, 1] and is not empty at 0 or n hits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Z95 = 1.959963984540054  # the standard normal's 0.975 quantile


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` of a proportion ``hits / n`` (NaNs when n = 0):
    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with p = hits / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at 0 or n hits the bound is exactly 0 or 1 (the formula leaves a rounding residue)
    return (0.0 if hits == 0 else max(0.0, centre - half)), (1.0 if hits == n else min(1.0, centre + half))


def mask_logits(logits: torch.Tensor, class_subset: tuple[int, ...] | None) -> torch.Tensor:
    """Restrict predictions to ``class_subset`` by setting other logits to -inf."""
    if class_subset is None:
        return logits
    return logits.masked_fill(class_mask(logits.shape[1], class_subset, logits.device), float("-inf"))


def class_mask(num_classes: int, class_subset: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """bool [num_classes]: True for the classes outside ``class_subset`` (the logits to mask).
    Built once per eval set by the evaluator (no host-to-device copy per batch)."""
    keep = torch.zeros(num_classes, dtype=torch.bool, device=device)
    keep[list(class_subset)] = True
    return ~keep


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return F.cross_entropy(logits.double(), labels).item()


def ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error: sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over bins (0,1/n], ..."""
    m = ClassificationMetrics(logits.shape[1], n_bins)
    m.update(logits, labels)
    return m.compute()["ece"]


class ClassificationMetrics:
    """Accumulates accuracy, ECE and NLL over batches; ``compute()`` returns a dict."""

    def __init__(self, num_classes: int, n_bins: int = 15):
        self.num_classes, self.n_bins = num_classes, n_bins
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.correct = 0
        self.nll_sum = 0.0
        self.bin_count = torch.zeros(self.n_bins, dtype=torch.float64)
        self.bin_conf = torch.zeros(self.n_bins, dtype=torch.float64)
        self.bin_correct = torch.zeros(self.n_bins, dtype=torch.float64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().double().cpu()
        labels = labels.detach().cpu()
        logp = torch.log_softmax(logits, dim=1)
        conf, pred = logp.max(1)
        conf = conf.exp()
        hit = (pred == labels).double()
        self.n += len(labels)
        self.correct += int(hit.sum().item())
        self.nll_sum += float(-logp.gather(1, labels[:, None]).sum().item())
        # bin b holds confidences in (b/n, (b+1)/n]
        b = (torch.ceil(conf * self.n_bins).long() - 1).clamp_(0, self.n_bins - 1)
        self.bin_count += torch.bincount(b, minlength=self.n_bins).double()
        self.bin_conf.index_add_(0, b, conf)
        self.bin_correct.index_add_(0, b, hit)

    def compute(self) -> dict[str, float]:
        """``accuracy``, its 95% Wilson bounds ``acc_lo`` and ``acc_hi``, ``ece``, ``nll`` and ``n``."""
        lo, hi = wilson_interval(self.correct, self.n)
        if self.n == 0:
            return {"accuracy": float("nan"), "acc_lo": lo, "acc_hi": hi, "ece": float("nan"), "nll": float("nan"),
                    "n": 0.0}
        gap = (self.bin_correct - self.bin_conf).abs().sum().item() / self.n
        return {"accuracy": self.correct / self.n, "acc_lo": lo, "acc_hi": hi, "ece": gap, "nll": self.nll_sum / self.n,
                "n": float(self.n)}
