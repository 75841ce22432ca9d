"""The GPU path of the training loop and the evaluator, checked on CPU for correctness.

- fp32 (the default, inside or outside a ``compute_options`` block) is bit-identical to a
  plain loop written here with torch.optim, and the evaluator to a plain ``model(x)`` loop;
- bf16 (and fp16 with its GradScaler) autocast gives numbers close to fp32, with the
  tolerance and its reason stated at each test;
- the DataLoader path (``loader_workers``) yields exactly the in-process batches, and
  trains and evaluates to the same bits; channels_last and ``torch.compile`` change how,
  not what, is computed.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ribench.core import Domain, Split
from ribench.core.errors import ConfigError, TrainingError
from ribench.core.runtime import ComputeOptions, compute_options, current_compute, grad_scaler, wants_channels_last
from ribench.core.types import StreamingSplit, iter_batches
from ribench.evaluate import ClassificationMetrics, evaluate
from ribench.models import create_model
from ribench.models.training import TrainConfig, _FiniteLoss, train_classifier

ARCHS = {"mlp": dict(width=16, depth=2), "cnn": dict(widths=(4, 8), features=16),
         "vit": dict(patch=4, dim=16, depth=1, heads=2)}
CFG = TrainConfig(epochs=2, batch_size=20, lr=1e-3)  # 150 images: 8 steps an epoch, 16 in all


def _model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(arch, num_classes=3, **ARCHS[arch])


def _flat(model) -> torch.Tensor:
    return torch.cat([t.flatten() for t in model.state_dict().values()])


def _train(model, split, seed=1, **kw):
    return train_classifier(model, split, CFG, generator=torch.Generator().manual_seed(seed), **kw)


def _plain_loop(model, split: Split, cfg: TrainConfig, seed: int):
    """The protocol's training loop from scratch: AdamW, LambdaLR warm-up + cosine, one
    randperm of the generator per epoch, uint8 / 255."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(split)
    total = max(1, int(round(cfg.epochs * math.ceil(n / cfg.batch_size))))
    warmup = int(cfg.warmup_frac * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    model.train()
    step = 0
    while step < total:
        order = torch.randperm(n, generator=g)
        for s in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = order[s:s + cfg.batch_size]
            loss = F.cross_entropy(model(split.images[idx].float() / 255.0), split.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    return model.eval()


# ---------------------------------------------------------------- fp32 is today's path


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_fp32_training_is_bit_identical_to_a_plain_loop(tiny, arch):
    split = tiny.tasks["t1"].train
    reference = _flat(_plain_loop(_model(arch), split, CFG, seed=1))
    assert torch.equal(_flat(_train(_model(arch), split)), reference)
    with compute_options(precision="fp32", loader_workers=0, compile=False):  # the engine's default settings
        assert torch.equal(_flat(_train(_model(arch), split)), reference)


def test_fp32_evaluation_is_bit_identical_to_a_plain_loop(tiny):
    model = _model("cnn").eval()
    sets = {"pre": tiny.pretrain, "masked": Domain("masked", tiny.tasks["t1"].test, class_subset=(0, 2))}
    got = evaluate(model, sets, batch_size=32)
    for name, dom in sets.items():
        m = ClassificationMetrics(3)
        with torch.no_grad():
            for s in range(0, len(dom.test), 32):
                logits = model(dom.test.images[s:s + 32])
                if dom.class_subset is not None:
                    logits = logits.clone()
                    logits[:, [1]] = float("-inf")
                m.update(logits, dom.test.labels[s:s + 32])
        assert got[name] == m.compute()


# ---------------------------------------------------------------- bf16 / fp16


@pytest.mark.parametrize("arch", ["mlp", "cnn", "vit"])
def test_bf16_training_stays_close_to_fp32(tiny, arch):
    """Tolerance: the bf16 weights differ from the fp32 ones by under 10% of the distance the
    fp32 weights moved in training. Why: bf16 keeps 8 significant bits, so every matmul and
    convolution input is rounded by up to 2^-9 (0.2%) while weights, gradients and AdamW's
    state stay fp32; over 16 steps the update directions drift by a few percent (1-5%
    measured for these nets). A real fault moves them much further: 3 fewer steps differ by
    10-13%, another batch order by 19-45% (the second assertion keeps the bound meaningful)."""
    split = tiny.tasks["t1"].train
    init = _flat(_model(arch))
    fp32 = _flat(_train(_model(arch), split))
    bf16 = _flat(_train(_model(arch), split, precision="bf16"))
    moved = (fp32 - init).norm()
    assert torch.isfinite(bf16).all()
    assert (bf16 - fp32).norm() / moved < 0.10
    if arch == "mlp":
        other_order = _flat(_train(_model(arch), split, seed=2))
        assert (other_order - fp32).norm() / moved > 0.10


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_fp16_training_with_its_grad_scaler_stays_close_to_fp32(tiny, arch):
    """Same bound as bf16: fp16 rounds to 11 bits (finer than bf16) and its GradScaler keeps
    small gradients from underflowing; a step whose scaled gradients overflow is skipped
    (then the scale halves), which is why the bound is not tighter."""
    split = tiny.tasks["t1"].train
    init = _flat(_model(arch))
    fp32 = _flat(_train(_model(arch), split))
    fp16 = _flat(_train(_model(arch), split, precision="fp16"))
    assert (fp16 - fp32).norm() / (fp32 - init).norm() < 0.10
    assert isinstance(grad_scaler("fp16", torch.device("cpu")), torch.amp.GradScaler)
    assert grad_scaler("bf16", torch.device("cpu")) is None and grad_scaler("fp32", torch.device("cpu")) is None


@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_bf16_evaluation_agrees_with_fp32_wherever_the_margin_is_clear(tiny, arch):
    """Tolerance, derived from the logits: with d the largest |bf16 logit - fp32 logit| over
    the set (bounded here by 2% of the largest fp32 logit, a few bf16 roundings of 0.4%),
    every image whose fp32 top-1 margin exceeds 2d keeps its prediction, so the accuracies
    differ by at most the share of images within 2d of a tie; NLL and ECE by under 0.05."""
    model = _train(_model(arch), tiny.pretrain.train)
    dom = tiny.tasks["t1"]
    x, y = dom.test.images, dom.test.labels
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    d = (low - ref).abs().max().item()
    assert d <= 0.02 * ref.abs().max().item()
    top2 = ref.topk(2, dim=1).values
    near_tie = ((top2[:, 0] - top2[:, 1]) <= 2 * d).float().mean().item()
    clear = (top2[:, 0] - top2[:, 1]) > 2 * d
    assert torch.equal(low.argmax(1)[clear], ref.argmax(1)[clear])
    a32 = evaluate(model, {"t1": dom})["t1"]
    a16 = evaluate(model, {"t1": dom}, precision="bf16")["t1"]
    assert abs(a16["accuracy"] - a32["accuracy"]) <= near_tie
    assert a16["accuracy"] == (low.argmax(1) == y).sum().item() / len(y)
    assert abs(a16["nll"] - a32["nll"]) < 0.05 and abs(a16["ece"] - a32["ece"]) < 0.05


def test_a_compute_options_block_sets_the_default_of_every_call_inside_it(tiny):
    split, dom = tiny.tasks["t1"].train, {"pre": tiny.pretrain}
    explicit = _flat(_train(_model("mlp"), split, precision="bf16"))
    with compute_options(precision="bf16") as opts:
        assert opts.precision == "bf16" and current_compute() == opts
        ambient = _flat(_train(_model("mlp"), split))
        fp32_inside = _flat(_train(_model("mlp"), split, precision="fp32"))  # a keyword overrides the block
        ev = evaluate(_model("mlp"), dom)
    assert current_compute() == ComputeOptions()
    assert torch.equal(ambient, explicit)
    assert torch.equal(fp32_inside, _flat(_train(_model("mlp"), split)))
    assert ev == evaluate(_model("mlp"), dom, precision="bf16")
    assert ev != evaluate(_model("mlp"), dom)


def test_bad_compute_options_name_the_setting():
    with pytest.raises(ConfigError, match="precision.*fp32, bf16, fp16.*'fp8'"):
        ComputeOptions(precision="fp8")
    with pytest.raises(ConfigError, match="loader_workers"):
        ComputeOptions(loader_workers=-1)
    with pytest.raises(ConfigError, match="precision"):
        evaluate(_model("mlp"), {}, precision="half")


def test_a_non_finite_loss_is_caught_at_its_step_on_every_device():
    losses = [torch.tensor(0.5)] * 13 + [torch.tensor(float("nan"))] + [torch.tensor(0.5)] * 11
    cpu = _FiniteLoss(torch.device("cpu"), total=25)
    for i in range(13):
        cpu.add(losses[i], 0, i)
    with pytest.raises(TrainingError, match="nan at epoch 1, step 14 of 25"):
        cpu.add(losses[13], 0, 13)  # at once, before its step is taken
    batched = _FiniteLoss(torch.device("meta"), total=25)  # a device the host waits for: checked every 10 steps
    for i in range(19):
        batched.add(losses[i], 0, i)
    with pytest.raises(TrainingError, match="nan at epoch 1, step 14 of 25"):
        batched.add(losses[19], 0, 19)


# ------------------------------------------------------ DataLoader, channels_last, compile


def _decode(rows: torch.Tensor) -> torch.Tensor:
    """A picklable decoder of a streaming split: image i is filled with i mod 251."""
    return (rows % 251).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()


def _batches(it):
    return [(x.clone(), y.clone()) for x, y in it]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_dataloader_path_yields_exactly_the_in_process_batches(shuffle):
    g = torch.Generator().manual_seed(0)
    mem = Split(torch.randint(0, 256, (103, 1, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 5, (103,)))
    stream = StreamingSplit(_decode, torch.randint(0, 5, (300,), generator=g), num_workers=0).subset(
        torch.randperm(300, generator=g)[:103])
    for split in (mem, stream):
        ref = _batches(split.batches(16, shuffle, torch.Generator().manual_seed(5)))
        gen = torch.Generator().manual_seed(5)
        got = _batches(iter_batches(split, 16, shuffle, gen, workers=2))
        assert _same(got, ref)
        # and the generator was left where the in-process path leaves it (augmentation draws next)
        after = torch.Generator().manual_seed(5)
        list(split.batches(16, shuffle, after))
        assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=after))


def test_training_and_evaluation_through_loader_workers_give_the_same_bits(tiny):
    split = tiny.tasks["t1"].train
    assert torch.equal(_flat(_train(_model("mlp"), split, loader_workers=2)), _flat(_train(_model("mlp"), split)))
    model = _model("mlp")
    sets = {"pre": tiny.pretrain, "t1": tiny.tasks["t1"]}
    assert evaluate(model, sets, 32, loader_workers=2) == evaluate(model, sets, 32)


def test_channels_last_changes_layout_not_numbers(tiny):
    """Forced on CPU (on CUDA it is picked for convolutional models): the convolutions run
    other kernels, so the numbers agree to float32 rounding, not bit for bit; the model
    leaves in the default memory format, as checkpoints expect."""
    split = tiny.tasks["t1"].train
    model = _train(_model("cnn"), split, channels_last=True)
    assert all(p.is_contiguous() for p in model.parameters())
    torch.testing.assert_close(_flat(model), _flat(_train(_model("cnn"), split)), rtol=1e-4, atol=1e-5)
    a = evaluate(model, {"t1": tiny.tasks["t1"]}, channels_last=True)["t1"]
    b = evaluate(model, {"t1": tiny.tasks["t1"]})["t1"]
    assert a["accuracy"] == b["accuracy"] and a["nll"] == pytest.approx(b["nll"], rel=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())
    cuda = torch.device("cuda")  # the automatic choice, without needing a GPU to decide
    assert wants_channels_last(_model("cnn"), cuda) and not wants_channels_last(_model("vit"), cuda)
    assert not wants_channels_last(_model("cnn"), torch.device("cpu"))


@pytest.mark.slow
def test_compile_runs_the_same_computation(tiny):
    """``torch.compile`` with the ``eager`` backend (graph capture without code generation,
    which needs no compiler) must give the bits of the plain model: the wiring is right."""
    split = tiny.tasks["t1"].train
    assert torch.equal(_flat(_train(_model("mlp"), split, compile="eager")), _flat(_train(_model("mlp"), split)))
    model = _model("mlp")
    assert evaluate(model, {"pre": tiny.pretrain}, compile="eager") == evaluate(model, {"pre": tiny.pretrain})


# ---------------------------------------------------------------- bench/gpu.py


def test_the_gpu_bench_exits_cleanly_without_a_gpu(capsys, monkeypatch):
    path = Path(__file__).parent.parent / "bench" / "gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


# ---------------------------------------------------------------- spec fields


def test_the_spec_fields_default_to_todays_path_and_are_validated():
    from ribench.engine import parse_spec

    base = {"backbones": ["mlp"], "methods": ["lp"]}
    spec = parse_spec(base)
    assert (spec.precision, spec.compile, spec.loader_workers, spec.eval.max_per_set) == ("fp32", False, 0, None)
    assert ComputeOptions(precision=spec.precision, compile=spec.compile,
                          loader_workers=spec.loader_workers) == ComputeOptions()
    spec = parse_spec({**base, "precision": "bf16", "compile": True, "loader_workers": 4, "eval": {"max_per_set": 5000}})
    assert (spec.precision, spec.compile, spec.loader_workers, spec.eval.max_per_set) == ("bf16", True, 4, 5000)
    for bad, field in (({"precision": "fp8"}, "precision"), ({"loader_workers": -1}, "loader_workers"),
                       ({"eval": {"max_per_set": 0}}, "eval.max_per_set")):
        with pytest.raises(ConfigError, match=field):
            parse_spec({**base, **bad})


def test_features_diagnostics_and_analysis_run_under_the_cells_precision(tiny):
    """Frozen features (lp, ncm, ranpac, the predictors) and diagnostics' layer outputs follow the
    enclosing compute options: bf16 runs under autocast (float32 out, close to fp32), fp32 is
    the plain pass; analysis and diagnose cells of a bf16 spec carry the precision in their key."""
    from ribench.analysis.similarity import extract_features
    from ribench.engine import parse_spec, plan
    from ribench.methods.base import compute_features

    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, widths=(4, 8), features=16).eval()
    split = tiny.tasks["t1"].test
    plain = compute_features(model, "t", split)
    with torch.inference_mode():
        direct = model.features(split.images)
    assert torch.equal(plain, direct)
    seen = []
    handle = model.head.register_forward_hook(lambda m, i, o: seen.append(i[0].dtype))
    with compute_options(precision="bf16"):
        low = compute_features(model, "t", split)
        fs = extract_features(model, split)
    handle.remove()
    assert low.dtype == torch.float32 and fs.features.dtype == torch.float32
    assert not torch.equal(low, plain) and torch.allclose(low, plain, rtol=0.05, atol=0.05)
    assert seen and all(d == torch.bfloat16 for d in seen)  # the head ran on bf16 features
    data = {"name": "p", "suite": "tiny", "backbones": ["mlp"], "methods": ["lp"], "seeds": [0], "device": "cpu",
            "analysis": {"enabled": True}, "diagnostics": {"enabled": True}}
    for precision, has in (("fp32", False), ("bf16", True)):
        cells = plan(parse_spec({**data, "precision": precision}), ["t1", "t2"],
                     {"name": "tiny", "version": "1", "data_seed": 0})
        kinds = [c for c in cells if c.kind in ("analysis", "diagnose") and c.config.get("scope") != "tasks"]
        assert kinds and all(("precision" in c.config) == has for c in kinds)
