"""A RobustBench-style leaderboard of a run: JSON for machines, a Markdown table for a README.

One entry per adapted (backbone, recipe, method); the pretrained models m0 are the
reference every Δ is taken against and are listed under ``"pretrained"``, not ranked.
Every field is a number (accuracies and changes in %, rounded to 2 decimals), except
the labels and ``hyperparameters``. Fields without data in the run (e.g. ``robust_acc``
without attacks) are left out of the entry, never null; so is ``robust_acc`` of a model
attacked at several budgets, whose summary would average them.

Under attack, ``"robustness"`` holds one row per (model, threat model, eps, attack), in
RobustBench's terms (``threat_model``, ``eps``, ``attack``, ``n_examples``, ``clean_acc``,
``robust_acc``), with the model's RIB fields, its method label and hyperparameters
(``robustness_rows``). A row is the mean of the stored attack rows of one budget over
tasks and seeds: never an average over budgets or attacks.

The fields, their units and leaderboard.md's columns are those of ``catalogue.SUMMARY_METRICS``
with a ``board`` name; the numbers are ``aggregate.summarize_methods``'s, as in the reports.

``pretrain_domain``: the name of the pretraining domain (the run's layout) that ``pretrain_acc``
and ``delta_P`` are measured on.

``gradient_masking_suspected`` (entries, references and robustness rows of models attacked
by a white-box attack, in runs that store the mark): true when some attack row behind the
robust accuracy has ``masked`` = 1.0 (``aggregate.masking_marks``); leaderboard.md puts
``†`` after such a robust accuracy. Runs stored before the mark have no such field.

Entries are sorted by ``SORT_KEY``: OOD robustness R (descending), then clean (ID)
accuracy (descending), then the model name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import aggregate as agg
from . import catalogue
from .catalogue import LOWER, MASK_MARK, MISSING, Metric
from ..core import rows as names
from .rundata import RunSource, as_run

MASKING_FIELD = "gradient_masking_suspected"  # true when a white-box attack row behind the robust accuracy is marked
SORT_KEY = ("ood_robustness desc", "clean_acc desc", "model asc")
COUNTS = (("n_tasks", "tasks"), ("n_seeds", "seeds"))
ROBUSTNESS_SORT_KEY = ("threat_model asc", "eps asc", "attack asc", "robust_acc desc", "model asc")
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l0": "L0"}  # an attack's norm as RobustBench names the threat model
# the RIB fields a robustness row repeats from its model's entry (``id_acc``: the entry's ``clean_acc``)
RIB_FIELDS = (("clean_acc", "id_acc"), ("ood_robustness", "ood_robustness"), ("delta_R", "delta_R"),
              ("pretrain_acc", "pretrain_acc"), ("delta_P", "delta_P"), ("corruption_acc", "corruption_acc"),
              ("mCE", "mCE"))


def board_metrics() -> list[Metric]:
    """The summary metrics on the leaderboard (those with a ``board`` name), in catalogue order."""
    return [m for m in catalogue.SUMMARY_METRICS if m.board]


def units() -> dict[str, str]:
    """field -> its unit, and "(lower is better)" where lower is better."""
    return {m.board: m.unit.name + (" (lower is better)" if m.direction == LOWER else "") for m in board_metrics()}


def _fields(stats: dict[str, agg.Stat], reference: bool = False) -> dict[str, float | int]:
    """The leaderboard fields of one summary (``reference``: those listed for m0, no spread)."""
    out: dict[str, float | int] = {}
    for m in board_metrics():
        s = stats.get(m.name)
        if s is None or s.n == 0 or not math.isfinite(s.mean) or (reference and not m.reference):
            continue
        out[m.board] = m.unit.rounded(s.mean)
        if m.board_std and not reference:
            out[f"{m.board}_std"] = m.unit.rounded(s.std)
    return out


Configs = dict[tuple[str, str, str], dict[str, Any]]  # (backbone, recipe, label) -> method_name, hyperparameters


def method_configs(source: RunSource) -> Configs:
    """(backbone, recipe, method label) -> ``{"method_name": ..., "hyperparameters": {...}}`` as the
    run's adapt cells recorded them (``RunData.adapt_configs``); a label adapted with several
    configs gets lists of them."""
    adapt = as_run(source).adapt_configs
    found: dict[tuple[str, str, str], dict[str, tuple[str, dict]]] = {}
    for rec in adapt.values():
        lab, cfg = rec["labels"], rec["config"]
        key = (lab.get("backbone"), lab.get("recipe"), lab.get("method"))
        item = (cfg.get("method"), cfg.get("params", {}))
        found.setdefault(key, {})[json.dumps(item, sort_keys=True, default=str)] = item
    out: Configs = {}
    for key, items in found.items():
        names_ = sorted({m for m, _ in items.values()}, key=str)
        params = [p for _, (_, p) in sorted(items.items())]
        out[key] = {"method_name": names_[0] if len(names_) == 1 else names_,
                    "hyperparameters": params[0] if len(params) == 1 else params}
    return out


def _budgets(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, bool], set[tuple[str, float]]]:
    """(backbone, recipe, method, transfer) -> the (attack, eps) budgets of its stored attack rows."""
    out: dict[tuple[str, str, str, bool], set[tuple[str, float]]] = {}
    for r in rows:
        parsed = names.parse_attack(r["eval_set"])
        if parsed is not None:
            out.setdefault((r["backbone"], r["recipe"], r["method"], parsed.transfer), set()).add(
                (parsed.name, parsed.eps))
    return out


def _one_budget(fields: dict[str, Any], key: tuple[str, str, str], budgets: dict) -> dict[str, Any]:
    """``fields`` without the summary's robust accuracies where they average several budgets."""
    for board, transfer in (("robust_acc", False), ("transfer_robust_acc", True)):
        if len(budgets.get((*key, transfer), ())) > 1:
            fields.pop(board, None)
            fields.pop(f"{board}_std", None)
    return fields


def leaderboard_entries(rows: list[dict[str, Any]], configs: Configs | None = None
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ranked entries of adapted models, reference entries of the pretrained models).

    ``robust_acc`` / ``transfer_robust_acc`` are given only for a model attacked at one budget
    (one attack, one eps): with several, the summary's mean would average budgets, and the
    numbers are those of ``robustness_rows``, one per budget."""
    entries, refs = [], []
    budgets = _budgets(rows)
    marks = agg.masking_marks(rows)
    for s in agg.summarize_methods(rows):
        key = (s.backbone, s.recipe, s.method)
        base = {"model": f"{s.backbone}/{s.recipe}/{s.method}", "backbone": s.backbone, "recipe": s.recipe,
                "method": s.method, **(configs or {}).get(key, {})}
        if key in marks:
            base[MASKING_FIELD] = marks[key].suspect
        if s.method == agg.PRETRAINED:
            refs.append({**base, **_one_budget(_fields(s.stats, reference=True), key, budgets)})
            continue
        entries.append({**base, **_one_budget(_fields(s.stats), key, budgets), "n_tasks": len(s.tasks),
                        "n_seeds": len(s.seeds)})
    entries.sort(key=lambda e: (-e.get("ood_robustness", -math.inf), -e.get("clean_acc", -math.inf), e["model"]))
    return [{"rank": i, **e} for i, e in enumerate(entries, start=1)], refs


def attack_label(name: str) -> tuple[str, str]:
    """(what the attack is called on the leaderboard, its threat model) of a registered attack name.

    ``autoattack`` is torchattacks' re-implementation (``attacks.autoattack.LABEL``) even when
    torchattacks is not installed where the leaderboard is written; an attack no longer
    registered keeps its stored name and an unknown threat model (``"?"``)."""
    from ..evaluate.attacks import ATTACKS
    from ..evaluate.attacks.autoattack import LABEL as AUTOATTACK_LABEL

    spec = ATTACKS.get(name)
    if spec is not None:
        return spec.label, THREAT_MODELS.get(spec.norm, spec.norm)
    if name == "autoattack":
        return AUTOATTACK_LABEL, "Linf"
    return name, "?"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def robustness_rows(rows: list[dict[str, Any]], entries: list[dict[str, Any]] = (),
                    configs: Configs | None = None) -> list[dict[str, Any]]:
    """One row per (backbone, recipe, method, attack, eps) with stored attack rows.

    ``clean_acc`` / ``robust_acc`` (%): means over the (task, seed) evaluations of the stored
    ``attack/<name>/eps=<eps>`` rows (m0's per-task rows ``.../<task>``), measured on the
    attacked images; ``robust_acc_std`` their sample std; ``n_examples``: the attacked images
    summed over those evaluations; ``delta_robust_acc`` (points, against m0 on the same
    images) and ``transfer_robust_acc`` (%, attacks crafted on m0) where stored. The model's
    RIB fields come from its leaderboard entry (``entries``, adapted or pretrained)."""
    # (backbone, recipe, method, attack, eps) -> metric -> (task, seed) -> value
    found: dict[tuple, dict[str, dict[tuple, float]]] = {}
    for r in rows:
        parsed = names.parse_attack(r["eval_set"])
        if parsed is None or r["value"] is None or not agg.is_model_row(r):
            continue
        metric = r["metric"]
        if parsed.transfer:
            if metric != "robust_acc":
                continue
            metric = "transfer_robust_acc"
        elif metric not in ("robust_acc", "clean_acc", "n", "delta_robust_acc"):
            continue
        key = (r["backbone"], r["recipe"], r["method"], parsed.name, parsed.eps)
        unit = (r["task"] if r["task"] is not None else parsed.task, r["seed"])
        found.setdefault(key, {}).setdefault(metric, {})[unit] = r["value"]
    by_model = {e["model"]: e for e in entries}
    marks = agg.masking_marks(rows, by_budget=True)
    out = []
    for (backbone, recipe, method, attack, eps), metrics in found.items():
        if "robust_acc" not in metrics:  # transfer rows alone: no attack on the model itself
            continue
        robust = metrics["robust_acc"]
        label, threat = attack_label(attack)
        model = f"{backbone}/{recipe}/{method}"
        row: dict[str, Any] = {"model": model, "backbone": backbone, "recipe": recipe, "method": method,
                               **(configs or {}).get((backbone, recipe, method), {}),
                               "threat_model": threat, "eps": int(eps) if threat == "L0" else eps,
                               "attack": label, "attack_name": attack}
        if "n" in metrics:
            row["n_examples"] = int(round(sum(metrics["n"].values())))
        if "clean_acc" in metrics:
            row["clean_acc"] = catalogue.PERCENT.rounded(_mean(list(metrics["clean_acc"].values())))
        row["robust_acc"] = catalogue.PERCENT.rounded(_mean(list(robust.values())))
        row["robust_acc_std"] = catalogue.PERCENT.rounded(agg.Stat.of(list(robust.values())).std)
        if "delta_robust_acc" in metrics:
            row["delta_robust_acc"] = catalogue.POINTS.rounded(_mean(list(metrics["delta_robust_acc"].values())))
        if "transfer_robust_acc" in metrics:
            row["transfer_robust_acc"] = catalogue.PERCENT.rounded(
                _mean(list(metrics["transfer_robust_acc"].values())))
        if (backbone, recipe, method, attack, eps) in marks:
            row[MASKING_FIELD] = marks[(backbone, recipe, method, attack, eps)].suspect
        entry = by_model.get(model, {})
        row.update({field: entry[src] for src, field in RIB_FIELDS if src in entry})
        row["n_tasks"] = len({t for t, _ in robust if t is not None})
        seeds = {s for _, s in robust if s is not None}
        if seeds:  # m0's rows have none
            row["n_seeds"] = len(seeds)
        out.append({k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))})
    out.sort(key=lambda r: (r["threat_model"], r["eps"], r["attack"], -r["robust_acc"], r["model"]))
    return out


def leaderboard(source: RunSource) -> dict[str, Any]:
    """The leaderboard document of a run (``RunData`` or folder; what ``write_leaderboard`` saves)."""
    run = as_run(source)
    configs = method_configs(run)
    entries, refs = leaderboard_entries(run.rows, configs)
    doc = {"benchmark": "ribench", "protocol": "robustness inheritance (ImageNet-RIB)", "run": run.name,
           "suite": run.suite.name if run.spec.get("suite_file") else run.spec.get("suite"), "sort_key": list(SORT_KEY), "units": units(),
           "entries": entries, "pretrained": refs}
    if run.layout.get("pretrain"):
        doc["pretrain_domain"] = run.layout["pretrain"]
    robustness = robustness_rows(run.rows, entries + refs, configs)
    if robustness:
        doc["robustness_sort_key"] = list(ROBUSTNESS_SORT_KEY)
        doc["robustness"] = robustness
    return doc


def _cell(e: dict[str, Any], m: Metric) -> str:
    v = e.get(m.board)
    if v is None:
        return MISSING
    decimals = 0 if m.unit.grouped else m.unit.decimals + 1
    text = format(v, f"{'+' if m.unit.signed else ''}{',' if m.unit.grouped else ''}.{decimals}f")
    if m.board == "robust_acc" and e.get(MASKING_FIELD):
        text += MASK_MARK
    sd = e.get(f"{m.board}_std")
    return f"{text} ± {sd:.{decimals}f}" if sd else text


MASKING_NOTE = (f"{MASK_MARK} gradient masking suspected (`{MASKING_FIELD}`): more than half of the attacked images "
                "of some attack row behind this robust accuracy have a zero input gradient; the robust accuracy "
                "overstates robustness.")


def leaderboard_markdown(doc: dict[str, Any]) -> str:
    """A Markdown table of the entries (columns without data left out) and a note on sorting."""
    entries = doc["entries"]
    fields = [m for m in board_metrics() if any(m.board in e for e in entries)]
    headers = ["rank", "model", *(m.board_column for m in fields), *(h for _, h in COUNTS)]
    lines = [f"Leaderboard of `{doc['run']}` (suite `{doc['suite']}`): sorted by OOD robustness R, then clean "
             "(ID) accuracy; mean ± std over tasks and seeds; ΔR and ΔP in points against the pretrained model"
             + (f"; P acc and ΔP on the pretraining domain `{doc['pretrain_domain']}`" if doc.get("pretrain_domain") else "")
             + ".", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join([str(e["rank"]), e["model"], *(_cell(e, m) for m in fields),
                                 *(str(e[k]) for k, _ in COUNTS)]) + " |" for e in entries]
    if any(e.get(MASKING_FIELD) and "robust_acc" in e for e in entries):
        lines += ["", MASKING_NOTE]
    if doc.get("robustness"):
        lines += ["", *_robustness_markdown(doc["robustness"])]
    return "\n".join(lines) + "\n"


# leaderboard.md's columns of the robustness rows: (field, header, format)
ROBUSTNESS_COLUMNS = (("threat_model", "threat model", "s"), ("eps", "eps", "g"), ("attack", "attack", "s"),
                      ("n_examples", "n", "d"), ("clean_acc", "clean acc %", ".2f"),
                      ("robust_acc", "robust acc %", ".2f"), ("delta_robust_acc", "Δ robust acc", "+.2f"),
                      ("transfer_robust_acc", "transfer acc %", ".2f"), ("ood_robustness", "R %", ".2f"),
                      ("delta_R", "ΔR", "+.2f"), ("delta_P", "ΔP", "+.2f"))


def _robustness_markdown(rows: list[dict[str, Any]]) -> list[str]:
    cols = [c for c in ROBUSTNESS_COLUMNS if any(c[0] in r for r in rows)]
    headers = ["model", *(h for _, h, _ in cols), *(h for _, h in COUNTS)]
    lines = ["Under attack: one row per model, threat model, budget (eps) and attack; robust and clean accuracy on "
             "the attacked images, mean over tasks and seeds (never over budgets); Δ robust acc in points against "
             "the pretrained model on the same images.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [format(r[k], f) + (MASK_MARK if k == "robust_acc" and r.get(MASKING_FIELD) else "")
                 if k in r else MISSING for k, _, f in cols]
        lines.append("| " + " | ".join([r["model"], *cells, *(str(r.get(k, MISSING)) for k, _ in COUNTS)]) + " |")
    if any(r.get(MASKING_FIELD) for r in rows):
        lines += ["", MASKING_NOTE]
    return lines


def write_leaderboard(source: RunSource, json_path: str | Path | None = None,
                      md_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/leaderboard.json`` and ``leaderboard.md`` (or the given paths)."""
    run = as_run(source)
    doc = leaderboard(run)
    jp = Path(json_path) if json_path is not None else run.out_dir / "leaderboard.json"
    mp = Path(md_path) if md_path is not None else run.out_dir / "leaderboard.md"
    jp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    mp.write_text(leaderboard_markdown(doc), encoding="utf-8")
    return jp, mp
