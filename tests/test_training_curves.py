"""Training curves: what train_classifier records per epoch, the ``train/epoch=<e>`` rows the
adapt and pretrain cells store, and the optional TensorBoard writer."""

from __future__ import annotations

import math
import os

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


# --- the rows --------------------------------------------------------------------------
def test_train_epoch_rows_build_parse_and_are_special():
    from ribench.core import rows

    assert rows.train_epoch(3) == "train/epoch=3"
    assert rows.train_epoch(2, run=1) == "train/run=1/epoch=2"
    assert rows.parse_train_epoch("train/epoch=3") == (0, 3)
    assert rows.parse_train_epoch("train/run=1/epoch=2") == (1, 2)
    for other in ("train", "t1", "train/epoch=0", "train/epoch=x", "train/run=0/epoch=1", "curve/alpha=0.5", "*"):
        assert rows.parse_train_epoch(other) is None, other
    assert rows.is_special("train/epoch=1") and rows.is_special("train/run=2/epoch=1")
    assert not rows.is_special("t1")


# --- the engine --------------------------------------------------------------------------
SPEC = {"name": "curves", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
        "methods": [{"name": "ft", "params": {"epochs": 2}}, "lp"], "tasks": ["t1"], "seeds": [0], "device": "cpu",
        "pretrain": {"epochs": 2}, "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
        "analysis": {"enabled": False}, "diagnostics": {"enabled": False}}


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory):
    from ribench.engine import parse_spec, run

    out = tmp_path_factory.mktemp("curves")
    spec = parse_spec(SPEC)
    assert run(spec, out, quiet=True).ok
    return spec, out


def _rows(out, kind):
    import sqlite3

    con = sqlite3.connect(out / "results.sqlite")
    got = con.execute("SELECT c.key, m.method, m.eval_set, m.metric, m.value FROM metrics m JOIN cells c "
                      "ON m.cell = c.key WHERE c.kind = ?", (kind,)).fetchall()
    con.close()
    return got


def test_adapt_and_pretrain_cells_store_their_curves(curve_run):
    from ribench.engine.execute import Workspace, build_run_suite
    from ribench.engine.artifacts import ArtifactStore
    from ribench.models import load_model

    spec, out = curve_run
    pre = _rows(out, "pretrain")
    assert {(es, m) for _, _, es, m, _ in pre} == {("train/epoch=1", "train_loss"), ("train/epoch=2", "train_loss")}
    adapt = _rows(out, "adapt")
    assert {m for _, m, *_ in adapt} == {"ft"}  # lp fits its head in closed form: no loop, no curve
    ft = {(es, metric): v for _, _, es, metric, v in adapt}
    assert set(ft) == {(f"train/epoch={e}", m) for e in (1, 2) for m in ("train_loss", "val_acc")}
    # the last epoch's val_acc is the stored model's accuracy on the cell's validation part
    (key,) = {k for k, *_ in adapt}
    ws = Workspace(spec, build_run_suite(spec), ArtifactStore(out / "artifacts"), torch.device("cpu"))
    _, val = ws.split("t1")
    model = load_model(out / "artifacts" / key[:2] / f"{key}.safetensors").eval()
    with torch.no_grad():
        acc = (model(val.images.float() / 255.0).argmax(1) == val.labels).float().mean().item()
    assert ft[("train/epoch=2", "val_acc")] == pytest.approx(acc, abs=1e-12)


def test_tensorboard_without_the_package_fails_at_load_naming_field_and_pip():
    from ribench.core import ConfigError
    from ribench.engine import parse_spec
    from ribench.engine.logging import tensorboard_error

    assert parse_spec(SPEC).logging.tensorboard is False
    if tensorboard_error() is None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ConfigError, match=r"logging\.tensorboard.*pip install tensorboard"):
        parse_spec({**SPEC, "logging": {"tensorboard": True}})
    # a stored run is read without its optional packages
    assert parse_spec({**SPEC, "logging": {"tensorboard": True}}, check_packages=False).logging.tensorboard


def _needs_tensorboard() -> None:
    """The extras lane (`make test-extras`, RIBENCH_EXTRAS=1) installs tensorboard: there a missing
    package is a failure; in the default lane these tests wait for that lane."""
    if os.environ.get("RIBENCH_EXTRAS") == "1":
        import tensorboard  # noqa: F401
    else:
        pytest.importorskip("tensorboard", reason="tensorboard is optional; `make test-extras` runs these tests")


@pytest.mark.extras
def test_tensorboard_writer_holds_the_same_scalars(tmp_path):
    _needs_tensorboard()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ribench.core.trainlog import EpochRecord, TrainingLog
    from ribench.engine.logging import check_tensorboard, write_tensorboard

    check_tensorboard()  # importable: no error
    log = TrainingLog(runs=[[EpochRecord(1, 4, 1.25, 0.5), EpochRecord(2, 4, 0.75, 0.625)],
                            [EpochRecord(1, 2, 0.5)]])
    write_tensorboard(tmp_path / "tb", log)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert got == {"train_loss": [(1, 1.25), (2, 0.75)], "val_acc": [(1, 0.5), (2, 0.625)],
                   "run1/train_loss": [(1, 0.5)]}


@pytest.mark.extras
def test_tensorboard_run_writes_events_per_trained_cell(tmp_path):
    _needs_tensorboard()
    from ribench.engine import parse_spec, run

    spec = parse_spec({**SPEC, "methods": [{"name": "ft", "params": {"epochs": 1}}],
                       "logging": {"tensorboard": True}})
    assert run(spec, tmp_path, quiet=True).ok
    trained = {k for k, *_ in _rows(tmp_path, "adapt") + _rows(tmp_path, "pretrain")}
    assert len(trained) == 2
    assert {p.name for p in (tmp_path / "tensorboard").iterdir()} == trained
    assert all(any(p.glob("events.out.tfevents.*")) for p in (tmp_path / "tensorboard").iterdir())
