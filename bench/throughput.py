"""Training and evaluation throughput of each built-in backbone.

For every backbone, on the same model, data and batch size, measured in the same run:
- ribench's training loop (``train_classifier``: uint8 batches preprocessed on the
  device, AdamW + schedule) against a plain PyTorch loop over pre-converted float
  tensors with AdamW;
- ribench's evaluation (``evaluate``: one pass, inference mode, metrics accumulated)
  against a plain ``model(x).argmax`` loop under ``torch.no_grad``;
- achieved GFLOP/s (forward FLOPs x 3 for training, x 1 for evaluation) next to this
  machine's fp32 matmul peak (a 1024^3 ``torch.mm`` timed here).

``--precision bf16`` runs both sides under bf16 autocast (ribench through its
``precision`` option, the plain loops through ``torch.autocast``); the peak stays fp32's.
On a GPU machine, bench/gpu.py measures a ViT-B/16-sized model instead.

Usage: python bench/throughput.py [--images 2048] [--backbones mlp,cnn,resnet,vit] [--precision fp32]
The last line is a JSON object with the headline: the slowest ratio of ribench's
training loop to the plain loop (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ribench.core import Domain, Split
from ribench.evaluate import evaluate
from ribench.models import create_model, flops_per_image
from ribench.models.training import TrainConfig, train_classifier


def matmul_peak_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def plain_train(model, x_float, y, batch_size, lr=1e-3, precision="fp32"):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for i in range(0, len(y), batch_size):
        with autocast(precision):
            loss = F.cross_entropy(model(x_float[i : i + batch_size]), y[i : i + batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()


def plain_eval(model, x_float, batch_size, precision="fp32"):
    model.eval()
    with torch.no_grad(), autocast(precision):
        for i in range(0, len(x_float), batch_size):
            model(x_float[i : i + batch_size]).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--backbones", default="mlp,cnn,resnet,vit")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = ap.parse_args()
    p = a.precision
    torch.manual_seed(0)
    n, bs = a.images, a.batch_size
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    split = Split(images, labels)
    # the plain loop gets its input already as the model's float tensors: its best case
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s, threads {torch.get_num_threads()}")
    print(f"{'backbone':<8} {'train img/s':>12} {'plain':>8} {'ratio':>6} {'GFLOP/s':>8} | "
          f"{'eval img/s':>10} {'plain':>8} {'ratio':>6} {'GFLOP/s':>8}")
    ratios = {}
    for name in a.backbones.split(","):
        model = create_model(name, num_classes=10)
        fl = flops_per_image(model)
        with torch.no_grad():
            x_float = model.preprocess(images)
        # plain loops call the model on preprocessed input: embed + head
        plain_model = create_model(name, num_classes=10)
        plain_model.forward = lambda z, m=plain_model: m.head(m.embed(z))  # type: ignore[method-assign]
        plain_train(plain_model, x_float[:bs], labels[:bs], bs, precision=p)  # warm-up
        t_plain = timed(lambda: plain_train(plain_model, x_float, labels, bs, precision=p))
        cfg = TrainConfig(epochs=1, batch_size=bs)
        train_classifier(model, split.subset(torch.arange(bs)), cfg, generator=torch.Generator().manual_seed(0),
                         precision=p)
        t_ours = timed(lambda: train_classifier(model, split, cfg, generator=torch.Generator().manual_seed(0),
                                                precision=p))
        dom = {"bench": Domain("bench", split)}
        e_plain = timed(lambda: plain_eval(plain_model, x_float, 512, precision=p))
        e_ours = timed(lambda: evaluate(model, dom, 512, precision=p))
        tr, tp, er, ep = n / t_ours, n / t_plain, n / e_ours, n / e_plain
        ratios[name] = tr / tp
        print(f"{name:<8} {tr:>12.0f} {tp:>8.0f} {tr / tp:>6.2f} {3 * fl * tr / 1e9:>8.2f} | "
              f"{er:>10.0f} {ep:>8.0f} {er / ep:>6.2f} {fl * er / 1e9:>8.2f}")
    worst = min(ratios, key=ratios.get)
    print(json.dumps({"metric": "train_throughput_ratio_vs_plain_loop (slowest backbone)", "backbone": worst,
                      "precision": p,
                      "value": round(ratios[worst], 3), "reference": 1.0, "ratio": round(ratios[worst], 3),
                      "matmul_peak_gflops": round(peak, 1)}))


if __name__ == "__main__":
    main()
