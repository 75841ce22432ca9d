"""Expanding a RunSpec into cells that form a DAG.

Cell kinds, in dependency order:
- ``pretrain``        (backbone, recipe)                 -> pretrained weights m0 (for an outside
                                                            backbone, recipe ``given``: its weights loaded)
- ``eval_pretrained`` (m0)                               -> metrics of m0 on every eval set
- ``adapt``           (m0, method, task, seed [, required adapt cells]) -> adapted weights
- ``evaluate``        (adapted weights, eval_pretrained) -> metrics and protocol summaries
- ``analysis``        (m0, task)                         -> predictors: OTDD, transferability scores
- ``corrupt``         (domain, corruption, severity, seed) -> a corrupted eval set (uint8 tensors)
- ``diagnose``        (m0, one adapted model)             -> what changed inside it (similarity by layer,
                                                            linear path, task vector, filter shift);
                      (m0, one method's models on every task) -> cosines between their task vectors

A cell's key is the SHA-256 of its kind, its component's code version, its own config
and its inputs' keys. Same config, same key; a changed config changes the key of that
cell and of every cell downstream of it, and of nothing else. The code versions of the
components a cell runs are part of it: a method's or a model's ``version``, a
corruption's (``CORRUPTIONS.version``), the version of every estimator an analysis cell
computes (and which ones: the resolved list, so a newly registered estimator runs) and
of every attack an evaluate cell runs. Bump a component's version when its numbers
change and exactly the cells that use it are recomputed.

A method's cells carry its label (``labels["method"]``: the name, or for a sweep ``lora[r=4]``,
names.py) and their config the registered name and full hyperparameters, so two entries of
one method are two sets of cells, and the label, which names them, is no part of a key.

A cell names its inputs by role (``Cell.inputs``: role -> key, or a tuple of keys for
a role with several); ``deps`` is the same keys in the order the key hashes them, the
roles in this order:

- ``eval_pretrained``: ``model`` (pretrain), ``corruptions`` (corrupt cells);
- ``adapt``: ``pretrained``, then ``requires`` (adapt cells of ``Method.requires``, in
  that order) or, for a method that combines models, ``ingredients`` (adapt cells, in the
  order of ``config["ingredients"]``);
- ``evaluate``: ``model`` (adapt), ``pretrained_eval`` (eval_pretrained), ``pretrained``,
  ``corruptions``, then ``extra`` (adapt cells of ``config["extra"]["inputs"]``) or
  ``task_refs`` (evaluate cells of ``config["reference"]["tasks"]``);
- ``analysis``: ``pretrained``;
- ``diagnose``: ``pretrained``, then ``model`` (scope ``model``) or ``models`` (scope
  ``tasks``, one per ``config["tasks"]``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core import rows
from ..core.errors import ConfigError
from ..core.registry import CORRUPTIONS, METHODS, MODELS

# in the layers' order (DESIGN.md): the data layer, which models/ imports first, queries the
# registries when it loads, and so loads the plugins (RIBENCH_PLUGINS); a plugin that imports
# methods/ fails if methods/ or models/ is then half-imported, as it is when analysis/ comes first
from ..models import external
from ..models.pretrain import get_recipe
from ..methods.base import Method
from .names import (PlannedMethod, attack_configs, corruption_names, estimator_versions, method_table,
                    outside_backbones)
from .spec import RunSpec

EVAL_VERSION = "3"  # 3: mCE against the reference's errors at the evaluated severities; NaN metrics fail
ANALYSIS_VERSION = "3"  # 2: one source sample and eps unit for every task; 3: OTDD's unbiased covariances
CORRUPT_VERSION = "1"
DIAGNOSE_VERSION = "2"  # 2: RBF CKA's bandwidth from the median over all N^2 squared distances


def _versioned(base: str, component: str) -> str:
    """A cell version folding in its component's code version (``base`` alone for "1",
    so cells of components never bumped keep their keys)."""
    return base if component == "1" else f"{base}+{component}"


def corruption_set(corruption: str, severity: int | str) -> str:
    """The eval-set name of an engine-made corruption set: ``<corruption>/<severity>``."""
    return f"{corruption}/{severity}"


def corruption_cells(spec: RunSpec, suite_id: dict[str, Any]) -> list[Cell]:
    """One cell per (corruption, severity) of the spec's ``corruptions`` section."""
    c = spec.corruptions
    if c is None:
        return []
    names = corruption_names(spec)
    return [Cell("corrupt", {"suite": suite_id, "domain": c.domain, "corruption": n, "severity": s, "seed": c.seed,
                             "subset": c.subset}, (), {"method": "corrupt", "task": corruption_set(n, s)},
                 version=_versioned(CORRUPT_VERSION, CORRUPTIONS.version(n)))
            for n in names for s in c.severities]


Inputs = Mapping[str, "str | tuple[str, ...]"]  # role -> key of one input, or keys of several


def _in_order(inputs: Inputs) -> tuple[str, ...]:
    """The keys of named inputs in role order: a cell's ``deps``."""
    return tuple(k for v in inputs.values() for k in ((v,) if isinstance(v, str) else v))


@dataclass(frozen=True)
class Cell:
    """One unit of work of a run. ``deps``: the keys of its inputs, in the order its key hashes
    them; ``inputs``: the same keys by role (module docstring), outside the key."""

    kind: str
    config: dict[str, Any]
    deps: tuple[str, ...]
    labels: dict[str, Any] = field(compare=False)
    version: str = "1"
    inputs: Inputs = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.inputs and _in_order(self.inputs) != tuple(self.deps):
            raise ValueError(f"{self.kind} cell: its named inputs {dict(self.inputs)} are not its deps {self.deps}")

    @classmethod
    def of(cls, kind: str, config: dict[str, Any], inputs: Inputs, labels: dict[str, Any], version: str = "1"
           ) -> "Cell":
        """A cell whose deps are its named ``inputs``, in their order."""
        return cls(kind, config, _in_order(inputs), labels, version, dict(inputs))

    def input(self, role: str) -> str:
        """The key of the one input named ``role``."""
        key = self.inputs.get(role)
        if not isinstance(key, str):
            raise KeyError(f"{self.kind} cell has no single input {role!r} (its inputs: {', '.join(self.inputs)})")
        return key

    def inputs_of(self, role: str) -> tuple[str, ...]:
        """The keys of the inputs named ``role``, in order (none when the cell has no such input)."""
        keys = self.inputs.get(role, ())
        return (keys,) if isinstance(keys, str) else tuple(keys)

    @property
    def key(self) -> str:
        return cell_key(self.kind, self.version, self.config, self.deps)

    @property
    def produces_artifact(self) -> bool:
        return self.kind in ("pretrain", "adapt", "corrupt")

    def resources(self) -> dict[str, Any]:
        """What a cell needs from a cluster node: CPUs, whether it can use a GPU, memory (bytes)."""
        return {"cpus": 1, "gpu": True, "memory": 2 * 1024**3}

    def describe(self) -> str:
        lab = self.labels
        parts = [lab.get("backbone"), lab.get("recipe"), lab.get("method"), lab.get("task")]
        seed = lab.get("seed")
        text = "/".join(str(p) for p in parts if p)
        return f"{self.kind} {text}" + (f" seed {seed}" if seed is not None and self.kind in ("adapt", "evaluate", "diagnose") else "")


def cell_key(kind: str, version: str, config: dict[str, Any], deps: tuple[str, ...]) -> str:
    blob = json.dumps({"kind": kind, "version": version, "config": config, "deps": list(deps)},
                      sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _extra_evaluation(pm: PlannedMethod, adapted: dict[str, Cell], config: dict[str, Any]
                      ) -> tuple[dict[str, Any], tuple]:
    """The evaluate cell's config and extra inputs: a method that overrides ``extra_models``
    (WiSE-FT's curve) gets its required adapt cells (by label in ``adapted``), named in
    ``config["extra"]``."""
    m = pm.method
    if type(m).extra_models is Method.extra_models:
        return config, ()
    return {**config, "extra": {"method": pm.name, "params": m.params(), "inputs": list(m.requires)}}, \
        tuple(adapted[r].key for r in pm.requires)


def _evaluate_cell(config: dict[str, Any], adapted: Cell, pretrained: tuple[Cell, Cell], ckeys: tuple[str, ...],
                   labels: dict[str, Any], extra: tuple[str, ...] = (), task_refs: tuple[str, ...] = ()) -> Cell:
    p, e0 = pretrained
    inputs: dict[str, Any] = {"model": adapted.key, "pretrained_eval": e0.key, "pretrained": p.key,
                              "corruptions": ckeys}
    if extra:
        inputs["extra"] = extra
    if task_refs:
        inputs["task_refs"] = task_refs
    return Cell.of("evaluate", config, inputs, labels, version=EVAL_VERSION)


def _check_combining(methods: dict[str, PlannedMethod]) -> None:
    for label, pm in methods.items():
        if pm.method.combines not in (None, "seeds", "tasks"):
            raise ConfigError(f"methods.{label}", f"combines must be 'seeds' or 'tasks', got {pm.method.combines!r}")
        for r in pm.requires:
            if methods[r].method.combines:
                raise ConfigError(f"methods.{label}", f"requires {methods[r].name!r}, which combines models; nothing "
                                                      "may require it")


def combined_cells(spec: RunSpec, methods: dict[str, PlannedMethod], task_names: list[str],
                   base: dict[str, Any], pretrained: tuple[Cell, Cell], ckeys: tuple[str, ...],
                   index: dict[tuple, tuple[Cell, Cell]], eval_config: dict[str, Any]) -> list[Cell]:
    """Adapt and evaluate cells of methods that combine models (``Method.combines``), by label
    in ``methods`` (each after its requirements) and in ``index`` ((label, task, seed) -> cells):

    - ``"seeds"``: one per task over the required methods' models of every seed (and of
      every ``input_variants()`` override, whose adapt cells are added here), seed label None;
    - ``"tasks"``: one per seed over their models of every task, task label ``rows.MERGED``;
      its evaluate cell depends on the first required method's evaluate cells of every
      task (``config["reference"]``), for the accuracy normalised by theirs.

    The adapt config lists the ingredients (method, task, seed, variant) in deps order."""
    p = pretrained[0]
    out: list[Cell] = []
    seen: set[str] = set()
    for label, pm in methods.items():
        m = pm.method
        if not m.combines:
            continue
        if m.combines == "seeds":
            groups = [(task, None, [(task, s) for s in spec.seeds]) for task in task_names]
            variants = m.input_variants()
        else:
            groups = [(rows.MERGED, seed, [(t, seed) for t in task_names]) for seed in spec.seeds]
            variants = [{}]
        for task_label, seed_label, members in groups:
            deps: list[str] = []
            ingredients: list[list] = []
            for r, r_label in zip(m.requires, pm.requires):
                rp = methods[r_label]
                for v, override in enumerate(variants):
                    for t, s in members:
                        a = index[(r_label, t, s)][0]
                        if override:
                            params = {**rp.method.params(), **override}
                            req = METHODS.create(r, **params)  # a bad override fails here, naming the field
                            a = Cell.of("adapt", {**a.config, "params": req.params()},
                                        {"pretrained": p.key,
                                         "requires": tuple(index[(rr, t, s)][0].key for rr in rp.requires)},
                                        {**base, "method": f"{r_label}[{v}]", "task": t, "seed": s},
                                        version=req.version)
                            if a.key not in seen:
                                seen.add(a.key)
                                out.append(a)
                        deps.append(a.key)
                        ingredients.append([r, t, s, v])
            labels = {**base, "method": label, "task": task_label, "seed": seed_label}
            a = Cell.of("adapt", {"method": pm.name, "params": m.params(), "task": task_label, "seed": seed_label,
                                  "combines": m.combines, "ingredients": ingredients,
                                  "val_fraction": spec.eval.val_fraction, "pretrain_sample": spec.eval.pretrain_sample,
                                  **compute_key(spec)},
                        {"pretrained": p.key, "ingredients": tuple(deps)}, labels, version=m.version)
            ev_config, refs = dict(eval_config), ()
            if m.combines == "tasks":
                ev_config.update(attacks=[], reference={"method": m.requires[0], "tasks": list(task_names)})
                refs = tuple(index[(pm.requires[0], t, seed_label)][1].key for t in task_names)
            out += [a, _evaluate_cell(ev_config, a, pretrained, ckeys, labels, task_refs=refs)]
    return out


def diagnose_cells(spec: RunSpec, cells: list[Cell], task_names: list[str], suite_id: dict[str, Any]) -> list[Cell]:
    """A ``diagnose`` cell per adapt cell, and one per (backbone, recipe, method, seed)
    over the method's models on two or more suite tasks (task-vector cosines)."""
    if not spec.diagnostics.enabled:
        return []
    cfg = spec.diagnostics.model_dump(exclude={"enabled"})
    pretrained = {(c.labels["backbone"], c.labels["recipe"]): c.key for c in cells if c.kind == "pretrain"}
    out: list[Cell] = []
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.kind != "adapt":
            continue
        lab = c.labels
        p = pretrained[(lab["backbone"], lab["recipe"])]
        out.append(Cell.of("diagnose", {"suite": suite_id, "diagnostics": cfg, "scope": "model", **compute_key(spec)},
                           {"pretrained": p, "model": c.key}, dict(lab), version=DIAGNOSE_VERSION))
        if lab.get("task") in task_names:
            groups.setdefault((lab["backbone"], lab["recipe"], lab["method"], lab.get("seed")), []).append(c)
    for (backbone, recipe, method, seed), group in groups.items():
        if len(group) < 2:
            continue
        out.append(Cell.of("diagnose", {"scope": "tasks", "tasks": [c.labels["task"] for c in group]},
                           {"pretrained": pretrained[(backbone, recipe)], "models": tuple(c.key for c in group)},
                           {"backbone": backbone, "recipe": recipe, "method": method, "task": None, "seed": seed},
                           version=DIAGNOSE_VERSION))
    return out


def _pretrain_cells(spec: RunSpec, backbone: Any, entry: Any, suite_id: dict[str, Any], pt: dict[str, Any]
                    ) -> list[tuple[dict[str, Any], Cell]]:
    """(labels, pretrain cell) per recipe of a registered backbone; one ``given`` cell for an
    outside backbone, keyed by its identity (source, weights SHA-256...), not by the recipes."""
    if entry is not None:
        base = {"backbone": entry.name, "recipe": "given"}
        config = {"suite": suite_id, "backbone": entry.name, "recipe": "given", "given": external.identity(entry)}
        if entry.reset_head:  # the new head's initialisation follows the pretraining seed
            config["seed"] = pt["seed"]
        return [(base, Cell("pretrain", config, (), base, version=external.VERSION))]
    model_version = getattr(MODELS.get(backbone), "version", "1")
    out = []
    for recipe in spec.recipes:
        rec = get_recipe(recipe)
        base = {"backbone": backbone, "recipe": recipe}
        out.append((base, Cell("pretrain", {"suite": suite_id, "backbone": backbone, "recipe": recipe,
                                            "recipe_version": rec.version, "pretrain": pt, **compute_key(spec)},
                               (), base, version=str(model_version))))
    return out


def compute_key(spec: RunSpec) -> dict[str, Any]:
    """What the spec's compute options add to the config of every cell that trains: the
    precision when it is not fp32 (its numbers differ), nothing with the defaults, so keys of
    earlier runs hold. ``compile`` and ``loader_workers`` stay out of keys: the DataLoader
    path gives the same bits, and compiling moves only the last bits, as ``threads`` does."""
    return {} if spec.precision == "fp32" else {"precision": spec.precision}


def eval_key(spec: RunSpec) -> dict[str, Any]:
    """``compute_key`` plus ``[eval] max_per_set`` when set: what enters every evaluate cell's config."""
    out = compute_key(spec)
    if spec.eval.max_per_set is not None:
        out["max_per_set"] = spec.eval.max_per_set
    return out


def plan(spec: RunSpec, task_names: list[str], suite_id: dict[str, Any]) -> list[Cell]:
    """All cells of the run, topologically ordered (every cell after its deps).

    ``task_names``: the suite's tasks selected by the spec. ``suite_id``: what
    identifies the data (suite name, version, data seed), part of every key.
    """
    outside = outside_backbones(spec)  # unknown names fail here, listing the valid ones
    for r in spec.recipes:
        get_recipe(r)
    methods = method_table(spec)  # label -> method, each after its requirements (names.py)
    _check_combining(methods)

    corrupt = corruption_cells(spec, suite_id)
    cells: list[Cell] = list(corrupt)
    ckeys = tuple(c.key for c in corrupt)
    pt = spec.pretrain.model_dump()
    attacks = attack_configs(spec)
    analysis = {**spec.analysis.model_dump(), "estimators": estimator_versions(spec)} if spec.analysis.enabled else {}
    for i, backbone in enumerate(spec.backbones):
        for base, p in _pretrain_cells(spec, backbone, outside.get(i), suite_id, pt):
            e0 = Cell.of("eval_pretrained", {"suite": suite_id, "attacks": attacks, **eval_key(spec)},
                         {"model": p.key, "corruptions": ckeys}, {**base, "method": rows.PRETRAINED},
                         version=EVAL_VERSION)
            cells += [p, e0]
            if spec.analysis.enabled:
                for task in task_names:
                    cells.append(Cell.of("analysis", {"task": task, "analysis": analysis, **compute_key(spec)},
                                         {"pretrained": p.key},
                                         {**base, "method": rows.ANALYSIS, "task": task}, version=ANALYSIS_VERSION))
            index: dict[tuple, tuple[Cell, Cell]] = {}  # (label, task, seed) -> (adapt, evaluate)
            for seed in spec.seeds:
                for task in task_names:
                    adapted: dict[str, Cell] = {}  # label -> adapt cell
                    for label, pm in methods.items():
                        m = pm.method
                        if m.combines:  # after the loop: one cell over several seeds or tasks
                            continue
                        labels = {**base, "method": label, "task": task, "seed": seed}
                        a = Cell.of("adapt", {"method": pm.name, "params": m.params(), "task": task, "seed": seed,
                                              "val_fraction": spec.eval.val_fraction,
                                              "pretrain_sample": spec.eval.pretrain_sample, **compute_key(spec)},
                                    {"pretrained": p.key, "requires": tuple(adapted[r].key for r in pm.requires)},
                                    labels, version=m.version)
                        adapted[label] = a
                        ev_config, extra = _extra_evaluation(pm, adapted, {"suite": suite_id, "attacks": attacks,
                                                                           **eval_key(spec)})
                        ev = _evaluate_cell(ev_config, a, (p, e0), ckeys, labels, extra=extra)
                        cells += [a, ev]
                        index[(label, task, seed)] = (a, ev)
            cells += combined_cells(spec, methods, task_names, base, (p, e0), ckeys, index,
                                    {"suite": suite_id, "attacks": attacks, **eval_key(spec)})
    cells += diagnose_cells(spec, cells, task_names, suite_id)
    return cells
