"""The search points of a run as the study's selection sees them (ablate.engine.selection): per arm and repeat of
the search, each point (its parameters) with the result of every tuning seed it ran, scored and ranked by the
selection's own rule. Shared by the expected-max curves (tuning_budget), the search-luck replay (search_luck) and
benchmarks/selection_robustness.py.

A point's seeds are its registered tuning rows that ended (ok, stopped by halving, diverged or failed). Its score
is selection's: the mean over its seeds of each seed's best dev accuracy, a seed that diverged or failed counting
0; ties go to the lower mean dev loss, then to the earlier point (round, then index); a point whose seeds all ran
to the end beats one stopped by halving; a point whose seeds all failed is never chosen. `choose_points` applies
the same rule to many simulated searches at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablate.engine import FAILED, PointScore, SeedResult, params_key, point_score
from ablate.spec import Study

ENDED = ("ok", "stopped", *FAILED)


@dataclass
class Point:
    """One search point of one arm in one repeat of the search, with its tuning seeds' results."""

    arm: str
    repeat: int
    params: dict[str, Any]
    order: tuple[int, int]                                   # (round, index) of its first proposal
    seeds: list[SeedResult] = field(default_factory=list)    # selection's view of each tuning seed
    seed_ids: list[int] = field(default_factory=list)
    tests: list[float] = field(default_factory=list)         # each seed's test accuracy (NaN: none recorded)

    @property
    def key(self) -> str:
        return params_key(self.params)

    @property
    def score(self) -> PointScore:
        return point_score(self.seeds, self.order)

    @property
    def complete(self) -> bool:
        """Every seed ran to its end (none was stopped by halving)."""
        return all(s.status != "stopped" for s in self.seeds)

    @property
    def eligible(self) -> bool:
        """Selection can choose it: at least one seed did not fail."""
        return any(s.status not in FAILED for s in self.seeds)

    @property
    def failed(self) -> list[bool]:
        return [s.status in FAILED for s in self.seeds]

    def rank(self) -> tuple:
        """Selection's sort key, best first: eligible, ran to the end, then the score's rank."""
        return (not self.eligible, not self.complete, self.score.rank())


def search_points(study: Study, rows: list[dict[str, Any]], repeat: int | None = None) -> list[Point]:
    """The points of the registered tuning rows (of one repeat, or of every repeat when `repeat` is None), in the
    order they were first proposed; grouped as ablate.engine.selection.best_params groups them."""
    points: dict[tuple[str, int, str], Point] = {}
    for row in rows:
        if row.get("stage") != "tune" or row.get("status") not in ENDED:
            continue
        k = int(row.get("repeat") or 0)
        if repeat is not None and k != repeat:
            continue
        params = dict(row.get("params") or {})
        order = (int(row.get("round") or 0), int(row.get("index") or 0))
        point = points.setdefault((row["arm"], k, params_key(params)), Point(row["arm"], k, params, order))
        point.order = min(point.order, order)
        acc, loss, test = row.get("best_dev_acc"), row.get("best_dev_loss"), row.get("test_acc")
        point.seeds.append(SeedResult(row["status"], -math.inf if acc is None else float(acc),
                                      math.inf if loss is None else float(loss)))
        point.seed_ids.append(row.get("seed"))
        point.tests.append(math.nan if test is None or row["status"] in FAILED else float(test))
    arm_order = {a.name: i for i, a in enumerate(study.arms)}
    return sorted(points.values(), key=lambda p: (arm_order.get(p.arm, len(arm_order)), p.repeat, p.order))


def chosen(points: list[Point]) -> dict[tuple[str, int], Point]:
    """Per (arm, repeat): the point selection chooses (none for an arm whose points all failed)."""
    best: dict[tuple[str, int], Point] = {}
    for p in points:
        if p.eligible and ((p.arm, p.repeat) not in best or p.rank() < best[(p.arm, p.repeat)].rank()):
            best[(p.arm, p.repeat)] = p
    return best


def tie_order(points: list[Point]) -> list[int]:
    """Indices of `points` in the order selection breaks ties between equal scores: lower mean dev loss, then the
    earlier point."""
    return sorted(range(len(points)), key=lambda i: (points[i].score.loss, points[i].order))


def choose_points(scores: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """Selection's choice in many searches at once: `scores` holds one row per search and one column per point,
    the columns in tie order (tie_order); per row the column of the highest score, ties to the first column,
    never a column that is not eligible (all its seeds failed in that search); -1 where none is."""
    s = np.asarray(scores, dtype=float)
    if eligible is not None:
        s = np.where(eligible, s, -np.inf)
    pick = np.argmax(s, axis=1)
    pick[~np.isfinite(s[np.arange(s.shape[0]), pick])] = -1
    return pick
