"""Every TOML/YAML example of README.md and docs/*.md parses, and does what it says.

A block is one of two kinds, told apart by what it holds:

- a ``[suite]`` file (a table ``suite``, docs/datasets.md's user suites): read with the
  suite loader (``load_suite_table``) and built over a folder tree made for it;
- a run spec, whole or partial (everything else): completed with a minimal base (one
  backbone, one method) and validated with ``engine.parse_spec``.

A new example that is neither fails here until it is given a kind.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ribench.data.suites.user import load_suite_table, user_suite
from ribench.engine import parse_spec

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(toml|ya?ml)[^\n]*\n(.*?)^```", re.S | re.M)
BASE = {"backbones": ["mlp"], "methods": ["lp"]}  # what a partial spec lacks to be whole


def examples() -> list[tuple[str, str, str]]:
    """(id ``file:line``, language, text) of every fenced TOML/YAML block."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text[:m.start()].count("\n") + 1
            out.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1), m.group(2)))
    return out


def _load(lang: str, text: str) -> dict:
    data = tomllib.loads(text) if lang == "toml" else yaml.safe_load(text)
    assert isinstance(data, dict), f"an example is a table/mapping, got {type(data).__name__}"
    return data


def is_suite_file(data: dict) -> bool:
    return isinstance(data.get("suite"), dict)


def test_the_docs_have_examples_of_both_kinds():
    kinds = {is_suite_file(_load(lang, text)) for _, lang, text in examples()}
    assert kinds == {True, False}
    assert any(name.startswith("docs/backbones.md") for name, _, _ in examples())


@pytest.mark.parametrize("where,lang,text", examples(), ids=[e[0] for e in examples()])
def test_example_parses_and_validates(where, lang, text, tmp_path):
    data = _load(lang, text)
    if is_suite_file(data):
        _build_suite_file(text, data["suite"], tmp_path)
        return
    # partial specs are completed by the base; check_packages=False: timm and transformers
    # examples validate where those optional packages do not import
    parse_spec({**BASE, **data}, source=where, base_dir=tmp_path, check_packages=False)


def test_the_backbones_example_lists_built_in_and_outside_backbones_as_tables(tmp_path):
    (where, lang, text), = [e for e in examples() if e[0].startswith("docs/backbones.md") and "[[backbones]]" in e[2]]
    spec = parse_spec({**_load(lang, text), "methods": ["lp"]}, source=where, base_dir=tmp_path, check_packages=False)
    assert spec.backbones[0] == "cnn"  # the table with only a name is the registered backbone
    assert {i: e.name for i, e in spec.outside_entries.items()} == {1: "mine", 2: "hf-vit", 3: "vit_b16_in21k"}
    assert spec.outside_entries[1].weights == str(tmp_path / "weights" / "net.safetensors")
    assert spec.outside_entries[2].source == f"hf:{tmp_path / 'models' / 'vit-tiny'}"
    assert spec.outside_entries[3].reset_head and spec.outside_entries[3].source.startswith("timm:")


def _build_suite_file(text: str, table: dict, tmp_path: Path) -> None:
    """Write the example as a file, make every folder and ``.npz`` file it names (4 images per
    class; the pretraining domain's over its own classes when it has them), build it."""
    path = tmp_path / "suite.toml"
    path.write_text(text)
    assert load_suite_table(path) == table
    classes = table.get("classes") or ["a", "b"]
    rng = np.random.default_rng(0)
    for group in ("pretrain", "tasks", "eval_sets"):
        domains = [table[group]] if group == "pretrain" else list(table.get(group, {}).values())
        for d in domains:
            own = d.get("classes", classes) if group == "pretrain" else classes
            if "npz" in d:
                np.savez(tmp_path / d["npz"], images=rng.integers(0, 256, (4 * len(own), 10, 10, 3), dtype=np.uint8),
                         labels=np.array(list(own) * 4))
            for key in ("train", "test", "path"):
                if key in d:
                    for c in own:
                        folder = tmp_path / d[key] / c
                        folder.mkdir(parents=True, exist_ok=True)
                        for i in range(4):
                            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if "classes_file" in table:
        (tmp_path / table["classes_file"]).write_text("\n".join(classes) + "\n")
    suite = user_suite(table, tmp_path)
    assert list(suite.classes) == list(classes)
    pre = table["pretrain"]
    assert suite.pretrain_classes == (tuple(pre["classes"]) if "classes" in pre else None)
    if "class_map" in pre:
        assert [suite.pretrain_classes[j] for j in suite.class_map] == [pre["class_map"][c] for c in classes]
    assert set(suite.tasks) == set(table.get("tasks", {}))
