"""Ray Tune, as the study engine uses it: the only package that imports Ray.

What the engine uses is exported here, loaded when first used (so that naming it does not import Ray).
"""
from __future__ import annotations

from ablate.lazy_names import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "session": ["check_address", "ray_temp_dir", "start_ray", "stop_ray"],
    "tuner": ["tune_study"],
})
