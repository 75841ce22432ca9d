"""The Python API, for notebooks and scripts (docs/api.md).

- ``run(spec, out=None, **options)`` runs (or resumes) a spec, given as a ``RunSpec``, a
  dict, a TOML/YAML file or a preset name, and returns a ``Run``; ``open(out)`` opens the
  run of a folder. ``options`` are the engine's ``RunOptions`` (runner, workers, threads,
  retries, quiet, ...).
- ``Run.results()``: every stored number in long format (backbone, recipe, method, task,
  seed, eval_set, metric, value), with the hyperparameters of the method that made the
  model (``params``: the ``params`` of the adapt cell's stored config). ``Run.summary()``:
  one row per (backbone, recipe, method), the mean and 95% t-interval of every summary
  metric, as the reports compute them (``report.aggregate.summarize_methods``).
  ``Run.model(...)``: an adapted model (or the pretrained m0), loaded from the run's
  artifacts. pandas is needed for the tables only, and imported when they are made.
- ``evaluate_model(model, suite, reference=m0, ...)``: one model over every eval set of a
  suite, its corruption sets and attacks, with the protocol's numbers against a reference
  model, computed by the functions an evaluate cell calls (``evaluate.evaluate``,
  ``evaluate.summarize``, ``evaluate.attacks.attack_rows``): the same numbers a run stores.

A spec built in Python may name a backbone by a live object: an ``nn.Module`` (a ribench
``Model`` too) or a zero-argument factory, bare or as the ``module`` of a backbone table
(``{"module": net, "input": {...}, "head": "fc"}``, the fields of docs/backbones.md). It
becomes an outside backbone (models/external.py): its state dict is saved as
``<out>/backbones/<digest>.safetensors`` and its table names that file and a factory the
engine can import, so its cell keys follow its weights and its class. Which factory:

- a factory defined at the top level of an importable module (not ``__main__``): itself
  (``module:pkg.mod:make_net``); every runner, and any later process, can build it;
- a ribench ``Model`` of a registered kind (``create_model("cnn")``): ``registered_backbone``,
  which builds the same kind; every runner and process as well;
- any other module (a class defined in a notebook, a module built by hand, a lambda's
  result): ``live_backbone``, which copies the module registered in this process under its
  digest (SHA-256 of its class's qualified name and its safetensors bytes). Worker
  processes do not have it, so such a backbone runs with the serial runner only, and a
  later process that loads its models passes it again: ``open(out, backbones={name: net})``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .analysis.cellmetrics import seeded_sample
from .core import rows as names
from .core.errors import ConfigError, DataError, RibenchError, UnknownNameError
from .core.registry import CORRUPTIONS, MODELS
from .core.runtime import ComputeOptions, compute_options, derive_seed, fixed_threads
from .core.types import Domain, InputSpec, Split, Suite
from .data import build_suite, corrupt
from .engine.execute import accuracies
from .engine.plan import corruption_set
from .engine.runner import RunOptions, RunOutcome
from .engine.runner import run as run_engine
from .engine.spec import AttackEntry, CorruptionSpec, RunSpec, load_preset, load_spec, parse_spec
from .engine.store import LABELS, ResultsStore
from .evaluate import evaluate, summarize
from .evaluate.attacks import add_robust_deltas, attack_rows, check_attack, robust_summary
from .models import Model, load_model
from .models.checkpoint import registering_modules
from .models.external import ExternalModel, parse_entry, wrap_module
from .presets import PRESETS
from .report.aggregate import summarize_methods
from .report.catalogue import SUMMARY_METRICS
from .report.rundata import STORE_FILE, RunData, load_run

if TYPE_CHECKING:
    import pandas as pd

# `open` is left out: a star import would shadow the builtin
__all__ = ["ModelEvaluation", "Run", "evaluate_model", "live_backbone", "registered_backbone", "run"]

BACKBONES_DIR = "backbones"  # <out>/backbones/<digest>.safetensors: the weights of live backbones
LIVE_SOURCE = "module:ribench.api:live_backbone"
REGISTERED_SOURCE = "module:ribench.api:registered_backbone"
LIVE_FIELDS = ("name", "module", "input", "head", "feature_layer", "reset_head", "version")
RESULT_COLUMNS = (*LABELS, "eval_set", "metric", "value", "params", "cell")
PANDAS_HINT = "this needs pandas, which is not importable: pip install pandas"

_LIVE: dict[str, nn.Module] = {}  # digest -> a live backbone given in this process (its architecture)


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise RibenchError(PANDAS_HINT) from None
    return pd


# ----------------------------------------------------------------------- live backbones


def live_backbone(digest: str, qualname: str = "") -> nn.Module:
    """A copy of the live backbone registered in this process under ``digest`` (the factory
    of a live backbone's table; the engine then loads its saved weights into the copy)."""
    net = _LIVE.get(digest)
    if net is None:
        raise ConfigError("backbones", f"the backbone module {qualname or '?'} (digest {digest[:12]}) was given as a "
                                       "live object in another Python process, and only that process has it. Pass it "
                                       "again: ribench.open(out, backbones={name: module}) or ribench.run(...) with "
                                       "the module in the spec; or give a zero-argument factory defined in an "
                                       "importable module, which any process can call")
    return copy.deepcopy(net)


def registered_backbone(arch: str, hparams: Mapping[str, Any], num_classes: int, spec: Mapping[str, Any]) -> Model:
    """A ribench model of the registered kind ``arch`` (random weights), built as ``load_model`` builds it."""
    return MODELS.create(arch, num_classes=int(num_classes), spec=_input_spec(spec), **dict(hparams))


def _input_spec(value: Any) -> InputSpec:
    if isinstance(value, InputSpec):
        return value
    return InputSpec(channels=int(value["channels"]), size=int(value["size"]), mean=tuple(value["mean"]),
                     std=tuple(value["std"]))


def _spec_table(spec: InputSpec) -> dict[str, Any]:
    """An InputSpec as a spec's ``input`` table (lists, as a spec file has them)."""
    return {"size": spec.size, "channels": spec.channels, "mean": list(spec.mean), "std": list(spec.std)}


def _qualname(obj: Any) -> str:
    """``pkg.mod.Name`` of a class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _importable(fn: Any) -> str | None:
    """``pkg.mod:name`` when ``fn`` is what importing ``pkg.mod`` and taking ``name`` gives
    (a top-level function or class of a module other than ``__main__``), else None."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or not name.isidentifier():
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return f"{module}:{name}" if found is fn else None


def _is_plain_model(net: nn.Module) -> bool:
    """A ribench Model whose logits are ``head(embed(preprocess(x)))`` (not one a method built around others)."""
    return isinstance(net, Model) and type(net).forward is Model.forward and type(net).features is Model.features


def _registered_kind(net: nn.Module) -> bool:
    """A ribench model of a registered kind that any process can build (its registering modules import)."""
    arch = getattr(net, "arch", None)
    if not _is_plain_model(net) or isinstance(net, ExternalModel) or not isinstance(arch, str) or arch not in MODELS:
        return False
    return "__main__" not in registering_modules(net)


def _state_bytes(net: nn.Module) -> bytes:
    """The module's state dict as safetensors bytes (contiguous CPU copies, as ``save_model`` writes them)."""
    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in net.state_dict().items()}
    return safetensors_bytes(tensors)


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` unless it holds them already (content-addressed), atomically."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _is_live(value: Any) -> bool:
    return isinstance(value, nn.Module) or (callable(value) and not isinstance(value, (str, bytes, Mapping)))


@dataclass
class _LiveBackbone:
    """A live backbone made into a backbone table; ``save`` writes its ``weights`` to
    ``table["weights"]`` before the run."""

    table: dict[str, Any]
    weights: bytes
    live: nn.Module | None = None  # the module itself, when no other process can build it
    digest: str = ""

    @property
    def serial_only(self) -> str | None:
        if self.live is None:
            return None
        return (f"{_qualname(type(self.live))} is a live module that only this process has, and pool and Ray workers "
                "are other processes. Run it with runner='serial', or give a zero-argument factory defined in an "
                "importable module")

    def save(self) -> None:
        """Write the weights file, and register the module in this process when it is live."""
        _write_once(Path(self.table["weights"]), self.weights)
        if self.live is not None:
            _LIVE[self.digest] = self.live


def _live_table(value: Any, where: str, folder: Path) -> _LiveBackbone:
    """The backbone table of a live object (module docstring), checked; nothing is written yet."""
    table = dict(value) if isinstance(value, Mapping) else {"module": value}
    unknown = sorted(set(table) - set(LIVE_FIELDS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown field of a live backbone; valid: {', '.join(LIVE_FIELDS)}")
    obj = table["module"]
    if isinstance(obj, nn.Module):
        net, factory = obj, None
    elif callable(obj):
        try:
            net, factory = obj(), obj
        except TypeError as e:
            raise ConfigError(f"{where}.module", f"a factory is called with no arguments; {_qualname(obj)}() "
                                                 f"fails: {e}") from None
        if not isinstance(net, nn.Module):
            raise ConfigError(f"{where}.module", f"{_qualname(obj)}() returned a {type(net).__name__}, "
                                                 "expected an nn.Module")
    else:
        raise ConfigError(f"{where}.module", "must be an nn.Module or a zero-argument function returning one, "
                                             f"got {type(obj).__name__}")
    if isinstance(net, Model) and not _is_plain_model(net):
        raise ConfigError(f"{where}.module", f"{type(net).__name__} is a model that a method built around other "
                                             "models (its forward is its own); give a plain backbone")
    defaults: dict[str, Any] = {}
    if isinstance(net, Model):  # its own input spec, its head, its features (embed on preprocessed images)
        defaults = {"input": _spec_table(net.spec), "head": "head", "feature_layer": "embed"}
    entry = {**defaults, **{k: v for k, v in table.items() if k != "module" and v is not None}}
    if isinstance(entry.get("input"), InputSpec):
        entry["input"] = _spec_table(entry["input"])
    if "input" not in entry:
        raise ConfigError(f"{where}.input", f"a live {type(net).__name__} needs its input spec: give a table "
                                            '{"module": ..., "input": {"size": ..., "channels": ..., "mean": [...], '
                                            '"std": [...]}}')
    data = _state_bytes(net)
    qual = _qualname(type(net))
    digest = hashlib.sha256(qual.encode() + b"\0" + data).hexdigest()
    target = _importable(factory) if factory is not None else None
    live = None
    if target is not None:
        source, kwargs, name = f"module:{target}", {}, factory.__name__
    elif _registered_kind(net):
        source, name = REGISTERED_SOURCE, net.arch
        kwargs = {"arch": net.arch, "hparams": dict(getattr(net, "hparams", {})), "num_classes": net.num_classes,
                  "spec": _spec_table(net.spec)}
    else:
        source, kwargs, name, live = LIVE_SOURCE, {"digest": digest, "qualname": qual}, type(net).__name__, net
    path = folder / f"{digest[:32]}.safetensors"
    out = {"name": str(entry.pop("name", None) or name), "source": source, "weights": str(path.resolve()),
           "kwargs": kwargs, **entry}
    _check_wrapping(net, out, where)
    return _LiveBackbone(out, data, live, digest)


def _check_wrapping(net: nn.Module, table: Mapping[str, Any], where: str) -> None:
    """Validate the table (``external.parse_entry``) and wrap a copy of ``net`` as the engine's
    pretrain cell will, so that a bad input spec, head or feature layer fails now, naming the
    field, before anything runs."""
    entry = parse_entry(table, where)
    wrap_module(copy.deepcopy(net).cpu(), entry.input, entry.head, entry.feature_layer, where=where)


def _with_live_backbones(data: dict[str, Any], out: Path) -> tuple[dict[str, Any], dict[int, _LiveBackbone]]:
    """The spec dict with every live backbone replaced by its table (its weights to be saved
    under ``out/backbones``), and index -> the live backbone, for each of them."""
    backbones = data.get("backbones")
    if not isinstance(backbones, (list, tuple)):
        return data, {}
    live = {i: _live_table(b, f"backbones[{i}]", out / BACKBONES_DIR) for i, b in enumerate(backbones)
            if _is_live(b) or (isinstance(b, Mapping) and "module" in b)}
    return {**data, "backbones": [live[i].table if i in live else b for i, b in enumerate(backbones)]}, live


# ------------------------------------------------------------------------------ running


def _spec_of(spec: Any) -> tuple[Any, str]:
    """(a RunSpec or a spec dict, the run's name) of what ``run`` was given."""
    if isinstance(spec, RunSpec):
        return spec, spec.name
    if isinstance(spec, Mapping):
        return dict(spec), str(spec.get("name", RunSpec.model_fields["name"].default))
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_file():
            s = load_spec(path)
            return s, s.name
        if isinstance(spec, str) and spec in PRESETS:
            s = load_preset(spec)
            return s, s.name
        raise ConfigError("spec", f"{spec} is neither a spec file nor a preset (presets: {', '.join(PRESETS)})")
    raise ConfigError("spec", f"must be a RunSpec, a dict, a spec file or a preset name, got {type(spec).__name__}")


def _run_options(options: Mapping[str, Any]) -> RunOptions:
    valid = [f.name for f in dataclasses.fields(RunOptions)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(unknown[0], f"unknown run option; valid: {', '.join(valid)}")
    return RunOptions(**options)


def run(spec: RunSpec | Mapping[str, Any] | str | os.PathLike, out: str | os.PathLike | None = None,
        **options: Any) -> "Run":
    """Run (or resume) ``spec`` with its results in ``out`` (default ``runs/<name>``, as the
    CLI) and return the ``Run``. ``spec``: a RunSpec, a dict (whose ``backbones`` may hold
    live modules and factories, see the module docstring), a TOML/YAML file or a preset
    name. ``options``: ``RunOptions`` fields (``runner``, ``workers``, ``threads``,
    ``retries``, ``quiet``, ...). Failed cells do not raise: see ``Run.outcome`` and
    ``Run.failures()``."""
    opts = _run_options(options)
    given, name = _spec_of(spec)
    out_dir = Path(out) if out is not None else Path("runs") / name
    if isinstance(given, dict):
        given, live = _with_live_backbones(given, out_dir)
        for i, b in live.items():
            if b.serial_only and opts.runner != "serial":
                raise ConfigError(f"backbones[{i}]", f"runs on the serial runner only, not {opts.runner!r}: "
                                                     f"{b.serial_only}")
        given = parse_spec(given, source="the spec given to ribench.run")
        for b in live.values():
            b.save()
    outcome = run_engine(given, out_dir, options=opts)
    return Run(out_dir, outcome)


def open(out: str | os.PathLike, *, backbones: Mapping[str, Any] | None = None) -> "Run":  # noqa: A001
    """The run whose results are in ``out`` (a DataError when it holds none).

    ``backbones``: name -> the live module (or factory) a run was given, for a process other
    than the one that ran it, to load the models of that backbone (``Run.model``)."""
    r = Run(Path(out))
    data = r.data()
    for name, obj in (backbones or {}).items():
        tables = [b for b in data.spec.get("backbones", []) if isinstance(b, dict) and b.get("source") == LIVE_SOURCE]
        table = next((b for b in tables if b.get("name") == name), None)
        if table is None:
            raise ConfigError(f"backbones.{name}", f"the run has no live backbone named {name!r}; its live backbones: "
                                                   f"{', '.join(b['name'] for b in tables) or 'none'}")
        net = obj if isinstance(obj, nn.Module) else obj()
        want = table["kwargs"]["qualname"]
        if _qualname(type(net)) != want:
            raise ConfigError(f"backbones.{name}", f"is a {_qualname(type(net))}; the run's backbone {name!r} was a "
                                                   f"{want}")
        _LIVE[table["kwargs"]["digest"]] = net
    return r


# ---------------------------------------------------------------------------------- Run


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return value in wanted
    return value == wanted


def _describe(labels: Mapping[str, Any]) -> str:
    seed = labels.get("seed")
    text = "/".join(str(labels.get(k)) for k in ("backbone", "recipe", "method") if labels.get(k) is not None)
    task = labels.get("task")
    return text + (f", task {task}" if task is not None else "") + (f", seed {seed}" if seed is not None else "")


class Run:
    """A run's folder: its results as tables and its models (module docstring).

    ``outcome``: the engine's ``RunOutcome`` of the ``run`` call that made this object
    (None for ``open``). Every method reads the store when called, so a run still going on
    in another process shows what it has recorded so far.
    """

    def __init__(self, out_dir: str | os.PathLike, outcome: RunOutcome | None = None):
        self.out_dir = Path(out_dir)
        self.outcome = outcome

    def __repr__(self) -> str:
        o = self.outcome
        counts = "" if o is None else (f", {o.total} cells: {o.ran} ran, {o.cached} already done, {len(o.failed)} "
                                       f"failed, {o.skipped} skipped")
        return f"Run({str(self.out_dir)!r}{counts})"

    def data(self) -> RunData:
        """What the reports read (``report.rundata.RunData``), loaded now."""
        return load_run(self.out_dir)

    @property
    def spec(self) -> dict[str, Any]:
        """The spec of the last run on this folder, as stored."""
        return self.data().spec

    @property
    def tasks(self) -> list[str]:
        """The tasks the run adapts models to: its spec's ``tasks``, or every task of the suite (``"all"``)."""
        data = self.data()
        chosen = data.spec.get("tasks", "all")
        return list(data.layout.get("tasks", [])) if chosen == "all" else list(chosen)

    @property
    def eval_sets(self) -> list[str]:
        """Every eval set of the run: pretraining domain, tasks, other eval sets (corruption sets among them)."""
        lay = self.data().layout
        return [lay["pretrain"], *lay.get("tasks", []), *lay.get("eval_sets", [])] if lay else []

    def _store(self) -> ResultsStore:
        path = self.out_dir / STORE_FILE
        if not path.is_file():
            raise DataError(f"{self.out_dir} holds no results (no {STORE_FILE})")
        return ResultsStore(path)

    def _configs(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        store = self._store()
        try:
            return store.cell_configs(kind)
        finally:
            store.close()

    def results(self, *, expand_params: bool = False, **where: Any) -> "pd.DataFrame":
        """Every stored number as a pandas DataFrame, one row per (cell, eval_set, metric).

        Columns: backbone, recipe, method, task, seed, eval_set, metric, value (NaN where the
        metric was NaN), ``params`` (the method's hyperparameters as JSON text, from the adapt
        cell of the row's labels; None for m0 and analysis rows) and ``cell`` (the key).
        ``expand_params``: also one ``params.<name>`` column per hyperparameter. ``where``:
        keep rows whose column equals the value (or is one of a list of values), e.g.
        ``results(method="ft", eval_set="*")``.
        """
        pd = _pandas()
        bad = sorted(set(where) - set(RESULT_COLUMNS))
        if bad:
            raise ConfigError(bad[0], f"not a column of the results; columns: {', '.join(RESULT_COLUMNS)}")
        params = {tuple(c["labels"].get(k) for k in LABELS): c["config"].get("params")
                  for c in self._configs("adapt").values()}
        rows = []
        for r in self.data().all_rows:
            p = params.get(tuple(r[k] for k in LABELS))
            row = {**{k: r[k] for k in (*LABELS, "eval_set", "metric")},
                   "value": math.nan if r["value"] is None else r["value"],
                   "params": None if p is None else json.dumps(p, sort_keys=True), "cell": r["cell"]}
            if all(_matches(row[k], v) for k, v in where.items()):
                rows.append(row)
        df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        df["seed"] = df["seed"].astype("Int64")
        df["value"] = df["value"].astype("float64")
        if expand_params:
            decoded = [json.loads(p) if isinstance(p, str) else {} for p in df["params"]]
            keys = sorted({k for d in decoded for k in d})
            for k in keys:
                df[f"params.{k}"] = [d.get(k) for d in decoded]
        return df

    def summary(self, metrics: Sequence[str] | None = None) -> "pd.DataFrame":
        """One row per (backbone, recipe, method), m0 first in each (backbone, recipe): for each
        summary metric ``m``, its mean over tasks and seeds (``m``) and 95% t-interval
        (``m_lo``, ``m_hi``; NaN for a single run), as ``report.aggregate.summarize_methods``
        computes them for every report; ``n``: the (task, seed) runs; ``tasks``, ``seeds``.
        ``metrics``: these only (default: every summary metric of the run, in the reports' order)."""
        pd = _pandas()
        summaries = summarize_methods(self.data().rows)
        found = {m for s in summaries for m in s.stats}
        order = [m.name for m in SUMMARY_METRICS if m.name in found] + sorted(found - {m.name for m in SUMMARY_METRICS})
        if metrics is not None:
            missing = [m for m in metrics if m not in found]
            if missing:
                raise ConfigError("metrics", f"{missing[0]!r} is not a summary metric of this run; it has: "
                                             f"{', '.join(order)}")
            order = list(metrics)
        rows = []
        for s in summaries:
            row: dict[str, Any] = {"backbone": s.backbone, "recipe": s.recipe, "method": s.method,
                                   "n": max((st.n for st in s.stats.values()), default=0),
                                   "tasks": list(s.tasks), "seeds": list(s.seeds)}
            for m in order:
                st = s.stats.get(m)
                row[m], row[f"{m}_lo"], row[f"{m}_hi"] = (st.mean, st.lo, st.hi) if st else (math.nan,) * 3
            rows.append(row)
        columns = ["backbone", "recipe", "method", "n", "tasks", "seeds"] + [c for m in order
                                                                              for c in (m, f"{m}_lo", f"{m}_hi")]
        return pd.DataFrame(rows, columns=columns)

    def _model_cells(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, labels) of every saved model: m0 of each (backbone, recipe), method ``pretrained``; adapted ones."""
        out = []
        for key, c in self._configs().items():
            if c["kind"] == "pretrain":
                out.append((key, {**c["labels"], "method": names.PRETRAINED, "task": None, "seed": None}))
            elif c["kind"] == "adapt":
                out.append((key, {k: c["labels"].get(k) for k in LABELS}))
        return sorted(out, key=lambda kl: tuple(str(kl[1].get(k)) for k in LABELS))

    def models(self) -> "pd.DataFrame":
        """Every model the run saved, as a DataFrame: backbone, recipe, method, task, seed, cell."""
        pd = _pandas()
        rows = [{**{k: lab.get(k) for k in LABELS}, "cell": key} for key, lab in self._model_cells()]
        df = pd.DataFrame(rows, columns=[*LABELS, "cell"])
        df["seed"] = df["seed"].astype("Int64")
        return df

    def model(self, backbone: str | None = None, method: str | None = None, task: str | None = None,
              seed: int | None = None, recipe: str | None = None, *, device: str | torch.device | None = None,
              trust_checkpoint: bool = False) -> Model:
        """The model of the run's artifacts that the given labels select (None: any), in eval
        mode: an adapted model, or m0 with ``method="pretrained"``. A selection that matches
        no model or several is a ConfigError listing the models that exist (or that match).
        ``trust_checkpoint``: as ``load_model``'s (outside backbones' module sources)."""
        wanted = {"backbone": backbone, "recipe": recipe, "method": method, "task": task, "seed": seed}
        given = {k: v for k, v in wanted.items() if v is not None}
        cells = self._model_cells()
        found = [(k, lab) for k, lab in cells if all(lab.get(f) == v for f, v in given.items())]
        what = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "no labels"
        if not found:
            listing = "; ".join(_describe(lab) for _, lab in cells[:40]) or "none"
            more = f" (and {len(cells) - 40} more)" if len(cells) > 40 else ""
            raise ConfigError("model", f"no model of run {self.out_dir} matches {what}. Its models: {listing}{more}")
        if len(found) > 1:
            listing = "; ".join(_describe(lab) for _, lab in found[:40])
            raise ConfigError("model", f"{len(found)} models of run {self.out_dir} match {what}: {listing}. Give more "
                                       "of backbone, recipe, method, task, seed")
        key = found[0][0]
        from .engine.artifacts import ArtifactStore

        artifacts = ArtifactStore(self.out_dir / "artifacts")
        damage = artifacts.check(key, full=False)
        if damage:
            raise DataError(f"the model {_describe(found[0][1])} cannot be loaded: {damage}; run the spec again on "
                            f"{self.out_dir} to recompute it")
        m = load_model(artifacts.path(key), trust_checkpoint=trust_checkpoint)
        return (m.to(device) if device is not None else m).eval()

    def failures(self) -> "pd.DataFrame":
        """The failed cells as a DataFrame: kind, backbone, recipe, method, task, seed, error, failure, traceback."""
        pd = _pandas()
        store = self._store()
        try:
            cells = store.cells("failed")
        finally:
            store.close()
        rows = [{"kind": c["kind"], **{k: c["labels"].get(k) for k in LABELS}, "error": c["error"],
                 "failure": c["failure"], "traceback": c["traceback"]} for c in cells]
        return pd.DataFrame(rows, columns=["kind", *LABELS, "error", "failure", "traceback"])

    def report(self, figures: bool = True):
        """Write report.html (with figures) and report.md of the run, as `ribench report`; returns their paths."""
        from .report import write_reports

        reports = write_reports(self.out_dir, figures=figures)
        return reports.html, reports.markdown


# ------------------------------------------------------------------------ evaluate_model


@dataclass
class ModelEvaluation:
    """What ``evaluate_model`` measured.

    ``summary``: the protocol's numbers of the model (id_acc with a task, R, dR, P_acc, dP,
    corr_acc, mCE, rel_mCE, robust_acc, transfer_robust_acc, id_ece, id_nll: those that
    apply), fractions. ``metrics``: eval set -> metric -> value, as a run stores them for
    an evaluate cell (the summary under ``"*"``, attack rows under ``attack/...``);
    ``reference``: the same for the reference model, as for an eval_pretrained cell (None
    without one). ``warnings``: the gradient-masking checks' warnings.
    """

    task: str | None
    summary: dict[str, float]
    metrics: dict[str, dict[str, float]] = field(repr=False)
    reference: dict[str, dict[str, float]] | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)

    def __getitem__(self, metric: str) -> float:
        return self.summary[metric]

    def results(self) -> "pd.DataFrame":
        """Every number as a long DataFrame: model (``"model"`` or ``"reference"``), eval_set, metric, value."""
        pd = _pandas()
        rows = [{"model": who, "eval_set": es, "metric": m, "value": v}
                for who, metrics in (("model", self.metrics), ("reference", self.reference or {}))
                for es, row in metrics.items() for m, v in row.items()]
        return pd.DataFrame(rows, columns=["model", "eval_set", "metric", "value"])


def _validated(cls: type[BaseModel], value: Any, where: str) -> Any:
    """``value`` validated as the spec section ``cls``; a ConfigError names the field."""
    if isinstance(value, cls):
        return value
    try:
        return cls.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise ConfigError(where + path, "unknown field" if err["type"] == "extra_forbidden" else err["msg"]) from None


def _attack_configs(attacks: Iterable[Any]) -> list[dict[str, Any]]:
    """A spec's ``attacks`` entries, validated as a run validates them (``plan.attack_configs``)."""
    out = []
    for i, a in enumerate(attacks):
        entry = _validated(AttackEntry, a, f"attacks[{i}]")
        try:
            check_attack(entry.name, entry.eps, entry.params)
        except ConfigError as e:
            raise ConfigError(f"attacks[{i}].params", str(e)) from None
        except RibenchError as e:
            raise ConfigError(f"attacks[{i}].name", str(e)) from None
        out.append(entry.model_dump())
    return out


def _with_corruption_sets(suite: Suite, spec: CorruptionSpec) -> Suite:
    """``suite`` with the corruption sets a run's ``corruptions`` section makes (its corrupt
    cells, engine/execute.py ``run_corrupt``) in place of its built-in ones."""
    corruptions: list[str] = []
    for n in spec.names:
        found = CORRUPTIONS.names(n) if "*" in n else [CORRUPTIONS.get(n) and n]
        if not found:
            raise ConfigError("corruptions.names", f"{n!r} matches no registered corruption")
        corruptions += [x for x in found if x not in corruptions]
    dom = suite.pretrain if spec.domain == "pretrain" else suite.domain(spec.domain)
    test = seeded_sample(dom.test, spec.subset, derive_seed("corrupt-subset", spec.seed, spec.domain))
    sets, mapping = {}, {}
    for c in corruptions:
        for s in spec.severities:
            images = corrupt(test.images, c, s, derive_seed("corrupt", spec.seed, c, s))
            name = corruption_set(c, s)
            sets[name], mapping[name] = Domain(name, Split(images, test.labels)), (c, s)
    others = {n: d for n, d in suite.eval_sets.items() if n not in suite.corruptions}
    return replace(suite, eval_sets={**others, **sets}, corruptions=mapping)


def _as_model(model: nn.Module, input: Any, head: str | None, feature_layer: str | None, where: str) -> Model:
    if isinstance(model, Model):
        return model
    if not isinstance(model, nn.Module):
        raise ConfigError(where, f"must be a ribench Model or an nn.Module, got {type(model).__name__}")
    if input is None:
        raise ConfigError("input", f"{where} is a plain {type(model).__name__}: give its input spec, input={{'size': "
                                   "..., 'channels': ..., 'mean': [...], 'std': [...]}} (and head= its nn.Linear "
                                   "classifier when not head, fc or classifier)")
    if isinstance(input, InputSpec):
        input = _spec_table(input)
    spec = parse_entry({"source": LIVE_SOURCE, "input": input}, where).input  # checked as a backbone table's
    return wrap_module(copy.deepcopy(model), spec, head, feature_layer, where=where)


def evaluate_model(model: nn.Module, suite: str | Suite = "digits", *, reference: nn.Module | None = None,
                   task: str | None = None, attacks: Sequence[Mapping[str, Any]] = (),
                   corruptions: Mapping[str, Any] | None = None, input: Mapping[str, Any] | InputSpec | None = None,
                   head: str | None = None, feature_layer: str | None = None, batch_size: int = 512,
                   max_per_set: int | None = None, data_seed: int = 0, suite_options: Mapping[str, Any] | None = None,
                   data_root: str | None = None, suite_file: str | None = None,
                   device: str | torch.device | None = None, threads: int | None = 1,
                   precision: str = "fp32") -> ModelEvaluation:
    """Evaluate ``model`` on every eval set of ``suite``, its corruption sets and ``attacks``,
    and return the protocol's numbers against ``reference`` (the pretrained model m0), as a
    run computes and stores them for an evaluate cell (and, for the reference, an
    eval_pretrained cell) with the same settings.

    ``model`` / ``reference``: ribench Models, or plain ``nn.Module`` classifiers with their
    ``input`` spec (and ``head``, ``feature_layer``: docs/backbones.md; each is wrapped as a
    copy). ``task``: the task the model was adapted to (its ID task; R is then over the
    other tasks); None: a model of no task, summarised as m0 is (R over every task).
    Without a reference, the numbers that need one (dR, dP, mCE and rel_mCE against m0)
    are left out. ``attacks``: entries of a spec's ``attacks`` (docs/attacks.md);
    ``corruptions``: a spec's ``corruptions`` table (engine-made corruption sets in place
    of the suite's built-in ones; None: the built-in ones). ``batch_size`` and
    ``max_per_set`` are the spec's ``[eval]`` ones, ``data_seed``, ``suite_options``,
    ``data_root``, ``suite_file``, ``threads`` (None: leave torch's setting) and
    ``precision`` the spec's fields of those names. ``device``: move both models there
    (None: where they are).
    """
    atk = _attack_configs(attacks)
    corr = None if corruptions is None else _validated(CorruptionSpec, corruptions, "corruptions")
    if isinstance(suite, Suite):
        s = suite
    else:
        s = build_suite(suite, seed=data_seed, data_root=data_root, suite_file=suite_file,
                        options=dict(suite_options or {}))
    if corr is not None:
        s = _with_corruption_sets(s, corr)
    if task is not None and task not in s.tasks:
        raise UnknownNameError(f"task of suite {s.name!r}", task, list(s.tasks))
    m = _as_model(model, input, head, feature_layer, "model")
    ref = None if reference is None else _as_model(reference, input, head, feature_layer, "reference")
    for who, x in (("model", m), ("reference", ref)):
        if x is not None and x.num_classes != s.num_classes:
            raise ConfigError(who, f"has {x.num_classes} classes, suite {s.name!r} has {s.num_classes}")
    if device is not None:
        m = m.to(device)
        ref = None if ref is None else ref.to(device)
    sets = s.all_eval_sets()

    def measured(x: Model) -> dict[str, dict[str, float]]:
        return evaluate(x, sets, batch_size, max_per_set=max_per_set, subset_seed=data_seed)

    warnings: list[str] = []

    def attacked(x: Model, on: str | None, source: Model | None = None) -> dict[str, dict[str, float]]:
        """Attack rows on task ``on`` (None: on every task, each row naming its task, as m0's)."""
        out: dict[str, dict[str, float]] = {}
        for t in ([on] if on is not None else list(s.tasks)) if atk else []:
            rep = attack_rows(x, s.tasks[t], atk, data_seed, task=None if on is not None else t, source=source)
            warnings.extend(rep.warnings if rep.checked else [])
            out.update(rep.rows)
        return out

    with fixed_threads(threads) if threads else nullcontext(), compute_options(ComputeOptions(precision=precision)):
        ref_metrics = None
        if ref is not None:  # engine/execute.py run_eval_pretrained
            ref_metrics = measured(ref)
            acc0 = accuracies(ref_metrics)
            summary0 = summarize(None, acc0, acc0, s)
            ref_attacked = attacked(ref, None)
            summary0.update(robust_summary(ref_attacked))
            ref_metrics = {**ref_metrics, **ref_attacked, names.SUMMARY: summary0}
        per_set = measured(m)  # engine/execute.py run_evaluate
        acc = accuracies(per_set)
        summary = summarize(task, acc, accuracies(ref_metrics) if ref_metrics else acc, s)
        if ref_metrics is None:  # against itself: the changes are 0 by construction, m0's mCE is 1
            for k in ("dR", "dP") + (() if s.reference_errors is not None else ("mCE", "rel_mCE")):
                summary.pop(k, None)
        if task is not None:
            summary.update(id_ece=per_set[task]["ece"], id_nll=per_set[task]["nll"])
        rows = attacked(m, task, source=ref)
        summary.update(robust_summary(rows))
        if ref_metrics is not None and task is not None:
            add_robust_deltas(rows, ref_metrics, task)
        per_set.update(rows)
    return ModelEvaluation(task, summary, {**per_set, names.SUMMARY: summary}, ref_metrics, warnings)
