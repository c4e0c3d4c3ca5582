"""Analysis of study run folders: figures, summary tables (CSV, LaTeX, Markdown) and a report.

The CLI's `analyze` and `export` commands are thin wrappers over these functions. The names below are loaded
when first used, so that importing one part (the table `study` prints when it ends) does not import the
figures' plotting libraries.
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "load": ["Run", "integrity_notes", "latest_run", "load_run", "study_runs"],
    "exports": ["FORMATS", "check_configs_dest", "export", "export_configs", "terminal_table"],
    "power": ["check_min_effect"],
    "report": ["NOT_DRAWN", "AnalysisResult", "analyze"],
})
