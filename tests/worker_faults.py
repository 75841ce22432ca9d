"""Methods that misbehave on purpose, for the reliability tests. Loaded as a plugin
(RIBENCH_PLUGINS=tiny_suite,worker_faults) so that pool workers register them too.

- ``kills_worker``: on its first attempt, waits until ``waits_for_death`` has started in
  another worker, then kills its own process with SIGKILL; afterwards it works.
- ``waits_for_death``: in flight while ``kills_worker`` dies (it waits for the death,
  then for the pool to terminate it); once the death happened, it works at once.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ribench.core import register_method
from ribench.core.registry import METHODS
from ribench.methods.base import Method


@dataclass(frozen=True)
class MarkerConfig:
    marker: str = ""  # a folder both methods use to see each other's progress


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)


class KillsWorker(Method):
    """Kills the process it runs in, once."""

    name = "kills_worker"
    Config = MarkerConfig

    def adapt(self, pretrained, task, ctx):
        folder = Path(self.config.marker)
        if not (folder / "killed").exists():
            _wait_for(folder / "waiting", 60)
            (folder / "killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        ctx.info["trainable_params"] = 0
        return self.fresh_copy(pretrained)


class WaitsForDeath(Method):
    """Innocent bystander: in flight when ``kills_worker`` takes its worker down."""

    name = "waits_for_death"
    Config = MarkerConfig

    def adapt(self, pretrained, task, ctx):
        folder = Path(self.config.marker)
        if not (folder / "killed").exists():
            (folder / "waiting").write_text(str(os.getpid()))
            _wait_for(folder / "killed", 60)
            time.sleep(5)  # the broken pool terminates this worker meanwhile
        ctx.info["trainable_params"] = 0
        return self.fresh_copy(pretrained)


for _m in (KillsWorker, WaitsForDeath):
    if _m.name not in METHODS:
        register_method(_m.name)(_m)
