"""Deciding how a study runs on this machine before it runs: launch checks, the GPU plan, fusing, the estimate.

What other packages use is exported here, loaded when first used.
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "estimate": ["estimate_study", "out_of_memory", "process_baseline", "study_memory", "trial_memory"],
    "path_limits": ["check_folder_path"],
})
