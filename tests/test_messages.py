"""Clear messages for bad input: hyperparameters checked against their annotations, pickles
that hold code, `module:` sources that are no model factories, hints that name the real
spec key, and a Python requirement that matches what the package imports."""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import pickle
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ribench
import ribench.methods  # noqa: F401  (registers every method)
from ribench.core import METHODS
from ribench.core.errors import CheckpointError, ConfigError, DataError
from ribench.models.external import build, import_factory, parse_entry
from ribench.models.state_io import load_state_dict, pickle_globals

ROOT = Path(__file__).parent.parent


# ----------------------------------------------------------- hyperparameters


def _fields(kind):
    assert len(METHODS.names()) > 20
    for name in METHODS.names():
        cls = METHODS.get(name).Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] is kind:
                yield name, f.name


@pytest.mark.parametrize("bad", ["fast", float("inf"), float("nan"), -math.inf, True, None, [1.0]])
def test_every_float_hyperparameter_rejects_what_is_no_finite_number(bad):
    for method, field in _fields(float):
        with pytest.raises(ConfigError) as e:
            METHODS.create(method, **{field: bad})
        assert str(e.value) == f"methods.{method}.params.{field}: expected a finite number, got {bad!r}"


@pytest.mark.parametrize("bad", ["3", 2.5, 2.0, False])
def test_every_integer_hyperparameter_rejects_what_is_no_integer(bad):
    for method, field in _fields(int):
        with pytest.raises(ConfigError, match=rf"^methods\.{method}\.params\.{field}: expected an integer, got "):
            METHODS.create(method, **{field: bad})


def test_every_string_and_bool_hyperparameter_checks_its_type():
    for method, field in _fields(str):
        with pytest.raises(ConfigError, match=rf"^methods\.{method}\.params\.{field}: expected a string, got 5$"):
            METHODS.create(method, **{field: 5})
    for method, field in _fields(bool):
        with pytest.raises(ConfigError, match=rf"^methods\.{method}\.params\.{field}: expected true or false, got 1$"):
            METHODS.create(method, **{field: 1})


def test_containers_and_optionals_name_the_element():
    with pytest.raises(ConfigError, match=r"^methods\.lp\.params\.l2_grid\[2\]: expected a finite number, got inf$"):
        METHODS.create("lp", l2_grid=[0.1, 0.01, float("inf")])
    with pytest.raises(ConfigError, match=r"^methods\.lp\.params\.l2_grid: expected a list, got 0\.1$"):
        METHODS.create("lp", l2_grid=0.1)
    with pytest.raises(ConfigError, match=r"^methods\.lora\.params\.target_modules\[1\]: expected a string, got 3$"):
        METHODS.create("lora", target_modules=["body.1", 3])
    METHODS.create("lora", target_modules=None)
    with pytest.raises(ConfigError, match=r"^methods\.wise_ft\.params\.alpha: expected a finite number, got 'half'"):
        METHODS.create("wise_ft", alpha="half")
    assert METHODS.create("wise_ft", alpha=None).config.alpha is None


def test_a_quoted_number_gets_a_hint_and_good_values_pass():
    with pytest.raises(ConfigError, match=r"methods\.ft\.params\.lr: expected a finite number, got the string "
                                          r"'1e-3' \(write it without quotes; in YAML, 1e-3 needs a dot: 1\.0e-3\)"):
        METHODS.create("ft", lr="1e-3")
    cfg = METHODS.create("ft", lr=1, epochs=2, batch_size=np.int64(16), head="reinit").config
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.head) == (1, 2, 16, "reinit")


@pytest.mark.parametrize("field, value", [("lr", 0), ("lr", -1e-3), ("epochs", 0), ("batch_size", 0),
                                          ("weight_decay", -0.1), ("warmup_frac", 1.0)])
def test_training_ranges_hold_for_every_trainconfig_method(field, value):
    # lpft used to accept any of these (its Config had no check)
    for method in ("ft", "lpft"):
        with pytest.raises(ConfigError, match=rf"^methods\.{method}\.params\.{field}: must be"):
            METHODS.create(method, **{field: value})


def test_a_spec_with_a_non_numeric_lr_fails_at_planning_naming_the_field():
    from ribench.engine import plan
    from test_engine import SUITE_ID, TASKS, tiny_spec

    with pytest.raises(ConfigError, match=r"^methods\.ft\.params\.lr: expected a finite number, got 'fast'$"):
        plan(tiny_spec(methods=[{"name": "ft", "params": {"lr": "fast"}}]), TASKS, SUITE_ID)


# ----------------------------------------------------------------- pickles


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("form", ["torch_zip", "raw_protocol_4", "raw_protocol_2"])
def test_a_pickle_that_calls_os_system_is_reported_as_code(tmp_path, form):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    payload = {"w": torch.zeros(2), "x": _RunsACommand(marker)}
    if form == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(form[-1])))
    with pytest.raises(CheckpointError) as e:
        load_state_dict(path)
    msg = str(e.value)
    assert "holds code" in msg and f"would call {os.system.__module__}.system" in msg, msg
    assert "not a readable" not in msg and "not even with --trust-checkpoint" in msg
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_globals_reads_every_protocol_without_running_anything(tmp_path, protocol):
    path = tmp_path / "g.pkl"
    # os.path.join pickles as a global reference; Counter by class, the second time from the memo
    from collections import Counter

    path.write_bytes(pickle.dumps([os.path.join, Counter(a=1), Counter(b=2), "text"], protocol=protocol))
    assert pickle_globals(path) == [f"{os.path.join.__module__}.join", "collections.Counter"]


def test_a_truncated_pt_file_is_still_reported_as_corrupt(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"w": torch.zeros(3)}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"not a readable PyTorch weights file"):
        load_state_dict(path)


# ------------------------------------------------------------ module sources


def _entry(source: str, **kw):
    return parse_entry({"name": "b", "source": source, "input": {"size": 12, "channels": 1}, **kw}, "backbones[0]")


def test_a_spec_cannot_run_a_shell_command_through_a_module_source(tmp_path):
    marker = tmp_path / "ran"
    entry = _entry("module:os:system", kwargs={"command": f"touch {marker}"})
    with pytest.raises(ConfigError, match=r"^backbones\[0\]\.source: 'os:system' is not a model factory: module 'os' "
                                          r"is part of Python's standard library.*--trust-checkpoint"):
        build(entry, num_classes=3)
    assert not marker.exists()


@pytest.mark.parametrize("target, why", [
    ("subprocess:run", "standard library"), ("builtins:eval", "standard library"), ("shutil:rmtree", "standard library"),
    ("sys:exit", "standard library"), ("torch:load", "torch's own"), ("torch.hub:load", "torch's own"),
    ("numpy:load", "holds no model factories"), ("fixtures_factories:rmtree", "defined in 'shutil'"),
    ("fixtures_factories:os_system", "is a builtin_function_or_method, not a model factory"),
])
def test_callables_that_are_no_model_factories_are_refused(target, why):
    with pytest.raises(ConfigError, match=re.escape(why)):
        import_factory(target, "backbones[0]")


def test_functions_and_module_classes_are_factories_and_trust_lifts_the_gate():
    from fixtures_models import TinyNet, tiny_net

    assert import_factory("fixtures_models:tiny_net", "b") is tiny_net
    assert import_factory("fixtures_models:TinyNet", "b") is TinyNet
    assert import_factory("torch.nn:Linear", "b") is torch.nn.Linear
    with pytest.raises(ConfigError, match=r"module 'fixtures_factories' has no function 'NOT_A_FACTORY'"):
        import_factory("fixtures_factories:NOT_A_FACTORY", "b")
    with pytest.raises(ConfigError, match=r"^b\.source: 'fixtures_factories:PlainClass' is a type, not a model factory: "
                                          r"it must be a Python function returning an nn\.Module, or an nn\.Module "
                                          r"subclass"):
        import_factory("fixtures_factories:PlainClass", "b")
    assert import_factory("os:getcwd", "b", trust=True) is os.getcwd
    model = build(_entry("module:fixtures_models:TinyNet"), num_classes=3)
    assert model(torch.zeros(2, 1, 12, 12, dtype=torch.uint8)).shape == (2, 3)


def test_a_checkpoint_cannot_smuggle_a_command_through_its_recorded_source(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from ribench.models import load_model, save_model

    marker = tmp_path / "ran"
    path = save_model(build(_entry("module:fixtures_models:tiny_net"), num_classes=3), tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    hp = json.loads(meta["hparams"])
    hp.update(source="module:os:system", kwargs={"command": f"touch {marker}"})
    save_file(tensors, str(path), metadata={**meta, "hparams": json.dumps(hp)})
    with pytest.raises(CheckpointError, match=r"'os:system' is not a model factory"):
        load_model(path)
    assert not marker.exists()


# ------------------------------------------------------------------ hints


def test_the_mixed_image_size_hint_names_the_spec_key(tmp_path):
    from ribench.data import formats as F

    rng = np.random.default_rng(0)
    for cls, side in (("a", 5), ("b", 7)):
        (tmp_path / "d" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(tmp_path / "d" / cls / "x.png")
    for streamed in (False, True):
        with pytest.raises(DataError, match=r"mixed sizes.*set image_size = <pixels> in the suite's table"):
            F.read_image_folder(tmp_path / "d", **({"in_memory_limit": 0} if streamed else {}))
    from ribench.data.formats.base import stack_images

    with pytest.raises(DataError, match=r"mixed sizes.*set image_size = <pixels> in the suite's table"):
        stack_images([torch.zeros(1, 2, 2, dtype=torch.uint8), torch.zeros(1, 3, 3, dtype=torch.uint8)], ["p", "q"], "f")


# ---------------------------------------------------------- python version


def _declared_minimum() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)', text, re.M)
    assert found, "pyproject.toml declares no requires-python lower bound"
    return int(found.group(1)), int(found.group(2))


def _unguarded_imports(name: str) -> list[str]:
    """Files of the package importing ``name`` outside a try/except ImportError."""
    out = []
    for p in Path(ribench.__file__).parent.rglob("*.py"):
        tree = ast.parse(p.read_text())
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for s in t.body for n in ast.walk(s)}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            if name in names and id(node) not in guarded:
                out.append(str(p.relative_to(Path(ribench.__file__).parent)))
    return sorted(set(out))


def test_the_declared_python_version_can_import_the_package():
    # tomllib is in the standard library from Python 3.11 on
    users = _unguarded_imports("tomllib")
    if users:
        assert _declared_minimum() >= (3, 11), f"{users} import tomllib, but pyproject admits {_declared_minimum()}"
