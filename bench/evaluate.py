"""Evaluation throughput: ribench's ``evaluate`` over every eval set of ``digits`` against a plain loop.

One model (``--backbone``, default ``cnn`` at its default size, random weights: the speed
does not depend on what it learnt), every eval set of the ``digits`` suite (pretraining
test set, tasks, extra sets, MNIST-C corruptions: 86 sets, 32,648 images), each on its
``max_per_set`` subset (``--max-per-set``, default 60: about 5,000 images, which keeps the
bench near a minute on a shared 2-core machine; 0 = every image), measured in the same run:
- ribench's evaluation (``evaluate``: the subset chosen, uint8 batches preprocessed by the
  model, inference mode, accuracy with its interval, ECE and NLL accumulated in float64);
- a plain loop over the same images already converted to the model's float input
  (``model.preprocess`` applied once, outside the timing): ``head(embed(x))`` under
  ``torch.inference_mode``, ``argmax`` and the count of hits per set: the reference's
  best case, the cost of the network alone;
- achieved GFLOP/s (forward FLOPs x images / time) next to this machine's fp32 matmul
  peak (a 1024^3 ``torch.mm`` timed here, same thread count).

After a warm-up pass, the two sides alternate set by set (which one goes first alternates
too), ``--repeats`` times, and each set's best time on each side counts (on a shared machine the best is the least
disturbed, and alternating exposes both sides to the same load); ribench is called once
per set, which adds its per-call cost to its side. Threads: 1 by default
(``--threads``), as every cell of a run computes with (spec ``threads``).

Usage: python bench/evaluate.py [--backbone cnn] [--max-per-set 60] [--batch-size 512] [--repeats 3] [--threads 1]
The last line is a JSON object: ``ratio`` = ribench images/s / plain images/s (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ribench.data import build_suite
from ribench.evaluate import evaluate
from ribench.evaluate.subsets import stratified_subset
from ribench.models import create_model, flops_per_image


def matmul_peak_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def plain_eval(model, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    """Hits of ``head(embed(x)).argmax`` over pre-converted float inputs ``x``."""
    hits = 0
    with torch.inference_mode():
        for i in range(0, len(y), batch_size):
            hits += int((model.head(model.embed(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum())
    return hits


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="cnn")
    ap.add_argument("--max-per-set", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    suite = build_suite("digits")
    sets = suite.all_eval_sets()
    if any(d.class_subset is not None for d in sets.values()):
        raise SystemExit("bench/evaluate.py: the plain loop does not mask logits; a digits set now has a class subset")
    cap = a.max_per_set or None
    torch.manual_seed(0)
    model = create_model(a.backbone, num_classes=suite.num_classes).eval()
    converted = {}  # name -> the plain loop's float input and labels: the same images ribench evaluates
    for name, d in sets.items():
        rows = None if cap is None else stratified_subset(d.test.labels, cap, 0, name)
        split = d.test if rows is None else d.test.subset(rows)
        with torch.inference_mode():
            converted[name] = model.preprocess(split.images), split.labels
    n = sum(len(y) for _, y in converted.values())
    peak = matmul_peak_gflops()
    flops = flops_per_image(model)
    ours = evaluate(model, sets, a.batch_size, max_per_set=cap)  # warm-up, and the check below
    for name, (x, y) in converted.items():  # same model, same images: the same hits
        assert round(ours[name]["accuracy"] * ours[name]["n"]) == plain_eval(model, x, y, a.batch_size), name
    best_ours = dict.fromkeys(sets, float("inf"))
    best_plain = dict.fromkeys(sets, float("inf"))
    for rep in range(a.repeats):
        for name, dom in sets.items():
            one, (x, y) = {name: dom}, converted[name]
            sides = [(best_ours, lambda: evaluate(model, one, a.batch_size, max_per_set=cap)),
                     (best_plain, lambda: plain_eval(model, x, y, a.batch_size))]
            for best, fn in sides[::1 if rep % 2 == 0 else -1]:  # who goes first alternates
                best[name] = min(best[name], timed(fn))
    r_ours, r_plain = n / sum(best_ours.values()), n / sum(best_plain.values())
    ratio = r_ours / r_plain
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s, threads {torch.get_num_threads()}")
    print(f"{a.backbone}: {len(sets)} eval sets, {n} images (max_per_set {cap}), {flops / 1e6:.2f} MFLOP/image")
    print(f"{'':<8} {'img/s':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for label, r in (("ribench", r_ours), ("plain", r_plain)):
        print(f"{label:<8} {r:>9.0f} {flops * r / 1e9:>8.2f} {flops * r / 1e9 / peak:>8.2f}")
    print(f"ratio ribench / plain: {ratio:.3f} (target >= 0.95)")
    print(json.dumps({"metric": "eval_throughput_ratio_vs_plain_loop (digits, all eval sets)", "backbone": a.backbone,
                      "value": round(ratio, 3), "reference": 1.0, "ratio": round(ratio, 3), "target": 0.95,
                      "images": n, "eval_sets": len(sets), "max_per_set": cap, "ribench_img_s": round(r_ours, 1),
                      "plain_img_s": round(r_plain, 1), "ribench_gflops": round(flops * r_ours / 1e9, 2),
                      "matmul_peak_gflops": round(peak, 1), "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
