"""How search points are ranked, inside a round (successive halving) and at the end (the config each arm's
confirm stage reruns): robustly, by the mean over a point's tuning seeds, never by one seed's maximum.

A point's score is the mean, over its tuning seeds, of each seed's best dev accuracy (a seed that diverged or
failed counts 0, the worst accuracy there is). Ties go to the lower mean dev loss (each seed's dev loss at its
best evaluation), then to the earlier point (round, then index: for a grid, the smaller value). At the end, a
point whose seeds all ran to their last step beats one stopped by halving, whatever the scores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ablate.spec import Study

FAILED = ("diverged", "error")


@dataclass(frozen=True)
class SeedResult:
    """One tuning seed of a point, as far as it got: its status (None while it still runs), its best dev
    accuracy and the dev loss at that evaluation (inf when not known)."""

    status: str | None
    best_acc: float
    loss_at_best: float = math.inf

    @property
    def value(self) -> float:
        if self.status in FAILED or not math.isfinite(self.best_acc):
            return 0.0
        return max(0.0, self.best_acc)


def seed_result(status: str | None, dev_acc: list[float], dev_loss: list[float]) -> SeedResult:
    """A seed's result from its dev curve (the first evaluation of the best accuracy, and its loss)."""
    if not dev_acc:
        return SeedResult(status, -math.inf)
    best = max(range(len(dev_acc)), key=lambda i: (dev_acc[i], -i))
    loss = dev_loss[best] if best < len(dev_loss) and math.isfinite(dev_loss[best]) else math.inf
    return SeedResult(status, dev_acc[best], loss)


@dataclass(frozen=True)
class PointScore:
    acc: float  # mean over the tuning seeds of each seed's best dev accuracy
    loss: float  # mean over the seeds of the dev loss at each one's best evaluation (inf if any is unknown)
    order: tuple[int, int]  # (round, index) of the point's first proposal

    def rank(self) -> tuple:
        """Sort key, best first: higher accuracy, then lower loss, then the earlier point."""
        return (-self.acc, self.loss, self.order)


def point_score(seeds: list[SeedResult], order: tuple[int, int]) -> PointScore:
    if not seeds:
        return PointScore(0.0, math.inf, order)
    losses = [s.loss_at_best for s in seeds]
    loss = sum(losses) / len(losses) if all(math.isfinite(v) for v in losses) else math.inf
    return PointScore(sum(s.value for s in seeds) / len(seeds), loss, order)


def params_key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def rows_of_repeat(rows: list[dict[str, Any]], repeat: int) -> list[dict[str, Any]]:
    return [r for r in rows if (r.get("repeat") or 0) == repeat]


def best_params(study: Study, rows: list[dict[str, Any]], repeat: int | None = None) -> dict[str, dict[str, Any]]:
    """Per arm, the parameters of its best search point among the registered tuning rows of one repeat of the
    search (`repeat`; None: the first repeat the rows hold, which for a whole registry is the answer's). Points
    whose seeds all diverged or failed are never chosen; a point that ran to the end beats one stopped by
    halving. The choice depends on the results alone, not on the order in which trials finished."""
    tune = [r for r in rows if r["stage"] == "tune"]
    if repeat is None:
        repeat = min(((r.get("repeat") or 0) for r in tune), default=0)
    points: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows_of_repeat(tune, repeat):
        if row.get("status") not in ("ok", "stopped", *FAILED):
            continue
        key = (row["arm"], params_key(row.get("params") or {}))
        point = points.setdefault(key, {"params": dict(row.get("params") or {}), "seeds": [],
                                        "order": (row.get("round") or 0, row.get("index") or 0)})
        point["order"] = min(point["order"], (row.get("round") or 0, row.get("index") or 0))
        acc = row.get("best_dev_acc")
        loss = row.get("best_dev_loss")
        point["seeds"].append(SeedResult(row["status"], -math.inf if acc is None else float(acc),
                                         math.inf if loss is None else float(loss)))
    best: dict[str, tuple] = {}
    for (arm, _), point in points.items():
        seeds = point["seeds"]
        if all(s.status in FAILED for s in seeds):
            continue
        complete = all(s.status != "stopped" for s in seeds)
        rank = (not complete, point_score(seeds, point["order"]).rank())
        if arm not in best or rank < best[arm][0]:
            best[arm] = (rank, point["params"])
    return {arm: dict(params) for arm, (_, params) in best.items()}
