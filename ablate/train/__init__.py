"""One trial: the training loop (single or fused), how its steps execute (precision, compile), augmentation,
learning-rate schedule, telemetry, and the files a trial leaves behind.

What other packages use is exported here, loaded when first used (all of it imports torch).
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "device": ["deterministic_cuda", "recorded_device", "torch_threads"],
    "fused": ["FusedModel", "run_fused"],
    "loop": ["SingleModel", "evaluate", "model_for", "run_trial"],
    "reproduce": ["reproduce_trial"],
    "trial_files": ["write_paused", "write_trial_folder"],
})
