"""The report's words and tables: the lead, the sections, the methods and references, the tables (terminal,
Markdown, LaTeX, CSV), the HTML page, the exports, and the text of the optional analyses (factorial, lesion,
diagnostics, seeds, search luck).

The top layer below report.py: modules here may import the figures, the statistics and the core modules of
ablate.analysis; none of those imports from here (tests/test_layout.py checks it)."""
from __future__ import annotations

__all__: list[str] = []
