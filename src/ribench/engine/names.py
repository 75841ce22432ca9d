"""Every name a run spec gives, resolved against its registry when the spec is loaded.

``parse_spec`` calls ``check_names``: the suite, the backbones (and the optional package
an outside backbone's source needs: timm, transformers), the recipes, the methods with
their hyperparameters, labels and requirements, the attacks with their budgets (and
torchattacks for ``autoattack``), the estimators and the corruptions are looked up
there, so a typo fails as a ``ConfigError`` naming the field (an unknown name is also an
``UnknownNameError`` listing the valid ones) before any data is built or anything runs.
The planner (plan.py) resolves the spec through the same functions.

Methods and their labels (docs/methods.md, "Sweeps and labels"). Each entry of
``methods`` has a **label**, the name of its cells and of its result rows (the results
store's ``method`` column): the entry's ``label`` when it sets one; else its method's
name when no other entry has that name; else the name followed by the hyperparameters
in which the entries of that name differ, ``lora[r=4]`` and ``lora[r=16]``. Two entries
with one label, or two that compute the same thing (same method, parameters and
inputs), are an error naming both. A requirement (``lpft`` requires ``lp``) is met by
the spec's one entry of the required method; when it has several, the requiring entry
chooses with ``requires = {lp = "<label>"}``; a required method the spec does not list
is added with its defaults, labelled by its name. The label is not part of any cell's
key (a key says what a cell computes, not what it is called), so a spec whose method
names are unique and that sets no label plans exactly the cells it always did, and the
runner gives finished cells the labels of the current spec.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError, RibenchError, UnknownNameError
from ..core.registry import CORRUPTIONS, ESTIMATORS, METHODS, MODELS, SUITES

# in the layers' order (plan.py says why)
from ..models import external
from ..models.pretrain import RECIPES
from ..methods.base import Method
from ..evaluate.attacks import MASKING_VERSION, autoattack_available, check_attack, get_attack
from ..analysis.transferability import list_estimators

if TYPE_CHECKING:
    from .spec import MethodEntry, RunSpec

# the source kind of an outside backbone -> (the package it imports, the extra that installs it)
OPTIONAL_PACKAGES = {"timm": ("timm", "timm"), "hf": ("transformers", "hf")}


class UnknownSpecName(ConfigError, UnknownNameError):
    """A name of the spec that its registry lacks: a ConfigError naming the field, and an
    UnknownNameError listing the valid names (with the closest one as a hint)."""

    def __init__(self, field: str, kind: str, name: str, valid: list[str]):
        message = str(UnknownNameError(kind, name, valid))
        self.field, self.kind, self.name, self.valid = field, kind, name, list(valid)
        Exception.__init__(self, f"{field}: {message}")


def check_names(spec: "RunSpec", packages: bool = True) -> None:
    """Resolve every name of ``spec`` (module docstring); ``packages``: also check that the optional
    packages its outside backbones need import (a stored run is read without them)."""
    if spec.suite_file is None and spec.suite not in SUITES:
        raise UnknownSpecName("suite", "suite", spec.suite, SUITES.names())
    entries = outside_backbones(spec)
    if packages:
        check_packages(spec, entries)
    for i, r in enumerate(spec.recipes):
        if r not in RECIPES:
            raise UnknownSpecName(f"recipes[{i}]", "pretraining recipe", r, list(RECIPES))
    method_table(spec)
    attack_configs(spec)
    estimator_versions(spec)
    corruption_names(spec)


# ---------------------------------------------------------------------------- backbones
def outside_backbones(spec: "RunSpec") -> dict[int, Any]:
    """Index in ``spec.backbones`` -> ``BackboneEntry`` for outside backbones: the tables as the
    spec's validation parsed them (``RunSpec.outside_entries``), and preset names; an unknown
    name fails listing the registered backbones and the presets."""
    out = spec.outside_entries
    for i, b in enumerate(spec.backbones):
        if i in out or (isinstance(b, str) and b in MODELS):
            continue
        if isinstance(b, str) and b not in external.list_presets():
            raise UnknownSpecName(f"backbones[{i}]", "model", b, MODELS.names() + external.list_presets())
        out[i] = external.parse_entry(b, f"backbones[{i}]")
    return dict(sorted(out.items()))


def check_packages(spec: "RunSpec", entries: dict[int, Any]) -> None:
    """An outside backbone whose source needs a package that does not import here fails now,
    naming its field and the pip command, not when its cell runs."""
    for i, entry in entries.items():
        if entry.kind not in OPTIONAL_PACKAGES:
            continue
        package, extra = OPTIONAL_PACKAGES[entry.kind]
        try:
            importlib.import_module(package)
        except Exception as e:  # noqa: BLE001 - an installed package may fail to import (a missing dependency)
            given = spec.backbones[i]
            field = f"backbones[{i}]" if isinstance(given, str) else \
                f"backbones[{i}].{'preset' if entry.preset else 'source'}"
            raise ConfigError(field, f"{entry.source!r} needs the package {package!r}, which does not import here "
                                     f"({type(e).__name__}: {e}); install it: pip install 'ribench[{extra}]'") from None


# ------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class PlannedMethod:
    """One method of a run: ``label`` (what its cells and rows are called), the registered
    ``name``, the ``method`` built with the entry's parameters, the labels of the entries that
    give it ``method.requires`` (in that order), and ``where``: its entry (``methods[2]``), or
    ``methods`` for a required method the spec does not list (added with its defaults)."""

    label: str
    name: str
    method: Method
    requires: tuple[str, ...]
    where: str


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)


def default_labels(entries: list["MethodEntry"], methods: list[Method]) -> list[str]:
    """Each entry's label: its ``label``; else its name, when no other entry has it; else the
    name and the parameters in which the entries of that name differ (``lora[r=4]``)."""
    by_name: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_name.setdefault(e.name, []).append(i)
    out = []
    for i, e in enumerate(entries):
        if e.label is not None:
            out.append(e.label)
            continue
        same = [methods[j].params() for j in by_name[e.name]]
        if len(same) == 1:
            out.append(e.name)
            continue
        keys = sorted({k for p in same for k in p})
        differ = [k for k in keys if len({_value_text(p.get(k)) for p in same}) > 1]
        own = methods[i].params()
        out.append(f"{e.name}[{','.join(f'{k}={_value_text(own.get(k))}' for k in differ)}]" if differ else e.name)
    return out


def method_table(spec: "RunSpec") -> dict[str, PlannedMethod]:
    """Label -> PlannedMethod of every method the run adapts, each after those it requires
    (module docstring: labels, requirements)."""
    entries = list(spec.methods)
    methods = []
    for i, e in enumerate(entries):
        if e.name not in METHODS:
            raise UnknownSpecName(f"methods[{i}].name", "method", e.name, METHODS.names())
        methods.append(METHODS.create(e.name, **e.params))  # a bad parameter fails naming it
    labels = default_labels(entries, methods)
    first: dict[str, int] = {}
    for i, (e, label) in enumerate(zip(entries, labels)):
        if e.label is not None and label != e.name and label in METHODS:
            raise ConfigError(f"methods[{i}].label", f"{label!r} is the name of another method; choose another label")
        if label in first:
            raise ConfigError(f"methods[{i}]", f"its label {label!r} is also the label of methods[{first[label]}]; "
                                               "give one of them another `label` (or other params)")
        first[label] = i
    listed = {label: (i, entries[i], methods[i]) for label, i in first.items()}
    table: dict[str, PlannedMethod] = {}

    def supplier(label: str, where: str, chosen: dict[str, str], required: str) -> str:
        """The label of the entry that gives ``label`` its required method ``required``."""
        if required in chosen:
            pick = chosen[required]
            if pick not in listed or listed[pick][1].name != required:
                valid = [lab for lab, (_, e, _) in listed.items() if e.name == required]
                raise ConfigError(f"{where}.requires.{required}", f"{pick!r} is no label of a {required!r} entry; "
                                  f"the spec's: {', '.join(valid) or f'none (drop it: {required!r} is then added)'}")
            return pick
        found = [lab for lab, (_, e, _) in listed.items() if e.name == required]
        if len(found) > 1:
            raise ConfigError(f"{where}.requires", f"{label!r} requires {required!r}, and the spec lists "
                              f"{len(found)} {required!r} entries ({', '.join(found)}): choose one with "
                              f"requires = {{{required} = \"{found[0]}\"}}")
        return found[0] if found else required  # not listed: added with its defaults

    def visit(label: str, stack: tuple[str, ...]) -> None:
        if label in table:
            return
        if label in stack:
            raise ConfigError("methods", f"methods require each other in a cycle: {' -> '.join(stack + (label,))}")
        if label in listed:
            i, e, m = listed[label]
            name, where, chosen = e.name, f"methods[{i}]", dict(e.requires)
            unknown = sorted(set(chosen) - set(m.requires))
            if unknown:
                raise ConfigError(f"{where}.requires.{unknown[0]}", f"{e.name!r} requires "
                                  f"{', '.join(map(repr, m.requires)) or 'no other method'}")
        else:
            name, where, chosen, m = label, "methods", {}, METHODS.create(label)
        needs = tuple(supplier(label, where, chosen, r) for r in m.requires)
        for r in needs:
            visit(r, stack + (label,))
        table[label] = PlannedMethod(label, name, m, needs, where)

    for label in listed:
        visit(label, ())
    _check_distinct(table)
    return table


def _check_distinct(table: dict[str, PlannedMethod]) -> None:
    """Two labels that would compute the same models (same method, parameters and inputs) fail."""
    sig: dict[str, str] = {}
    seen: dict[str, str] = {}
    for label, pm in table.items():  # requirements come first
        sig[label] = json.dumps([pm.name, pm.method.params(), [sig[r] for r in pm.requires]], sort_keys=True,
                                default=str)
        if sig[label] in seen:
            other = seen[sig[label]]
            raise ConfigError(pm.where, f"{label!r} and {other!r} are the same method with the same parameters and "
                                        "inputs: one computation under two labels; drop one")
        seen[sig[label]] = label


# ------------------------------------------------------------- attacks, estimators, corruptions
def attack_configs(spec: "RunSpec") -> list[dict[str, Any]]:
    """The spec's attacks as evaluate-cell config: names, radii and budgets checked, code
    versions folded in."""
    out = []
    for i, a in enumerate(spec.attacks):
        if a.name == "autoattack" and not autoattack_available():
            raise ConfigError(f"attacks[{i}].name", "autoattack needs the optional package torchattacks, which is not "
                                                    "installed here: pip install --no-deps torchattacks")
        try:
            version = check_attack(a.name, a.eps, a.params)
        except UnknownNameError as e:
            raise UnknownSpecName(f"attacks[{i}].name", "attack", a.name, e.valid) from None
        except ConfigError as e:
            raise ConfigError(f"attacks[{i}].params", str(e)) from None
        except RibenchError as e:
            raise ConfigError(f"attacks[{i}].name", str(e)) from None
        masking = {"masking": MASKING_VERSION} if a.check_masking and get_attack(a.name).norm in ("linf", "l2") else {}
        out.append({**a.model_dump(), **({"version": version} if version != "1" else {}), **masking})
    return out


def estimator_versions(spec: "RunSpec") -> dict[str, str]:
    """The analysis section's estimators, resolved (``"all"``: every registered one) -> version."""
    names = list_estimators() if spec.analysis.estimators == "all" else list(spec.analysis.estimators)
    out = {}
    for n in names:
        if n not in ESTIMATORS:
            raise ConfigError("analysis.estimators", f"{n!r} is not a registered estimator; valid: "
                              f"{', '.join(list_estimators())}")
        out[n] = ESTIMATORS.version(n)
    return out


def resolve_corruption(name: str, field: str) -> str:
    """The registered corruption ``name`` denotes: itself, or for ``<family>/<member>`` where only
    ``member`` is registered (the digits v1 suite labels its legacy ``gaussian_noise`` sets
    ``mnist-c/gaussian_noise/<severity>``), ``member``. Anything else fails, saying the spelling."""
    if name in CORRUPTIONS:
        return name
    families = {n.split("/", 1)[0] for n in CORRUPTIONS.names() if "/" in n}
    family, _, member = name.partition("/")
    if family in families and member in CORRUPTIONS:
        return member
    head, _, severity = name.rpartition("/")
    if severity.isdigit() and head and _resolves(head):
        raise ConfigError(field, f"{name!r} names an eval set (a corruption at severity {severity}); write the "
                                 f"corruption, {head!r}, and its severities in `severities`")
    raise UnknownSpecName(field, "corruption", name, CORRUPTIONS.names())


def _resolves(name: str) -> bool:
    try:
        resolve_corruption(name, "")
    except RibenchError:
        return False
    return True


def corruption_names(spec: "RunSpec") -> list[str]:
    """The registered corruptions of the ``corruptions`` section, in order, each once (a family
    pattern such as ``mnist-c/*`` expanded)."""
    c = spec.corruptions
    if c is None:
        return []
    names: list[str] = []
    for i, n in enumerate(c.names):
        found = CORRUPTIONS.names(n) if "*" in n else [resolve_corruption(n, f"corruptions.names[{i}]")]
        if not found:
            raise ConfigError(f"corruptions.names[{i}]", f"{n!r} matches no registered corruption")
        names += [x for x in found if x not in names]
    return names
