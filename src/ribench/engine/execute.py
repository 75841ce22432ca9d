"""What each kind of cell does, in whatever process runs it.

A Workspace holds the run's suite, artifact store and device; it never touches the
results store (only the driver writes it): what a cell needs from finished cells
(their metrics and info) is handed to ``run_cell`` in ``deps``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.errors import RibenchError
from ..core.registry import METHODS, MODELS
from ..core.runtime import derive_seed, fixed_threads, seed_everything
from ..core.types import Domain, Split, Suite
from ..evaluate import evaluate, summarize
from ..methods.base import AdaptContext, Ingredient, compute_features
from ..models.base import Model
from ..models.checkpoint import load_model, save_model
from ..models.pretrain import PretrainConfig, pretrain
from .artifacts import ArtifactStore
from .plan import Cell
from .spec import RunSpec
from .store import SUMMARY

Progress = Callable[[float, str], None]


@dataclass
class CellResult:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


Deps = dict[str, CellResult]  # key of a finished dependency -> what it recorded


@dataclass
class Workspace:
    spec: RunSpec
    suite: Suite
    artifacts: ArtifactStore
    device: torch.device
    max_cached_models: int = 8
    _models: OrderedDict[str, Model] = field(default_factory=OrderedDict)
    _corrupted: dict[str, tuple] = field(default_factory=dict)

    # --- models by key, the most recently used kept in memory ---------------------
    def model(self, key: str) -> Model:
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        return self._remember(key, load_model(self.artifacts.path(key)))

    def _remember(self, key: str, model: Model) -> Model:
        self._models[key] = model.to(self.device).eval()
        while len(self._models) > self.max_cached_models:
            self._models.popitem(last=False)
        return self._models[key]

    def save(self, key: str, model: Model) -> None:
        save_model(model.cpu(), self.artifacts.path(key), {"cell": key})
        self._remember(key, model)

    def run_cell(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        """Run ``cell`` with the spec's thread count, the same on every runner (its numbers depend on it)."""
        ws = self.with_corruptions([d for d in cell.deps if self._is_corrupt(d)]) if cell.kind in (
            "eval_pretrained", "evaluate") else self
        with fixed_threads(self.spec.threads):
            return getattr(ws, f"_run_{cell.kind}")(cell, deps, progress)

    def _is_corrupt(self, key: str) -> bool:
        return self.artifacts.has(key) and self.artifacts.metadata(key).get("corruption") is not None

    # --- cells -----------------------------------------------------------------
    def _run_pretrain(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        c = cell.config
        if "given" in c:  # an outside backbone: load its weights, do not train
            return self._load_given(cell)
        pt = dict(c["pretrain"])
        seed = pt.pop("seed")
        seed_everything(derive_seed("init", seed, c["backbone"], c["recipe"]))
        model = MODELS.create(c["backbone"], num_classes=self.suite.num_classes).to(self.device)
        cfg = PretrainConfig(**pt)
        t0 = time.perf_counter()
        pretrain(model, self.suite, c["recipe"], cfg, derive_seed("pretrain", seed, c["backbone"], c["recipe"]), progress)
        info = {"train_seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters())}
        self.save(cell.key, model)
        return CellResult(info=info)

    def _load_given(self, cell: Cell) -> CellResult:
        """m0 of an outside backbone (models/external.py), checked against the planned identity."""
        from ..core.errors import CheckpointError
        from ..models.external import build, identity, parse_entry

        c = cell.config
        names = [b if isinstance(b, str) else b["name"] for b in self.spec.backbones]
        i = names.index(c["backbone"])
        entry = parse_entry(self.spec.backbones[i], f"backbones[{i}]")
        if identity(entry) != c["given"]:
            raise CheckpointError(f"backbone {entry.name!r}: its weights ({entry.weights or entry.source}) changed "
                                  "after the run was planned; run again to plan with the new file")
        seed_everything(derive_seed("init", c.get("seed", 0), c["backbone"], c["recipe"]))
        t0 = time.perf_counter()
        model = build(entry, self.suite.num_classes, self.spec.trust_checkpoint).to(self.device)
        info = {"load_seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters())}
        self.save(cell.key, model)
        return CellResult(info=info)

    def _evaluate_all(self, model: Model, progress: Progress) -> dict[str, dict[str, float]]:
        return evaluate(model, self.suite.all_eval_sets(), self.spec.eval.batch_size, progress)

    def with_corruptions(self, keys: list[str]) -> "Workspace":
        """This workspace over a suite whose corruption sets are the engine-made ``keys``."""
        if not keys:
            return self
        from dataclasses import replace

        sets, mapping = {}, {}
        for k in keys:
            if k not in self._corrupted:
                t = self.artifacts.load(k)
                meta = self.artifacts.metadata(k)
                name = f"{meta['corruption']}/{meta['severity']}"
                self._corrupted[k] = (name, (meta["corruption"], int(meta["severity"])),
                                      Domain(name, Split(t["images"], t["labels"])))
            name, cs, dom = self._corrupted[k]
            sets[name], mapping[name] = dom, cs
        builtin = set(self.suite.corruptions)
        others = {n: d for n, d in self.suite.eval_sets.items() if n not in builtin}
        suite = replace(self.suite, eval_sets={**others, **sets}, corruptions=mapping)
        return replace(self, suite=suite, _models=self._models, _corrupted=self._corrupted)

    def _run_corrupt(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        from ..data.corruptions import corrupt

        c = cell.config
        dom = self.suite.pretrain if c["domain"] == "pretrain" else self.suite.domain(c["domain"])
        g = torch.Generator().manual_seed(derive_seed("corrupt-subset", c["seed"], c["domain"]))
        idx = torch.sort(torch.randperm(len(dom.test), generator=g)[: c["subset"]]).values
        test = dom.test.subset(idx)  # a streaming split decodes only these images
        images = corrupt(test.images, c["corruption"], c["severity"],
                         derive_seed("corrupt", c["seed"], c["corruption"], c["severity"]))
        self.artifacts.save(cell.key, {"images": images, "labels": test.labels},
                            {"corruption": c["corruption"], "severity": str(c["severity"]), "domain": dom.name})
        return CellResult(info={"images": len(idx)})

    def _run_eval_pretrained(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        model = self.model(cell.deps[0])
        per_set = self._evaluate_all(model, progress)
        acc = {k: v["accuracy"] for k, v in per_set.items()}
        summary = summarize(None, acc, acc, self.suite)
        info: dict[str, Any] = {}
        # the pretrained model is attacked on every task, the reference for each adapted model
        attacked = {}
        for task in self.suite.tasks:
            attacked.update(self._attack(model, None, task, cell.config["attacks"], info))
        summary.update(_robust_summary(attacked))
        return CellResult(metrics={**per_set, **attacked, SUMMARY: summary}, info=info)

    def _run_analysis(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        return CellResult(metrics={SUMMARY: _analysis_metrics(self, cell)})

    def _run_diagnose(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        from ..analysis import diagnose, task_vector_cosine_rows

        c = cell.config
        pretrained = self.model(cell.deps[0])
        if c["scope"] == "tasks":
            adapted = {t: self.model(k) for t, k in zip(c["tasks"], cell.deps[1:])}
            return CellResult(metrics=task_vector_cosine_rows(pretrained, adapted))
        d = c["diagnostics"]
        domains = {"pretrain": self.suite.pretrain}
        task = cell.labels.get("task")
        if task in self.suite.tasks:
            domains["task"] = self.suite.tasks[task]
        samples = {}
        for name, dom in domains.items():
            g = torch.Generator().manual_seed(derive_seed("diagnose", self.spec.data_seed, dom.name))
            samples[name] = dom.test.subset(torch.sort(torch.randperm(len(dom.test), generator=g)[: d["samples"]]).values)
        layers = None if d["layers"] == "default" else d["layers"]
        rows = diagnose(pretrained, self.model(cell.deps[1]), samples, layers=layers,
                        barrier_points=d["barrier_points"], knn_k=d["knn_k"], batch_size=self.spec.eval.batch_size)
        return CellResult(metrics=rows)

    def _attack(self, model: Model, pretrained: Model | None, task: str, attacks: list[dict], info: dict
                ) -> dict[str, dict[str, float]]:
        """Rows ``attack/<name>/eps=<eps>[/<task>]`` (and ``transfer/...`` crafted on ``pretrained``)."""
        from ..evaluate.attacks import robust_accuracy, transfer_attack

        dom = self.suite.tasks[task]
        suffix = "" if pretrained is not None else f"/{task}"
        out: dict[str, dict[str, float]] = {}
        from ..evaluate.attacks import get_attack, gradient_masking_checks
        from ..evaluate.attacks.api import attack_subset

        for a in attacks:
            norm = get_attack(a["name"]).norm
            if a.get("check_masking", True) and norm in ("linf", "l2") and f"masking/{a['name']}{suffix}" not in out:
                head = dom.test.subset(torch.arange(min(100, len(dom.test))))
                warnings = gradient_masking_checks(model, head.images, head.labels, eps=max(a["eps"]),
                                                   norm=norm, class_subset=dom.class_subset, seed=self.spec.data_seed)
                out[f"masking/{a['name']}{suffix}"] = {"warnings": float(len(warnings))}
                info.setdefault("masking_warnings", []).extend(f"{a['name']}{suffix}: {w}" for w in warnings)
            # the seeded subset robust_accuracy would draw, taken first so a streaming split decodes only it
            test = dom.test.subset(attack_subset(len(dom.test), a["subset"], self.spec.data_seed))
            for eps in a["eps"]:
                kw = dict(subset=None, seed=self.spec.data_seed, class_subset=dom.class_subset,
                          options=None, **a["params"])
                r = robust_accuracy(model, test.images, test.labels, a["name"], eps, **kw)
                out[f"attack/{a['name']}/eps={eps:g}{suffix}"] = r.metrics()
                if a["transfer"] and pretrained is not None:
                    robust = transfer_attack(pretrained, {"target": model}, test.images, test.labels,
                                             a["name"], eps, **kw)["target"]
                    out[f"transfer/{a['name']}/eps={eps:g}"] = {"robust_acc": robust}
        return out

    def _split(self, task: str) -> tuple[Split, Split]:
        """(train part, validation part) of a task, fixed by the data seed."""
        dom = self.suite.tasks[task]
        if not dom.trainable:
            raise RibenchError(f"task {task!r} of suite {self.suite.name!r} has no training split")
        return dom.train.holdout(self.spec.eval.val_fraction, derive_seed("val", self.spec.data_seed, task))

    def _pretrain_sample(self, n: int) -> Split:
        src = self.suite.pretrain.train
        g = torch.Generator().manual_seed(derive_seed("pretrain-sample", self.spec.data_seed))
        return src.subset(torch.randperm(len(src), generator=g)[: min(n, len(src))])

    def _feature_fn(self, pretrained_key: str, pretrained: Model, task: str):
        def features(model: Model, name: str, split: Split) -> torch.Tensor:
            if model is not pretrained:
                return compute_features(model, name, split)
            key = hashlib.sha256(f"features|{pretrained_key}|{task}|{name}|{self.spec.eval.val_fraction}|"
                                 f"{self.spec.data_seed}".encode()).hexdigest()
            if self.artifacts.has(key):
                return self.artifacts.load(key)["features"].to(self.device)
            f = compute_features(model, name, split)
            self.artifacts.save(key, {"features": f})
            return f

        return features

    def _run_adapt(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        c = cell.config
        method = METHODS.create(c["method"], **c["params"])
        pretrained_key, *req_keys = cell.deps
        pretrained = self.model(pretrained_key)
        if c.get("combines"):  # models over seeds or tasks, keyed by Ingredient (plan.combined_cells)
            inputs: dict = {Ingredient(*ing): self.model(k) for ing, k in zip(c["ingredients"], req_keys)}
            splits = {t: self._split(t) for t in dict.fromkeys(ing[1] for ing in c["ingredients"])}
        else:
            inputs = {name: self.model(k) for name, k in zip(method.requires, req_keys)}
            splits = {}
        train, val = self._split(c["task"]) if c["task"] in self.suite.tasks else next(iter(splits.values()))
        task = self.suite.tasks[c["task"]] if c["task"] in self.suite.tasks else Domain(c["task"], val, train)
        ctx = AdaptContext(
            train=train, val=val, pretrain_sample=self._pretrain_sample(c["pretrain_sample"]),
            seed=derive_seed("adapt", c["seed"], c["method"], c["task"]), device=self.device,
            num_classes=self.suite.num_classes, inputs=inputs, task_splits=splits,
            progress=progress, features=self._feature_fn(pretrained_key, pretrained, c["task"]),
        )
        t0 = time.perf_counter()
        model = method.adapt(pretrained, task, ctx)
        info = {"train_seconds": time.perf_counter() - t0, **ctx.info}
        self.save(cell.key, model)
        return CellResult(info=info)

    def _run_evaluate(self, cell: Cell, deps: Deps, progress: Progress) -> CellResult:
        adapt_key, e0_key = cell.deps[:2]
        model = self.model(adapt_key)
        per_set = self._evaluate_all(model, progress)
        acc = {k: v["accuracy"] for k, v in per_set.items()}
        ref = {k: v["accuracy"] for k, v in deps[e0_key].metrics.items() if "accuracy" in v and k != SUMMARY}
        task = cell.labels["task"]
        merged = task not in self.suite.tasks  # a model merged over tasks: no ID task
        summary = summarize(None if merged else task, acc, ref, self.suite)
        if not merged:
            summary.update(id_ece=per_set[task]["ece"], id_nll=per_set[task]["nll"])
        extra = _extra_evaluation(self, cell, model, deps, acc, ref, summary, progress)
        info: dict[str, Any] = {}
        attacked = self._attack(model, self.model(cell.deps[2]), task, cell.config["attacks"], info) \
            if cell.config["attacks"] else {}
        summary.update(_robust_summary(attacked))
        for name, row in attacked.items():  # change from the pretrained model on the same images
            ref_row = deps[e0_key].metrics.get(f"{name}/{task}")
            if ref_row and name.startswith("attack/"):
                row["delta_robust_acc"] = row["robust_acc"] - ref_row["robust_acc"]
        per_set.update(attacked)
        for name, row in extra.items():
            per_set.setdefault(name, {}).update(row)
        adapt_info = deps[adapt_key].info
        for k in ("trainable_params", "train_seconds"):
            if k in adapt_info:
                summary[k] = float(adapt_info[k])
        return CellResult(metrics={**per_set, SUMMARY: summary}, info=info)


def _extra_evaluation(self: Workspace, cell: Cell, model: Model, deps: Deps, acc: dict[str, float],
                      ref: dict[str, float], summary: dict[str, float], progress: Progress) -> dict[str, dict[str, float]]:
    """Rows an evaluate cell adds for weight-space methods (plan._extra_evaluation, combined_cells):

    - ``config["extra"]``: the method's ``extra_models`` (WiSE-FT: ``curve/alpha=<a>``), each
      evaluated on every eval set, rows id_acc, R, P_acc;
    - ``config["reference"]``: per merged task t, ``norm_acc`` = a(merged, t) / a(ref, t), the
      reference method's model of t (same seed), and in ``summary`` ``task_acc`` (mean
      a(merged, t)) and ``norm_acc`` (mean normalised accuracy)."""
    c, task, out = cell.config, cell.labels["task"], {}
    if "extra" in c:
        ex = c["extra"]
        method = METHODS.create(ex["method"], **ex["params"])
        keys = cell.deps[len(cell.deps) - len(ex["inputs"]):]
        inputs = {n: self.model(k) for n, k in zip(ex["inputs"], keys)}
        for label, m in method.extra_models(self.model(cell.deps[2]), model, inputs).items():
            a = {k: v["accuracy"] for k, v in self._evaluate_all(m.to(self.device), progress).items()}
            s = summarize(task if task in self.suite.tasks else None, a, ref, self.suite)
            out[label] = {k: s[k] for k in ("id_acc", "R", "P_acc") if k in s}
    if "reference" in c:
        tasks = c["reference"]["tasks"]
        keys = cell.deps[len(cell.deps) - len(tasks):]
        norm = []
        for t, k in zip(tasks, keys):
            r = deps[k].metrics[t]["accuracy"]
            norm.append(acc[t] / r if r > 0 else float("nan"))
            out[t] = {"norm_acc": norm[-1]}
        summary["task_acc"] = sum(acc[t] for t in tasks) / len(tasks)
        summary["norm_acc"] = sum(norm) / len(norm)
    return out


def _analysis_metrics(ws: "Workspace", cell: Cell) -> dict[str, float]:
    from ..analysis import otdd_splits, score_model

    cfg, task = cell.config["analysis"], cell.config["task"]
    model = ws.model(cell.deps[0])
    train, _ = ws._split(task)
    source = ws.suite.pretrain.train
    # one source sample and one eps unit (its mean self cost) for every task, so the
    # distances of one backbone's tasks are comparable (docs/analysis.md)
    kw = dict(max_per_class=cfg["max_per_class"], seed=derive_seed("analysis", ws.spec.data_seed),
              inner=cfg["otdd_inner"], cost_scale="source")
    out = {"otdd": otdd_splits(source, train, None, **kw), "otdd_features": otdd_splits(source, train, model, **kw)}
    g = torch.Generator().manual_seed(derive_seed("analysis", ws.spec.data_seed, task))
    sample = train.subset(torch.sort(torch.randperm(len(train), generator=g)[: cfg["max_samples"]]).values)
    out.update(score_model(model, sample, list(cfg["estimators"])))  # plan.estimator_versions: name -> version
    return out


def _robust_summary(attacked: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean robust accuracy over white-box/black-box attack rows, and over transfer rows."""
    out = {}
    for prefix, metric in (("attack/", "robust_acc"), ("transfer/", "transfer_robust_acc")):
        vals = [r["robust_acc"] for k, r in attacked.items() if k.startswith(prefix)]
        if vals:
            out[metric] = sum(vals) / len(vals)
    return out
