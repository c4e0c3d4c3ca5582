"""Measurements on trained or initial networks: lesions, loss landscapes, shattered gradients, signal propagation.

What other packages use is exported here, loaded when first used (it imports torch).
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "diagnostics": ["diagnose_run"],
    "lesion": ["lesion_run"],
})
