"""The analysis figures, each written as PNG and PDF: per arm and the shared styling (arms), gradient norms (grad),
the paired differences (paired), tuning (tuning).

Figures draw what the statistics computed: modules here import each other, ablate.analysis.statistics and the core
modules of ablate.analysis, never the report's text (tests/test_layout.py checks it)."""
from __future__ import annotations

__all__: list[str] = []
