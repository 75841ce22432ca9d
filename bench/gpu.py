"""GPU throughput of a ViT-B/16-sized backbone at fp32 and bf16, against a plain loop and the GPU's peak.

The backbone is ribench's own ``vit`` at ViT-B/16 size (12 blocks, width 768, 12 heads,
MLP ratio 4, 16 px patches at 224 px: 86M parameters, 1000 classes), random weights,
random uint8 images. Measured in the same run, for each precision (fp32: no autocast;
bf16: ``torch.autocast``):
- ribench's training loop (``train_classifier``: uint8 batches from host memory through
  pinned memory, preprocessed on the GPU, AdamW + schedule, finiteness checks) against a
  plain PyTorch loop over float tensors already on the GPU (its best case) with AdamW;
- ribench's evaluation (``evaluate``: inference mode, metrics accumulated in float64)
  against a plain ``model(x).argmax`` loop under ``torch.inference_mode`` on the same
  pre-converted GPU tensors;
- achieved TFLOP/s (forward FLOPs x 3 for training, x 1 for evaluation) next to this GPU's
  matmul peak at the same precision (an 8192^3 ``torch.mm`` timed here; fp32 with the
  current TF32 setting, printed).

It takes well under 5 minutes on a recent GPU (about a minute on an H100-class one);
``--quick`` shrinks it further. Without a CUDA device it prints a message and exits 0.
Usage: python bench/gpu.py [--train-images 2048] [--eval-images 4096] [--batch-size 128]
                           [--eval-batch-size 512] [--precisions fp32,bf16] [--quick]
The last line is a JSON object: ribench / plain throughput ratios (1.0 = no overhead),
images/s and the share of the matmul peak reached, per precision.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ribench.core import Domain, InputSpec, Split
from ribench.evaluate import evaluate
from ribench.models import create_model, flops_per_image
from ribench.models.training import TrainConfig, train_classifier

VIT_B16 = dict(patch=16, dim=768, depth=12, heads=12, mlp_ratio=4.0)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cuda_seconds(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def matmul_peak_tflops(dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    t = cuda_seconds(lambda: [torch.mm(a, b) for _ in range(reps)])
    return 2 * n**3 * reps / t / 1e12


def autocast(precision: str):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")


def plain_train(model, x, y, batch_size: int, precision: str) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for i in range(0, len(y), batch_size):
        with autocast(precision):
            loss = F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def plain_eval(model, x, batch_size: int, precision: str) -> None:
    model.eval()
    with torch.inference_mode(), autocast(precision):
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size]).argmax(1)


def vit_b16(seed: int = 0):
    torch.manual_seed(seed)
    spec = InputSpec(channels=3, size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return create_model("vit", num_classes=1000, spec=spec, **VIT_B16).cuda()


def measure(precision: str, images: torch.Tensor, labels: torch.Tensor, a: argparse.Namespace) -> dict:
    n_train, bs, ebs = a.train_images, a.batch_size, a.eval_batch_size
    model = vit_b16()
    flops = flops_per_image(model)
    train = Split(images[:n_train], labels[:n_train])
    cfg = TrainConfig(epochs=1, batch_size=bs, lr=1e-4)
    warm = Split(images[:2 * bs], labels[:2 * bs])
    train_classifier(model, warm, cfg, generator=torch.Generator().manual_seed(0), precision=precision)
    t_ours = cuda_seconds(lambda: train_classifier(model, train, cfg, generator=torch.Generator().manual_seed(0),
                                                   precision=precision))
    sets = {"bench": Domain("bench", Split(images, labels))}
    evaluate(model, {"warm": Domain("warm", Split(images[:ebs], labels[:ebs]))}, ebs, precision=precision)
    e_ours = cuda_seconds(lambda: evaluate(model, sets, ebs, precision=precision))
    plain = vit_b16()
    plain.forward = lambda z, m=plain: m.head(m.embed(z))  # type: ignore[method-assign]
    with torch.no_grad():  # the plain loops get the model's float input, already on the GPU
        x = torch.cat([plain.preprocess(images[i:i + ebs].cuda()) for i in range(0, len(images), ebs)])
    y = labels.cuda()
    plain_train(plain, x[:2 * bs], y[:2 * bs], bs, precision)
    t_plain = cuda_seconds(lambda: plain_train(plain, x[:n_train], y[:n_train], bs, precision))
    plain_eval(plain, x[:ebs], ebs, precision)
    e_plain = cuda_seconds(lambda: plain_eval(plain, x, ebs, precision))
    del x, plain, model
    torch.cuda.empty_cache()
    n_eval = len(images)
    tr, tp, er, ep = n_train / t_ours, n_train / t_plain, n_eval / e_ours, n_eval / e_plain
    return {"train_img_s": round(tr, 1), "train_plain_img_s": round(tp, 1), "train_ratio": round(tr / tp, 3),
            "train_tflops": round(3 * flops * tr / 1e12, 1),
            "eval_img_s": round(er, 1), "eval_plain_img_s": round(ep, 1), "eval_ratio": round(er / ep, 3),
            "eval_tflops": round(flops * er / 1e12, 1), "gflops_per_image": round(flops / 1e9, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-images", type=int, default=2048)
    ap.add_argument("--eval-images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-batch-size", type=int, default=512)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--quick", action="store_true", help="512 training and 1024 evaluation images")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device on this machine; nothing to measure (run it where a GPU is)")
        return 0
    if a.quick:
        a.train_images, a.eval_images = 512, 1024
    a.train_images = min(a.train_images, a.eval_images)
    precisions = a.precisions.split(",")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.eval_images, 3, 224, 224), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 1000, (a.eval_images,), generator=g)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    peaks = {p: matmul_peak_tflops(DTYPES[p]) for p in precisions}
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, TF32 matmul: {tf32}")
    print("matmul peak: " + ", ".join(f"{p} {v:.1f} TFLOP/s" for p, v in peaks.items()))
    print(f"{'precision':<9} {'train img/s':>11} {'plain':>8} {'ratio':>6} {'TFLOP/s':>8} {'of peak':>7} | "
          f"{'eval img/s':>10} {'plain':>8} {'ratio':>6} {'TFLOP/s':>8} {'of peak':>7}")
    out = {}
    for p in precisions:
        r = measure(p, images, labels, a)
        r["train_of_peak"] = round(r["train_tflops"] / peaks[p], 3)
        r["eval_of_peak"] = round(r["eval_tflops"] / peaks[p], 3)
        out[p] = r
        print(f"{p:<9} {r['train_img_s']:>11.0f} {r['train_plain_img_s']:>8.0f} {r['train_ratio']:>6.2f} "
              f"{r['train_tflops']:>8.1f} {r['train_of_peak']:>7.2f} | {r['eval_img_s']:>10.0f} "
              f"{r['eval_plain_img_s']:>8.0f} {r['eval_ratio']:>6.2f} {r['eval_tflops']:>8.1f} {r['eval_of_peak']:>7.2f}")
    worst = min(min(r["train_ratio"], r["eval_ratio"]) for r in out.values())
    print(json.dumps({"metric": "gpu_throughput_ratio_vs_plain_loop (ViT-B/16, slowest of train/eval)",
                      "value": worst, "reference": 1.0, "ratio": worst, "device": torch.cuda.get_device_name(),
                      "matmul_peak_tflops": {p: round(v, 1) for p, v in peaks.items()}, "tf32_matmul": tf32,
                      "by_precision": out, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
