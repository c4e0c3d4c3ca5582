"""The ResNet family: the registry of model axes (torch-free) and the torch modules built from it.

The registry's names load with the package; the torch modules' names when first used.
"""
from __future__ import annotations

from ablate.models.registry import (DEFAULT_DEPTH, FACTORY_INPUTS, FAMILY_TITLES, MODEL_AXES, ModelSpec, axis_meta,
    axis_text, coerce_stages, neutral_defaults)
from ablate.lazy_names import lazy_names

# these import torch: loaded when first used
__getattr__, _LAZY = lazy_names(__name__, {
    "resnet": ["Block", "IdentityShortcut", "ResNet", "build_model"],
    "factory": ["build_trial_model", "check_axes", "load_factory"],
    "residual": ["NO_MARKED_BLOCKS", "Residual", "residual_blocks"],
    "summary": ["format_summary", "summarize"],
    "torchvision_check": ["verify_torchvision"],
})

__all__ = ["DEFAULT_DEPTH", "FACTORY_INPUTS", "FAMILY_TITLES", "MODEL_AXES", "ModelSpec", "axis_meta", "axis_text",
           "coerce_stages", "neutral_defaults"]
__all__ += _LAZY
