"""Planned trials: what the planner hands out for a stage without a search (confirm seeds, grid points)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


from ablate.spec.trial_config import TrialConfig
from ablate.spec.study_spec import Study

if TYPE_CHECKING:
    pass


# --- planned trials and the registry ---------------------------------------------------------------
@dataclass(frozen=True)
class PlannedTrial:
    stage: str
    arm: str
    config: TrialConfig
    params: dict[str, Any]

    @property
    def trial_id(self) -> str:
        return self.config.trial_id()


def plan_fixed_stage(study: Study, stage: str, best_params: dict[str, dict[str, Any]] | None = None,
                     seeds: list[int] | None = None) -> list[PlannedTrial]:
    """The trials of a stage without a search: confirm (best params per arm × seeds) or grid; `seeds`
    (default: all of the spec's) is what an adaptive rule has decided so far."""
    planned = []
    for arm in study.arms:
        points = study.grid_points() if stage == "grid" else [dict((best_params or {}).get(arm.name, {}))]
        for point in points:
            for seed in study.seeds if seeds is None else seeds:
                data = {"data_seed": seed} if study.resample_data else {}
                cfg = study.arm_config(arm, **point, seed=seed, **data)
                planned.append(PlannedTrial(stage, arm.name, cfg, dict(point)))
    return planned
