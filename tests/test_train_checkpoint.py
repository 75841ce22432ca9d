"""Crash-safe training: a training call interrupted after a checkpoint and run again ends with
the same bits as an uninterrupted one (in process, for the loop and for methods; and for a
``ribench run`` killed with SIGKILL), and checkpointing never changes the trained weights."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from methods_helpers import make_ctx, tiny_model
from ribench.core import METHODS, resume, trainlog
from ribench.data.augment import AugmentConfig
from ribench.models.training import TrainConfig, train_classifier


class Crash(Exception):
    pass


def crash_at(k: int, run: int = 0):
    def hook(r: int, step: int) -> None:
        if r == run and step == k:
            raise Crash(f"step {k}")
    return hook


def assert_same_bits(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _loop(tiny, arch, folder=None, hook=None, every_steps=1, augmentation=None, val=False):
    """Train a tiny model 2.5 epochs (a fractional last epoch) on t1; returns (state dict, generator
    state, the torch RNG state after, the run's epoch records)."""
    model = tiny_model(arch)
    train, held = tiny.tasks["t1"].train.holdout(0.2, seed=1)
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(11)  # dropout draws from the global generator
    cfg = TrainConfig(epochs=2.5, batch_size=16, lr=3e-3, warmup_frac=0.2)
    with trainlog.recording(val=held if val else None) as log:
        if folder is None:
            train_classifier(model, train, cfg, generator=g, augmentation=augmentation)
        else:
            with resume.checkpointing(folder, every_steps=every_steps, after_step=hook):
                train_classifier(model, train, cfg, generator=g, augmentation=augmentation)
    return model.state_dict(), g.get_state(), torch.get_rng_state(), log.runs


AUG = AugmentConfig(rotate_deg=10, translate=0.1, noise_std=0.05)


def test_loop_resumed_mid_epoch_gives_the_uninterrupted_bits(tiny, tmp_path):
    arch, aug = "resnet", AUG  # BatchNorm buffers; augmentation draws from the training generator
    ref_state, ref_g, ref_rng, ref_runs = _loop(tiny, arch, augmentation=aug, val=True)
    steps_per_epoch = -(-len(tiny.tasks["t1"].train.holdout(0.2, seed=1)[0]) // 16)
    for k in (steps_per_epoch, steps_per_epoch + 3):  # at the end of an epoch; inside the next one
        folder = tmp_path / f"k{k}"
        with pytest.raises(Crash):
            _loop(tiny, arch, folder, crash_at(k), augmentation=aug, val=True)
        assert (folder / "run-0.pt").is_file()
        state, g, rng, runs = _loop(tiny, arch, folder, augmentation=aug, val=True)
        assert_same_bits(ref_state, state)
        assert torch.equal(ref_g, g) and torch.equal(ref_rng, rng)
        assert runs == ref_runs  # the curve: epochs before the crash come from the checkpoint


def test_checkpointing_changes_no_bit_and_skips_the_last_step(tiny, tmp_path):
    ref_state, ref_g, _, _ = _loop(tiny, "cnn")
    steps = []
    state, g, _, _ = _loop(tiny, "cnn", tmp_path, lambda r, s: steps.append(s))
    assert_same_bits(ref_state, state)
    assert torch.equal(ref_g, g)
    saved = torch.load(tmp_path / "run-0.pt", weights_only=True)
    assert saved["step"] == steps[-1] - 1  # none after the last step: the call ends there


def test_checkpoint_of_another_training_is_not_resumed(tiny, tmp_path):
    with pytest.raises(Crash):
        _loop(tiny, "cnn", tmp_path, crash_at(3))
    model = tiny_model("cnn")
    train, _ = tiny.tasks["t1"].train.holdout(0.2, seed=1)
    ref = tiny_model("cnn")
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-3)  # another config: its own, fresh training
    torch.manual_seed(11)
    train_classifier(ref, train, cfg, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(11)
    with resume.checkpointing(tmp_path, every_steps=1):
        train_classifier(model, train, cfg, generator=torch.Generator().manual_seed(3))
    assert_same_bits(ref.state_dict(), model.state_dict())


def test_wall_time_interval_and_zero_disables(tiny, tmp_path):
    off = tmp_path / "off"
    _loop(tiny, "mlp", off, every_steps=0)
    assert not off.exists()
    ckpt = resume.RunCheckpoint(tmp_path / "x.pt", 0, every_seconds=3600)
    assert not ckpt.due(1)
    ckpt = resume.RunCheckpoint(tmp_path / "x.pt", 0, every_seconds=1e-9)
    time.sleep(0.01)
    assert ckpt.due(1)


def _adapt(tiny, name, folder=None, hook=None, **params):
    pretrained = tiny_model("cnn")
    method = METHODS.create(name, epochs=2, batch_size=16, **params)
    ctx = make_ctx(tiny, "t1", seed=4)
    torch.manual_seed(99)
    if folder is None:
        model = method.adapt(pretrained, tiny.tasks["t1"], ctx)
    else:
        with resume.checkpointing(folder, every_steps=1, after_step=hook):
            model = method.adapt(pretrained, tiny.tasks["t1"], ctx)
    return model.state_dict()


@pytest.mark.parametrize("name,params", [
    ("ft", {}),
    ("lora", {"dropout": 0.1}),  # PEFT-wrapped; dropout draws from torch's global generator
    ("ewc", {"fisher": "sample"}),  # the Fisher is drawn before training (again on resume)
    ("lwf", {}),  # the pretrained model as teacher
    ("prompt", {}),
])
def test_method_resumed_after_a_crash_gives_the_uninterrupted_bits(tiny, tmp_path, name, params):
    ref = _adapt(tiny, name, **params)
    with pytest.raises(Crash):
        _adapt(tiny, name, tmp_path, crash_at(11), **params)  # in the second of two epochs (8 steps each)
    assert_same_bits(ref, _adapt(tiny, name, tmp_path, **params))


# --- a real kill -9 of `ribench run` ---------------------------------------------------------
KILLED = {"name": "killed", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"], "seeds": [0],
          "methods": [{"name": "ft", "params": {"epochs": 100, "batch_size": 8}}], "tasks": ["t1"],
          "device": "cpu", "pretrain": {"epochs": 1}, "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
          "analysis": {"enabled": False}, "diagnostics": {"enabled": False}, "checkpoint_every": "1 steps"}


def _adapt_weights(out: Path) -> dict[str, torch.Tensor]:
    con = sqlite3.connect(out / "results.sqlite")
    (key,) = [k for k, kind in con.execute("SELECT key, kind FROM cells") if kind == "adapt"]
    con.close()
    (path,) = out.rglob(f"{key}.safetensors")
    return load_file(path)


def _done(out: Path, kind: str) -> bool:
    events = out / "events.jsonl"
    return events.exists() and any(json.loads(l).get("event") == "done" and json.loads(l).get("kind") == kind
                                   for l in events.read_text().splitlines())


@pytest.mark.slow
def test_adapt_cell_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    from ribench.engine import load_spec, run
    from ribench.engine.runner import RunOptions

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(KILLED))  # JSON is YAML
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ribench.cli", "run", str(spec), "--out", str(out), "--quiet",
                             "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, found = time.time() + 240, []
        while time.time() < deadline and not found:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its adapt cell could be killed: {proc.stderr.read()}")
            if _done(out, "pretrain"):  # the pretrain cell's checkpoints are gone: these are the adapt cell's
                found = [p for p in out.rglob("run-0.pt") if p.parent.name.endswith(".train")]
            time.sleep(0.02)
        assert found, "no checkpoint of the adapt cell appeared"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (ckpt,) = found
    step = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < step < 100 * 12  # killed in the middle of the cell's 1200 steps
    resumed, load = [], resume.RunCheckpoint.load

    def spy(self):  # the serial runner trains in this process: what each training call resumed from
        state = load(self)
        resumed.append(None if state is None else state["step"])
        return state

    monkeypatch.setattr(resume.RunCheckpoint, "load", spy)
    opts = RunOptions(threads=1, quiet=True)
    assert run(load_spec(spec), out, options=opts).ok  # the same spec, resumed
    assert resumed == [step]  # the adapt cell's one training call, from the killed run's checkpoint
    assert not ckpt.parent.exists()  # removed once the cell's model was saved
    plain = tmp_path / "plain"
    assert run(load_spec(spec).with_overrides(checkpoint_every=0), plain, options=opts).ok
    assert_same_bits(_adapt_weights(plain), _adapt_weights(out))


# --- the spec's setting ----------------------------------------------------------------------
def test_checkpoint_every_is_seconds_or_steps_and_enters_no_cell_key():
    from ribench.core.errors import ConfigError
    from ribench.engine import parse_spec, plan

    base = {k: v for k, v in KILLED.items() if k != "checkpoint_every"}
    assert parse_spec(base).checkpoint_interval == (0, 300.0)  # the default: by wall time
    assert parse_spec({**base, "checkpoint_every": 0}).checkpoint_interval == (0, 0.0)
    assert parse_spec({**base, "checkpoint_every": 12.5}).checkpoint_interval == (0, 12.5)
    assert parse_spec({**base, "checkpoint_every": "40 steps"}).checkpoint_interval == (40, 0.0)
    for bad in (-1, "40", "5 s", "x steps"):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            parse_spec({**base, "checkpoint_every": bad})
    suite_id = {"suite": "tiny", "version": "1", "data_seed": 0}
    keys = {str(v): [c.key for c in plan(parse_spec({**base, "checkpoint_every": v}), ["t1"], suite_id)]
            for v in (0, 300, "1 steps")}
    assert keys["0"] == keys["300"] == keys["1 steps"] == [c.key for c in plan(parse_spec(base), ["t1"], suite_id)]
