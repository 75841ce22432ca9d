"""Spec fields refused at load with a message naming the field: an empty task list, a run
name that would leave runs/, inf/nan settings, a zero thread count."""

from __future__ import annotations

import math

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
