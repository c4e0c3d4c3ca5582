"""Datasets: the registry of names, the file readers, and the seeded in-memory train/dev/test subsets.

The registry's names load with the package; the readers' and the splits' when first used.
"""
from __future__ import annotations

from ablate.data.registry import (DATASETS, FOLDER, REGISTRY, canonical_dataset, check_dataset, info, is_user_data,
    may_mirror, no_flip)
from ablate.lazy_names import lazy_names

# these import torch: loaded when first used
__getattr__, _LAZY = lazy_names(__name__, {
    "readers": ["SOURCES", "Unavailable", "expected_shape", "folder_pixels"],
    "splits": ["DATA_DIR_ENV", "load_splits", "resolve_data_dir"],
    "user_data": ["check_loader"],
})

__all__ = ["DATASETS", "FOLDER", "REGISTRY", "canonical_dataset", "check_dataset", "info", "is_user_data", "may_mirror",
           "no_flip"]
__all__ += _LAZY
