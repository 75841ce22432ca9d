"""Spec fields refused at load with a message naming the field: an empty task list, a run
name that would leave runs/, inf/nan settings, a zero thread count, and every name the spec
gives (backbones, methods, attacks, recipes, suite, estimators, corruptions) and the optional
packages its outside backbones need."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest

from ribench.core.errors import ConfigError
from ribench.engine import parse_spec

BASE = {"suite": "tiny", "backbones": ["mlp"], "methods": ["lp"]}


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/abs", ".hidden", "", "a\\b", "x" * 129])
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused(name):
    with pytest.raises(ConfigError, match="^name: .*plain folder name"):
        parse_spec({**BASE, "name": name})


@pytest.mark.parametrize("name", ["quick", "my-run.v2", "grid_3"])
def test_plain_run_names_are_accepted(name):
    assert parse_spec({**BASE, "name": name}).name == name


def test_an_empty_task_list_is_refused():
    with pytest.raises(ConfigError, match="^tasks: .*no task"):
        parse_spec({**BASE, "tasks": []})


@pytest.mark.parametrize("field,value", [("lr", math.inf), ("lr", math.nan), ("epochs", math.inf),
                                         ("weight_decay", -math.inf)])
def test_non_finite_pretraining_settings_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"^pretrain.{field}: .*finite"):
        parse_spec({**BASE, "pretrain": {field: value}})


def test_non_finite_eval_and_attack_settings_are_refused():
    with pytest.raises(ConfigError, match="^eval.val_fraction"):
        parse_spec({**BASE, "eval": {"val_fraction": math.nan}})
    with pytest.raises(ConfigError, match=r"^attacks\[0\].eps"):
        parse_spec({**BASE, "attacks": [{"name": "fgsm", "eps": [math.inf]}]})


def test_a_non_numeric_setting_names_the_field():
    with pytest.raises(ConfigError, match="^pretrain.lr: "):
        parse_spec({**BASE, "pretrain": {"lr": "fast"}})


# ------------------------------------------------------------ names, checked at load
@pytest.mark.parametrize("over, field, names", [
    ({"attacks": [{"name": "pgd", "eps": [0.1]}]}, r"attacks\[0\]\.name", "pgd_linf"),
    ({"backbones": ["mlp", "resnot"]}, r"backbones\[1\]", "resnet"),
    ({"backbones": ["dawin"]}, r"backbones\[0\]", "mlp"),  # a model methods make is no backbone
    ({"methods": ["lp", "fine-tune"]}, r"methods\[1\]\.name", "ft"),
    ({"recipes": ["narrow", "wide"]}, r"recipes\[1\]", "narrow"),
    ({"suite": "tiny2"}, "suite", "tiny"),
    ({"corruptions": {"names": ["mnist-c/shot_noise", "mnist-c/shot_nosie"]}}, r"corruptions\.names\[1\]",
     "mnist-c/shot_noise"),
])
def test_an_unknown_name_fails_when_the_spec_is_loaded_naming_the_field(over, field, names):
    from ribench.core.errors import UnknownNameError

    with pytest.raises(ConfigError, match=f"^{field}: unknown ") as e:
        parse_spec({**BASE, **over})
    assert isinstance(e.value, UnknownNameError) and names in e.value.valid
    if field.startswith("backbones"):  # the backbones and presets, not the models that methods make
        assert not {"dawin", "prompted", "with_head"} & set(e.value.valid) and "vit_b16_in1k" in e.value.valid


def test_unknown_estimators_and_bad_attack_budgets_fail_at_load():
    with pytest.raises(ConfigError, match=r"^analysis\.estimators: 'nope' is not a registered estimator"):
        parse_spec({**BASE, "analysis": {"estimators": ["leep", "nope"]}})
    with pytest.raises(ConfigError, match=r"^attacks\[0\]\.params: .*does not take queries"):
        parse_spec({**BASE, "attacks": [{"name": "pgd_linf", "eps": [0.1], "params": {"queries": 10}}]})


def test_a_timm_backbone_without_timm_fails_at_load_naming_the_field_and_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # not importable, as on a machine without it
    with pytest.raises(ConfigError, match=r"^backbones\[1\]\.preset: 'timm:vit_base_patch16_224\.augreg_in1k' needs "
                                          r"the package 'timm', which does not import here .*pip install "
                                          r"'ribench\[timm\]'"):
        parse_spec({**BASE, "backbones": ["mlp", {"preset": "vit_b16_in1k", "download": True}]})
    table = {"name": "t", "source": "timm:vit_tiny_patch16_224", "download": True}
    with pytest.raises(ConfigError, match=r"^backbones\[0\]\.source: .*pip install 'ribench\[timm\]'"):
        parse_spec({**BASE, "backbones": [table]})
    # a stored run is read without it (`ribench status`)
    assert parse_spec({**BASE, "backbones": [table]}, check_packages=False).backbones[0]["source"] == table["source"]


@pytest.mark.skipif(importlib.util.find_spec("torchattacks") is not None, reason="torchattacks is installed")
def test_autoattack_without_torchattacks_fails_at_load_with_the_pip_command():
    with pytest.raises(ConfigError, match=r"^attacks\[0\]\.name: autoattack needs .*pip install --no-deps torchattacks"):
        parse_spec({**BASE, "attacks": [{"name": "autoattack", "eps": [0.1]}]})


# ------------------------------------------------------------ corruption names
def _corrupt_cells(names):
    from ribench.engine import plan

    spec = parse_spec({**BASE, "corruptions": {"names": names, "severities": [3]}})
    return {c.config["corruption"]: c.key for c in plan(spec, ["t1"], {"name": "tiny", "version": "1", "data_seed": 0})
            if c.kind == "corrupt"}


def test_the_digits_suites_family_spelling_of_a_legacy_corruption_is_accepted():
    from ribench.core.registry import CORRUPTIONS
    from ribench.data.suites.digits import layout

    # digits v1 labels its legacy sets mnist-c/<corruption>/<severity>; the unregistered ones among
    # those family names denote the registered corruption that the suite builds them with
    legacy = {label.rsplit("/", 1)[0]: name for label, (name, _) in layout(1).CORRUPTIONS.items()}
    spelled = {family: name for family, name in legacy.items() if family not in CORRUPTIONS}
    assert spelled == {"mnist-c/gaussian_noise": "gaussian_noise", "mnist-c/gaussian_blur": "gaussian_blur",
                       "mnist-c/contrast": "contrast"}
    for family, name in spelled.items():
        assert _corrupt_cells([family]) == _corrupt_cells([name])  # the same cells
    with pytest.raises(ConfigError, match=r"^corruptions\.names\[0\]: 'mnist-c/gaussian_noise/3' names an eval set "
                                          r"\(a corruption at severity 3\); write the corruption, "
                                          r"'mnist-c/gaussian_noise', and its severities in `severities`"):
        _corrupt_cells(["mnist-c/gaussian_noise/3"])
