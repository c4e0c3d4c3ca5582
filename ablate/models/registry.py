"""The names of the model axes and what combinations of them are valid: the families and depths, shortcuts,
blocks, norms and residual stages. Imports no torch, so specs can be checked without it.
"""
from __future__ import annotations

from typing import Any


from ablate.errors import AblateError


FAMILIES: dict[str, tuple[int, ...]] = {"imagenet": (10, 18, 34), "cifar": (20, 32, 44, 56, 110)}
DEFAULT_DEPTH = {"imagenet": 18, "cifar": 20}  # a family's depth when none is given
SHORTCUTS = ("projection", "identity", "projection-all")
BLOCKS = ("basic", "preact")
NORMS = ("batch", "none")
STAGES = {"imagenet": 4, "cifar": 3}


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def check_axes(family: str, residual: bool, shortcut: str, block: str, residual_stages: Any, norm: str,
               zero_init_residual: Any) -> tuple[int, ...] | None:
    """Refuse an unknown or contradictory combination of model axes; returns residual_stages as a sorted tuple."""
    if shortcut not in SHORTCUTS:
        raise AblateError(f"unknown shortcut {shortcut!r}; valid shortcuts: {_join(SHORTCUTS)}")
    if block not in BLOCKS:
        raise AblateError(f"unknown block {block!r}; valid blocks: {_join(BLOCKS)}")
    if norm not in NORMS:
        raise AblateError(f"unknown norm {norm!r}; valid norms: {_join(NORMS)}")
    if not isinstance(zero_init_residual, bool):
        raise AblateError(f"zero_init_residual must be true or false, got {zero_init_residual!r}")
    if zero_init_residual and norm != "batch":
        raise AblateError("zero_init_residual sets the scale of each residual branch's last BatchNorm, so it needs "
                          "norm: batch")
    if zero_init_residual and not residual:
        raise AblateError("zero_init_residual needs residual: true (a plain network has no residual branch to zero)")
    if residual_stages is None:
        return None
    n = STAGES.get(family, 0)
    if isinstance(residual_stages, (str, bytes)) or not hasattr(residual_stages, "__iter__"):
        raise AblateError(f"residual_stages must be a list of stage numbers (1 to {n}) or null, got {residual_stages!r}")
    stages = list(residual_stages)
    if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= n for s in stages):
        raise AblateError(f"residual_stages must list stage numbers from 1 to {n} (the {family} layout has {n} "
                          f"stages), got {stages}")
    if len(set(stages)) != len(stages):
        raise AblateError(f"residual_stages lists a stage twice: {stages}")
    if not residual:
        raise AblateError("residual_stages needs residual: true (a plain network has no residual connections to keep)")
    if not stages:
        raise AblateError("residual_stages is empty; for a network without residual connections write residual: false")
    if len(stages) == n:
        raise AblateError(f"residual_stages lists every stage ({sorted(stages)}); leave it out (null) for residual "
                          "connections in all stages, so one model has one trial id")
    return tuple(sorted(stages))
