"""Engine at scale: pool and Ray runners, SIGKILL and resume, concurrent drivers,
retries, NaN losses, status and retry commands, the event log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ribench.cli import main
from ribench.core import register_method
from ribench.core.registry import METHODS
from ribench.engine import parse_spec, run
from ribench.engine.runner import RunOptions
from ribench.methods.base import Method
from ribench.models.training import TrainConfig, train_classifier

SPEC = {
    "name": "tiny", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
    "methods": [{"name": "ft", "params": {"epochs": 1}}, "lp"],
    "seeds": [0, 1], "device": "cpu", "pretrain": {"epochs": 2},
    "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
}
# pretrain, eval_pretrained, analysis x 2 tasks; (adapt + evaluate + diagnose) x 2 methods x 2 tasks x 2 seeds;
# a task-vector diagnose per method and seed
N_CELLS = 2 + 2 + 3 * 2 * 2 * 2 + 2 * 2


def numbers(out: Path) -> dict:
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT cell, eval_set, metric, value FROM metrics WHERE metric != 'train_seconds'").fetchall()
    con.close()
    return {r[:3]: r[3] for r in rows}


def done_events(out: Path) -> list[str]:
    lines = (out / "events.jsonl").read_text().splitlines()
    return [e["key"] for e in map(json.loads, lines) if e["event"] == "done"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted serial run with one thread per cell."""
    out = tmp_path_factory.mktemp("ref")
    res = run(parse_spec(SPEC), out, options=RunOptions(threads=1, quiet=True))
    assert res.ok and res.ran == N_CELLS
    return out


def test_pool_runner_matches_serial(reference, tmp_path):
    res = run(parse_spec(SPEC), tmp_path, options=RunOptions(runner="pool", workers=2, threads=1, quiet=True))
    assert res.ok and res.ran == N_CELLS
    assert numbers(tmp_path) == numbers(reference)
    workers = {json.loads(l).get("worker") for l in (tmp_path / "events.jsonl").read_text().splitlines()}
    assert len({w for w in workers if w}) == 2  # both worker processes did cells


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    spec = out.parent / f"{out.name}.json"
    spec.write_text(json.dumps(SPEC))
    yaml_spec = out.parent / f"{out.name}.yaml"
    yaml_spec.write_text(json.dumps(SPEC))  # JSON is YAML
    return subprocess.Popen([sys.executable, "-m", "ribench.cli", "run", str(yaml_spec), "--out", str(out),
                             "--quiet", "--threads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_grid_then_resume(reference, tmp_path):
    out = tmp_path / "killed"
    proc = _cli(out)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "events.jsonl").exists() and len(done_events(out)) >= 5:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = set(done_events(out))
    assert 5 <= len(finished) < N_CELLS
    resume = _cli(out)
    assert resume.wait(timeout=300) == 0, resume.stderr.read()
    keys = done_events(out)
    assert sorted(keys) == sorted(set(keys)), "a finished cell ran twice"
    assert len(set(keys)) == N_CELLS
    assert numbers(out) == numbers(reference)


def test_two_concurrent_runs_share_the_work(reference, tmp_path):
    out = tmp_path / "shared"
    a, b = _cli(out), _cli(out)
    assert a.wait(timeout=300) == 0, a.stderr.read()
    assert b.wait(timeout=300) == 0, b.stderr.read()
    keys = done_events(out)
    assert len(keys) == len(set(keys)) == N_CELLS, "a cell ran twice or not at all"
    assert numbers(out) == numbers(reference)
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    con.close()


def test_stale_claim_of_a_dead_driver_is_taken_over(tmp_path):
    from ribench.engine.store import ResultsStore

    store = ResultsStore(tmp_path / "r.sqlite")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.conn.execute("INSERT INTO claims VALUES ('k', 'other', ?, ?, ?)", (socket.gethostname(), dead.pid, time.time()))
    assert store.claim("k", "me", stale_after=60)  # its process is gone
    assert not store.claim("k", "third", stale_after=60)  # mine is alive
    store.conn.execute("UPDATE claims SET heartbeat = ?", (time.time() - 100,))
    assert store.claim("k", "third", stale_after=60)  # an old heartbeat is stale too
    store.close()


# --- failures, retries, NaN -------------------------------------------------------
@dataclass(frozen=True)
class _Cfg:
    marker: str = ""


class Flaky(Method):
    """Fails on its first attempt for each task, then works."""

    name = "flaky"
    Config = _Cfg

    def adapt(self, pretrained, task, ctx):
        marker = Path(self.config.marker) / f"{task.name}-{ctx.seed}"
        if not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("transient failure")
        ctx.info["trainable_params"] = 1
        return self.fresh_copy(pretrained)


class Diverges(Method):
    """Training whose loss becomes NaN."""

    name = "diverges"
    Config = _Cfg

    def adapt(self, pretrained, task, ctx):
        model = self.fresh_copy(pretrained)
        return train_classifier(model, ctx.train, TrainConfig(epochs=1), generator=torch.Generator(),
                                penalty=lambda m: torch.tensor(float("inf")) * 0)


for _m in (Flaky, Diverges):
    if _m.name not in METHODS:
        register_method(_m.name)(_m)


def test_retry_then_success_and_nan_is_recorded(tmp_path):
    marker = tmp_path / "markers"
    marker.mkdir()
    spec = parse_spec({**SPEC, "seeds": [0], "methods": [{"name": "flaky", "params": {"marker": str(marker)}}, "diverges"]})
    out = tmp_path / "out"
    res = run(spec, out, options=RunOptions(retries=1, backoff=0.01, quiet=True))
    assert res.retried == 2 + 2  # flaky once per task; diverges once per task before giving up
    failed = {c.labels["method"] for c, _ in res.failed}
    assert failed == {"diverges"}
    assert all("loss became nan" in err for _, err in res.failed)
    statuses = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines()]
    flaky_done = [e for e in statuses if e["event"] == "done" and e["labels"].get("method") == "flaky"
                  and e["kind"] == "adapt"]
    assert len(flaky_done) == 2 and all(e["attempt"] == 2 for e in flaky_done)

    # status shows the failures; a plain run skips them; retry reruns them
    assert main(["status", str(out), "--format", "json"]) == 0


def test_status_and_retry_commands(tmp_path, capsys):
    marker = tmp_path / "m"
    marker.mkdir()
    spec = {**SPEC, "seeds": [0], "methods": [{"name": "flaky", "params": {"marker": str(marker)}}]}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet"]) == 1  # no retries: fails
    capsys.readouterr()
    assert main(["status", str(out), "--format", "json"]) == 0
    st = json.loads(capsys.readouterr().out)
    # pending: 2 evaluate + 2 diagnose downstream of the failed adapt cells, and their task-vector diagnose
    assert st["failed"] == 2 and st["pending"] == 5 and st["done"] == 4 and st["total"] == 11
    assert all("transient failure" in f["error"] for f in st["failures"])
    # a plain run leaves recorded failures alone
    assert main(["run", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet"]) == 1
    assert "0 ran" in capsys.readouterr().out
    # retry reruns them (the flaky method now works)
    assert main(["retry", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--format", "json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["done"] == 11 and st["failed"] == 0 and st["pending"] == 0


# --- Ray -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_processes_under(folder: Path) -> None:
    """Kill every process whose command line names ``folder`` (this test's Ray cluster), and their children.
    Unlike `ray stop`, this leaves any other Ray cluster of the machine alone."""
    import psutil

    roots = [p for p in psutil.process_iter(["cmdline"]) if any(str(folder) in a for a in p.info["cmdline"] or ())]
    procs = {}
    for r in roots:
        try:
            procs.update({q.pid: q for q in [r, *r.children(recursive=True)]})
        except psutil.NoSuchProcess:
            pass
    for q in procs.values():
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=30)


def _reset_ray_auth_cache() -> None:
    """Ray caches its configuration and token per process; a test that changes them starts afresh."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:
        return
    reset_auth_token_state()


@pytest.fixture
def ray_cluster(monkeypatch):
    """A two-node local Ray cluster with token authentication, in its own home, temp dir and port.

    The driver (this process) is only told where the token is (RAY_AUTH_TOKEN_PATH), as a user
    whose ~/.ray/auth_token exists: the ray runner must turn token authentication on itself.
    The cluster's processes are killed at the end, whether the test passed or not.
    """
    try:
        import ray
    except ImportError:
        pytest.skip("Ray is not installed (pip install 'ribench[ray]')")
    import secrets
    import tempfile

    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    if not os.path.exists(ray_bin):
        pytest.skip("the `ray` command is not on PATH")
    home = Path(tempfile.mkdtemp(prefix="rbray", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    token = home / "auth_token"
    token.write_text(secrets.token_hex(32))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_TMPDIR=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_USAGE_STATS_ENABLED="0")
    for var in [k for k in os.environ if k.startswith("RAY_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_TMPDIR", str(home))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _reset_ray_auth_cache()
    try:
        head = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                               "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={home / 'ray'}"],
                              capture_output=True, text=True, env=env, timeout=120)
        if head.returncode != 0:
            pytest.skip(f"Ray could not start a head node here: {head.stderr[-500:]}")
        worker = subprocess.run([ray_bin, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                                 "--num-cpus=1"], capture_output=True, text=True, env=env, timeout=120)
        yield {"address": f"127.0.0.1:{port}", "two_nodes": worker.returncode == 0, "worker_log": worker.stderr}
    finally:
        try:
            ray.shutdown()
        finally:
            _kill_processes_under(home)
            _reset_ray_auth_cache()
            shutil.rmtree(home, ignore_errors=True)


def test_ray_cluster_matches_serial(reference, tmp_path, ray_cluster):
    import ray

    out = tmp_path / "ray"
    res = run(parse_spec(SPEC), out, options=RunOptions(runner="ray", address=ray_cluster["address"], threads=1,
                                                        quiet=True))
    assert ray_cluster["two_nodes"], ray_cluster["worker_log"][-500:]
    assert res.ok and res.ran == N_CELLS
    assert numbers(out) == numbers(reference)
    assert os.environ["RAY_AUTH_MODE"] == "token"  # the runner found the token and sent it
    ray.init(address=ray_cluster["address"], include_dashboard=False, log_to_driver=False)
    assert len(ray.nodes()) >= 2
