"""Engine reliability: a dead pool worker costs one cell, workers die with a killed driver,
damaged stores and artifacts give clear errors or a recomputation, temporary files of
killed writers are removed, and the Ray runner's local cluster listens on loopback only."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from contextlib import suppress
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

import worker_faults  # noqa: F401  (registers the fault-injecting methods in this process)
from ribench.cli import main
from ribench.core.errors import DataError
from ribench.engine import parse_spec, run
from ribench.engine import runner as runner_mod
from ribench.engine.artifacts import ArtifactStore
from ribench.engine.executors import SerialExecutor, WorkerDeath, attribute_death, ray_token_available
from ribench.engine.runner import MAX_WORKER_LOSSES, RunOptions
from ribench.engine.store import ResultsStore
from test_scaling import N_CELLS, SPEC, _reset_ray_auth_cache, done_events

# pretrain, eval_pretrained, adapt, evaluate: the smallest grid with a dependency chain
SMALL = {"name": "small", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"], "methods": ["lp"],
         "seeds": [0], "tasks": ["t1"], "device": "cpu", "pretrain": {"epochs": 1},
         "eval": {"val_fraction": 0.2, "pretrain_sample": 50}, "analysis": {"enabled": False},
         "diagnostics": {"enabled": False}}


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def cell_key(out: Path, kind: str, method: str | None = None) -> str:
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT key, labels FROM cells WHERE kind = ?", (kind,)).fetchall()
    con.close()
    keys = [k for k, lab in rows if method is None or json.loads(lab).get("method") == method]
    assert len(keys) == 1, (kind, method, keys)
    return keys[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A finished serial run of SMALL, copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("small") / "out"
    res = run(parse_spec(SMALL), out, options=RunOptions(quiet=True))
    assert res.ok and res.ran == 4
    return out


def copy_run(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


# --- worker deaths ------------------------------------------------------------------
def test_attribute_death_from_exit_codes():
    """The worker that died on its own is the one not ended by the pool's SIGTERM."""
    both = {"a", "b"}
    d = attribute_death({11: -9, 12: -15}, {11: "a", 12: "b"}, both)
    assert (d.culprit, d.attributed) == ("a", True) and "signal 9 (SIGKILL)" in d.message and "11" in d.message
    d = attribute_death({11: 3, 12: -15}, {11: "a", 12: "b"}, both)
    assert d.culprit == "a" and "exit code 3" in d.message
    d = attribute_death({11: -9, 12: -15}, {11: "", 12: "b"}, both)  # died between cells: nobody's fault
    assert (d.culprit, d.attributed) == (None, True) and "between cells" in d.message
    d = attribute_death({11: -9, 12: -15}, {11: "done-before", 12: "b"}, both)  # its last cell had finished
    assert (d.culprit, d.attributed) == (None, True)
    for codes in ({11: -15, 12: -15}, {11: -9, 12: -11}, {}):  # none or two candidates: cannot be told
        d = attribute_death(codes, {11: "a", 12: "b"}, both)
        assert (d.culprit, d.attributed) == (None, False) and "cannot be told" in d.message


@pytest.mark.slow  # two pools start (about 30 s on 2 busy cores); the driver's side is tested fast below
def test_dead_worker_costs_only_its_cell_and_a_rerun_retries_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RIBENCH_PLUGINS", "tiny_suite,worker_faults")  # the spawned workers register them too
    marker = tmp_path / "marker"
    marker.mkdir()
    spec = parse_spec({**SMALL, "methods": [{"name": "kills_worker", "params": {"marker": str(marker)}},
                                            {"name": "waits_for_death", "params": {"marker": str(marker)}}]})
    out = tmp_path / "out"
    res = run(spec, out, options=RunOptions(runner="pool", workers=2, quiet=True))  # retries 0
    assert [(c.kind, c.labels["method"]) for c, _ in res.failed] == [("adapt", "kills_worker")]
    assert "signal 9 (SIGKILL)" in res.failed[0][1]
    assert res.skipped == 1  # its evaluate cell
    store = ResultsStore(out / "results.sqlite")
    waiter, killer = cell_key(out, "adapt", "waits_for_death"), cell_key(out, "adapt", "kills_worker")
    assert store.failures() == {killer: "worker"}
    assert store.status(waiter) == "done" and store.cell_info(waiter)["attempts"] == 1  # not charged
    store.close()
    ev = events(out)
    assert [e["key"] for e in ev if e["event"] == "requeued"] == [waiter]
    assert done_events(out).count(waiter) == 1
    assert not list((out / ".workers").iterdir())  # the workers' markers are gone with the pool

    # a plain rerun, still without retries, tries the cell whose worker died again (it works now)
    res = run(spec, out, options=RunOptions(quiet=True))
    assert res.ok and res.ran == 2 and res.cached == 4
    keys = done_events(out)
    assert len(keys) == len(set(keys)) == 6


class _BreakingPool:
    """Stands in for the pool: cells of one method break the pool every time, with a death that
    cannot be attributed; the other cells run in this process."""

    name, slots = "pool", 2

    def __init__(self, ctx, breaking_method: str):
        self.serial, self.breaking, self.recoveries = SerialExecutor(ctx), breaking_method, 0

    def submit(self, cell, deps, progress=None) -> Future:
        if cell.labels.get("method") == self.breaking and cell.kind == "adapt":
            fut: Future = Future()
            fut.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return fut
        return self.serial.submit(cell, deps)

    def recover(self, in_flight: set[str]) -> WorkerDeath:
        self.recoveries += 1
        return WorkerDeath("a worker process died and which one cannot be told (exit status: 4242: signal 15)")

    def close(self) -> None:
        self.serial.close()


def test_unattributed_deaths_requeue_uncharged_then_fail_after_the_cap(tmp_path, monkeypatch):
    made = []

    def executor(opts, ctx, suite):
        made.append(_BreakingPool(ctx, "ft"))
        return made[-1]

    monkeypatch.setattr(runner_mod, "_executor", executor)
    spec = parse_spec({**SMALL, "methods": ["lp", {"name": "ft", "params": {"epochs": 1}}]})
    res = run(spec, tmp_path, options=RunOptions(runner="pool", retries=5, quiet=True))
    assert made[0].recoveries == MAX_WORKER_LOSSES  # requeued twice, recorded failed at the third death
    assert [(c.kind, c.labels["method"]) for c, _ in res.failed] == [("adapt", "ft")]
    assert f"died {MAX_WORKER_LOSSES} times" in res.failed[0][1] and "signal 15" in res.failed[0][1]
    assert res.retried == 0  # no attempt was charged, so none of the 5 retries was used
    assert res.ran == 4  # pretrain, eval_pretrained, lp adapt and evaluate
    store = ResultsStore(tmp_path / "results.sqlite")
    assert list(store.failures().values()) == ["worker"]
    store.close()


class _IdleDeathPool(_BreakingPool):
    """A worker dies between cells: the pool is found broken when the next cell is submitted."""

    def submit(self, cell, deps, progress=None) -> Future:
        if cell.kind == "adapt" and not self.recoveries:
            raise BrokenProcessPool("A child process terminated abruptly, the process pool is not usable anymore")
        return self.serial.submit(cell, deps)

    def recover(self, in_flight: set[str]) -> WorkerDeath:
        self.recoveries += 1
        return WorkerDeath("worker process 4242 died (signal 9 (SIGKILL)) between cells", None, True)


def test_a_worker_death_between_cells_costs_nothing(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(runner_mod, "_executor", lambda opts, ctx, suite: made.append(_IdleDeathPool(ctx, "")) or made[-1])
    res = run(parse_spec(SMALL), tmp_path, options=RunOptions(runner="pool", quiet=True))
    assert res.ok and res.ran == 4 and res.retried == 0 and made[0].recoveries == 1
    requeued = [e for e in events(tmp_path) if e["event"] == "requeued"]
    assert [e["kind"] for e in requeued] == ["adapt"]


def test_a_rerun_retries_worker_failures_but_not_cell_failures(small_run, tmp_path):
    out = copy_run(small_run, tmp_path / "out")
    adapt, evaluate = cell_key(out, "adapt"), cell_key(out, "evaluate")
    store = ResultsStore(out / "results.sqlite")
    store.forget_cell(evaluate)
    store.fail_cell(adapt, "adapt", {"method": "lp"}, {}, time.time(), "ValueError: boom", "", failure="cell")
    store.close()
    res = run(parse_spec(SMALL), out, options=RunOptions(quiet=True))
    assert res.ran == 0 and res.skipped == 2  # a cell's own failure waits for `ribench retry`
    store = ResultsStore(out / "results.sqlite")
    store.fail_cell(adapt, "adapt", {"method": "lp"}, {}, time.time(), "worker process 1 died (signal 9)", "",
                    failure="worker")
    store.close()
    res = run(parse_spec(SMALL), out, options=RunOptions(quiet=True))
    assert res.ok and res.ran == 2


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_pool_workers_die_with_a_killed_driver(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "spec.yaml").write_text(json.dumps(SPEC))
    driver = subprocess.Popen([sys.executable, "-m", "ribench.cli", "run", str(tmp_path / "spec.yaml"), "--out",
                               str(out), "--quiet", "--threads", "1", "--runner", "pool", "--workers", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: list[psutil.Process] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # until both workers are started: registered, or done with a cell
            if driver.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {driver.stderr.read()}")
            registered = list((out / ".workers").glob(f"{socket.gethostname()}.*"))
            ev = events(out) if (out / "events.jsonl").exists() else []
            if len(registered) >= 2 or len({e["worker"] for e in ev if e["event"] == "done"}) >= 2:
                break
            time.sleep(0.05)
        workers = _descendants(driver.pid)
        assert len(workers) >= 2
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 5
        while any(map(_alive, workers)) and time.time() < deadline:
            time.sleep(0.05)
        survivors = [p.pid for p in workers if _alive(p)]
        assert not survivors, f"worker processes {survivors} outlived their killed driver"
    finally:  # never leave processes behind, whatever happened
        if driver.poll() is None:
            driver.kill()
        driver.wait()
        for p in workers:
            with suppress(psutil.NoSuchProcess):
                p.kill()


# --- the results store -------------------------------------------------------------
def _corrupt_pages(db: Path) -> None:
    """Overwrite every page but the first (the header and schema) with garbage."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 2 * page, "the store should span several pages"
    g = torch.Generator().manual_seed(0)
    data[page:] = bytes(torch.randint(0, 256, (len(data) - page,), generator=g, dtype=torch.uint8).tolist())
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["status", "results", "report", "run"])
def test_damaged_results_store_gives_a_one_line_error(small_run, tmp_path, capsys, command):
    out = copy_run(small_run, tmp_path / "out")
    _corrupt_pages(out / "results.sqlite")
    (tmp_path / "spec.yaml").write_text(json.dumps(SMALL))  # JSON is YAML
    argv = {"run": ["run", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet"]}.get(command, [command, str(out)])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ribench: error: results store")
    assert str(out / "results.sqlite") in err and "damaged" in err and ".recover" in err


def test_store_methods_raise_data_error_on_a_damaged_file(small_run, tmp_path):
    out = copy_run(small_run, tmp_path / "out")
    _corrupt_pages(out / "results.sqlite")
    store = ResultsStore(out / "results.sqlite")
    for read in (store.statuses, store.cells, store.metric_rows, store.failures, store.last_run):
        with pytest.raises(DataError, match="results store .*results.sqlite is damaged"):
            read()
    store.close()


class _DiskFills:
    """An sqlite3 connection whose disk is full from the first COMMIT after ``arm_on`` on:
    COMMIT and every later write fail with SQLITE_FULL's message."""

    writes = ("COMMIT", "INSERT", "UPDATE", "DELETE")

    def __init__(self, conn: sqlite3.Connection, state: dict):
        self._conn, self._state = conn, state

    def execute(self, sql: str, *args):
        words = sql.lstrip().upper()
        if self._state["full"] and words.startswith(self.writes):
            raise sqlite3.OperationalError("database or disk is full")
        cur = self._conn.execute(sql, *args)
        if words.startswith(self._state["arm_on"]):
            self._state["full"] = True
        return cur

    def executemany(self, sql: str, rows):
        if self._state["full"]:
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_failed_commit_is_rolled_back_and_reported(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    state = {"full": False, "arm_on": "INSERT OR REPLACE INTO CELLS"}
    store.conn = _DiskFills(store.conn, state)
    with pytest.raises(DataError, match=r"r.sqlite: cannot write \(database or disk is full\); free disk space"):
        store.finish_cell("k", "adapt", {"method": "lp"}, {}, time.time(), {"t1": {"accuracy": 0.5}})
    assert not store.conn.in_transaction  # rolled back: the connection is usable again
    state["full"] = False
    state["arm_on"] = "never"
    assert store.status("k") is None and store.cell_metrics("k") == {}  # nothing half-written
    store.finish_cell("k", "adapt", {"method": "lp"}, {}, time.time(), {"t1": {"accuracy": 0.5}})
    assert store.status("k") == "done"
    store.close()


def test_full_disk_during_a_run_reports_the_first_error_and_resumes(tmp_path, monkeypatch):
    real_connect = sqlite3.connect
    state = {"full": False, "arm_on": "INSERT OR REPLACE INTO CELLS"}
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _DiskFills(real_connect(*a, **k), state))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cannot write \(database or disk is full\)") as err:
        run(parse_spec(SMALL), out, options=RunOptions(quiet=True))
    assert "results.sqlite" in str(err.value)
    monkeypatch.setattr(sqlite3, "connect", real_connect)  # space freed
    # the failed run could not release its claims either; its process lives on here, so they go stale by age
    res = run(parse_spec(SMALL), out, options=RunOptions(quiet=True, stale_after=0.5))
    assert res.ok and res.ran == 4  # the first cell's record was rolled back: it ran again
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    con.close()


# --- artifacts --------------------------------------------------------------------
def test_artifact_store_seals_and_checks(tmp_path):
    arts = ArtifactStore(tmp_path)
    t = {"w": torch.arange(1000, dtype=torch.float32)}
    p = arts.save("ab12", t)
    rec = json.loads(arts.seal_path("ab12").read_text())
    assert rec["bytes"] == p.stat().st_size and len(rec["sha256"]) == 64
    assert arts.has("ab12") and arts.check("ab12") is None
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    p.write_bytes(bytes(data))
    assert arts.has("ab12")  # the cheap check sees the size only
    assert "SHA-256" in arts.check("ab12")
    p.write_bytes(bytes(data[:-100]))  # truncated
    assert not arts.has("ab12") and "bytes" in arts.check("ab12", full=False)
    arts.discard("ab12")
    assert not p.exists() and not arts.seal_path("ab12").exists() and "missing" in arts.check("ab12")
    # an artifact written before seals existed counts when its size is the one its header implies
    arts.save("cd34", t)
    arts.seal_path("cd34").unlink()
    assert arts.has("cd34") and arts.check("cd34") is None
    p = arts.path("cd34")
    p.write_bytes(p.read_bytes()[:-1])
    assert not arts.has("cd34") and "header says" in arts.check("cd34")


def test_temporary_files_of_dead_writers_are_removed(tmp_path):
    arts = ArtifactStore(tmp_path)
    folder = tmp_path / "ab"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".ab12.safetensors.{dead.pid}.0a1b2c3d.tmp"
    live = folder / f".ab34.safetensors.{os.getpid()}.0a1b2c3d.tmp"
    legacy_old, legacy_new = folder / "tmpa1b2c3.tmp", folder / "tmpd4e5f6.tmp"
    for f in (stale, live, legacy_old, legacy_new):
        f.write_bytes(b"partial")
    os.utime(legacy_old, (time.time() - 7200, time.time() - 7200))
    assert sorted(arts.clean_temporary()) == sorted([stale, legacy_old])
    assert live.exists() and legacy_new.exists()
    stale.write_bytes(b"partial")  # a writer on another host of a shared folder: only age counts
    assert arts.clean_temporary(local_writers=False) == []


def test_truncated_artifact_is_computed_again_and_temporary_files_go(small_run, tmp_path):
    out = copy_run(small_run, tmp_path / "out")
    pretrain = cell_key(out, "pretrain")
    arts = ArtifactStore(out / "artifacts")
    before = {k: v.clone() for k, v in load_file(arts.path(pretrain)).items()}  # not a view of the file
    arts.path(pretrain).write_bytes(arts.path(pretrain).read_bytes()[:1000])  # cut by a full disk or a copy
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = arts.path(pretrain).with_name(f".{arts.path(pretrain).name}.{dead.pid}.0a1b2c3d.tmp")
    leftover.write_bytes(b"partial")
    marker = out / ".workers" / f"{socket.gethostname()}.{dead.pid}"
    half_written = marker.with_name(f".{marker.name}.tmp")
    live = marker.with_name(f"{socket.gethostname()}.{os.getpid()}")
    marker.parent.mkdir(exist_ok=True)
    for f in (marker, half_written, live):
        f.write_text("some-key")
    res = run(parse_spec(SMALL), out, options=RunOptions(quiet=True))
    assert res.ok and res.ran == 1 and res.cached == 3  # only the damaged cell, not what depends on it
    damaged = [e for e in events(out) if e["event"] == "damaged"]
    assert [e["key"] for e in damaged] == [pretrain] and "1000 bytes" in damaged[0]["reason"]
    after = load_file(arts.path(pretrain))
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not leftover.exists() and not marker.exists() and not half_written.exists() and live.exists()


def test_altered_artifact_is_caught_before_a_cell_reads_it(small_run, tmp_path):
    out = copy_run(small_run, tmp_path / "out")
    pretrain, adapt, evaluate = cell_key(out, "pretrain"), cell_key(out, "adapt"), cell_key(out, "evaluate")
    before = numbers_of(out, evaluate)
    store = ResultsStore(out / "results.sqlite")
    store.forget_cell(evaluate)
    store.forget_cell(adapt)  # adapt is pending again: it will read the pretrained weights
    store.close()
    p = ArtifactStore(out / "artifacts").path(pretrain)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40  # a flipped bit inside the weights, same size
    p.write_bytes(bytes(data))
    res = run(parse_spec(SMALL), out, options=RunOptions(quiet=True))
    assert res.ok and res.ran == 3
    assert [e["key"] for e in events(out) if e["event"] == "damaged"] == [pretrain]
    assert numbers_of(out, evaluate) == before


def numbers_of(out: Path, key: str) -> dict:
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT eval_set, metric, value FROM metrics WHERE cell = ? AND metric != 'train_seconds'",
                       (key,)).fetchall()
    con.close()
    return {r[:2]: r[2] for r in rows}


# --- Ray ---------------------------------------------------------------------------
def test_ray_token_is_found_where_ray_looks(tmp_path):
    home = tmp_path / "home"
    assert not ray_token_available({}, home)
    assert ray_token_available({"RAY_AUTH_TOKEN": "abc"}, home)
    assert not ray_token_available({"RAY_AUTH_TOKEN": "  "}, home)
    (tmp_path / "tok").write_text("abc")
    assert ray_token_available({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}, home)
    assert not ray_token_available({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, home)
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("abc")
    assert ray_token_available({}, home)


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_local_ray_cluster_listens_on_loopback_only(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from ribench.engine.executors import RayExecutor, WorkerContext

    short = Path(tempfile.mkdtemp(prefix="rbray", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(short))  # Ray writes its token to ~/.ray/auth_token
    monkeypatch.setenv("RAY_TMPDIR", str(short))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _reset_ray_auth_cache()
    ctx = WorkerContext(parse_spec(SMALL), str(tmp_path), "cpu")
    ex = RayExecutor(ctx, None, workers=1)
    try:
        procs = [psutil.Process()] + psutil.Process().children(recursive=True)
        listening = set()
        for p in procs:
            try:
                conns = p.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            listening |= {(p.name(), c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
        assert any(name.startswith("gcs_server") for name, _, _ in listening)
        wide = sorted(x for x in listening if x[1] not in LOOPBACK)
        assert not wide, f"the local Ray cluster listens beyond loopback: {wide}"
    finally:
        ex.close()
        _reset_ray_auth_cache()
        import shutil

        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.slow  # a fresh interpreter imports torch and the whole package (about 5 s on 2 busy cores)
def test_a_fresh_worker_process_imports_the_engine_with_plugins_that_import_methods():
    """A spawned pool worker's first import is the engine; the plugins it loads on the way (here one
    that registers methods) must find methods/ and models/ whole."""
    env = {**os.environ, "RIBENCH_PLUGINS": "tiny_suite,worker_faults"}
    r = subprocess.run([sys.executable, "-c", "import ribench.engine.executors; from ribench.core.registry import "
                        "METHODS; assert 'kills_worker' in METHODS"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("sig, code, says", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_stopped_run_says_why_keeps_its_finished_cells_and_resumes(tmp_path, sig, code, says):
    """SIGTERM (a scheduler's stop) ends a run as Ctrl-C does: a one-line message, an exit code
    that says which, no traceback, every finished cell kept; the next run does only the rest."""
    out = tmp_path / "out"
    (tmp_path / "spec.yaml").write_text(json.dumps(SPEC))
    cmd = [sys.executable, "-m", "ribench.cli", "run", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet",
           "--threads", "1"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(done_events(out) if (out / "events.jsonl").exists() else []) < 3:
            if driver.poll() is not None:
                pytest.fail(f"the run ended before it could be stopped: {driver.stderr.read()}")
            time.sleep(0.05)
        driver.send_signal(sig)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == code, err
    assert says in err and "Traceback" not in err
    kept = len(set(done_events(out)))
    assert 3 <= kept < N_CELLS
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(set(done_events(out))) == N_CELLS
    assert f"{kept} already done" in again.stderr + again.stdout
