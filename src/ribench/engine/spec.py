"""The run spec: a TOML or YAML file, validated; errors name the field.

Validation covers every name too: an unknown backbone, method, attack, estimator or
corruption, or an outside backbone whose optional package does not import, fails when
the spec is loaded (``parse_spec``, through ``names.check_names``), not when a cell runs.

Example (the ``quick`` preset)::

    name = "quick"
    suite = "digits"
    suite_options = { severities = [3] }
    backbones = ["mlp", "cnn"]
    recipes = ["narrow", "rich"]
    methods = ["ft", "lp", "lpft"]     # or tables: [[methods]] name = "ft" params = {epochs = 3}
                                       # (a method listed twice is a sweep: docs/methods.md)
    tasks = ["mnist-v2", "fonts", "mnistm"]   # or "all"
    seeds = [0]
    threads = 1                        # CPU threads every cell computes with (the default)
    checkpoint_every = 300             # seconds between a training cell's checkpoints, or "500 steps"; 0: none

    [pretrain]
    epochs = 5
    seed = 0

    [logging]
    tensorboard = false                # true: training curves also as TensorBoard events
    mlflow = false                     # true: ... and as MLflow runs in <out>/mlruns (offline)
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..core import rows
from ..core.errors import ConfigError


class _Strict(BaseModel):
    # inf/nan are never a sensible setting (lr = inf trains nothing and fails far away)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


RESERVED_LABELS = (rows.PRETRAINED, rows.ANALYSIS, "corrupt")  # methods of the rows of m0, predictors, corruptions


class MethodEntry(_Strict):
    """One method of the run; the same method may be listed several times with other params (a
    sweep), each entry then named by its label (engine/names.py, docs/methods.md)."""

    name: str = Field(description="registered method name")
    params: dict[str, Any] = Field(default_factory=dict, description="hyperparameters of the method's Config")
    label: str | None = Field(None, description="what its cells and result rows are called (default: the name, or, "
                              "for several entries of one method, the name and the params in which they differ, "
                              "e.g. lora[r=4])")
    requires: dict[str, str] = Field(default_factory=dict, description="required method -> label of the entry that "
                                     "gives it, when the spec has several entries of it, e.g. {ft = \"ft[lr=0.0001]\"}")

    @field_validator("label")
    @classmethod
    def _plain_label(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or v != v.strip() or len(v) > 128 or not v.isprintable():
            raise ValueError(f"{v!r} is not a label: 1 to 128 printable characters, no space at either end")
        if v in RESERVED_LABELS:
            raise ValueError(f"{v!r} already names other rows of a run; choose another label")
        return v


class PretrainSpec(_Strict):
    epochs: float = Field(8, gt=0, description="pretraining passes over the recipe's data")
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(128, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    seed: int = Field(0, description="seed of pretraining, shared by every fine-tuning seed")


class EvalSpec(_Strict):
    batch_size: int = Field(512, gt=0)
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="held-out part of each task's train split")
    pretrain_sample: int = Field(1000, gt=0, description="images of pretraining data handed to methods")
    max_per_set: int | None = Field(None, gt=0, description="evaluate at most this many images of each eval set: a "
                                    "seeded, class-stratified subset, the same for every model (None: every image; "
                                    "docs/scaling.md)")


class AttackEntry(_Strict):
    """One attack of the robustness evaluation (see docs/attacks.md for names and defaults)."""

    name: str = Field(description="fgsm, pgd_linf, pgd_l2, apgd_ce, square_linf, sparse_rs (or autoattack)")
    eps: list[float] = Field(min_length=1, description="radii (pixels for sparse_rs), in [0, 1] pixel units")
    subset: int = Field(200, gt=0, description="images of each eval set attacked (fixed, seeded)")
    transfer: bool = Field(False, description="also craft on the pretrained model and evaluate adapted models")
    check_masking: bool = Field(True, description="run the gradient-masking checks once per model (Linf/L2 attacks)")
    params: dict[str, Any] = Field(default_factory=dict, description="budgets: steps, step_size, restarts, queries")


class CorruptionSpec(_Strict):
    """Corrupted copies of a domain's test split, generated once per (domain, corruption,
    severity, seed) as cells of the run; they replace the suite's built-in corruption sets."""

    names: list[str] = Field(min_length=1, description="registered corruptions, or a family: mnist-c/*, imagenet-c/*")
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    domain: str = Field("pretrain", description="'pretrain' or the name of a domain of the suite")
    subset: int = Field(500, gt=0, description="images of the domain's test split (fixed, seeded)")
    seed: int = 0

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, v: list[int]) -> list[int]:
        if any(s not in (1, 2, 3, 4, 5) for s in v):
            raise ValueError("severities must be in 1..5")
        return v


class AnalysisSpec(_Strict):
    """Predictors computed before fine-tuning, per (backbone, recipe, task): docs/analysis.md."""

    enabled: bool = Field(True, description="compute OTDD and transferability scores for every task")
    max_per_class: int = Field(100, gt=0, description="images per class for OTDD (seeded sample)")
    max_samples: int = Field(1000, gt=0, description="images of the task for transferability estimators")
    estimators: Union[Literal["all"], list[str]] = Field("all", description="registered estimator names")
    otdd_inner: Literal["gaussian", "exact"] = Field("gaussian", description="label-to-label distance")


class DiagnosticsSpec(_Strict):
    """What adaptation changed inside each model, per adapted model: docs/analysis.md."""

    enabled: bool = Field(True, description="compare every adapted model with its pretrained model")
    samples: int = Field(250, gt=10, description="test images of the task and of the pretraining domain (seeded)")
    layers: Union[Literal["default"], list[str]] = Field(
        "default", description="module names compared layer by layer; default: every conv/linear layer + features")
    barrier_points: int = Field(11, ge=2, description="points on the linear path from pretrained to adapted weights")
    knn_k: int = Field(10, gt=0, description="neighbours of the mutual k-NN alignment")


class LoggingSpec(_Strict):
    """Loggers of the training curves (engine/logging.py); the curves are stored as result rows either way."""

    tensorboard: bool = Field(False, description="also write each adapt and pretrain cell's training curve as "
                              "TensorBoard events under <out>/tensorboard/<cell key> (needs `pip install "
                              "tensorboard`)")
    mlflow: bool = Field(False, description="also log each adapt and pretrain cell as one MLflow run (named by its "
                         "cell key; params: its labels and hyperparameters; metrics: its curve, step = epoch) in "
                         "the offline file store <out>/mlruns (needs `pip install mlflow-skinny`)")


RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class RunSpec(_Strict):
    name: str = Field("run", description="the run's name; the default output folder is runs/<name>")
    suite: str = "digits"
    data_seed: int = Field(0, description="seed that builds the suite's data")
    suite_file: str | None = Field(None, description="TOML file whose [suite] table declares a user suite from "
                                   "folders (docs/datasets.md); replaces `suite`")
    suite_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the suite's "
                                          "factory, e.g. {image_size = 64} for imagenet-rib")
    data_root: str | None = Field(None, description="folder of downloaded datasets (default: $RIBENCH_DATA, "
                                  "else ~/.cache/ribench/data)")
    backbones: list[Union[str, dict[str, Any]]] = Field(
        min_length=1, description="registered model names, or tables for outside backbones (docs/backbones.md)")
    recipes: list[str] = Field(default_factory=lambda: ["narrow"], min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    tasks: Union[Literal["all"], list[str]] = Field("all", description='"all" or a non-empty list of task names')
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: str = "auto"
    threads: int = Field(1, ge=1, le=1024, description="CPU threads every cell computes with, on every runner; "
                         "the numbers depend on it (docs/results.md, Reproducibility)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="arithmetic of training and evaluation: fp32, or bf16/fp16 autocast (mixed precision; "
        "changes the numbers, docs/scaling.md)")
    compile: bool = Field(False, description="run models through torch.compile (the same computation, compiled; "
                          "results may differ in the last bits)")
    loader_workers: int = Field(0, ge=0, le=256, description="worker processes reading batches through a torch "
                                "DataLoader, in training and evaluation (0: in the cell's process; same numbers)")
    checkpoint_every: Union[float, str] = Field(
        300.0, description="how often a training cell (adapt, pretrain) saves what it needs to resume after a crash: "
        "seconds of wall time (a number), or optimiser steps (\"<K> steps\"); 0 never saves. Changes no number and "
        "no cell key (docs/results.md, Crash-safe training)")
    pretrain: PretrainSpec = Field(default_factory=PretrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    attacks: list[AttackEntry] = Field(default_factory=list, description="adversarial evaluations of every model")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    corruptions: CorruptionSpec | None = Field(None, description="corruption eval sets made by the engine")
    logging: LoggingSpec = Field(default_factory=LoggingSpec)

    trust_checkpoint: bool = Field(False, description="unpickle full-pickle weights of outside backbones "
                                   "(can run code; the CLI's --trust-checkpoint)")
    _outside: dict[int, Any] = PrivateAttr(default_factory=dict)  # backbones index -> BackboneEntry (tables)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not re.fullmatch(RUN_NAME, v) or len(v) > 128:
            raise ValueError(f"{v!r} is not a plain folder name (letters, digits, '.', '_', '-'; no '/' or '..' "
                             "at the start): it names the output folder runs/<name>")
        return v

    @field_validator("checkpoint_every")
    @classmethod
    def _interval(cls, v: float | str) -> float | str:
        if isinstance(v, str):
            if not re.fullmatch(r"\s*\d+\s*steps?\s*", v):
                raise ValueError(f"{v!r} is not an interval: a number of seconds, or \"<K> steps\"")
            return f"{int(v.strip().split()[0].removesuffix('steps').removesuffix('step'))} steps"
        if v < 0:
            raise ValueError(f"must be >= 0 seconds, got {v!r}")
        return v

    @property
    def checkpoint_interval(self) -> tuple[int, float]:
        """``checkpoint_every`` as (every K optimiser steps, every T seconds); 0 turns a way off."""
        v = self.checkpoint_every
        return (int(v.split()[0]), 0.0) if isinstance(v, str) else (0, float(v))

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError('names no task; list at least one, or write tasks = "all"')
        return v

    @field_validator("suite_file", "data_root")
    @classmethod
    def _next_to_the_spec(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Relative paths in a spec file are relative to the file's folder (in a spec given as
        a dict, to the working directory); they are stored absolute, so that the run's
        spec.json means the same files from any working directory."""
        if v is None:
            return v
        return absolute_path(v, (info.context or {}).get("base_dir"))

    @model_validator(mode="wrap")
    @classmethod
    def _outside_backbones(cls, data: Any, handler: Any, info: ValidationInfo) -> "RunSpec":
        """Tables (outside backbones) are validated and normalised, once: their entries are kept
        (``outside_entries``); names must be unique. A table holding only ``name`` is that name
        as a string (a registered backbone, or a preset), so that TOML can list every backbone
        as ``[[backbones]]``."""
        if not (isinstance(data, dict) and isinstance(data.get("backbones"), list)):
            return handler(data)
        from ..models.external import parse_entry

        data = {**data, "backbones": [b["name"] if isinstance(b, dict) and set(b) == {"name"} and
                                      isinstance(b["name"], str) else b for b in data["backbones"]]}
        base_dir = (info.context or {}).get("base_dir")
        entries = {i: parse_entry(b, f"backbones[{i}]", base_dir) for i, b in enumerate(data["backbones"])
                   if isinstance(b, dict)}
        spec = handler({**data, "backbones": [entries[i].as_dict() if i in entries else b
                                              for i, b in enumerate(data["backbones"])]})
        names = [b if isinstance(b, str) else b["name"] for b in spec.backbones]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ConfigError(f"backbones[{i}].name", f"backbone name {n!r} is used twice; give each a `name`")
        spec._outside = entries
        return spec

    @property
    def outside_entries(self) -> dict[int, Any]:
        """Index in ``backbones`` -> ``models.external.BackboneEntry`` of each table, as validated."""
        return dict(self._outside)

    @field_validator("methods", mode="before")
    @classmethod
    def _names_to_entries(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": m} if isinstance(m, str) else m for m in v]
        return v

    def with_overrides(self, **kw: Any) -> "RunSpec":
        data = self.model_dump()
        data.update({k: v for k, v in kw.items() if v is not None})
        return parse_spec(data, source="overrides")


def absolute_path(path: str, base_dir: str | Path | None = None) -> str:
    """``path`` (``~`` expanded) made absolute: relative to ``base_dir`` when given, else to the
    working directory; normalised (``..`` removed), symbolic links kept."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir).expanduser() / p
    return os.path.abspath(p)


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[str]", "literal['all']", "function-after[_names_to_entries(), list[MethodEntry]]"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_spec(data: dict[str, Any], source: str = "spec", base_dir: str | Path | None = None,
               check_packages: bool = True) -> RunSpec:
    """Validate a dict into a RunSpec; a ConfigError names the first bad field.

    Every name is resolved against its registry here (``names.check_names``), and, with
    ``check_packages``, the optional packages the outside backbones need must import.
    """
    if not isinstance(data, dict):
        raise ConfigError("", f"{source}: the spec must be a table/mapping, got {type(data).__name__}")
    try:
        spec = RunSpec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        err = e.errors()[0]
        field = _field_path(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise ConfigError(field, f"{msg} (in {source})") from None
    from .names import check_names  # the layers the names live in, imported once a spec is read

    check_names(spec, packages=check_packages)
    if check_packages and spec.logging.tensorboard:
        from .logging import check_tensorboard

        check_tensorboard()
    if check_packages and spec.logging.mlflow:
        from .logging import check_mlflow

        check_mlflow()
    return spec


def load_spec(path: str | Path) -> RunSpec:
    """Read a TOML (.toml) or YAML (.yaml/.yml) spec file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"spec file {p} does not exist")
    text = p.read_text()
    try:
        data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError("", f"{p}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'TOML'}: {e}") from None
    return parse_spec(data, source=str(p), base_dir=p.parent)  # relative weights paths: next to the spec


from ..presets import PRESETS  # noqa: E402


def load_preset(name: str) -> RunSpec:
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    text = resources.files("ribench.presets").joinpath(f"{name}.toml").read_text()
    return parse_spec(tomllib.loads(text), source=f"preset {name}")
