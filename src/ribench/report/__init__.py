"""Reports of a run: the Markdown and HTML reports, the console summary, the leaderboard.

``rundata`` reads the store (once per report), ``aggregate`` turns rows into numbers,
``catalogue`` says how each metric is shown, ``tables`` and ``prediction`` lay the numbers
out, and ``markdown``, ``html`` and ``leaderboard`` format them; ``write_reports`` writes
report.html and report.md from one load.
"""

from .markdown import print_summary, write_report
from .pipeline import Reports, write_reports
from .tables import inheritance_tables, summary_table

__all__ = ["Reports", "inheritance_tables", "print_summary", "summary_table", "write_report", "write_reports"]
