"""Paths in a spec are stored absolute: a run folder's spec.json names the same suite file
and weights file from any working directory (``ribench retry DIR`` run elsewhere)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import fixtures_models
from ribench.cli import main
from ribench.engine import load_spec, parse_spec

SPEC = """
name = "paths"
suite_file = "data/pets.toml"
tasks = ["sketches"]
methods = ["lp"]
seeds = [0]
device = "cpu"
analysis = { enabled = false }
diagnostics = { enabled = false }
eval = { val_fraction = 0.2, pretrain_sample = 4 }

[[backbones]]
name = "mine"
source = "module:fixtures_models:tiny_net"
kwargs = { num_classes = 2, channels = 3 }
weights = "weights/tiny.safetensors"
input = { size = 8, channels = 3 }
"""


def _imgs(folder: Path, n: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def _project(root: Path) -> Path:
    """A spec folder with a user suite (data/pets.toml) and a weights file, named relatively."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            _imgs(root / "data" / "photos" / split / c, 3, rng)
    for c in ("cat", "dog"):
        _imgs(root / "data" / "sketches" / c, 5, rng)
    (root / "data" / "pets.toml").write_text(
        '[suite]\nname = "pets"\nclasses = ["cat", "dog"]\nimage_size = 8\n'
        '[suite.pretrain]\ntrain = "photos/train"\ntest = "photos/test"\n[suite.tasks.sketches]\npath = "sketches"\n')
    (root / "weights").mkdir()
    torch.manual_seed(0)
    save_file(dict(fixtures_models.tiny_net(num_classes=2, channels=3).state_dict()),
              str(root / "weights" / "tiny.safetensors"))
    (root / "spec.toml").write_text(SPEC)
    return root / "spec.toml"


def test_spec_file_paths_are_stored_absolute(tmp_path, monkeypatch):
    spec_file = _project(tmp_path / "proj")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(os.path.relpath(spec_file))  # the spec named relatively, too
    assert spec.suite_file == str(tmp_path / "proj" / "data" / "pets.toml")
    assert spec.backbones[0]["weights"] == str(tmp_path / "proj" / "weights" / "tiny.safetensors")
    # the dump parses back to the same spec, from anywhere
    monkeypatch.chdir(tmp_path)
    assert parse_spec(spec.model_dump()).model_dump() == spec.model_dump()
    # a spec given as a dict: relative to the working directory; '..' and '~' resolved
    d = parse_spec({"suite_file": "a/../pets.toml", "data_root": "~/data", "backbones": ["mlp"], "methods": ["lp"]})
    assert d.suite_file == str(tmp_path / "pets.toml")
    assert d.data_root == str(Path.home() / "data")


def test_retry_from_another_working_directory(tmp_path, monkeypatch, capsys):
    _project(tmp_path / "proj")
    monkeypatch.chdir(tmp_path / "proj")
    out = tmp_path / "proj" / "out"
    assert main(["run", "spec.toml", "--out", "out", "--quiet"]) == 0
    stored = json.loads((out / "spec.json").read_text())
    assert Path(stored["suite_file"]).is_absolute() and Path(stored["backbones"][0]["weights"]).is_absolute()
    monkeypatch.chdir(tmp_path)  # where neither data/pets.toml nor weights/ exists
    capsys.readouterr()
    assert main(["retry", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--format", "json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["failed"] == 0 and st["pending"] == 0 and st["done"] == st["total"] > 0
