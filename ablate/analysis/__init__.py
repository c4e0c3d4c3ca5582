"""Analysis of study run folders: figures, summary tables (CSV, LaTeX, Markdown) and a report.

The CLI's `analyze` and `export` commands are thin wrappers over these functions.
"""
from .load import Run, latest_run, load_run
from .exports import FORMATS, export, export_configs, terminal_table
from .report import AnalysisResult, analyze

__all__ = ["AnalysisResult", "FORMATS", "Run", "analyze", "export", "export_configs", "latest_run", "load_run",
           "terminal_table"]
