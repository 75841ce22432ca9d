"""Loads checkpoints the way a fresh process does, for tests/test_checkpoint_reload.py.

``python reload_worker.py <folder>``: the folder holds ``<name>.safetensors`` and
``<name>.expected.safetensors`` (tensors ``x`` and ``logits``) for each case. This
process imports ``ribench.models`` only; each case is loaded in its own child, forked
from this clean state, so one case's imports never help another. Writes
``<name>.result.json``: ``{"ok": bool, "error": str, "max_abs_diff": float, "imported":
[ribench modules the load imported]}``.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path


def _load_one(folder: str, name: str, threads: int) -> None:
    import torch
    from safetensors.torch import load_file

    from ribench.models import load_model

    torch.set_num_threads(threads)
    before = {m for m in sys.modules if m.startswith("ribench")}
    out: dict = {"ok": False, "error": "", "max_abs_diff": float("nan"), "imported": []}
    try:
        model = load_model(Path(folder) / f"{name}.safetensors").eval()
        expected = load_file(str(Path(folder) / f"{name}.expected.safetensors"))
        with torch.inference_mode():
            logits = model(expected["x"])
        out["ok"] = bool(torch.equal(logits, expected["logits"]))
        out["max_abs_diff"] = float((logits - expected["logits"]).abs().max())
    except Exception as e:  # reported to the test
        out["error"] = f"{type(e).__name__}: {e}"
    out["imported"] = sorted({m for m in sys.modules if m.startswith("ribench")} - before)
    (Path(folder) / f"{name}.result.json").write_text(json.dumps(out))


def main(folder: str, threads: int) -> None:
    import ribench.models  # noqa: F401  (the state every child starts from)

    assert "ribench.methods" not in sys.modules, "ribench.models must not import ribench.methods"
    ctx = multiprocessing.get_context("fork")
    for p in sorted(Path(folder).glob("*.expected.safetensors")):
        name = p.name.removesuffix(".expected.safetensors")
        child = ctx.Process(target=_load_one, args=(folder, name, threads))
        child.start()
        child.join(120)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
