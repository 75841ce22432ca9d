"""Conformance of the gradient-trained methods: each against an independent transcription
of its reference's update or loss, written here (docs/conformance.md).

- ft (head ``keep``): the protocol's full fine-tuning is a plain PyTorch loop: AdamW,
  linear warm-up over 5% of the steps then cosine decay, cross-entropy, batches in the
  order of one ``randperm`` per epoch. Transcribed below with torch.optim only.
- LwF (Li & Hoiem 2016): the paper's loss is a cross-entropy with soft targets
  ``-sum_c p_t(c) log p_s(c)`` at temperature T; ribench's KL differs by the targets'
  entropy (a constant), so value minus entropy and every gradient must agree.
- L2-SP / EWC penalties and the Fisher are checked in tests/test_methods_reg.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from methods_helpers import make_ctx, tiny_model
from ribench.core import METHODS
from ribench.methods.regularised import distillation_loss


def _plain_finetune(model, split, *, epochs, batch_size, lr, weight_decay, warmup_frac, seed):
    """Full fine-tuning written from scratch with torch.optim (the reference loop)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(split.labels)
    per_epoch = math.ceil(n / batch_size)
    total = max(1, int(round(epochs * per_epoch)))
    warmup = int(warmup_frac * total)
    step = 0
    model.train()
    while step < total:
        order = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            if step >= total:
                break
            scale = (step + 1) / warmup if step < warmup else \
                0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            idx = order[s:s + batch_size]
            x = split.images[idx].float() / 255.0
            loss = F.cross_entropy(model(x), split.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return model.eval()


def test_ft_equals_a_plain_adamw_warmup_cosine_loop(tiny):
    pretrained = tiny_model("cnn")
    ctx = make_ctx(tiny, "t1", seed=3)
    params = dict(epochs=2, batch_size=16, lr=1e-3, weight_decay=0.01)
    adapted = METHODS.create("ft", head="keep", **params).adapt(pretrained, tiny.tasks["t1"], ctx)
    reference = _plain_finetune(tiny_model("cnn"), ctx.train, warmup_frac=0.05, seed=ctx.seed, **params)
    for (name, a), (_, b) in zip(adapted.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # and it did train: the weights moved
    assert any(not torch.equal(a, b) for a, b in zip(adapted.state_dict().values(),
                                                     tiny_model("cnn").state_dict().values()))


def _soft_target_cross_entropy(student, teacher, t):
    """The paper's LwF term, one image at a time: -sum_c p_t(c) log p_s(c) at temperature t."""
    out = []
    for s_row, t_row in zip(student, teacher):
        p_t = [math.exp(v / t) for v in t_row.tolist()]
        z_t = sum(p_t)
        log_z_s = math.log(sum(math.exp(v / t) for v in s_row.tolist()))
        out.append(-sum(pt / z_t * (sv / t - log_z_s) for pt, sv in zip(p_t, s_row.tolist())))
    return sum(out) / len(out)


def _entropy(teacher, t):
    p = F.softmax(teacher.double() / t, dim=1)
    return float(-(p * p.log()).sum(1).mean())


def test_lwf_distillation_is_the_papers_soft_cross_entropy_minus_a_constant():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 5, generator=g, dtype=torch.float64)
    for t in (1.0, 2.0, 4.0):
        kl = distillation_loss(student, teacher, t)
        expected = _soft_target_cross_entropy(student.detach(), teacher, t) - _entropy(teacher, t)
        assert abs(kl.item() - expected) < 1e-12
        # same gradient as the cross-entropy form the paper writes
        (grad_kl,) = torch.autograd.grad(kl, student)
        p_t = F.softmax(teacher / t, dim=1)
        ce = -(p_t * F.log_softmax(student / t, dim=1)).sum(1).mean()
        (grad_ce,) = torch.autograd.grad(ce, student)
        torch.testing.assert_close(grad_kl, grad_ce, rtol=1e-12, atol=1e-14)


def test_lwf_distillation_is_zero_for_identical_logits_and_ignores_masked_classes():
    z = torch.randn(4, 6, dtype=torch.float64)
    assert float(distillation_loss(z, z, 2.0)) == 0.0
    masked = z.clone()
    masked[:, 4:] = float("-inf")
    # classes masked out of the student leave both distributions
    expected = _soft_target_cross_entropy(masked[:, :4], z[:, :4], 2.0) - _entropy(z[:, :4], 2.0)
    assert abs(float(distillation_loss(masked, z, 2.0)) - expected) < 1e-12
