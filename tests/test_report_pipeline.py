"""One report pipeline: report.md, report.html, the console table and the leaderboard show
the same numbers, and each report reads the store once.

The run is ``test_prediction_report.make_run``'s synthetic store (known values, every
predictor), plus merged-model, diagnostics, attack and corruption rows written the same way
(``ResultsStore.finish_cell``), so that every summary column and every table has data. The
expected means are computed here from the values written; the reports are parsed back
from their files (Markdown tables, HTML cells and their ``data-value``, the rich console
table, leaderboard.json).
"""

from __future__ import annotations

import io
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from rich.console import Console
from test_prediction_report import ACROSS_MODELS, ACROSS_TASKS, html_table, make_run, md_section, md_table

from ribench.cli import main
from ribench.core import rows as names
from ribench.engine.store import ResultsStore
from ribench.report import print_summary, write_reports
from ribench.report.export import results_rows
from ribench.report.leaderboard import leaderboard

BACKBONES, TASKS, METHODS, SEEDS = ["b0", "b1", "b2"], [f"t{i}" for i in range(5)], ["ft", "lp"], (0, 1)
DIAG = {"linear_cka_features/task": 0.9, "task_vector_relative_norm": 0.05, "loss_barrier/pretrain": 0.2}
EXTRA = {"corr_acc": 0.7, "mCE": 1.1, "id_ece": 0.03, "id_nll": 0.4}  # summary metrics of the evaluate cells


def _add_rows(out, written):
    """Per adapted (backbone, method, task, seed): corruption, calibration, attack and
    diagnostics numbers (separate cells, as the engine writes them); m0's corruption
    numbers; one model merged over the tasks per (backbone, seed). Every value goes into
    ``written["summary"]`` / ``written["diag"]`` / ``written["merged"]``."""
    store = ResultsStore(out / "results.sqlite")
    now, rng = time.time(), np.random.default_rng(1)
    written["diag"], written["merged"] = {}, {}
    for b in BACKBONES:
        lab = {"backbone": b, "recipe": "narrow"}
        m0 = {"corr_acc": 0.8, "mCE": 1.0}
        store.finish_cell(f"m0-extra-{b}", "evaluate", {**lab, "method": names.PRETRAINED, "task": None, "seed": None},
                          {}, now, {names.SUMMARY: m0})
        for k, v in m0.items():
            written["summary"][(b, names.PRETRAINED, None, None, k)] = v
        for m in METHODS:
            for t in TASKS:
                for s in SEEDS:
                    cell = {**lab, "method": m, "task": t, "seed": s}
                    extra = {k: v + 0.05 * rng.random() for k, v in EXTRA.items()}
                    robust = {"robust_acc": 0.3 + 0.1 * rng.random()}
                    diag = {k: v + 0.01 * rng.random() for k, v in DIAG.items()}
                    store.finish_cell(f"extra-{b}-{m}-{t}-{s}", "evaluate", cell, {}, now, {names.SUMMARY: extra})
                    store.finish_cell(f"attack-{b}-{m}-{t}-{s}", "attack", cell, {}, now,
                                      {names.attack("pgd", 0.1): robust, names.SUMMARY: robust})
                    store.finish_cell(f"diag-{b}-{m}-{t}-{s}", "diagnose", cell, {}, now, {names.DIAG_SUMMARY: diag})
                    for k, v in {**extra, **robust}.items():
                        written["summary"][(b, m, t, s, k)] = v
                    for k, v in diag.items():
                        written["diag"][(b, m, t, s, k)] = v
        for s in SEEDS:
            norm = {t: 0.8 + 0.1 * rng.random() for t in TASKS}
            summary = {"norm_acc": float(np.mean(list(norm.values()))), "task_acc": 0.7 + 0.1 * rng.random()}
            store.finish_cell(f"merged-{b}-{s}", "merge", {**lab, "method": "ties", "task": names.MERGED, "seed": s},
                              {}, now, {**{t: {"norm_acc": v} for t, v in norm.items()}, names.SUMMARY: summary})
            written["merged"][(b, s)] = {**norm, **summary}
    store.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    written = make_run(out, BACKBONES, TASKS, METHODS, seeds=SEEDS)
    _add_rows(out, written)
    html, md, run = write_reports(out, figures=False)
    console = Console(file=io.StringIO(), width=400)
    print_summary(run, console)
    return out, written, md.read_text(), html.read_text(), console.file.getvalue()


class _DataValues(HTMLParser):
    """(text, data-value) of every cell of the table with a given id; labels get value None."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell, self.value = table_id, False, [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.inside = a.get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell, self.value = [], a.get("data-value")

    def handle_endtag(self, tag):
        if self.inside and tag == "td":
            self.rows[-1].append((re.sub(r"\s+", " ", "".join(self.cell)).strip(), self.value))
            self.cell = None
        elif tag == "table":
            self.inside = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def html_values(html: str, table_id: str) -> list[list[tuple[str, str | None]]]:
    p = _DataValues(table_id)
    p.feed(html)
    return [r for r in p.rows if r]


def md_headers(md: str, title: str) -> list[str]:
    line = md[md.index(f"### {title}"):].splitlines()[2]
    return [c.strip() for c in line.strip("|").split("|")]


def console_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip().strip("│").split("│")] for ln in text.splitlines() if ln.startswith("│")]


def expected_mean(written, b, m, metric):
    v = [val for (b_, m_, _, _, k), val in written["summary"].items() if (b_, m_, k) == (b, m, metric)]
    return float(np.mean(v))


# --- the same numbers everywhere ---------------------------------------------------------------
def test_markdown_and_html_tables_are_identical(run_dir):
    out, written, md, html, _ = run_dir
    tables = [("Summary (", "summary-table"), ("What changed inside the models", "diagnostics-table"),
              ("Merged models", "merged-table")]
    predictions = md_section(md, "## Did the prediction hold?")
    for title, table_id in ((ACROSS_TASKS, "correlation-table"), (ACROSS_MODELS, "model-correlation-table")):
        for md_title, tid in ((title, table_id), ("Spearman ρ per group", f"{table_id}-groups")):
            shown = md_table(predictions[predictions.index(f"### {title}"):], md_title)
            assert shown and shown == html_table(html, tid), tid
    for title, table_id in tables:
        shown = md_table(md, title)
        assert shown and shown == html_table(html, table_id), table_id
    # the HTML header row is the Markdown one, column for column
    head = re.search(r'id="summary-table"><thead><tr>(.*?)</tr>', html).group(1)
    assert [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>.*?</th>", head)] == md_headers(md, "Summary (")


def test_every_summary_number_matches_the_values_written(run_dir):
    """Each mean shown (report.md text, report.html data-value) against numpy on the values
    written: every summary column, every (backbone, method)."""
    out, written, md, html, _ = run_dir
    headers = md_headers(md, "Summary (")
    units = {"ID acc": ("id_acc", 100, ".1f"), "R": ("R", 100, ".1f"), "ΔR": ("dR", 100, "+.1f"),
             "P acc": ("P_acc", 100, ".1f"), "ΔP": ("dP", 100, "+.1f"), "corr acc": ("corr_acc", 100, ".1f"),
             "mCE": ("mCE", 1, ".3f"), "robust acc": ("robust_acc", 100, ".1f"), "ECE": ("id_ece", 100, ".1f"),
             "NLL": ("id_nll", 1, ".3f"), "trainable": ("trainable_params", 1, ",.0f"),
             "train s": ("train_seconds", 1, ".1f")}
    assert set(units) <= set(headers) and "transfer acc" not in headers  # no transfer attack: no column
    md_rows = {tuple(r[:3]): r for r in md_table(md, "Summary (")}
    html_rows = {tuple(t for t, _ in r[:3]): r for r in html_values(html, "summary-table")}
    checked = 0
    for b in BACKBONES:
        for m in METHODS:
            for header, (metric, scale, fmt) in units.items():
                want = scale * expected_mean(written, b, m, metric)
                col = headers.index(header)
                assert md_rows[(b, "narrow", m)][col].split(" [")[0] == format(want, fmt), (b, m, header)
                assert float(html_rows[(b, "narrow", m)][col][1]) == pytest.approx(want, rel=1e-12), (b, m, header)
                checked += 1
    assert checked == len(BACKBONES) * len(METHODS) * len(units)


def test_console_and_leaderboard_show_the_report_numbers(run_dir):
    out, written, md, html, console = run_dir
    headers = md_headers(md, "Summary (")
    md_rows = {tuple(r[:3]): r for r in md_table(md, "Summary (")}
    html_rows = {tuple(t for t, _ in r[:3]): r for r in html_values(html, "summary-table")}
    # the console: the same means (without intervals) under the same headers
    shown = console_rows(console)
    assert len(shown) == len(md_rows)
    console_headers = [c.strip() for c in next(ln for ln in console.splitlines() if "backbone" in ln)
                       .strip("┃").split("┃")]
    assert console_headers[:3] == ["backbone", "recipe", "method"] and "ID acc" in console_headers
    for row in shown:
        for h, text in zip(console_headers[3:], row[3:]):
            assert text == md_rows[tuple(row[:3])][headers.index(h)].split(" ")[0], (row[:3], h)
    # the leaderboard: every number is the report's mean (data-value), rounded to 2 decimals (mCE 4)
    doc = leaderboard(out)
    fields = {"clean_acc": "ID acc", "ood_robustness": "R", "delta_R": "ΔR", "pretrain_acc": "P acc", "delta_P": "ΔP",
              "corruption_acc": "corr acc", "mCE": "mCE", "robust_acc": "robust acc", "ece": "ECE",
              "trainable_params": "trainable", "train_seconds": "train s"}
    assert len(doc["entries"]) == len(BACKBONES) * len(METHODS) + len(BACKBONES)  # + the merged models
    for e in doc["entries"]:
        row = html_rows[(e["backbone"], e["recipe"], e["method"])]
        for field, header in fields.items():
            if field not in e:
                assert row[headers.index(header)][1] == "", (e["model"], field)
                continue
            value = float(row[headers.index(header)][1])
            digits = 0 if field == "trainable_params" else 4 if field == "mCE" else 2
            assert e[field] == pytest.approx(round(value, digits), abs=1e-9), (e["model"], field)
            assert md_rows[(e["backbone"], e["recipe"], e["method"])][headers.index(header)].split(" ")[0] \
                == row[headers.index(header)][0].split(" ")[0]
    m0 = {r["backbone"]: r for r in doc["pretrained"]}
    for b in BACKBONES:
        row = html_rows[(b, "narrow", "m0 (pretrained)")]
        assert m0[b]["ood_robustness"] == pytest.approx(round(float(row[headers.index("R")][1]), 2))
        assert m0[b]["corruption_acc"] == pytest.approx(round(100 * written["summary"][(b, "pretrained", None, None,
                                                                                          "corr_acc")], 2))


def test_diagnostics_and_merged_tables_match_the_values_written(run_dir):
    out, written, md, html, _ = run_dir
    headers = md_headers(md, "What changed inside the models")
    diag = {tuple(r[:3]): r for r in md_table(md, "What changed inside the models")}
    for b in BACKBONES:
        for m in METHODS:
            for metric, header in (("linear_cka_features/task", "CKA task"), ("loss_barrier/pretrain", "barrier pretrain")):
                v = [x for (b_, m_, _, _, k), x in written["diag"].items() if (b_, m_, k) == (b, m, metric)]
                assert diag[(b, "narrow", m)][headers.index(header)] == f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"
    merged = {r[0]: r for r in md_table(md, "Merged models")}
    assert md_headers(md, "Merged models") == ["backbone", "recipe", "method", *TASKS, "mean normalised", "mean accuracy"]
    for b in BACKBONES:
        for i, key in enumerate([*TASKS, "norm_acc", "task_acc"]):
            v = [written["merged"][(b, s)][key] for s in SEEDS]
            assert merged[b][3 + i] == f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f}"


# --- the store is read once per report --------------------------------------------------------
@pytest.fixture
def store_opens(monkeypatch):
    """Counts ResultsStore openings and metric_rows reads from here on."""
    counts = {"open": 0, "rows": 0}
    init, metric_rows = ResultsStore.__init__, ResultsStore.metric_rows

    def counting_init(self, *a, **k):
        counts["open"] += 1
        init(self, *a, **k)

    def counting_rows(self):
        counts["rows"] += 1
        return metric_rows(self)

    monkeypatch.setattr(ResultsStore, "__init__", counting_init)
    monkeypatch.setattr(ResultsStore, "metric_rows", counting_rows)
    return counts


def _reads(counts, fn):
    before = dict(counts)
    fn()
    return counts["open"] - before["open"], counts["rows"] - before["rows"]


@pytest.fixture
def no_figures(monkeypatch):
    """Figures drawn from the run in hand but none of them (drawing takes seconds; it reads nothing)."""
    import ribench.report.html

    monkeypatch.setattr(ribench.report.html, "build_plots", lambda run: [])


@pytest.mark.slow
def test_reports_with_figures_read_the_store_once(run_dir, store_opens):
    out = run_dir[0]
    assert _reads(store_opens, lambda: write_reports(out)) == (1, 1)  # report.html, figures/*.png, report.md
    assert (out / "figures" / "index.json").is_file() and "figures/" in (out / "report.md").read_text()


def test_each_report_reads_the_store_once(run_dir, store_opens, no_figures, capsys):
    out = run_dir[0]
    assert _reads(store_opens, lambda: write_reports(out)) == (1, 1)
    assert _reads(store_opens, lambda: main(["report", str(out)])) == (1, 1)
    assert _reads(store_opens, lambda: main(["leaderboard", str(out)])) == (1, 1)
    assert _reads(store_opens, lambda: main(["results", str(out), "--format", "table"])) == (1, 1)
    assert _reads(store_opens, lambda: main(["results", str(out), "--format", "csv"])) == (1, 1)
    assert _reads(store_opens, lambda: results_rows(out)) == (1, 1)
    capsys.readouterr()


def test_ribench_run_reports_from_one_read(run_dir, store_opens, no_figures, monkeypatch, capsys):
    """After the cells ran, `ribench run` writes report.html, report.md and prints the console
    table from one read of the store (the cells themselves are replaced by a stub here)."""
    import ribench.engine
    import ribench.engine.runner
    from ribench.engine.runner import RunOutcome

    out = run_dir[0]
    before = {f: (out / f).stat().st_mtime_ns for f in ("report.md", "report.html")}

    def no_cells(spec, out_dir, options=None, **kw):
        return RunOutcome(out_dir, total=0)

    for module in (ribench.engine, ribench.engine.runner):  # wherever the command takes `run` from
        monkeypatch.setattr(module, "run", no_cells)
    assert _reads(store_opens, lambda: main(["run", "--preset", "quick", "--out", str(out)])) == (1, 1)
    printed = capsys.readouterr().out
    assert "Summary (accuracies in %, mean over tasks and seeds)" in printed and "report.html" in printed
    assert all((out / f).stat().st_mtime_ns > t for f, t in before.items())


# --- one place for a new summary metric ------------------------------------------------------
def test_a_metric_added_to_the_catalogue_appears_in_every_report(tmp_path, monkeypatch):
    """One ``Metric`` entry in ``catalogue.SUMMARY_METRICS`` and nothing else: report.md and
    report.html (column, tooltip, reading guide), the console table and the leaderboard show it."""
    from ribench.report import catalogue
    from ribench.report.leaderboard import write_leaderboard

    make_run(tmp_path, ["b0"], ["t0", "t1"], ["ft"], seeds=(0,))
    store = ResultsStore(tmp_path / "results.sqlite")
    for i, t in enumerate(("t0", "t1")):
        store.finish_cell(f"extra-{t}", "evaluate", {"backbone": "b0", "recipe": "narrow", "method": "ft", "task": t,
                                                     "seed": 0}, {}, time.time(), {names.SUMMARY: {"sharpness": 0.25 + 0.5 * i}})
    store.close()
    new = catalogue.Metric("sharpness", "sharp", catalogue.PERCENT, catalogue.LOWER, "a new number (%)", console=True,
                           board="sharpness_pct")
    monkeypatch.setattr(catalogue, "SUMMARY_METRICS", (*catalogue.SUMMARY_METRICS, new))

    html, md, run = write_reports(tmp_path, figures=False)
    md, html = md.read_text(), html.read_text()
    headers = md_headers(md, "Summary (")
    ft = {tuple(r[:3]): r for r in md_table(md, "Summary (")}[("b0", "narrow", "ft")]
    assert ft[headers.index("sharp")].startswith("50.0 [")  # mean of 25 % and 75 %, with its interval
    assert "- *sharp*: a new number (%); lower is better" in md
    assert '<th title="a new number (%); lower is better">sharp</th>' in html
    row = {tuple(t for t, _ in r[:3]): r for r in html_values(html, "summary-table")}[("b0", "narrow", "ft")]
    assert float(row[headers.index("sharp")][1]) == pytest.approx(50.0)
    console = Console(file=io.StringIO(), width=400)
    print_summary(run, console)
    text = console.file.getvalue()
    console_headers = [c.strip() for c in next(ln for ln in text.splitlines() if "backbone" in ln).strip("┃").split("┃")]
    ft_console = next(r for r in console_rows(text) if r[2] == "ft")
    assert ft_console[console_headers.index("sharp")] == "50.0"
    _, mp = write_leaderboard(run)
    doc = leaderboard(run)
    assert doc["entries"][0]["sharpness_pct"] == 50.0 and doc["units"]["sharpness_pct"] == "% (lower is better)"
    assert "| sharp % |" in mp.read_text()
