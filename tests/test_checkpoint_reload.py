"""Every registered model kind reloads from its checkpoint in a fresh process with identical
outputs; a checkpoint names the modules that rebuild it, and only ribench's own are imported."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ribench.methods  # noqa: F401  (registers the model kinds that methods make)
import ribench.models
from ribench.core.errors import CheckpointError
from ribench.core.registry import MODEL_KINDS
from ribench.models import load_model, save_model
from ribench.models.checkpoint import registering_modules
from ribench.models.external import build, parse_entry

TESTS = Path(__file__).parent
SRC_MODELS = Path(ribench.models.__file__).parent
SMALL = {  # tiny sizes; every other registered kind is built with its defaults
    "mlp": dict(width=8, depth=1), "cnn": dict(widths=(4,), features=8), "resnet": dict(width=4),
    "vit": dict(patch=7, dim=8, depth=1, heads=2),
    "dawin": dict(base="cnn", base_hparams=dict(widths=(4,), features=8)),
    "prompted": dict(base_arch="mlp", base_hparams=dict(width=8, depth=1), pad=3),
    "with_head": dict(base_arch="prompted", base_hparams=dict(base_arch="mlp", base_hparams=dict(width=8, depth=1),
                                                              pad=3), head_kind="cosine"),
}


def _ribench_kinds() -> list[str]:
    return [n for n in MODEL_KINDS.names() if getattr(MODEL_KINDS.get(n), "__module__", "").startswith("ribench.")]


def _build(kind: str):
    torch.manual_seed(0)
    model = MODEL_KINDS.create(kind, num_classes=3, **SMALL.get(kind, {}))
    with torch.no_grad():  # move every weight off its initial value (zero prompts, equal ingredients)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _external():
    torch.manual_seed(0)
    entry = parse_entry({"name": "mine", "source": "module:fixtures_models:tiny_net",
                         "input": {"size": 12, "channels": 1}})
    model = build(entry, num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _write_case(folder: Path, name: str, model, x: torch.Tensor) -> None:
    save_model(model, folder / f"{name}.safetensors")
    with torch.inference_mode():
        logits = model(x)
    save_file({"x": x, "logits": logits.contiguous()}, str(folder / f"{name}.expected.safetensors"))


def _reload_in_fresh_processes(folder: Path) -> dict[str, dict]:
    subprocess.run([sys.executable, str(TESTS / "reload_worker.py"), str(folder), str(torch.get_num_threads())],
                   check=True, timeout=300, cwd=TESTS)
    return {p.name.removesuffix(".result.json"): json.loads(p.read_text()) for p in folder.glob("*.result.json")}


def test_registry_has_the_kinds_methods_make():
    assert {"mlp", "cnn", "resnet", "vit", "dawin", "prompted", "with_head"} <= set(_ribench_kinds())


def test_every_registered_model_kind_reloads_in_a_fresh_process(tmp_path):
    """Also old checkpoints, written before `modules` was recorded (one worker process for all:
    its children start from a state that imported ribench.models only)."""
    x = (torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    kinds = _ribench_kinds()
    for kind in kinds:
        _write_case(tmp_path, kind, _build(kind), x)
    _write_case(tmp_path, "external", _external(), x)
    legacy = ("with_head", "cnn", "dawin")  # with_head over prompted: both of its kinds from the legacy table
    for kind in legacy:
        _write_case(tmp_path, f"legacy-{kind}", _build(kind), x)
        _rewrite_metadata(tmp_path / f"legacy-{kind}.safetensors",
                          lambda m: {k: v for k, v in m.items() if k != "modules"})
    # dawin was registered by the module ribench.methods.weightspace, now a package: files that name it load
    _write_case(tmp_path, "dawin-before-split", _build("dawin"), x)
    _rewrite_metadata(tmp_path / "dawin-before-split.safetensors",
                      lambda m: {**m, "modules": json.dumps(["ribench.methods.weightspace", "ribench.models.zoo"])})
    results = _reload_in_fresh_processes(tmp_path)
    assert sorted(results) == sorted([*kinds, "external", "dawin-before-split", *(f"legacy-{k}" for k in legacy)])
    bad = {k: r["error"] or f"max |diff| {r['max_abs_diff']}" for k, r in results.items() if not r["ok"]}
    assert not bad, bad
    # a kind that methods register is rebuilt by importing only what its checkpoint names
    assert "ribench.methods.weightspace.dawin" in results["dawin"]["imported"]
    assert not any(m.startswith("ribench.methods") for m in results["mlp"]["imported"])


def test_the_checkpoint_names_the_modules_that_register_its_kinds(tmp_path):
    model = _build("with_head")  # with_head over prompted over mlp: three kinds, three modules
    assert registering_modules(model) == ["ribench.methods.prompt", "ribench.methods.training_free",
                                          "ribench.models.zoo"]
    path = save_model(model, tmp_path / "w.safetensors")
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["modules"]) == registering_modules(model)
    assert registering_modules(_build("cnn")) == ["ribench.models.zoo"]
    assert registering_modules(_external()) == ["ribench.models.external"]


def _rewrite_metadata(path: Path, change) -> None:
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    save_file(tensors, str(path), metadata=change(meta))


def test_modules_outside_ribench_are_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = save_model(_build("mlp"), tmp_path / "m.safetensors")
    _rewrite_metadata(path, lambda m: {**m, "arch": "planted", "modules": json.dumps(["planted_module"])})
    with pytest.raises(CheckpointError, match=r"saved from model 'planted' which is not registered; it was "
                                              r"registered by 'planted_module', outside ribench, which loading a "
                                              r"checkpoint never imports"):
        load_model(path)
    assert not marker.exists()
    _rewrite_metadata(path, lambda m: {**m, "modules": "not json"})
    with pytest.raises(CheckpointError, match=r"malformed metadata 'modules'"):
        load_model(path)
    _rewrite_metadata(path, lambda m: {**m, "arch": "mlp", "modules": json.dumps(["ribench.no_such_module"])})
    with pytest.raises(CheckpointError, match=r"needs module 'ribench\.no_such_module'"):
        load_model(path)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code, resolved to absolute names."""
    package = "ribench.models"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from .. import methods`
    return out


def test_models_never_import_methods_and_have_no_import_cycle():
    files = {f"ribench.models.{p.stem}": _imports(p) for p in SRC_MODELS.glob("*.py") if p.stem != "__init__"}
    upward = {m: sorted(i for i in imps if i.startswith(("ribench.methods", "ribench.evaluate", "ribench.engine")))
              for m, imps in files.items()}
    graph = {m: {i for i in imps if i in files and i != m} for m, imps in files.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    cycles = {m: sorted(graph[m]) for m in graph if reaches(m, m, {m})}
    assert not any(upward.values()) and not cycles, (upward, cycles)
