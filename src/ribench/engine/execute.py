"""What each kind of cell does, in whatever process runs it.

Each kind of cell has a runner, ``CELL_RUNNERS[kind](ws, cell, deps, progress) -> CellResult``:
it reads its inputs by role (``cell.input("model")``, ``cell.inputs_of("corruptions")``;
plan.py lists the roles of each kind), loads their models and data through the
Workspace, and takes what finished cells recorded (their metrics and info) from ``deps``.
A test can call a runner directly with a hand-made cell. The work itself lives in the
layers above: pretraining in models.pretrain, the attack evaluation in evaluate.attacks,
the predictors in analysis.cellmetrics, the diagnostics in analysis.diagnose.

A Workspace holds the run's spec, suite, artifact store and device, and what its cells
share in one process (recently used models, corrupted sets); it never touches the
results store (only the driver writes it).

``Workspace.run_cell`` measures where each cell's time goes (core.timing): the seconds of
each phase (load, train, clean_eval, corruption_eval, attacks, save, ...) land in the
cell's ``info["phase_seconds"]``, never in its metrics, so stored numbers and keys do not
depend on them.

The adapt and pretrain runners record the training curves of the loop (core.trainlog;
an adapt cell's runs are validated on its task's validation part) and return them as
rows ``train/epoch=<e>`` (engine/logging.py); ``[logging] tensorboard`` also writes them
under ``<out>/tensorboard/<cell key>``.

The adapt and pretrain runners also run their training under the spec's ``checkpoint_every``
(core.resume): the loop's checkpoints go to ``<key>.train/`` beside the cell's artifact, a
cell started again after a crash resumes from them, and they are removed once its model is
saved (docs/results.md, "Crash-safe training").
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..analysis import diagnose, task_vector_cosine_rows
from ..analysis.cellmetrics import seeded_sample, task_predictors
from ..core.errors import CheckpointError, RibenchError
from ..core.registry import METHODS
from ..core import rows as row_names
from ..core.rows import SUMMARY
from ..core.runtime import (ComputeOptions, compute_options, current_compute, derive_seed, fixed_threads,
                            seed_everything)
from ..core import resume, trainlog
from ..core.timing import current as current_clock, measure, phase
from ..core.types import Domain, Split, Suite
from ..data import build_suite, corrupt
from ..evaluate import evaluate, evaluate_many, summarize
from ..evaluate.attacks import add_robust_deltas, attack_rows, robust_summary
from ..methods.base import AdaptContext, Ingredient, compute_features
from ..models import external
from ..methods.heads import task_start_model
from ..models.base import Model, PretrainHeadView
from ..models.checkpoint import load_model, save_model
from ..models.pretrain import PretrainConfig, pretrain_backbone
from .artifacts import ArtifactStore
from .logging import training_rows, write_loggers
from .plan import Cell, corruption_set, outside_backbones
from .spec import RunSpec

Progress = Callable[[float, str], None]
Metrics = dict[str, dict[str, float]]  # eval set (row name) -> metric -> value


@dataclass
class CellResult:
    metrics: Metrics = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


Deps = dict[str, CellResult]  # key of a finished dependency -> what it recorded


def build_run_suite(spec: RunSpec) -> Suite:
    """The suite a run's spec names, built from its data seed, root, suite file and options."""
    return build_suite(spec.suite, seed=spec.data_seed, data_root=spec.data_root, suite_file=spec.suite_file,
                       options=spec.suite_options)


def accuracies(metrics: Metrics) -> dict[str, float]:
    """Eval set -> accuracy, for the rows that have one (not the summary)."""
    return {k: v["accuracy"] for k, v in metrics.items() if "accuracy" in v and k != SUMMARY}


@dataclass
class Workspace:
    spec: RunSpec
    suite: Suite
    artifacts: ArtifactStore
    device: torch.device
    max_cached_models: int = 8
    _models: OrderedDict[str, Model] = field(default_factory=OrderedDict)
    _corrupted: dict[str, tuple] = field(default_factory=dict)
    _task_space: dict[tuple, Model] = field(default_factory=dict)

    def run_cell(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        """Run ``cell`` with the spec's thread count, the same on every runner (its numbers depend
        on it), and its compute options: the precision its key holds (``plan.compute_key``),
        the spec's ``compile`` and ``loader_workers``."""
        options = ComputeOptions(precision=cell.config.get("precision", "fp32"), compile=self.spec.compile,
                                 loader_workers=self.spec.loader_workers)
        with fixed_threads(self.spec.threads), compute_options(options), measure() as clock:
            result = CELL_RUNNERS[cell.kind](self, cell, deps, progress)
        result.info["phase_seconds"] = dict(clock.seconds)
        return result

    # --- models by key, the most recently used kept in memory ---------------------
    def model(self, key: str) -> Model:
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        with phase("load"):
            return self._remember(key, load_model(self.artifacts.path(key)))

    def _remember(self, key: str, model: Model) -> Model:
        self._models[key] = model.to(self.device).eval()
        while len(self._models) > self.max_cached_models:
            self._models.popitem(last=False)
        return self._models[key]

    def save(self, key: str, model: Model) -> None:
        with phase("save"):
            save_model(model.cpu(), self.artifacts.path(key), {"cell": key})
            self._remember(key, model)

    # --- data -----------------------------------------------------------------
    def evaluate_all(self, model: Model, progress: Progress, extra: dict[str, Model] | None = None
                     ) -> tuple[Metrics, dict[str, Metrics]]:
        """(``model`` on every eval set, each ``extra`` model on them: label -> metrics), in one
        pass over the data (evaluate.evaluate_many: each batch read once for all of them).

        Under a phase clock with no phase open, the time of each set is charged to
        ``corruption_eval`` (a corruption set) or ``clean_eval`` (any other, and the set-up),
        from the moments each set is done, except the extra models' forward passes, charged to
        ``extra_models``; inside an open phase it all goes to that phase."""
        extra = extra or {}
        clock = current_clock()
        groups = [self.eval_groups(m) for m in (model, *extra.values())]
        labels = ["", *extra]
        total = sum(len(sets) for _, sets in groups[0])
        seconds: dict[str, float] = {}

        def run(report: Progress | None) -> tuple[Metrics, dict[str, Metrics]]:
            out: dict[str, Metrics] = {label: {} for label in labels}
            for g, (_, sets) in enumerate(groups[0]):
                done = len(out[""])
                part = None if report is None else (
                    lambda f, name, done=done, n=len(sets): report((done + f * n) / total, name))
                found = evaluate_many({label: groups[i][g][0] for i, label in enumerate(labels)}, sets,
                                      self.spec.eval.batch_size, part, max_per_set=self.spec.eval.max_per_set,
                                      subset_seed=self.spec.data_seed, seconds=seconds)
                for label in labels:
                    out[label].update(found[label])
            return out[""], {label: out[label] for label in extra}

        if clock is None or clock.active is not None:
            return run(progress)
        corrupted, last, charged = set(self.suite.corruptions), [time.perf_counter()], [0.0]

        def report(fraction: float, name: str) -> None:
            now = time.perf_counter()
            extras = sum(v for k, v in seconds.items() if k) - charged[0]  # the extra models' share
            charged[0] += extras
            if extra:
                clock.add("extra_models", extras)
            clock.add("corruption_eval" if name in corrupted else "clean_eval", now - last[0] - extras)
            last[0] = now
            progress(fraction, name)

        try:
            return run(report)
        finally:
            clock.add("clean_eval", time.perf_counter() - last[0])

    def eval_groups(self, model: Model) -> list[tuple[torch.nn.Module, dict[str, Domain]]]:
        """Which module evaluates which eval sets: ``model`` on all of them, where the suite has one
        label space. Where its pretraining domain has its own classes, the sets of the pretraining
        label space (``Suite.pretrain_space_sets``) go through the model's kept pretraining head
        (``PretrainHeadView``), or through m0's own head for m0; the tasks' sets through ``model``
        (none for m0 itself: its task-space rows come from ``reference_model``)."""
        sets = self.suite.all_eval_sets()
        if not self.suite.separate_pretrain_labels:
            return [(model, sets)]
        p_names = self.suite.pretrain_space_sets()
        p_sets = {n: d for n, d in sets.items() if n in p_names}
        t_sets = {n: d for n, d in sets.items() if n not in p_names}
        if not model.has_pretrain_head:  # m0 itself: its head is the pretraining head
            return [(model, p_sets)]
        return [(PretrainHeadView(model), p_sets), (model, t_sets)]

    def task_space_sets(self) -> dict[str, Domain]:
        """The eval sets of the tasks' label space (every set, where the suite has one label space)."""
        p_names = self.suite.pretrain_space_sets() if self.suite.separate_pretrain_labels else set()
        return {n: d for n, d in self.suite.all_eval_sets().items() if n not in p_names}

    def start_model(self, m0_key: str) -> Model:
        """The model methods start from: m0, or, where the suite's pretraining domain has its own
        classes, ``methods.heads.task_start_model(m0)`` (m0's head kept as the pretraining head,
        a task head mapped by the class map or seeded)."""
        m0 = self.model(m0_key)
        if not self.suite.separate_pretrain_labels:
            return m0
        if (m0_key, None) not in self._task_space:
            start = task_start_model(m0, self.suite, derive_seed("task-head", self.spec.data_seed))
            self._task_space[(m0_key, None)] = start.to(self.device).eval()
        return self._task_space[(m0_key, None)]

    def reference_model(self, m0_key: str, task: str) -> tuple[Model, str]:
        """(the model that stands for m0 on the tasks' label space for the models adapted on
        ``task``, a key naming it): m0 (one label space); the start model (a class map: m0's own
        head rows); else the linear probe of m0 fitted on ``task`` (method ``lp`` with its
        defaults and seed 0, the model of an ``lp`` cell of seed 0)."""
        start = self.start_model(m0_key)
        if not self.suite.separate_pretrain_labels:
            return start, m0_key
        if self.suite.class_map is not None:
            return start, f"{m0_key}|task-start"
        if (m0_key, task) not in self._task_space:
            train, val = self.split(task)
            ctx = AdaptContext(train=train, val=val, pretrain_sample=self.pretrain_sample(0),
                               seed=derive_seed("adapt", 0, "lp", task), device=self.device,
                               num_classes=self.suite.num_classes, features=self.feature_fn(m0_key, start, task))
            with phase("reference"):
                probe = METHODS.create("lp").adapt(start, self.suite.tasks[task], ctx)
            self._task_space[(m0_key, task)] = probe.to(self.device).eval()
        return self._task_space[(m0_key, task)], f"{m0_key}|probe|{task}"

    def training_curves(self, cell: Cell, log: trainlog.TrainingLog) -> Metrics:
        """The rows of the training runs in ``log`` (engine/logging.py), also written to the loggers
        the spec's ``[logging]`` turns on (TensorBoard, MLflow) under the run folder."""
        if log.runs:
            with phase("save"):
                write_loggers(self.spec.logging, self.artifacts.root.parent, cell, log)
        return training_rows(log)

    def checkpoint_folder(self, cell: Cell) -> Path:
        """Where a training cell's checkpoints live until its result is saved: ``<key>.train/`` beside its artifact."""
        return self.artifacts.path(cell.key).with_suffix(".train")

    def checkpointing(self, cell: Cell):
        """The training calls of ``cell`` checkpoint into its folder at the spec's ``checkpoint_every``
        and resume from what a killed run of it left there (core.resume)."""
        every_steps, every_seconds = self.spec.checkpoint_interval
        return resume.checkpointing(self.checkpoint_folder(cell), every_steps, every_seconds)

    def with_corruptions(self, keys: tuple[str, ...]) -> "Workspace":
        """This workspace over a suite whose corruption sets are the engine-made ``keys`` (none: as it is)."""
        if not keys:
            return self
        sets, mapping = {}, {}
        for k in keys:
            if k not in self._corrupted:
                t = self.artifacts.load(k)
                meta = self.artifacts.metadata(k)
                name = corruption_set(meta["corruption"], meta["severity"])
                self._corrupted[k] = (name, (meta["corruption"], int(meta["severity"])),
                                      Domain(name, Split(t["images"], t["labels"])))
            name, cs, dom = self._corrupted[k]
            sets[name], mapping[name] = dom, cs
        builtin = set(self.suite.corruptions)
        others = {n: d for n, d in self.suite.eval_sets.items() if n not in builtin}
        suite = replace(self.suite, eval_sets={**others, **sets}, corruptions=mapping)
        return replace(self, suite=suite, _models=self._models, _corrupted=self._corrupted)

    def split(self, task: str) -> tuple[Split, Split]:
        """(train part, validation part) of a task, fixed by the data seed."""
        dom = self.suite.tasks[task]
        if not dom.trainable:
            raise RibenchError(f"task {task!r} of suite {self.suite.name!r} has no training split")
        return dom.train.holdout(self.spec.eval.val_fraction, derive_seed("val", self.spec.data_seed, task))

    def pretrain_sample(self, n: int) -> Split:
        src = self.suite.pretrain.train
        g = torch.Generator().manual_seed(derive_seed("pretrain-sample", self.spec.data_seed))
        return src.subset(torch.randperm(len(src), generator=g)[: min(n, len(src))])

    def feature_fn(self, pretrained_key: str, pretrained: Model, task: str):
        """``AdaptContext.features``: features of the pretrained model cached as artifacts, by its key."""
        def features(model: Model, name: str, split: Split) -> torch.Tensor:
            if model is not pretrained:
                return compute_features(model, name, split)
            precision = current_compute().precision  # features under bf16/fp16 are other numbers
            key = hashlib.sha256(f"features|{pretrained_key}|{task}|{name}|{self.spec.eval.val_fraction}|"
                                 f"{self.spec.data_seed}{'' if precision == 'fp32' else '|' + precision}".encode()
                                 ).hexdigest()
            if self.artifacts.has(key):
                with phase("load"):
                    return self.artifacts.load(key)["features"].to(self.device)
            f = compute_features(model, name, split)
            with phase("save"):
                self.artifacts.save(key, {"features": f})
            return f

        return features

    def attacked(self, model: Model, task: str, attacks: list[dict], info: dict[str, Any],
                 source: Model | None = None, per_task: bool = False, source_key: str | None = None,
                 progress: Progress | None = None) -> Metrics:
        """Attack rows of ``model`` on ``task`` (evaluate.attacks.attack_rows); its gradient-masking
        warnings are added to ``info["masking_warnings"]``. ``source_key``: the cell key of the
        model transfer examples are crafted on (``source``, or ``model`` itself when None); they
        are kept as artifacts (``TransferCache``) and crafted once."""
        with phase("attacks"):
            report = attack_rows(model, self.suite.tasks[task], attacks, self.spec.data_seed,
                                 task=task if per_task else None, source=source,
                                 cache=TransferCache(self.artifacts), source_key=source_key, progress=progress)
        if report.checked:
            info.setdefault("masking_warnings", []).extend(report.warnings)
        return report.rows


@dataclass
class TransferCache:
    """Transfer examples (evaluate.attacks.ExampleCache) kept in the run's artifact store, by
    ``transfer_key``: written atomically and sealed by the store; read only after their SHA-256
    matches the seal and safetensors loads them, else discarded (and crafted again)."""

    artifacts: ArtifactStore

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.artifacts.check(key) is not None:
            return None
        try:
            with phase("load"):
                return self.artifacts.load(key)
        except CheckpointError:
            self.artifacts.discard(key)
            return None

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.artifacts.save(key, tensors, {"kind": "transfer-examples"})


Runner = Callable[[Workspace, Cell, Deps, Progress], CellResult]


# --- the runners, one per kind of cell -----------------------------------------------
def run_pretrain(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """m0 of a registered backbone, pretrained with the cell's recipe (an outside one: loaded)."""
    c = cell.config
    if "given" in c:
        return _load_given(ws, cell)
    pt = dict(c["pretrain"])
    seed = pt.pop("seed")
    with phase("pretrain"), trainlog.recording() as log, ws.checkpointing(cell):
        model, info = pretrain_backbone(c["backbone"], ws.suite, c["recipe"], PretrainConfig(**pt), seed, ws.device,
                                        progress)
    ws.save(cell.key, model)
    resume.discard(ws.checkpoint_folder(cell))
    return CellResult(metrics=ws.training_curves(cell, log), info=info)


def _load_given(ws: Workspace, cell: Cell) -> CellResult:
    """m0 of an outside backbone (models/external.py), checked against the planned identity."""
    c = cell.config
    entry = next(e for e in outside_backbones(ws.spec).values() if e.name == c["backbone"])
    if external.identity(entry) != c["given"]:
        raise CheckpointError(f"backbone {entry.name!r}: its weights ({entry.weights or entry.source}) changed "
                              "after the run was planned; run again to plan with the new file")
    seed_everything(derive_seed("init", c.get("seed", 0), c["backbone"], c["recipe"]))
    t0 = time.perf_counter()
    with phase("load"):
        classes = ws.suite.pretrain_label_space  # an outside model's head is over its pretraining classes
        model = external.build(entry, len(classes), ws.spec.trust_checkpoint, classes).to(ws.device)
    info = {"load_seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters())}
    ws.save(cell.key, model)
    return CellResult(info=info)


def run_corrupt(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """A corrupted copy of a seeded subset of a domain's test split, saved with its name in the metadata."""
    c = cell.config
    dom = ws.suite.pretrain if c["domain"] == "pretrain" else ws.suite.domain(c["domain"])
    test = seeded_sample(dom.test, c["subset"], derive_seed("corrupt-subset", c["seed"], c["domain"]))
    with phase("corrupt"):
        images = corrupt(test.images, c["corruption"], c["severity"],
                         derive_seed("corrupt", c["seed"], c["corruption"], c["severity"]))
    with phase("save"):
        ws.artifacts.save(cell.key, {"images": images, "labels": test.labels},
                          {"corruption": c["corruption"], "severity": str(c["severity"]), "domain": dom.name})
    return CellResult(info={"images": len(test)})


def run_eval_pretrained(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """m0 on every eval set, and attacked on every task: the reference of each adapted model."""
    ws = ws.with_corruptions(cell.inputs_of("corruptions"))
    m0_key = cell.input("model")
    model = ws.model(m0_key)
    per_set, _ = ws.evaluate_all(model, progress)
    per_set.update(reference_rows(ws, m0_key))
    acc = accuracies(per_set)
    summary = summarize(None, acc, acc, ws.suite)
    if ws.suite.separate_pretrain_labels and ws.suite.class_map is None:  # R: the mean of the tasks' references
        refs = [summarize(t, r, r, ws.suite).get("R") for t in ws.suite.tasks for r in [reference_acc(per_set, t, ws.suite)]]
        if all(r is not None for r in refs):
            summary["R"] = sum(refs) / len(refs)
    info: dict[str, Any] = {}
    attacked: Metrics = {}
    if cell.config["attacks"]:
        for task in ws.suite.tasks:
            ref, ref_key = ws.reference_model(m0_key, task)
            attacked.update(ws.attacked(ref, task, cell.config["attacks"], info, per_task=True, source_key=ref_key,
                                        progress=progress))
    summary.update(robust_summary(attacked))
    return CellResult(metrics={**per_set, **attacked, SUMMARY: summary}, info=info)


def reference_rows(ws: Workspace, m0_key: str) -> Metrics:
    """m0's rows on the tasks' label space where the suite's pretraining domain has its own
    classes: the start model's (a class map) under the sets' names, else each task's linear
    probe's as ``probe/<task>/<set>`` rows (``Workspace.reference_model``). None otherwise."""
    if not ws.suite.separate_pretrain_labels:
        return {}
    sets = ws.task_space_sets()
    if ws.suite.class_map is not None:
        return evaluate(ws.start_model(m0_key), sets, ws.spec.eval.batch_size,
                        max_per_set=ws.spec.eval.max_per_set, subset_seed=ws.spec.data_seed)
    probes = {task: ws.reference_model(m0_key, task)[0] for task in ws.suite.tasks}
    found = evaluate_many(probes, sets, ws.spec.eval.batch_size, max_per_set=ws.spec.eval.max_per_set,
                          subset_seed=ws.spec.data_seed)  # one pass over the data for every probe
    return {row_names.probe(task, name): m for task, by_set in found.items() for name, m in by_set.items()}


def reference_acc(baseline: Metrics, task: str, suite: Suite) -> dict[str, float]:
    """m0's accuracies that the models adapted on ``task`` are compared with: its own rows, and on
    the tasks' label space of a suite without a class map, those of its probe on ``task`` (for a
    model merged over tasks, per set e the mean over the probes of the other tasks)."""
    acc = accuracies(baseline)
    if not (suite.separate_pretrain_labels and suite.class_map is None):
        return acc
    probes: dict[str, dict[str, float]] = {}
    for name, m in baseline.items():
        parsed = row_names.parse_probe(name)
        if parsed is not None and "accuracy" in m:
            probes.setdefault(parsed[1], {})[parsed[0]] = m["accuracy"]
    for e, by_task in probes.items():
        if task in by_task:
            acc[e] = by_task[task]
        else:
            others = [v for t, v in by_task.items() if t != e]
            if others:
                acc[e] = sum(others) / len(others)
    return acc


def run_adapt(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """A method adapted to a task from m0 (and the models it requires, or combines)."""
    c = cell.config
    method = METHODS.create(c["method"], **c["params"])
    pretrained_key = cell.input("pretrained")
    pretrained = ws.start_model(pretrained_key)
    if c.get("combines"):  # models over seeds or tasks, keyed by Ingredient (plan.combined_cells)
        inputs: dict = {Ingredient(*ing): ws.model(k) for ing, k in zip(c["ingredients"], cell.inputs_of("ingredients"))}
        splits = {t: ws.split(t) for t in dict.fromkeys(ing[1] for ing in c["ingredients"])}
    else:
        inputs = {name: ws.model(k) for name, k in zip(method.requires, cell.inputs_of("requires"))}
        splits = {}
    train, val = ws.split(c["task"]) if c["task"] in ws.suite.tasks else next(iter(splits.values()))
    task = ws.suite.tasks[c["task"]] if c["task"] in ws.suite.tasks else Domain(c["task"], val, train)
    ctx = AdaptContext(
        train=train, val=val, pretrain_sample=ws.pretrain_sample(c["pretrain_sample"]),
        seed=derive_seed("adapt", c["seed"], c["method"], c["task"]), device=ws.device,
        num_classes=ws.suite.num_classes, inputs=inputs, task_splits=splits,
        progress=progress, features=ws.feature_fn(pretrained_key, pretrained, c["task"]),
    )
    t0 = time.perf_counter()
    with phase("train"), trainlog.recording(val=val) as log, ws.checkpointing(cell):
        model = method.adapt(pretrained, task, ctx)
    info = {"train_seconds": time.perf_counter() - t0, **ctx.info}
    ws.save(cell.key, model)
    resume.discard(ws.checkpoint_folder(cell))
    return CellResult(metrics=ws.training_curves(cell, log), info=info)


def run_evaluate(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """An adapted model on every eval set, its protocol summary against m0 (``pretrained_eval``),
    its attack rows, and the rows of weight-space methods (``curve_rows``, ``merged_rows``)."""
    ws = ws.with_corruptions(cell.inputs_of("corruptions"))
    model = ws.model(cell.input("model"))
    extras = extra_models(ws, cell, model) if "extra" in cell.config else {}
    per_set, extra_sets = ws.evaluate_all(model, progress, extras)  # one pass over the data for all
    acc = accuracies(per_set)
    baseline = deps[cell.input("pretrained_eval")].metrics
    task = cell.labels["task"]
    ref = reference_acc(baseline, task, ws.suite)
    merged = task not in ws.suite.tasks  # a model merged over tasks: no ID task
    summary = summarize(None if merged else task, acc, ref, ws.suite)
    if not merged:
        summary.update(id_ece=per_set[task]["ece"], id_nll=per_set[task]["nll"])
    extra = curve_rows(ws, task, extra_sets, ref)
    if "reference" in cell.config:
        extra.update(merged_rows(cell, acc, deps, summary))
    info: dict[str, Any] = {}
    attacks = cell.config["attacks"]
    if attacks:
        source, source_key = ws.reference_model(cell.input("pretrained"), task)
        attacked = ws.attacked(model, task, attacks, info, source=source, source_key=source_key, progress=progress)
    else:
        attacked = {}
    summary.update(robust_summary(attacked))
    add_robust_deltas(attacked, baseline, task)  # change from the pretrained model on the same images
    per_set.update(attacked)
    for name, row in extra.items():
        per_set.setdefault(name, {}).update(row)
    adapt_info = deps[cell.input("model")].info
    for k in ("trainable_params", "train_seconds"):
        if k in adapt_info:
            summary[k] = float(adapt_info[k])
    return CellResult(metrics={**per_set, SUMMARY: summary}, info=info)


def extra_models(ws: Workspace, cell: Cell, model: Model) -> dict[str, Model]:
    """The method's ``extra_models`` (``config["extra"]``; WiSE-FT: ``curve(alpha)``) of ``model``,
    on the workspace's device, by row label."""
    ex = cell.config["extra"]
    method = METHODS.create(ex["method"], **ex["params"])
    inputs = {n: ws.model(k) for n, k in zip(ex["inputs"], cell.inputs_of("extra"))}
    with phase("extra_models"):
        made = method.extra_models(ws.start_model(cell.input("pretrained")), model, inputs)
        return {label: m.to(ws.device) for label, m in made.items()}


def curve_rows(ws: Workspace, task: str, extra_sets: dict[str, Metrics], ref: dict[str, float]) -> Metrics:
    """Rows id_acc, R, P_acc of each extra model (label -> its metrics on every eval set) against
    m0's accuracies ``ref``."""
    out = {}
    for label, metrics in extra_sets.items():
        s = summarize(task if task in ws.suite.tasks else None, accuracies(metrics), ref, ws.suite)
        out[label] = {k: s[k] for k in ("id_acc", "R", "P_acc") if k in s}
    return out


def merged_rows(cell: Cell, acc: dict[str, float], deps: Deps, summary: dict[str, float]) -> Metrics:
    """A model merged over tasks (``config["reference"]``): per task t, ``norm_acc`` = a(merged, t) /
    a(ref, t), the reference method's model of t (same seed; ``task_refs``); in ``summary``,
    ``task_acc`` (mean a(merged, t)) and ``norm_acc`` (mean normalised accuracy)."""
    tasks = cell.config["reference"]["tasks"]
    out, norm = {}, []
    for t, k in zip(tasks, cell.inputs_of("task_refs")):
        r = deps[k].metrics[t]["accuracy"]
        norm.append(acc[t] / r if r > 0 else float("nan"))
        out[t] = {"norm_acc": norm[-1]}
    summary["task_acc"] = sum(acc[t] for t in tasks) / len(tasks)
    summary["norm_acc"] = sum(norm) / len(norm)
    return out


def run_analysis(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """Predictors of adapting m0 to the cell's task (analysis.cellmetrics), before any training."""
    task = cell.config["task"]
    model = ws.model(cell.input("pretrained"))
    train, _ = ws.split(task)
    with phase("analysis"):
        rows = task_predictors(model, ws.suite.pretrain.train, train, cell.config["analysis"], ws.spec.data_seed, task)
    return CellResult(metrics={SUMMARY: rows})


def run_diagnose(ws: Workspace, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
    """What changed inside one adapted model (scope ``model``), or the cosines between the task
    vectors of one method's models on several tasks (scope ``tasks``)."""
    c = cell.config
    pretrained = ws.start_model(cell.input("pretrained"))
    if c["scope"] == "tasks":
        adapted = {t: ws.model(k) for t, k in zip(c["tasks"], cell.inputs_of("models"))}
        with phase("diagnostics"):
            return CellResult(metrics=task_vector_cosine_rows(pretrained, adapted))
    d = c["diagnostics"]
    domains = {"pretrain": ws.suite.pretrain}
    task = cell.labels.get("task")
    if task in ws.suite.tasks:
        domains["task"] = ws.suite.tasks[task]
    samples = {name: seeded_sample(dom.test, d["samples"], derive_seed("diagnose", ws.spec.data_seed, dom.name))
               for name, dom in domains.items()}
    layers = None if d["layers"] == "default" else d["layers"]
    adapted = ws.model(cell.input("model"))
    with phase("diagnostics"):
        paths = [n for n in samples if n != "pretrain"] if ws.suite.separate_pretrain_labels else None
        rows = diagnose(pretrained, adapted, samples, layers=layers, barrier_points=d["barrier_points"],
                        knn_k=d["knn_k"], batch_size=ws.spec.eval.batch_size, paths=paths)
    return CellResult(metrics=rows)


CELL_RUNNERS: dict[str, Runner] = {
    "pretrain": run_pretrain, "corrupt": run_corrupt, "eval_pretrained": run_eval_pretrained, "adapt": run_adapt,
    "evaluate": run_evaluate, "analysis": run_analysis, "diagnose": run_diagnose,
}
