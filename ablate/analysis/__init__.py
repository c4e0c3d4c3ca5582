"""Analysis of study run folders: figures, summary tables (CSV, LaTeX, Markdown) and a report.

The CLI's `analyze` and `export` commands are thin wrappers over these functions. The names below are loaded
when first used, so that importing one part (the table `study` prints when it ends) does not import the
figures' plotting libraries.
"""
from __future__ import annotations

import importlib

_WHERE = {"Run": "load", "latest_run": "load", "load_run": "load",
          "FORMATS": "exports", "export": "exports", "export_configs": "exports", "terminal_table": "exports",
          "AnalysisResult": "report", "analyze": "report"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
