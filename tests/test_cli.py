"""The `ribench` command as a user runs it: the README's demo on a tiny spec, listing,
exports, and clear errors on bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from ribench.cli import main

TINY_DEMO = """
name = "tiny-demo"
suite = "digits"
backbones = ["mlp"]
recipes = ["narrow"]
tasks = ["uci", "fonts"]
seeds = [0]
device = "cpu"

[[methods]]
name = "lp"

[[methods]]
name = "ft"
params = { epochs = 0.5 }

[pretrain]
epochs = 0.5

[eval]
pretrain_sample = 100

[analysis]
max_per_class = 30
max_samples = 300
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    (d / "spec.toml").write_text(TINY_DEMO)
    assert main(["run", str(d / "spec.toml"), "--out", str(d / "out"), "--quiet"]) == 0
    return d / "out"


def test_demo_run_writes_report_and_results(demo_run, capsys):
    report = (demo_run / "report.md").read_text()
    assert "## Summary per method" in report and "| mlp | narrow | ft |" in report
    assert "mlp / narrow / lp: fine-tuned on" in report
    assert main(["results", str(demo_run), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows[0]) == {"backbone", "recipe", "method", "task", "seed", "eval_set", "metric", "value"}
    summaries = {(r["method"], r["task"], r["metric"]) for r in rows if r["eval_set"] == "*"}
    for m in ("lp", "ft"):
        for t in ("uci", "fonts"):
            for metric in ("id_acc", "R", "dR", "dP", "corr_acc", "mCE"):
                assert (m, t, metric) in summaries
    lp_uci = next(r["value"] for r in rows if r["method"] == "lp" and r["task"] == "uci" and r["metric"] == "id_acc")
    assert lp_uci > 0.5  # a linear probe on MNIST features reads UCI digits far above chance (0.1)


def test_second_run_recomputes_nothing(demo_run, capsys):
    spec = demo_run.parent / "spec.toml"
    assert main(["run", str(spec), "--out", str(demo_run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert " 0 ran," in out and "0 failed" in out


def test_csv_export(demo_run, capsys):
    assert main(["results", str(demo_run), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "backbone,recipe,method,task,seed,eval_set,metric,value"
    assert len(lines) > 100


def test_list_json(capsys):
    assert main(["list", "methods", "--format", "json"]) == 0
    methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"ft", "lp", "lpft"} <= set(methods)
    assert methods["lpft"]["requires"] == ["lp"]
    assert any(p["name"] == "epochs" and p["help"] for p in methods["ft"]["params"])
    assert main(["list", "models", "--format", "json"]) == 0
    models = {m["name"]: m["kind"] for m in json.loads(capsys.readouterr().out)}
    assert all(models[n] == "built-in backbone" for n in ("mlp", "cnn", "resnet", "vit"))
    from ribench.core.registry import ADAPTED_MODELS

    assert {"prompted", "dawin", "with_head"} <= set(ADAPTED_MODELS.names())
    assert not set(ADAPTED_MODELS.names()) & set(models)  # what methods make is no backbone
    from ribench.models.external import presets

    assert {n for n, k in models.items() if k.startswith("preset")} == set(presets()) >= {"vit_b16_in21k"}
    assert main(["list", "suites"]) == 0
    assert "digits" in capsys.readouterr().out


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_DEMO.replace('backbones = ["mlp"]', 'backbones = ["mlpp"]'))
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'mlpp'" in err and "mlp" in err and "Traceback" not in err

    bad.write_text(TINY_DEMO.replace("epochs = 0.5\n\n[eval]", "epochs = 'many'\n\n[eval]"))
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "pretrain.epochs" in capsys.readouterr().err

    bad.write_text(TINY_DEMO.replace('tasks = ["uci", "fonts"]', 'tasks = ["svhn"]'))
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unknown task of suite 'digits' 'svhn'" in capsys.readouterr().err

    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "holds no results" in capsys.readouterr().err


def test_data_show_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "show", "digits", "--out", str(out), "--per-domain", "4"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "ribench.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("run", "pretrain", "list", "results", "report", "data"):
        assert cmd in r.stdout


def test_pretrain_command_saves_loadable_weights(tmp_path, capsys):
    from ribench.models import load_model

    out = tmp_path / "mlp.safetensors"
    assert main(["pretrain", "--backbone", "mlp", "--epochs", "0.2", "--device", "cpu", "--out", str(out)]) == 0
    assert "pretrained mlp (narrow)" in capsys.readouterr().out
    model = load_model(out)
    assert model.arch == "mlp" and model.num_classes == 10


def test_corrupt_artifact_is_reported_by_name(demo_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(demo_run, run_dir)
    weights = sorted((run_dir / "artifacts").rglob("*.safetensors"))
    for w in weights:
        w.write_bytes(b"not a safetensors file")
    spec = demo_run.parent / "spec.toml"
    # a new seed needs the (now corrupt) pretrained weights: every damaged artifact is named in the
    # event log and computed again (docs/scaling.md, Crash safety), instead of failing the cells that read it
    assert main(["run", str(spec), "--out", str(run_dir), "--quiet", "--seed", "1"]) == 0
    log = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    named = {e["reason"].split(" ")[0] for e in log if e["event"] == "damaged"}
    assert named and named <= {str(w) for w in weights}  # the planned cells' artifacts (the pretrained model)


def test_report_leaderboard_and_parquet_commands(demo_run, capsys):
    assert main(["report", str(demo_run)]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (demo_run / "report.html").read_text()
    assert "<svg" in html
    for attr in ('src="http', "src='http", 'href="http', "href='http", "url(http"):
        assert attr not in html  # nothing to fetch: the page is self-contained
    assert main(["leaderboard", str(demo_run)]) == 0
    board = json.loads((demo_run / "leaderboard.json").read_text())
    entries = board["entries"] if isinstance(board, dict) else board
    assert entries and all(isinstance(e["clean_acc"], float) for e in entries)
    pytest.importorskip("pyarrow", reason="the parquet export needs the parquet extra")
    assert main(["results", str(demo_run), "--format", "parquet"]) == 0
    assert (demo_run / "results.parquet").stat().st_size > 0


TINY_PREDICT = """
name = "tiny-predict"
suite = "tiny"
backbones = ["mlp", "cnn"]
recipes = ["narrow"]
seeds = [0]
device = "cpu"

[[methods]]
name = "lp"

[pretrain]
epochs = 0.5

[eval]
pretrain_sample = 50

[diagnostics]
enabled = false

[analysis]
max_per_class = 20
max_samples = 60
"""


def test_predict_ranks_backbones_then_report_checks_the_prediction(tmp_path, capsys):
    """On the tiny suite (tests/tiny_suite.py): `predict` ranks the two backbones by the
    predictors that depend on them, and says pixel OTDD (the same for both) ranks none."""
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_PREDICT)
    out = tmp_path / "out"
    assert main(["predict", str(spec), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Task t1: predictors before fine-tuning" in text and "| cnn | narrow |" in text and "logme" in text
    assert "(#1)" in text and "(#2)" in text
    headers = [ln.strip("|").split("|") for ln in text.splitlines() if ln.startswith("| backbone | recipe |")]
    assert len(headers) == 2 and all("otdd_features" in map(str.strip, h) and "otdd" not in map(str.strip, h)
                                     for h in headers)
    assert "`otdd`, is computed from the images alone" in text and "does not rank backbones" in text
    # the full run reuses the pretrained models and analyses, and its report checks the prediction
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    ran = capsys.readouterr().out
    assert "6 already done" in ran  # 2 pretrain + 2 backbones x 2 tasks analysis cells
    report = (out / "report.md").read_text()
    section = report[report.index("## Did the prediction hold?"):]
    # one ρ per (backbone, recipe, method) over its 2 tasks; 2 tasks and 2 backbones are too few to tell
    assert re.search(r"\| OTDD \(pixels\) \| ΔP \| \d \| 2 \| 2 \| [+-]\d\.\d\d \| too few to tell \| too few to tell \|",
                     section)
    assert "| OTDD (features) | ΔP | 2 | 2 |" in section  # across models: (lp, t1), (lp, t2) over 2 backbones


def test_show_corruptions_writes_png(tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["data", "show-corruptions", "mnist", "--family", "mnist-c", "--images", "1", "--out", str(out)]) == 0
    assert "15 corruptions x 5 severities of mnist" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "show-corruptions", "nowhere"]) == 2
    assert "unknown domain" in capsys.readouterr().err


def test_list_estimators_and_corruptions(capsys):
    assert main(["list", "estimators", "--format", "json"]) == 0
    names = {e["name"] for e in json.loads(capsys.readouterr().out)}
    assert names == {"logme", "leep", "nce", "hscore", "gbc", "knn"}
    assert main(["list", "corruptions", "--filter", "imagenet-c/*", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 19


def test_list_attacks_gives_names_norms_and_budgets(capsys):
    from ribench.evaluate.attacks import ATTACKS, autoattack_available

    assert main(["list", "attacks", "--format", "json"]) == 0
    items = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    assert set(items) == set(ATTACKS) | {"autoattack"}
    for name, spec in ATTACKS.items():
        a = items[name]
        assert a["norm"] == spec.norm and a["kind"] == ("black-box" if spec.blackbox else "white-box")
        assert {"eps": a["eps"], **a["budgets"]} == dict(spec.budget) and a["available"]
    assert items["autoattack"]["available"] == autoattack_available()
    assert main(["list", "attacks", "--filter", "pgd_*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[:3] for ln in lines] == [["pgd_l2", "l2", "white-box"], ["pgd_linf", "linf", "white-box"]]
    assert "steps=20" in lines[1]


def test_version_and_quiet_on_every_subcommand(capsys):
    import argparse

    from ribench import __version__
    from ribench.cli import build_parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ribench {__version__}"

    def commands(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield path + (name,), sub
                    yield from commands(sub, path + (name,))

    found = list(commands(build_parser()))
    assert len(found) >= 14
    for path, sub in found:
        assert "--quiet" in sub._option_string_actions, path
    # given before or after the subcommand; absent: not quiet
    parser = build_parser()
    assert parser.parse_args(["status", "d", "--quiet"]).quiet and parser.parse_args(["--quiet", "status", "d"]).quiet
    assert not parser.parse_args(["status", "d"]).quiet and parser.parse_args(["data", "verify", "x", "--quiet"]).quiet


def test_out_naming_a_file_is_a_clear_error_before_anything_runs(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_DEMO)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for out, why in [(taken, "it is a file, not a folder"), (taken / "below", f"{taken} is a file, not a folder")]:
        assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"cannot write the run into {out}: {why}" in err and "Traceback" not in err
    assert taken.read_text() == "not a folder"


def test_pretrain_checks_its_output_before_training(tmp_path, capsys, monkeypatch):
    import ribench.models.pretrain as pretrain

    monkeypatch.setattr(pretrain, "pretrain_backbone", lambda *a, **k: pytest.fail("trained before checking --out"))
    taken = tmp_path / "taken"
    taken.write_text("")
    for out, why in [(taken / "m.safetensors", f"{taken} is a file, not a folder"),
                     (tmp_path, "is a folder; name the file"), (tmp_path / "m.pt", "name the file *.safetensors")]:
        assert main(["pretrain", "--backbone", "mlp", "--device", "cpu", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ribench: error: --out: ") and why in err, err
    assert main(["pretrain", "--backbone", "dawin", "--out", str(tmp_path / "d.safetensors")]) == 2
    assert "unknown model 'dawin'" in capsys.readouterr().err
