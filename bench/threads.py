"""What the fixed per-cell thread count costs: training-step throughput of each built-in
backbone with 1 thread (ribench's default ``threads``) against all cores in one process,
and against as many 1-thread worker processes as there are cores (the pool runner's
way of using them, with the same numbers as a serial run).

For each backbone, measured in the same run on the same model, data and batch size:
- ``one``: steps/s of a plain SGD loop in one process with ``torch.set_num_threads(1)``;
- ``all``: the same loop with one thread per core (what a serial run used to do);
- ``pool``: the summed steps/s of ``cores`` processes, each with one thread.
Ratios: ``all / one`` (what a serial run gives up for reproducibility) and
``pool / all`` (how the pool runner wins it back).

Usage: python bench/threads.py [--steps 20] [--backbones mlp,cnn,resnet,vit]
The last line is a JSON object with every ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import torch
import torch.nn.functional as F

from ribench.models import create_model


def steps_per_second(backbone: str, threads: int, steps: int, batch: int = 128) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(backbone, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t)


def _worker(args) -> float:
    return steps_per_second(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--backbones", default="mlp,cnn,resnet,vit")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    out: dict[str, dict[str, float]] = {}
    ctx = mp.get_context("spawn")
    for b in a.backbones.split(","):
        one = steps_per_second(b, 1, a.steps)
        every = steps_per_second(b, cores, a.steps)
        with ctx.Pool(cores) as pool:
            pooled = sum(pool.map(_worker, [(b, 1, a.steps)] * cores))
        out[b] = {"one": one, "all": every, "pool": pooled, "all_over_one": every / one, "pool_over_all": pooled / every}
        print(f"{b:7s} 1 thread {one:7.2f} steps/s | {cores} threads {every:7.2f} ({every / one:.2f}x) | "
              f"{cores} x 1-thread processes {pooled:7.2f} ({pooled / every:.2f}x of {cores} threads)")
    print(json.dumps({"cores": cores, "backbones": out}))


if __name__ == "__main__":
    main()
