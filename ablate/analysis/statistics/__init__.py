"""The numbers of an analysis, no prose: intervals and tests (stats), the verdicts (compare), power and the seed
rule's design (power, seed_design), what a study's search and tuning budget did (search_points, search_luck,
tuning_budget, lr_effects), factorial effects, collapse, the spread across data draws, the per-arm summary.

The layers of ablate.analysis import one way: text → figures → statistics → the core modules in ablate/analysis/
(load, context, runinfo, formats, markdown_text); report.py (`analyze`) on top uses them all. Modules here import
only each other and the core (tests/test_layout.py checks it). Other packages use ablate.analysis's exports."""
from __future__ import annotations

__all__: list[str] = []
