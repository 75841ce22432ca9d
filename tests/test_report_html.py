"""The HTML report as a reader sees it: rendered in headless Chromium.

A tiny run on the ``tiny`` suite is made once; a copy of it gets synthetic analysis
(OTDD, transferability), WiSE-FT curve and attack rows through ``ResultsStore.finish_cell``
so that every section of the report is drawn.

The browser is driven over the Chrome DevTools Protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4). That needs
no Python package and no driver binary whose version must match the browser's (as
chromedriver/selenium does), and no browser download (as playwright's own builds do):
only a Chromium on the PATH. The test skips where none is found.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ribench.engine import parse_spec, run
from ribench.engine.store import ResultsStore
from store_helpers import plan_also
from ribench.report import aggregate as agg
from ribench.report.html import write_html_report
from ribench.report.markdown import write_report
from ribench.report.rundata import load_run

ARTIFACTS = Path(__file__).parent / "artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--window-size=1400,1000", "--remote-debugging-pipe")
TASKS = ("t1", "t2")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
PREDICTORS = {"otdd": 1.0, "logme": -1.0, "leep": -1.0}  # sign of the synthetic relation to forgetting


# --- runs -------------------------------------------------------------------------------
def _tiny_spec():
    return parse_spec({
        "name": "tiny-report", "suite": "tiny", "backbones": ["mlp"], "recipes": ["narrow"],
        "methods": [{"name": "ft", "params": {"epochs": 1}}, "lp"], "seeds": [0], "device": "cpu",
        "pretrain": {"epochs": 2}, "eval": {"val_fraction": 0.2, "pretrain_sample": 50},
        "analysis": {"enabled": False},  # the copy gets synthetic analysis rows with known values
    })


def add_synthetic_rows(out: Path) -> None:
    """Analysis, WiSE-FT and attack rows shaped as docs/results.md describes them."""
    store = ResultsStore(out / "results.sqlite")
    rows = store.metric_rows()
    summ = {(r["method"], r["task"], r["metric"]): r["value"] for r in rows if r["eval_set"] == "*"}
    now = time.time()
    lab = {"backbone": "mlp", "recipe": "narrow"}
    for i, t in enumerate(TASKS):
        dp_ft = summ[("ft", t, "dP")]
        store.finish_cell(f"synthetic-analysis-{t}", "analysis", {**lab, "method": "analysis", "task": t, "seed": None},
                          {}, now, {"*": {p: s * (i + 1.0) - 0.1 * dp_ft for p, s in PREDICTORS.items()}})
        ft, pre = {m: summ[("ft", t, m)] for m in ("id_acc", "R")}, {"R": summ[("pretrained", None, "R")]}
        curve = {f"curve/alpha={a:g}": {"id_acc": 0.4 + (ft["id_acc"] - 0.4) * a ** 0.5,
                                        "R": pre["R"] + (ft["R"] - pre["R"]) * a + 0.1 * a * (1 - a)} for a in ALPHAS}
        best = curve["curve/alpha=0.5"]
        store.finish_cell(f"synthetic-wise-{t}", "adapt", {**lab, "method": "wise_ft", "task": t, "seed": 0}, {}, now,
                          {**curve, "*": {"id_acc": best["id_acc"], "R": best["R"], "dR": best["R"] - pre["R"],
                                          "dP": 0.5 * dp_ft, "trainable_params": 0.0, "train_seconds": 0.1}})
    # as the engine stores them: m0 attacked on every task (".../<task>"), adapted models on their
    # own task, plus attacks crafted on m0 and transferred to the adapted model
    for m, t in [("pretrained", None)] + [(m, t) for m in ("ft", "lp") for t in TASKS]:
        clean = summ.get((m, t, "id_acc"), summ.get((m, t, "P_acc")))
        rows = {}
        for a, k in (("pgd", 1.0), ("fgsm", 0.6)):
            for e in (0.0, 0.01, 0.03, 0.1):
                robust = {"robust_acc": clean * math.exp(-k * e * 30), "clean_acc": clean}
                if t is None:
                    rows.update({f"attack/{a}/eps={e:g}/{task}": robust for task in TASKS})
                else:
                    rows[f"attack/{a}/eps={e:g}"] = robust
                    rows[f"transfer/{a}/eps={e:g}"] = {"robust_acc": clean * math.exp(-k * e * 10)}
        summary = {"robust_acc": float(np.mean([v["robust_acc"] for k_, v in rows.items() if k_.startswith("attack/")]))}
        if t is not None:
            summary["transfer_robust_acc"] = float(np.mean([v["robust_acc"] for k_, v in rows.items()
                                                            if k_.startswith("transfer/")]))
        store.finish_cell(f"synthetic-attack-{m}-{t}", "attack", {**lab, "method": m, "task": t, "seed": None if t is None else 0},
                          {}, now, {**rows, "*": summary})
    plan_also(store, [c["key"] for c in store.cells() if c["key"].startswith("synthetic-")])
    store.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(plain tiny run, the same with analysis/WiSE-FT/attack rows), each with report.html."""
    base = tmp_path_factory.mktemp("report") / "plain"
    res = run(_tiny_spec(), base, quiet=True)
    assert res.ok
    full = base.parent / "full"
    shutil.copytree(base, full)
    add_synthetic_rows(full)
    for d in (base, full):
        write_html_report(d)
        write_report(d)
    return base, full


# --- static checks ------------------------------------------------------------------------
class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.scripts_with_src, self.tags = [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "action", "srcset", "poster", "data") and v is not None:
                self.refs.append(v)
        if tag == "script" and any(k == "src" for k, _ in attrs):
            self.scripts_with_src += 1


def test_html_is_self_contained(runs):
    html = (runs[1] / "report.html").read_text()
    p = _Refs()
    p.feed(html)
    assert p.scripts_with_src == 0
    assert p.refs and all(r.startswith(("#", "data:")) for r in p.refs), [r for r in p.refs if not r.startswith("#")]
    assert not re.search(r"url\((?!#|data:)", html) and "@import" not in html
    assert p.tags.count("svg") >= 6 and "<script>" in html and "<style>" in html


def test_sections_without_data_are_left_out(runs):
    base, full = runs
    plain, rich = (base / "report.html").read_text(), (full / "report.html").read_text()
    for section in ('id="predictors"', 'id="wise-ft"', 'id="attacks"', "OTDD", "Spearman", "robust acc"):
        assert section not in plain, section
        assert section in rich, section
    for section in ('id="summary"', 'id="inheritance"', 'id="radar"', 'id="corruptions"', 'id="inside"',
                    'id="diagnostics-table"', 'id="reproduce"'):
        assert section in plain and section in rich
    assert 'id="failures"' not in rich  # no cell failed
    index = json.loads((base / "figures" / "index.json").read_text())
    assert {f["section"] for f in index["figures"]} == {"inheritance", "radar", "corruptions", "inside", "training"}


def test_markdown_links_the_png_figures(runs):
    base, full = runs
    md = (full / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    index = json.loads((full / "figures" / "index.json").read_text())
    assert links == [f"figures/{f['file']}" for f in index["figures"]]
    assert {f["section"] for f in index["figures"]} == {"inheritance", "radar", "corruptions", "attacks", "predictors",
                                                         "wise_ft", "inside", "training"}
    for link in links:
        assert (full / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "robust acc" in md and "| mlp | narrow | wise_ft |" in md and "| mlp | narrow | analysis |" not in md
    # figures made from other numbers are not linked: add a number, the report drops them
    stale = full.parent / "stale"
    shutil.copytree(full, stale)
    s = ResultsStore(stale / "results.sqlite")
    s.finish_cell("one-more", "analysis", {"backbone": "mlp", "recipe": "narrow", "method": "analysis", "task": "t1"},
                  {}, time.time(), {"*": {"knn": 0.5}})
    plan_also(s, ["one-more"])
    s.close()
    assert "figures/" not in write_report(stale).read_text()


def _ranks(x):
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):  # average ranks of ties
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def test_spearman_correlations_match_a_naive_reference(runs):
    """One ρ per (backbone, recipe, method) over its tasks (aggregate.prediction_tests, which
    both reports show), each equal to the correlation of naive average ranks."""
    rows = load_run(runs[1]).rows
    corr = {(c.predictor, c.target): c for c in agg.prediction_tests(rows)}
    assert set(corr) == {(p, t) for p in PREDICTORS for t in ("id_acc", "dR", "dP")}
    summ = {(r["method"], r["task"], r["metric"]): r["value"] for r in rows if r["eval_set"] == "*"}
    for p in PREDICTORS:
        c = corr[(p, "dP")]
        assert c.units == TASKS and c.left_out == 0
        assert c.groups == tuple(("mlp", "narrow", m) for m in ("ft", "lp", "wise_ft"))
        for (_, _, m), rho in zip(c.groups, c.result.rho):
            x, y = zip(*[(summ[("analysis", t, p)], summ[(m, t, "dP")]) for t in TASKS])
            if len(set(y)) < 2:  # ρ undefined for a constant outcome
                assert math.isnan(rho)
                continue
            assert rho == pytest.approx(np.corrcoef(_ranks(x), _ranks(y))[0, 1], abs=1e-12)
        assert c.result.n_units == 2 and not c.result.enough  # two tasks: too few to tell


# --- in the browser -------------------------------------------------------------------------
def find_chromium() -> str | None:
    exe = os.environ.get("RIBENCH_CHROMIUM")
    if exe:
        return exe if os.access(exe, os.X_OK) else None
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3: commands in,
    fd 4: replies and events out, each message JSON ended by a NUL byte)."""

    def __init__(self, exe: str, user_data_dir: Path, timeout: float = 30.0):
        # the child's ends are moved above fd 9 first, so that putting them on 3 and 4 cannot clobber each other
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, out_w)]
        for fd in (cmd_r, out_w):
            os.close(fd)

        def child_fds():  # runs in the child before exec; dup2 makes 3 and 4 inheritable
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.log = user_data_dir / "chromium-stderr.log"  # a file, not a pipe: a full pipe would stall Chromium
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=child_fds, close_fds=False)
        cmd_r, out_w = high
        os.close(cmd_r)
        os.close(out_w)
        self.timeout, self._next, self.session = timeout, 0, None
        self.events: list[dict] = []
        self._replies: dict[int, dict] = {}
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._out_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._replies[-1] = {"closed": True}
                    self._cv.notify_all()
                return
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            with self._cv:
                for m in msgs:
                    msg = json.loads(m)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cv.notify_all()

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        with self._cv:
            if not self._cv.wait_for(lambda: self._next in self._replies or -1 in self._replies, self.timeout):
                raise TimeoutError(f"no reply to {method} in {self.timeout} s")
            reply = self._replies.pop(self._next, None)
        if reply is None:
            raise RuntimeError(f"browser closed during {method}: {self.log.read_text(errors='replace')[-2000:]}")
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        with self._cv:
            ok = self._cv.wait_for(lambda: any(e["method"] == method for e in self.events), self.timeout)
        if not ok:
            raise TimeoutError(f"no {method} event in {self.timeout} s")
        return next(e for e in self.events if e["method"] == method)

    def open_page(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        x, y = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                       " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: Path) -> Path:
        import base64

        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails']}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry']['text']}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found (looked for $RIBENCH_CHROMIUM and " + ", ".join(BROWSERS) + " on PATH); "
                    "scripts/ensure-browser.sh installs it")
    b = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


SUMMARY_COLUMN_VALUES = """(col) => Array.from(document.querySelectorAll('#summary-table tbody tr'))
    .map(r => r.cells[col].getAttribute('data-value'))"""


def test_report_renders_in_chromium(runs, browser):
    t0 = time.perf_counter()
    full = runs[1]
    url = (full / "report.html").resolve().as_uri()
    browser.open_page(url)

    assert browser.js("document.title") == "ribench report: tiny-report"
    assert browser.errors() == []
    assert [u for u in browser.requests() if u != url and not u.startswith("data:")] == []

    # one summary row per (backbone, recipe, method) that has summary numbers
    rows = agg.summarize_methods(load_run(full).rows)
    assert len(rows) == 4  # m0, ft, lp, wise_ft
    shown = browser.js("Array.from(document.querySelectorAll('#summary-table tbody tr')).map(r => "
                       "[0, 1, 2].map(i => r.cells[i].textContent))")
    assert sorted(map(tuple, shown)) == sorted(
        (s.backbone, s.recipe, "m0 (pretrained)" if s.method == "pretrained" else s.method) for s in rows)
    # one diagnostics row per adapted method that ran (ft, lp), with the stored mean CKA
    diag = browser.js("Array.from(document.querySelectorAll('#diagnostics-table tbody tr')).map(r => "
                      "[r.cells[2].textContent, r.cells[3].getAttribute('data-value')])")
    stored = agg.diagnostic_summaries(load_run(full).rows)
    assert sorted(m for m, _ in diag) == ["ft", "lp"]
    for m, value in diag:
        assert float(value) == pytest.approx(stored[("mlp", "narrow", m)]["linear_cka_features/task"].mean)

    # clicking a header sorts by it: ascending, then descending; missing values last
    headers = browser.js("Array.from(document.querySelectorAll('#summary-table thead th')).map(h => h.textContent)")
    col = headers.index("ΔR")
    browser.click(f"#summary-table thead th:nth-child({col + 1})")
    up = browser.js(f"({SUMMARY_COLUMN_VALUES})({col})")
    values = [float(v) for v in up if v != ""]
    assert values == sorted(values) and len(values) == 4 and up[len(values):] == [""] * (len(up) - len(values))
    assert browser.js(f"document.querySelector('#summary-table thead th:nth-child({col + 1})').getAttribute('aria-sort')") == "ascending"
    browser.click(f"#summary-table thead th:nth-child({col + 1})")
    down = [float(v) for v in browser.js(f"({SUMMARY_COLUMN_VALUES})({col})") if v != ""]
    assert down == sorted(values, reverse=True)
    browser.click("#summary-table thead th:nth-child(3)")  # method, as text
    methods = browser.js("Array.from(document.querySelectorAll('#summary-table tbody tr')).map(r => r.cells[2].textContent)")
    assert methods == sorted(methods, key=str.lower)

    # every plot drew: a visible SVG with many drawn elements
    plots = browser.js("""Array.from(document.querySelectorAll('figure.plot')).map(f => {
        const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
        return {id: f.id, section: f.dataset.section, w: r.width, h: r.height,
                drawn: s ? s.querySelectorAll('path, use, rect, circle, polygon, polyline, line, text').length : 0}; })""")
    index = json.loads((full / "figures" / "index.json").read_text())
    assert [p["id"] for p in plots] == [f"fig-{f['slug']}" for f in index["figures"]]
    assert {p["section"] for p in plots} == {"inheritance", "radar", "corruptions", "attacks", "predictors", "wise_ft",
                                            "inside", "training"}
    for p in plots:
        assert p["w"] > 200 and p["h"] > 100 and p["drawn"] > 20, p
    # by layout: no two texts drawn in a figure (titles, labels, ticks, legends) overlap on the page
    overlaps = browser.js("""Array.from(document.querySelectorAll('figure.plot')).flatMap(f => {
        const boxes = Array.from(f.querySelectorAll('svg text')).filter(t => t.textContent.trim())
            .map(t => [t.textContent, t.getBoundingClientRect()]).filter(([, r]) => r.width > 0 && r.height > 0);
        const out = [];
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
            const [a, p] = boxes[i], [b, q] = boxes[j];
            const dx = Math.min(p.right, q.right) - Math.max(p.left, q.left);
            const dy = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
            if (dx > 1 && dy > 1) out.push([f.id, a, b]); }
        return out; })""")
    assert overlaps == []
    # ids of the inlined SVGs (clip paths, markers) are prefixed per plot: none clashes
    ids = browser.js("Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
    assert len(ids) == len(set(ids)) and len(ids) > 100
    # the heatmap shows the value of every cell, and the predictors' correlation table is there
    assert browser.js("document.querySelectorAll('#correlation-table tbody tr').length") == len(PREDICTORS) * len(agg.TARGETS)
    texts = browser.js("Array.from(document.querySelectorAll('#inheritance svg text')).map(t => t.textContent)")
    assert any(re.fullmatch(r"\d+\.\d", t) for t in texts) and any(re.fullmatch(r"\([+-]\d+\.\d\)", t) for t in texts)
    assert browser.js("document.querySelector('#cell-counts').textContent").count("done") == 1
    assert browser.errors() == []

    shot = browser.screenshot(ARTIFACTS / "report-html.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshot: {shot} (browser checks took {time.perf_counter() - t0:.1f} s)")


def test_attack_curves_read_the_engines_row_names(runs):
    """m0's per-task rows (``attack/pgd/eps=0.03/t1``) are averaged over tasks; transfer
    attacks get their own panel; eps parsed as numbers."""
    rows = load_run(runs[1]).rows
    curves = agg.attack_curves(rows)[("mlp", "narrow")]
    assert set(curves) == {"pgd", "fgsm", "pgd (transfer from m0)", "fgsm (transfer from m0)"}
    assert set(curves["pgd"]) == {"pretrained", "ft", "lp"} and set(curves["pgd (transfer from m0)"]) == {"ft", "lp"}
    eps, acc = zip(*curves["pgd"]["pretrained"])
    assert eps == (0.0, 0.01, 0.03, 0.1)
    m0 = [r["value"] for r in rows if r["method"] == "pretrained" and r["eval_set"].startswith("attack/pgd/eps=0.03/")
          and r["metric"] == "robust_acc"]
    assert len(m0) == len(TASKS) and acc[2] == pytest.approx(np.mean(m0))
    assert agg.parse_attack("attack/pgd/eps=oops") is None and agg.parse_attack("extra") is None
