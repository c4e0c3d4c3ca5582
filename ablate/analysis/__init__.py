"""Analysis of study run folders: figures, summary tables (CSV, LaTeX, Markdown) and a report.

Grouped by what each part holds, in layers that import one way (tests/test_layout.py checks it):
- the core, here: load (a run folder as tables), context (what was run, in words), runinfo, formats (how a number
  is written), markdown_text (text made safe for Markdown);
- statistics/: the numbers (intervals, tests, verdicts, power, search luck, ...), no prose;
- figures/: the figures, drawn from the statistics;
- text/: the report's words and tables, the HTML page, the exports;
- report.py on top: `analyze`, which runs them all and writes the analysis folder.

The CLI's `analyze` and `export` commands are thin wrappers over these functions. The names below are loaded
when first used, so that importing one part (the table `study` prints when it ends) does not import the
figures' plotting libraries.
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "load": ["Run", "integrity_notes", "latest_run", "load_run", "study_runs"],
    "text.exports": ["FORMATS", "check_configs_dest", "export", "export_configs", "terminal_table"],
    "statistics.power": ["check_min_effect", "paired_verdicts"],
    "report": ["NOT_DRAWN", "AnalysisResult", "analyze", "check_out"],
})
