"""Every report of a run from one load of its store: what `ribench run` and `ribench report` write.

``write_reports(out_dir)`` loads the run once (``rundata.load_run``) and writes
report.html (with the PNG figures), then report.md (linking those figures) from that
same ``RunData``, which it returns for the console table (``markdown.print_summary``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .rundata import RunData, RunSource, as_run


class Reports(NamedTuple):
    html: Path
    markdown: Path
    run: RunData


def write_reports(source: RunSource, figures: bool = True) -> Reports:
    """Write ``report.html`` (and, with ``figures``, ``figures/*.png``) and ``report.md`` of a
    run (``RunData`` or folder), reading its store once."""
    from .html import write_html_report
    from .markdown import write_report

    run = as_run(source)
    html = write_html_report(run, figures=figures)  # draws the figures report.md links to
    return Reports(html, write_report(run), run)
