"""Training curves: what train_classifier records per epoch, the ``train/epoch=<e>`` rows the
adapt and pretrain cells store, and the optional TensorBoard writer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods_helpers import tiny_model
from ribench.core import trainlog
from ribench.models.training import TrainConfig, train_classifier


def _train(tiny, arch="resnet", *, val=None, record=True, epochs=2, extra_loss=None):
    model = tiny_model(arch)
    train, held = tiny.tasks["t1"].train.holdout(0.2, seed=1)
    g = torch.Generator().manual_seed(5)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-3)
    if record:
        with trainlog.recording() as log:
            train_classifier(model, train, cfg, generator=g, val=held if val else None, extra_loss=extra_loss)
    else:
        log = None
        train_classifier(model, train, cfg, generator=g, extra_loss=extra_loss)
    return model, g, log, train, held


@pytest.mark.parametrize("arch", ["resnet", "vit"])  # BatchNorm buffers; dropout/attention
def test_recording_and_validation_leave_the_trained_weights_bit_identical(tiny, arch):
    plain, g_plain, _, _, _ = _train(tiny, arch, record=False)
    recorded, g_rec, log, _, _ = _train(tiny, arch, val=True)
    assert log.runs and all(r.val_acc is not None for r in log.runs[0])
    a, b = plain.state_dict(), recorded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(g_plain.get_state(), g_rec.get_state())  # no extra draws from the generator


def test_train_loss_is_the_mean_of_the_steps_losses(tiny):
    losses = []

    def spy(model, x, y, logits):  # adds nothing: the loop's loss is the cross-entropy alone
        losses.append(F.cross_entropy(logits, y).item())
        return torch.zeros((), dtype=logits.dtype)

    _, _, log, train, _ = _train(tiny, "cnn", epochs=1.5, extra_loss=spy)
    per_epoch = math.ceil(len(train) / 16)
    total = int(round(1.5 * per_epoch))
    (run,) = log.runs
    assert [r.epoch for r in run] == [1, 2]
    assert [r.steps for r in run] == [per_epoch, total - per_epoch]
    assert run[0].train_loss == pytest.approx(sum(losses[:per_epoch]) / per_epoch, rel=1e-6)
    assert run[1].train_loss == pytest.approx(sum(losses[per_epoch:]) / (total - per_epoch), rel=1e-6)
    assert all(r.val_acc is None for r in run)


def test_val_acc_of_the_last_epoch_is_the_trained_models_accuracy(tiny):
    model, _, log, _, held = _train(tiny, "cnn", val=True)
    with torch.no_grad():
        pred = model.eval()(held.images.float() / 255.0).argmax(1)
    assert log.runs[0][-1].val_acc == pytest.approx((pred == held.labels).float().mean().item(), abs=1e-12)


def test_outside_recording_nothing_is_kept_and_each_call_is_one_run(tiny):
    assert trainlog.current() is None
    _train(tiny, "cnn", record=False)
    assert trainlog.current() is None
    train, _ = tiny.tasks["t1"].train.holdout(0.2, seed=1)
    with trainlog.recording() as log:
        for _ in range(2):
            train_classifier(tiny_model("cnn"), train, TrainConfig(epochs=1, batch_size=32),
                             generator=torch.Generator().manual_seed(0))
    assert [len(r) for r in log.runs] == [1, 1]
