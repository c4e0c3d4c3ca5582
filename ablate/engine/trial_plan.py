"""TrialPlan: one trial as the engine plans, hands out and registers it (the one record between a study spec
and a trial folder), and the trials of a stage without a search (confirm seeds, grid points)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ablate.spec import Study, TrialConfig


@dataclass(frozen=True)
class TrialPlan:
    """A trial of a stage and arm: its config and the searched parameters it was given. A tuning trial also
    names its search point (round and index of the proposal, the repeat of the search it belongs to). Handed
    out to run, it says how far (`stop_after_evals`: a rung; None: to the end), whether it continues from its
    checkpoint (`resume`) and the fused group it trains in (`group`)."""

    stage: str
    arm: str
    config: TrialConfig
    params: dict[str, Any]
    round: int | None = None
    index: int | None = None
    repeat: int = 0
    stop_after_evals: int | None = None
    resume: bool = False
    group: str | None = None

    @property
    def trial_id(self) -> str:
        return self.config.trial_id()

    @property
    def seed(self) -> int:
        return self.config.seed

    def segment(self, stop_after_evals: int | None, resume: bool) -> "TrialPlan":
        """This trial handed out to run to `stop_after_evals` evaluations (None: to its end)."""
        return replace(self, stop_after_evals=stop_after_evals, resume=resume)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialPlan":
        return cls(**{**data, "config": TrialConfig.from_dict(data["config"])})


def plan_fixed_stage(study: Study, stage: str, best_params: dict[str, dict[str, Any]] | None = None,
                     seeds: list[int] | None = None) -> list[TrialPlan]:
    """The trials of a stage without a search: confirm (best params per arm × seeds) or grid; `seeds`
    (default: all of the spec's) is what an adaptive rule has decided so far."""
    planned = []
    for arm in study.arms:
        points = study.grid_points() if stage == "grid" else [dict((best_params or {}).get(arm.name, {}))]
        for point in points:
            for seed in study.seeds if seeds is None else seeds:
                cfg = study.trial_config(arm, point, seed)
                planned.append(TrialPlan(stage, arm.name, cfg, dict(point)))
    return planned
