"""Soak test: kill -9 drivers and pool workers at random moments, resume until the grid is
done, and check that no cell was lost or done twice and that the numbers equal those of an
uninterrupted run. Slow (minutes): `make test-all`, or
`pytest -m slow tests/test_soak.py`. RIBENCH_SOAK_KILLS (default 8) and RIBENCH_SOAK_SEED
(default 0) set the number of kills and the random moments."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import time
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from test_scaling import N_CELLS, _cli, done_events, numbers, reference  # noqa: F401  (reference: a fixture)


def _workers(driver_pid: int) -> list[psutil.Process]:
    """The driver's pool workers (not multiprocessing's resource tracker)."""
    try:
        children = psutil.Process(driver_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in children:
        with suppress(psutil.NoSuchProcess):
            if any("spawn_main" in a for a in p.cmdline()):
                out.append(p)
    return out


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_random_kills_of_drivers_and_workers_lose_and_repeat_nothing(reference, tmp_path):  # noqa: F811
    kills = int(os.environ.get("RIBENCH_SOAK_KILLS", "8"))
    seed = int(os.environ.get("RIBENCH_SOAK_SEED", "0"))
    rng = random.Random(seed)
    out = tmp_path / "soak"
    pool = ("--runner", "pool", "--workers", "2")
    log: list[str] = []
    driver = None
    t0 = time.time()
    try:
        while len(log) < kills:
            if driver is None or driver.poll() is not None:
                if driver is not None and driver.returncode == 0:
                    break  # the grid finished between two kills
                driver = _cli(out, *pool)
            time.sleep(rng.uniform(1.0, 12.0))  # start-up of a driver and its workers takes several seconds
            if driver.poll() is not None:
                continue
            workers = _workers(driver.pid)
            if workers and rng.random() < 0.5:
                victim = rng.choice(workers)
                with suppress(psutil.NoSuchProcess):
                    victim.send_signal(signal.SIGKILL)
                log.append(f"{time.time() - t0:.1f}s worker {victim.pid}")
            else:
                started = {p for p in workers if (out / ".workers" / f"{socket.gethostname()}.{p.pid}").exists()}
                driver.send_signal(signal.SIGKILL)
                driver.wait()
                killed = time.time()
                # a started worker goes at once; one still importing goes when its start-up ends
                while any(map(_alive, workers)) and time.time() < killed + 60:
                    if time.time() > killed + 5:
                        assert not [p.pid for p in started if _alive(p)], f"started workers outlived the driver: {log}"
                    time.sleep(0.05)
                assert not [p.pid for p in workers if _alive(p)], f"workers outlived their driver by 60 s: {log}"
                log.append(f"{killed - t0:.1f}s driver {driver.pid} ({len(started)}/{len(workers)} workers "
                           f"started, all gone after {time.time() - killed:.1f} s)")
        if driver is not None and driver.poll() is None:
            assert driver.wait(timeout=600) in (0, 1), driver.stderr.read()
        for _ in range(5):  # a cell whose worker was killed is recorded failed; every run tries it again
            if driver is not None and driver.returncode == 0:
                break
            driver = _cli(out, *pool)
            driver.wait(timeout=600)
        assert driver.returncode == 0, f"{log}\n{driver.stderr.read()}"
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()

    keys = done_events(out)
    assert len(keys) == len(set(keys)), f"a cell was done twice (kills: {log})"
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0] == N_CELLS
    assert con.execute("SELECT COUNT(*) FROM cells WHERE status != 'done'").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert numbers(out) == numbers(reference), f"numbers differ from the uninterrupted run (kills: {log})"
    assert not list(Path(out, "artifacts").glob("*/*.tmp")), "temporary files were left behind"
    print(f"soak: {len(log)} kills ({', '.join(log)}), {time.time() - t0:.0f} s in all")
