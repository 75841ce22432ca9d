"""The ``ribench`` command. Thin: parses arguments, then calls the layers.

Only what ``ribench --help`` needs anyway (the core, which brings torch) is imported at the
top; each command imports the layers it calls (the engine, reports, data), which would
otherwise add about a second to every command, ``--help`` included.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from .core.errors import RibenchError
from .core.registry import CORRUPTIONS, ESTIMATORS, METHODS, MODELS, SUITES
from .core.runtime import resolve_device
from .presets import PRESETS


def _run_options(a: argparse.Namespace, retry_failed: bool = False):
    from .engine.runner import RunOptions

    return RunOptions(runner=a.runner, workers=a.workers, threads=a.threads, retries=a.retries, backoff=a.backoff,
                      address=a.address, quiet=a.quiet, retry_failed=retry_failed)


def _given_spec(a: argparse.Namespace):
    """The spec file named on the command line, else the --preset."""
    from .engine.spec import load_preset, load_spec

    return load_spec(a.spec) if a.spec else load_preset(a.preset)


def _stored_spec(run_dir: str, check_packages: bool = True):
    """The spec a run folder was made with (its spec.json); ``check_packages=False`` reads it
    without the optional packages its outside backbones need (to look at the run, not to run it)."""
    from .engine.spec import parse_spec

    spec_path = Path(run_dir) / "spec.json"
    if not spec_path.is_file():
        raise RibenchError(f"{run_dir} holds no run (no spec.json); start one with `ribench run --out {run_dir}`")
    return parse_spec(json.loads(spec_path.read_text()), source=str(spec_path), check_packages=check_packages)


def _cmd_run(a: argparse.Namespace) -> int:
    spec = _given_spec(a).with_overrides(device=a.device, seeds=[a.seed] if a.seed is not None else None,
                                         trust_checkpoint=a.trust_checkpoint or None, threads=a.threads)
    return _execute(spec, Path(a.out or f"runs/{spec.name}"), a, retry_failed=False)


def _cmd_retry(a: argparse.Namespace) -> int:
    spec = _stored_spec(a.dir).with_overrides(threads=a.threads, trust_checkpoint=a.trust_checkpoint or None)
    return _execute(spec, Path(a.dir), a, retry_failed=True)


def _execute(spec, out: Path, a: argparse.Namespace, retry_failed: bool) -> int:
    from .engine.runner import run
    from .report import print_summary

    opts = _run_options(a, retry_failed)
    if not a.quiet:
        print(f"ribench: running {spec.name!r} into {out} ({opts.runner} runner)", file=sys.stderr)
    res = run(spec, out, options=opts)
    html, report, results = _write_reports(out)
    if not a.quiet:
        print_summary(results)
    print(f"{res.total} cells: {res.ran} ran, {res.cached} already done, {len(res.failed)} failed, "
          f"{res.skipped} skipped in {res.seconds:.1f} s" + (f" ({res.retried} retries)" if res.retried else ""))
    for cell, err in res.failed:
        print(f"  failed: {cell.describe()}: {err}")
    for cell, why in res.skipped_cells[:SKIPPED_SHOWN]:
        print(f"  skipped: {cell.describe()}: {why}")
    if len(res.skipped_cells) > SKIPPED_SHOWN:
        print(f"  ... and {len(res.skipped_cells) - SKIPPED_SHOWN} more skipped")
    print(f"report: {html} (Markdown: {report})")
    return 0 if res.ok else 1


SKIPPED_SHOWN = 20  # skipped cells listed after a run, each with the failed cell it waits on


def _write_reports(out: Path):
    from .report import write_reports

    return write_reports(out)  # report.html, report.md and the run they were made from: one read of the store


def _cmd_predict(a: argparse.Namespace) -> int:
    from .engine.runner import RunOptions, run
    from .report.export import results_rows
    from .report.markdown import _md
    from .report.prediction import prediction_notes, ranking_tables

    spec = _given_spec(a).with_overrides(device=a.device)
    out = Path(a.out or f"runs/{spec.name}")
    res = run(spec, out, options=RunOptions(quiet=a.quiet, kinds=("pretrain", "analysis")))
    rows = results_rows(out)
    for table in ranking_tables(rows):  # predictors that depend on the model only
        print(_md(table))
    for note in prediction_notes(rows):  # pixel OTDD is the same for every backbone: no ranks
        print(note + "\n")
    print(f"{res.ran} cells ran, {res.cached} already done, {len(res.failed)} failed; results in {out}")
    for cell, err in res.failed:
        print(f"  failed: {cell.describe()}: {err}")
    return 0 if res.ok else 1


def _cmd_status(a: argparse.Namespace) -> int:
    from .engine.runner import plan_run
    from .report.markdown import open_store

    store = open_store(a.dir)
    try:
        keys = [c.key for c in plan_run(_stored_spec(a.dir, check_packages=False))[1]]
        status = store.statuses()
        running = store.live_claims(stale_after=120.0)
        failed = store.cells("failed")
        done_cells = store.cells("done") if getattr(a, "timing", False) else []
    finally:
        store.close()
    done = sum(status.get(k) == "done" for k in keys)
    n_failed = sum(status.get(k) == "failed" for k in keys)
    n_running = sum(k in running and status.get(k) != "done" for k in keys)
    counts = {"total": len(keys), "done": done, "running": n_running, "failed": n_failed,
              "pending": len(keys) - done - n_failed - n_running}
    costs = _timing(done_cells, set(keys)) if getattr(a, "timing", False) else None
    if a.format == "json":
        out = {**counts, "failures": [{"kind": f["kind"], "labels": f["labels"], "error": f["error"]}
                                      for f in failed if f["key"] in set(keys)]}
        if costs is not None:
            out["timing"] = [{"kind": k.kind, "cells": k.count, "seconds": k.seconds, "mean_seconds": k.mean(),
                              "timed_cells": k.timed,
                              "phases": {p: {"seconds": v, "mean_seconds": k.mean(p)} for p, v in k.phases.items()}}
                             for k in costs]
        print(json.dumps(out, indent=2))
        return 0
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    for f in failed:
        if f["key"] in set(keys):
            print(f"  failed: {f['kind']} {'/'.join(str(v) for v in f['labels'].values() if v is not None)}: {f['error']}")
    if costs is not None:
        print("\ntime per kind of cell (seconds: total, mean per cell):")
        for k in costs:
            print(f"  {k.kind}: {k.count} cells, {k.seconds:.2f} s total, {k.mean():.3f} s mean")
            for p, v in k.phases.items():
                print(f"    {p}: {v:.2f} s total, {k.mean(p):.3f} s mean")
    return 0


def _timing(done_cells: list, keys: set) -> list:
    """``report.aggregate.cell_costs`` of the done cells of the run's plan."""
    from .report.aggregate import cell_costs

    return cell_costs(c for c in done_cells if c["key"] in keys)


def _writable_file(path: Path, flag: str) -> None:
    """Raise ConfigError (naming ``flag``) unless ``path`` can be written: a ``.safetensors`` name,
    not a folder, under no file, in a writable folder. Checked before anything is computed."""
    from .core.errors import ConfigError

    if path.is_dir():
        raise ConfigError(flag, f"{path} is a folder; name the file to write, e.g. {path / 'model.safetensors'}")
    if path.suffix != ".safetensors":
        raise ConfigError(flag, f"{path}: weights are written as safetensors; name the file *.safetensors")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(flag, f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(flag, f"cannot write {path}: folder {parent} is not writable")


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from . import models  # noqa: F401  (registers the backbones)
    from .data import build_suite
    from .models.checkpoint import save_model
    from .models.pretrain import PretrainConfig, get_recipe, pretrain_backbone

    # everything that would fail after training fails before it: the name, the recipe, the output file
    MODELS.get(a.backbone)
    get_recipe(a.recipe)
    out = Path(a.out or f"{a.backbone}-{a.recipe}.safetensors")
    _writable_file(out, "--out")
    suite = build_suite(a.suite, seed=a.data_seed)
    model, info = pretrain_backbone(a.backbone, suite, a.recipe, PretrainConfig(epochs=a.epochs), a.seed,
                                    resolve_device(a.device))
    save_model(model.cpu(), out, {"suite": suite.name, "recipe": a.recipe})
    print(f"pretrained {a.backbone} ({a.recipe}) in {info['train_seconds']:.1f} s -> {out}")
    return 0


def _attack_items(pattern: str) -> list[dict]:
    """The registered attacks (and autoattack, when torchattacks is missing) for `ribench list attacks`."""
    from .evaluate.attacks import ATTACKS, autoattack_available

    items = []
    for name in sorted(ATTACKS):
        if not fnmatch.fnmatch(name, pattern):
            continue
        spec = ATTACKS[name]
        budget = dict(spec.budget)
        items.append({"name": name, "description": f"{spec.label}: {spec.paper}", "norm": spec.norm,
                      "kind": "black-box" if spec.blackbox else "white-box",
                      "eps": budget.pop("eps"), "eps_unit": "pixels" if spec.norm == "l0" else "[0, 1] pixel units",
                      "budgets": budget, "available": True})
    if not autoattack_available() and fnmatch.fnmatch("autoattack", pattern):
        items.append({"name": "autoattack", "description": "AutoAttack (Croce & Hein 2020), through torchattacks",
                      "norm": "linf", "kind": "white-box", "eps": 0.1, "eps_unit": "[0, 1] pixel units",
                      "budgets": {}, "available": False,
                      "needs": "the torchattacks package: pip install --no-deps torchattacks"})
    return items


def _print_attacks(items: list[dict]) -> None:
    for it in items:
        budgets = " ".join(f"{k}={v}" for k, v in it["budgets"].items())
        line = (f"{it['name']:<12} {it['norm']:<5} {it['kind']:<10} eps={it['eps']:g} ({it['eps_unit']})"
                + (f", {budgets}" if budgets else "") + f"  {it['description']}")
        print(line + (f" [needs {it['needs']}]" if not it["available"] else ""))


def _cmd_list(a: argparse.Namespace) -> int:
    from . import analysis, data, methods, models  # noqa: F401  (registration)
    from .data.suites import suite_data_state
    from .methods.base import describe_config
    from .models.external import presets

    if a.what == "attacks":
        items = _attack_items(a.filter)
        if a.format == "json":
            print(json.dumps(items, indent=2, default=str))
        else:
            _print_attacks(items)
        return 0
    reg = {"models": MODELS, "methods": METHODS, "suites": SUITES, "estimators": ESTIMATORS,
           "corruptions": CORRUPTIONS}[a.what]
    items = []
    for name in reg.names(a.filter):
        obj = reg.get(name)
        doc = (obj.__doc__ or "").strip().splitlines()
        item = {"name": name, "description": doc[0] if doc else ""}
        if a.what == "methods":
            item["requires"] = list(obj.requires)
            item["params"] = describe_config(obj.Config) if dataclasses.is_dataclass(obj.Config) else []
        if a.what == "suites":
            item["data"] = suite_data_state(name, getattr(a, "root", None))
        if a.what == "models":  # backbones only: the kinds methods make are in their own registry
            item["kind"] = "built-in backbone" if getattr(obj, "__module__", "").startswith("ribench.") else \
                "backbone (plugin)"
        items.append(item)
    if a.what == "models":  # outside backbones by preset name (docs/backbones.md)
        items += [{"name": n, "description": p.get("description", ""), "kind": "preset (outside backbone)",
                   "source": p.get("source")} for n, p in presets().items() if fnmatch.fnmatch(n, a.filter)]
    if a.format == "json":
        print(json.dumps(items, indent=2, default=str))
    else:
        for it in items:
            req = f" (requires {', '.join(it['requires'])})" if it.get("requires") else ""
            missing = [d for d, st in it.get("data", {}).items() if st == "missing"]
            req += f" [missing data: {', '.join(missing)}]" if missing else ""
            kind = f" [{it['kind']}]" if it.get("kind", "built-in backbone") != "built-in backbone" else ""
            print(f"{it['name']:<12} {it['description']}{req}{kind}")
    return 0


def method_configs(run_dir: str | Path) -> list[dict]:
    """Each method label of a run with its registered method and full hyperparameters, as its
    adapt cells recorded them (one entry per distinct label, method and params)."""
    from .report.markdown import open_store

    store = open_store(run_dir)
    try:
        adapt = store.cell_configs("adapt")
    finally:
        store.close()
    out: dict[str, dict] = {}
    for rec in adapt.values():
        label, cfg = rec["labels"].get("method"), rec["config"]
        item = {"label": label, "method": cfg.get("method"), "params": cfg.get("params", {})}
        out.setdefault(json.dumps(item, sort_keys=True, default=str), item)
    return sorted(out.values(), key=lambda it: (str(it["label"]), json.dumps(it["params"], sort_keys=True)))


def _cmd_results(a: argparse.Namespace) -> int:
    from .report.export import export_results, results_rows, rows_to_text
    from .report.markdown import print_summary

    if a.methods:
        items = method_configs(a.dir)
        if a.format == "json":
            print(json.dumps(items, indent=2, default=str))
        elif a.format == "csv":
            import csv

            w = csv.writer(sys.stdout, lineterminator="\n")
            w.writerow(["label", "method", "params"])
            w.writerows([it["label"], it["method"], json.dumps(it["params"], sort_keys=True, default=str)]
                        for it in items)
        else:
            for it in items:
                print(f"{it['label']:<24} {it['method']:<16} {json.dumps(it['params'], sort_keys=True, default=str)}")
        return 0
    if a.format == "table":
        print_summary(a.dir)
    elif a.out or a.format == "parquet":
        print(f"wrote {export_results(a.dir, a.format, a.out)}")
    else:
        sys.stdout.write(rows_to_text(results_rows(a.dir), a.format))
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    html, md, _ = _write_reports(Path(a.dir))
    print(f"report: {html} (Markdown: {md})")
    return 0


def _cmd_leaderboard(a: argparse.Namespace) -> int:
    from .report.leaderboard import write_leaderboard

    js, md = write_leaderboard(a.dir)
    print(md.read_text())
    print(f"leaderboard: {js} and {md}")
    return 0


def _show_suite(name: str, data_seed: int | None):
    """The suite ``data show`` names: a registered suite, a user suite's TOML file (its
    ``[suite]`` table) or a run spec (the suite it runs: ``suite_file`` or ``suite``)."""
    import tomllib

    from .data import build_suite

    path = Path(name).expanduser()
    if not path.is_file():
        if path.suffix in (".toml", ".yaml", ".yml") or "/" in name:
            from .core.errors import DataError

            raise DataError(f"{name}: no such file (give a registered suite, a user suite's TOML file or a run spec)")
        return build_suite(name, seed=data_seed or 0)
    if path.suffix == ".toml" and isinstance(tomllib.loads(path.read_text()).get("suite"), dict):
        return build_suite(name, seed=data_seed or 0, suite_file=str(path))
    from .engine.execute import build_run_suite
    from .engine.spec import load_spec

    spec = load_spec(path)
    return build_run_suite(spec if data_seed is None else spec.model_copy(update={"data_seed": data_seed}))


def _cmd_data_show(a: argparse.Namespace) -> int:
    from .data.show import save_domain_grid

    suite = _show_suite(a.suite, a.data_seed)
    print(f"{suite.name} version {suite.version}" + (f", inputs {suite.inputs_digest}" if suite.inputs_digest else ""))
    stem = suite.name if Path(a.suite).expanduser().is_file() else a.suite
    out = save_domain_grid(suite, a.out or f"{stem}-samples.png", per_domain=a.per_domain, seed=a.data_seed or 0)
    print(f"wrote {out}")
    return 0


def _runner_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", choices=["serial", "pool", "ray"], default="serial",
                   help="where cells run: in this process, in local worker processes, or on a Ray cluster")
    p.add_argument("--workers", type=int, default=2, help="worker processes (pool) or CPUs of a local Ray cluster")
    p.add_argument("--threads", type=int, help="CPU threads every cell computes with (overrides the spec's "
                                               "`threads`, default 1); the numbers depend on it, not on the runner")
    p.add_argument("--address", help="Ray cluster address (default: start a local cluster)")
    p.add_argument("--retries", type=int, default=0, help="times a failing cell is retried before it is recorded failed")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubling each time")


def _cmd_data_get(a: argparse.Namespace) -> int:
    from .data.download import get_dataset

    st = get_dataset(a.name, root=a.root, allow_unverified=a.allow_unverified,
                     progress=None if a.quiet else (lambda s: print(f"  {s}", file=sys.stderr)))
    if st.state == "manual":
        print(f"{a.name}: manual step needed ({st.folder}):")
    else:
        print(f"{a.name}: {st.state} in {st.folder}")
    for m in st.messages:
        print(f"  {m}")
    return 0


def _cmd_data_verify(a: argparse.Namespace) -> int:
    from .data.download import verify_dataset

    st = verify_dataset(a.name, root=a.root)
    print(f"{a.name}: {st.state} ({st.folder})")
    for m in st.messages:
        print(f"  {m}")
    return 0 if st.ok else 1


def _cmd_data_show_corruptions(a: argparse.Namespace) -> int:
    from .data import build_suite
    from .data.show import save_corruption_grid

    suite = build_suite(a.suite, seed=a.data_seed)
    dom = suite.pretrain if a.domain == "pretrain" else suite.domain(a.domain)
    names = CORRUPTIONS.names(f"{a.family}/*") if a.family != "all" else CORRUPTIONS.names()
    out = save_corruption_grid(dom.test.images[: a.images], a.out or f"{dom.name}-{a.family}.png", names)
    print(f"wrote {out} ({len(names)} corruptions x 5 severities of {dom.name})")
    return 0


QUIET_HELP = "no progress bars, tables or notes on stderr (for CI); results still print"


class _Command(argparse.ArgumentParser):
    """The parser of a subcommand (and of theirs): every one accepts ``--quiet``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand not given --quiet keeps what `ribench --quiet ...` set
        self.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ribench", description="Measure what adapting a pretrained model does to its robustness.")
    p.add_argument("--version", action="version", version=f"ribench {__version__}")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Command)

    r = sub.add_parser("run", help="run (or resume) a spec: pretrain, adapt, evaluate, report")
    r.add_argument("spec", nargs="?", help="TOML or YAML spec file (default: the --preset)")
    r.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="built-in spec when no file is given: quick (minutes), methods (every method on cnn, about "
                        "an hour), full (hours)")
    r.add_argument("--out", help="output folder (default: runs/<spec name>)")
    r.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default: the spec's, auto)")
    r.add_argument("--seed", type=int, help="run this one fine-tuning seed instead of the spec's seeds")
    r.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full-pickle weights files of outside backbones (unpickling can run code; "
                        "safetensors and weights-only .pt files never need it)")
    _runner_arguments(r)
    r.set_defaults(fn=_cmd_run)

    pr = sub.add_parser("predict", help="rank backbones for each task by feature-space OTDD and transferability "
                                        "scores, without fine-tuning (pretrains what is missing)")
    pr.add_argument("spec", nargs="?", help="TOML or YAML spec file (default: the --preset)")
    pr.add_argument("--preset", choices=list(PRESETS), default="quick")
    pr.add_argument("--out", help="output folder (default: runs/<spec name>; shared with `ribench run`)")
    pr.add_argument("--device")
    pr.set_defaults(fn=_cmd_predict)

    rt = sub.add_parser("retry", help="rerun the failed cells of a run (and whatever they block)")
    rt.add_argument("dir")
    rt.add_argument("--trust-checkpoint", action="store_true",
                    help="allow full-pickle weights files of outside backbones (as for `ribench run`)")
    _runner_arguments(rt)
    rt.set_defaults(fn=_cmd_retry)

    st = sub.add_parser("status", help="done, running, failed and pending cells of a run, and the failures")
    st.add_argument("dir")
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.add_argument("--timing", action="store_true",
                    help="also print, per kind of cell, the count and the total and mean seconds of each phase")
    st.set_defaults(fn=_cmd_status)

    pt = sub.add_parser("pretrain", help="pretrain one backbone with a recipe and save its weights")
    pt.add_argument("--backbone", required=True)
    pt.add_argument("--recipe", default="narrow", help="narrow or rich")
    pt.add_argument("--suite", default="digits")
    pt.add_argument("--epochs", type=float, default=8)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--data-seed", type=int, default=0)
    pt.add_argument("--device", default="auto")
    pt.add_argument("--out", help="safetensors file (default: <backbone>-<recipe>.safetensors)")
    pt.set_defaults(fn=_cmd_pretrain)

    ls = sub.add_parser("list", help="list backbones, methods, suites, estimators, corruptions or attacks")
    ls.add_argument("what", choices=["models", "methods", "suites", "estimators", "corruptions", "attacks"],
                    help="models: the backbones (registered, and outside presets); attacks: with their norm, "
                         "default radius and budgets")
    ls.add_argument("--filter", default="*", help="glob on names")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("--root", help="data root for the suites' data state (default: $RIBENCH_DATA, else "
                    "~/.cache/ribench/data)")
    ls.set_defaults(fn=_cmd_list)

    rs = sub.add_parser("results", help="print every stored number of a run")
    rs.add_argument("dir")
    rs.add_argument("--format", choices=["table", "json", "csv", "parquet"], default="table")
    rs.add_argument("--out", help="write to this file instead of printing (default for parquet: DIR/results.parquet)")
    rs.add_argument("--methods", action="store_true",
                    help="print each method label of the run with its method and full hyperparameters instead "
                         "(table, json or csv)")
    rs.set_defaults(fn=_cmd_results)

    rp = sub.add_parser("report", help="write the HTML report (report.html) and the Markdown report of a run")
    rp.add_argument("dir")
    rp.set_defaults(fn=_cmd_report)

    lb = sub.add_parser("leaderboard", help="write leaderboard.json (RobustBench-style fields) and leaderboard.md")
    lb.add_argument("dir")
    lb.set_defaults(fn=_cmd_leaderboard)

    d = sub.add_parser("data", help="inspect built-in data; download and verify datasets")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    show = dsub.add_parser("show", help="write a PNG grid of samples of every domain of a suite")
    show.add_argument("suite", help="a registered suite, a user suite's TOML file or a run spec")
    show.add_argument("--out", help="PNG path (default: <suite>-samples.png)")
    show.add_argument("--per-domain", type=int, default=10)
    show.add_argument("--data-seed", type=int, help="seed that builds the suite (default: the run spec's, else 0)")
    show.set_defaults(fn=_cmd_data_show)
    sc = dsub.add_parser("show-corruptions", help="write a PNG grid (corruption x severity) of a domain's test images")
    sc.add_argument("domain", help="'pretrain' or a domain of the suite (e.g. mnist, fonts, mnistm)")
    sc.add_argument("--suite", default="digits")
    sc.add_argument("--family", default="imagenet-c", help="imagenet-c, mnist-c, or all")
    sc.add_argument("--images", type=int, default=2, help="images per cell of the grid")
    sc.add_argument("--out", help="PNG path (default: <domain>-<family>.png)")
    sc.add_argument("--data-seed", type=int, default=0)
    sc.set_defaults(fn=_cmd_data_show_corruptions)
    root_help = "data root (default: $RIBENCH_DATA, else ~/.cache/ribench/data)"
    dg = dsub.add_parser("get", help="download, check (SHA-256) and extract a known dataset, or print its manual step")
    dg.add_argument("name", help="a dataset of the registry (docs/datasets.md)")
    dg.add_argument("--root", help=root_help)
    dg.add_argument("--allow-unverified", action="store_true",
                    help="extract archives that have no published checksum (their members are still checked)")
    dg.set_defaults(fn=_cmd_data_get)
    dv = dsub.add_parser("verify", help="check a downloaded dataset's files against their published SHA-256")
    dv.add_argument("name")
    dv.add_argument("--root", help=root_help)
    dv.set_defaults(fn=_cmd_data_verify)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``), raised where the program is, so that it stops as
    on Ctrl-C: finished cells are kept, worker processes are stopped, the exit code says why."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.fn(args)
    except RibenchError as e:
        print(f"ribench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"ribench: {what}; finished cells are kept, run again to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
