"""How far a study is, from its registry rows alone: the confirm seeds decided so far (fixed, or by the adaptive
seed rule of ablate.spec.seed_rule) and the trials left per stage. Reads and writes nothing.

The rule sees each compared pair's paired differences of test accuracy in percentage points, paired by seed (and
grid point in a grid study), with every run counted: a run that failed or diverged is scored at chance (intention
to treat), as the analysis scores it, so that an arm that fails more cannot look steadier than it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ablate.data import REGISTRY as DATASETS
from ablate.engine.selection import best_params, params_key
from ablate.spec import Study, compared_pairs, holm_family

DEFAULT_CLASSES = 10


def remaining(study: Study, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Trials still to finish per stage, from the registry rows alone (reads and writes nothing). With an
    adaptive seed rule that has not stopped yet, the seeds it has asked for so far count; more may follow."""
    count = lambda stage, arm: sum(1 for r in rows if r["stage"] == stage and r["arm"] == arm)  # noqa: E731
    state = rule_state(study, rows)
    seeds_left = len(state.seeds)
    if not state.final and study.seed_rule is not None and study.seed_rule.design != "two-stage":
        seeds_left += min(study.seed_rule.step, study.seed_rule.max - len(state.seeds))
    out = {}
    for stage in study.stages:
        per_arm = {"tune": study.trials_per_arm * len(study.tuning_seeds()) * study.repeats, "confirm": seeds_left,
                   "grid": len(study.grid_points()) * seeds_left}[stage]
        out[stage] = sum(max(0, per_arm - count(stage, a.name)) for a in study.arms)
    if study.space:
        # Each repeat of the search confirms its own choice (repeats that chose one point share its trials); an arm
        # whose tuning finished with no usable trial has no confirm runs to wait for.
        done = study.trials_per_arm * len(study.tuning_seeds())
        out["confirm"] = 0
        for a in study.arms:
            chosen = set()
            for repeat in range(study.repeats):
                tune = [r for r in rows if r["stage"] == "tune" and r["arm"] == a.name and (r.get("repeat") or 0) == repeat]
                best = best_params(study, rows, repeat).get(a.name)
                if best is not None:
                    chosen.add(params_key(best))
                elif len(tune) < done:
                    chosen.add(f"not yet chosen {repeat}")
            out["confirm"] += max(0, seeds_left * len(chosen) - count("confirm", a.name))
    return out


def chance_level(rows: list[dict[str, Any]]) -> float:
    """1 / classes of the study's dataset, as its trials recorded it (num_classes), else known from the dataset's
    name, else 1/10: the score of a run that failed or diverged."""
    for r in rows:
        k = r.get("num_classes")
        if isinstance(k, int) and not isinstance(k, bool) and k >= 2:
            return 1 / k
    for r in rows:
        d = DATASETS.get(str(r.get("dataset")))
        if d is not None and d.classes >= 2:
            return 1 / d.classes
    return 1 / DEFAULT_CLASSES


def itt_score(row: dict[str, Any], chance: float) -> float:
    """A final-stage run's test accuracy counted by intention to treat: its own when it finished and was scored,
    else chance."""
    acc = row.get("test_acc")
    if row.get("status") == "ok" and isinstance(acc, (int, float)) and not isinstance(acc, bool):
        return float(acc)
    return chance


@dataclass(frozen=True)
class RuleState:
    """Where the seed rule stands: the seeds decided so far and whether that is all of them; with an adaptive rule
    also what it looked at (each compared pair's paired differences in pp, per grid point, at the seeds it
    decided) and what it asked for."""

    seeds: list[int]
    final: bool
    pairs: list[tuple[str, str, tuple]] = field(default_factory=list)  # (arm a, arm b, grid point) per diffs entry
    diffs: list[list[float]] = field(default_factory=list)
    family: int = 1           # pairs the verdict's Holm correction spans
    asked: int = 0            # the seeds the rule asked for at its last decision (its two-stage target, or more)


def rule_state(study: Study, rows: list[dict[str, Any]]) -> RuleState:
    """The seeds the final stage runs so far, and whether that is all of them (see ablate.spec.seed_rule).

    Without a seed rule: the spec's seeds. With one: the first `min`, then what the rule asks once every arm
    has finished the seeds asked so far. Arms with no trial in the final stage (their tuning produced nothing
    usable) take no part. With a repeated search, the seeds are decided on the answer's confirm runs (the first
    repeat's choices).
    """
    rule = study.seed_rule
    if rule is None:
        return RuleState(list(study.seeds), True)
    final = study.stages[-1]
    chance = chance_level(rows)
    results: dict[tuple, float] = {}  # (arm, grid point, seed) -> test accuracy, failures at chance
    chosen = {arm: params_key(p) for arm, p in best_params(study, rows, 0).items()} if study.space else {}
    for r in rows:
        if r["stage"] == final and (not chosen or chosen.get(r["arm"]) == params_key(r.get("params") or {})):
            point = tuple(sorted((r.get("params") or {}).items())) if final == "grid" else ()
            results[(r["arm"], point, r.get("seed"))] = itt_score(r, chance)
    points = [tuple(sorted(p.items())) for p in study.grid_points()] if final == "grid" else [()]
    tuned = set(chosen) if study.space else {a.name for a in study.arms}
    arms = [a.name for a in study.arms if a.name in tuned]
    pairs = [(a, b, p) for a, b in compared_pairs(study) if a in arms and b in arms for p in points]
    family = holm_family(len(arms))
    n = rule.min
    while True:
        seeds = study.seeds[:n]
        diffs = [[100 * (results[(a, p, s)] - results[(b, p, s)]) for s in seeds
                  if (a, p, s) in results and (b, p, s) in results] for a, b, p in pairs]
        if any((a, p, s) not in results for a in arms for p in points for s in seeds):
            return RuleState(seeds, False, pairs, diffs, family, n)
        wanted = rule.wanted(diffs, n, family)
        if wanted <= n:
            return RuleState(seeds, True, pairs, diffs, family, n)
        n = wanted


def decided_seeds(study: Study, rows: list[dict[str, Any]]) -> tuple[list[int], bool]:
    """The seeds the final stage runs so far, and whether that is all of them (rule_state without the details)."""
    state = rule_state(study, rows)
    return state.seeds, state.final
