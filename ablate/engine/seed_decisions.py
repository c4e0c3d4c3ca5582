"""How far a study is, from its registry rows alone: the confirm seeds decided so far (fixed, or by an
adaptive seed rule) and the trials left per stage. Reads and writes nothing."""
from __future__ import annotations

from typing import Any

from ablate.intervals import t_half_width
from ablate.engine.selection import best_params, params_key
from ablate.spec.study_spec import Study, compared_pairs


def remaining(study: Study, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Trials still to finish per stage, from the registry rows alone (reads and writes nothing). With an
    adaptive seed rule that has not stopped yet, the next round of seeds counts as left to run."""
    count = lambda stage, arm: sum(1 for r in rows if r["stage"] == stage and r["arm"] == arm)  # noqa: E731
    seeds, stopped = decided_seeds(study, rows)
    seeds_left = len(seeds) + (0 if stopped or study.seed_rule is None else
                               min(study.seed_rule.step, study.seed_rule.max - len(seeds)))
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


def decided_seeds(study: Study, rows: list[dict[str, Any]]) -> tuple[list[int], bool]:
    """The seeds the final stage runs so far, and whether that is all of them.

    Without a seed rule: the spec's seeds. With one: the first `min`, then `step` more each time every
    arm has finished the current seeds and some compared paired difference (test accuracy, in pp, paired
    by seed and grid point) still has a 95 % t-interval wider than `half_width` on each side, up to `max`.
    Arms with no trial in the final stage (their tuning produced nothing usable) take no part.
    """
    rule = study.seed_rule
    if rule is None:
        return list(study.seeds), True
    final = study.stages[-1]
    results: dict[tuple, float | None] = {}  # (arm, grid point, seed) -> test accuracy (None: failed)
    # With a repeated search, the seeds are decided on the answer's confirm runs (the first repeat's choices).
    chosen = {arm: params_key(p) for arm, p in best_params(study, rows, 0).items()} if study.space else {}
    for r in rows:
        if r["stage"] == final and (not chosen or chosen.get(r["arm"]) == params_key(r.get("params") or {})):
            point = tuple(sorted((r.get("params") or {}).items())) if final == "grid" else ()
            ok = r.get("status") == "ok" and r.get("test_acc") is not None
            results[(r["arm"], point, r.get("seed"))] = r["test_acc"] if ok else None
    points = [tuple(sorted(p.items())) for p in study.grid_points()] if final == "grid" else [()]
    tuned = set(chosen) if study.space else {a.name for a in study.arms}
    arms = [a.name for a in study.arms if a.name in tuned]
    n = rule.min
    while True:
        seeds = study.seeds[:n]
        if any((a, p, s) not in results for a in arms for p in points for s in seeds):
            return seeds, False
        widths = []
        for a, b in compared_pairs(study):
            if a not in arms or b not in arms:
                continue
            for p in points:
                diffs = [100 * (results[(a, p, s)] - results[(b, p, s)]) for s in seeds
                         if results[(a, p, s)] is not None and results[(b, p, s)] is not None]
                widths.append(t_half_width(diffs))
        if all(w <= rule.half_width for w in widths) or n >= rule.max:
            return seeds, True
        n = min(n + rule.step, rule.max)
