"""The confirm stage's seeds as a spec gives them: a fixed list, or an adaptive rule that adds seeds until
the paired confidence intervals are narrow enough (decided in `progress.decided_seeds`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ablate.spec.limits import MAX_SEEDS, SEED_LIMIT
from ablate.spec.reading import check_keys, is_int, need


@dataclass(frozen=True)
class SeedRule:
    """Seeds are added `step` at a time, from `min` up to `max`, until the 95 % t-interval of every paired
    difference the study is about (test accuracy, in percentage points) is at most `half_width` wide on
    each side. It stops on precision, never on significance: the rule looks at the spread of the
    differences, not at whether they exclude zero, so it does not inflate false positives."""

    min: int
    max: int
    half_width: float
    step: int = 1

    def text(self) -> str:
        return (f"seeds added {self.step} at a time from {self.min} up to {self.max} until the 95 % CI of every "
                f"compared paired difference is within ±{self.half_width:g} pp")


SEED_RULE_KEYS = {"min", "max", "half_width", "step", "start"}


def parse_seeds(seeds: Any, source: str) -> tuple[list[int], SeedRule | None]:
    """A list of seeds, or {min, max, half_width[, step, start]}: the seeds start, start + 1, ... are
    candidates and the rule decides how many run."""
    if isinstance(seeds, dict):
        check_keys(seeds, SEED_RULE_KEYS, source, "seeds")
        low, high, width = seeds.get("min"), seeds.get("max"), seeds.get("half_width")
        step, start = seeds.get("step", 1), seeds.get("start", 0)
        need(is_int(low) and low >= 2, source, f"seeds.min must be an integer >= 2 (a paired CI needs 2 seeds), got {low!r}")
        need(is_int(high) and low <= high <= MAX_SEEDS, source, f"seeds.max must be an integer from seeds.min ({low}) "
             f"to {MAX_SEEDS}, got {high!r}")
        need(isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width) and width > 0,
             source, f"seeds.half_width must be a positive number of percentage points, got {width!r}")
        need(is_int(step) and step >= 1, source, f"seeds.step must be an integer >= 1, got {step!r}")
        need(is_int(start) and 0 <= start <= SEED_LIMIT - high, source, f"seeds.start must be an integer from 0 to "
             f"2^63 - seeds.max, got {start!r}")
        return list(range(start, start + high)), SeedRule(low, high, float(width), step)
    need(isinstance(seeds, list) and len(seeds) > 0, source, "seeds must be a non-empty list of integers (the confirm-"
         "stage seeds), or {min: 3, max: 10, half_width: 1.0} to add seeds until the CIs are that narrow")
    need(all(is_int(s) for s in seeds), source, "seeds must be integers")
    need(len(seeds) <= MAX_SEEDS, source, f"{len(seeds):,} seeds, more than {MAX_SEEDS}")
    need(len(set(seeds)) == len(seeds), source, "seeds must not repeat")
    return list(seeds), None
