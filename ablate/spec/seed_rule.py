"""The confirm stage's seeds as a spec gives them: a fixed list, or an adaptive rule that decides how many of the
candidate seeds run (decided from the registered results in `ablate.engine.seed_decisions.decided_seeds`).

The adaptive rule is Stein's two-stage design (`seeds: {min: 6, max: 12, half_width: 1.5}`):

1. the first `min` seeds run in every arm (the pilot);
2. for every compared paired difference (test accuracy, in percentage points, failed runs scored at chance), the
   pilot's SD s0 fixes how many seed pairs it needs in all, n = ceil((t_{0.975, min-1} s0 / half_width)^2); the
   study runs the largest such n over the compared pairs, at least `min` and at most `max`;
3. where a compared pair then has too few pairs that differ for its exact sign-flip test to reach alpha (a zero
   difference has no sign: with k non-zero differences its smallest two-sided p is 2/2^k; with several pairs of
   arms, Holm's first step asks p < alpha / m), more seeds run, up to `max`.

The reported interval is Stein's: the mean of all n differences +- t_{0.975, min-1} s0 / sqrt(n) (ablate.intervals),
which covers with probability 0.95 whatever n the pilot chose. Rule and interval keep the verdict's type-I error at
alpha; tests/test_seed_design.py simulates it with the project's own functions.

Run folders made before this rule record no `design` in their spec.yaml: they ran the older width rule (add
`step` seeds until every 95 % t-interval is within +-half_width), which stops when the sample SD happens to be
small and so inflates false positives (to 5.4-5.6 % "supported" at paired SDs of 2.5-3 pp where 5 % was meant).
It is kept to read and resume such runs, never chosen for a new spec.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ablate.intervals import sample_sd, stein_pairs
from ablate.spec.limits import MAX_SEEDS, SEED_LIMIT
from ablate.spec.reading import check_keys, is_int, need

ALPHA = 0.05  # the verdict's level (two-sided), shared with ablate.analysis.statistics.compare
TWO_STAGE, WIDTH = "two-stage", "width"
ZERO_PP = 1e-9  # a paired difference this small (in pp) is 0: accuracies are fractions k/N


def holm_family(arms: int) -> int:
    """How many paired comparisons the verdict's Holm correction spans with `arms` scored arms (1 for two arms:
    no correction)."""
    return arms * (arms - 1) // 2 if arms > 2 else 1


def nonzero_needed(family: int = 1, alpha: float = ALPHA) -> int:
    """The fewest non-zero paired differences with which the exact sign-flip test can reach p < alpha / family
    (its smallest two-sided p with k of them is 2/2^k): 6 for one comparison at 0.05."""
    k = 1
    while 2.0 / 2 ** k >= alpha / family:
        k += 1
    return k


@dataclass(frozen=True)
class SeedRule:
    """`min` pilot seeds, then as many as Stein's two-stage design asks for the widest compared difference to be
    within `half_width` pp, at most `max` (design "two-stage"); or, in run folders made before it, the width rule
    (design "width": `step` seeds at a time until every t-interval is within `half_width`)."""

    min: int
    max: int
    half_width: float
    step: int = 1
    design: str = TWO_STAGE

    def text(self) -> str:
        if self.design == WIDTH:
            return (f"seeds added {self.step} at a time from {self.min} up to {self.max} until the 95 % CI of every "
                    f"compared paired difference is within ±{self.half_width:g} pp (the width rule of older ablate "
                    "versions, which inflates false positives)")
        return (f"Stein's two-stage design: a pilot of {self.min} seeds, whose SD of each compared paired difference "
                f"fixes how many seed pairs give a 95 % interval within ±{self.half_width:g} pp, at most {self.max}; "
                "more (up to the maximum) where too few pairs differ for the exact sign-flip test to reach α")

    def wanted(self, diffs: Sequence[Sequence[float | None]], done: int, family: int = 1) -> int:
        """How many seeds the rule wants in all, given each compared pair's paired differences (pp; one list per
        compared pair and grid point, in seed order, None where a side is missing) at the first `done` seeds, all
        finished. `done` or less: the rule has stopped. `family`: the pairs the verdict's Holm correction spans."""
        if done < self.min:
            return self.min
        if self.design == WIDTH:
            from ablate.intervals import t_half_width

            if all(t_half_width(d[:done]) <= self.half_width for d in diffs) or done >= self.max:
                return done
            return min(done + self.step, self.max)
        target = max([stein_pairs(sample_sd(d[:self.min]), self.min, self.half_width) for d in diffs] or [self.min])
        target = min(target, self.max)
        if done < target:
            return target
        need_k = nonzero_needed(family)
        short = max([need_k - nonzero(d[:done]) for d in diffs] or [0])
        if short > 0 and done < self.max:
            return min(self.max, done + short)
        return done


def nonzero(diffs: Sequence[float | None]) -> int:
    """Paired differences (pp) that are there and not 0: those the sign-flip test can give a sign."""
    return sum(1 for d in diffs if d is not None and math.isfinite(d) and abs(d) > ZERO_PP)


SEED_RULE_KEYS = {"min", "max", "half_width", "step", "start", "design"}


def parse_seeds(seeds: Any, source: str, resolved: bool = False, arms: int = 2) -> tuple[list[int], SeedRule | None]:
    """A list of seeds, or {min, max, half_width[, start]}: the seeds start, start + 1, ... are candidates and the
    rule decides how many run. `resolved`: the spec.yaml of a run folder, where a rule without `design` is the
    width rule it ran with. `arms`: the study's arms (the verdict's Holm correction, hence the seeds it needs)."""
    if isinstance(seeds, dict):
        check_keys(seeds, SEED_RULE_KEYS, source, "seeds")
        design = seeds.get("design", WIDTH if resolved else TWO_STAGE)
        need(design in (TWO_STAGE, WIDTH), source, f"seeds.design must be {TWO_STAGE!r} (Stein's two-stage design), "
             f"got {design!r}")
        need(design == TWO_STAGE or resolved, source, "seeds.design: width (add seeds until the interval is narrow) "
             "inflates false positives and is kept only to read run folders made with it; use the two-stage design "
             "(leave seeds.design out)")
        need(design == WIDTH or "step" not in seeds, source, "seeds.step belonged to the width rule; Stein's two-stage "
             "design decides the number of seeds from the pilot's SD at once: remove seeds.step")
        low, high, width = seeds.get("min"), seeds.get("max"), seeds.get("half_width")
        step, start = seeds.get("step", 1), seeds.get("start", 0)
        need(is_int(low) and low >= 2, source, f"seeds.min (the pilot) must be an integer >= 2 (an SD needs 2 seeds), "
             f"got {low!r}")
        need(is_int(high) and low <= high <= MAX_SEEDS, source, f"seeds.max must be an integer from seeds.min ({low}) "
             f"to {MAX_SEEDS}, got {high!r}")
        if design == TWO_STAGE:
            family = holm_family(arms)
            k = nonzero_needed(family)
            holm = f" (Holm over the {family} pairs of {arms} arms asks p < {ALPHA:g}/{family})" if family > 1 else ""
            need(high >= k, source, f"seeds.max must be at least {k}: the verdict's exact sign-flip test needs {k} "
                 f"seed pairs that differ to reach p < {ALPHA:g}{holm}, got {high}")
        need(isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width) and width > 0,
             source, f"seeds.half_width must be a positive number of percentage points, got {width!r}")
        need(is_int(step) and step >= 1, source, f"seeds.step must be an integer >= 1, got {step!r}")
        need(is_int(start) and 0 <= start <= SEED_LIMIT - high, source, f"seeds.start must be an integer from 0 to "
             f"2^63 - seeds.max, got {start!r}")
        return list(range(start, start + high)), SeedRule(low, high, float(width), step, design)
    need(isinstance(seeds, list) and len(seeds) > 0, source, "seeds must be a non-empty list of integers (the confirm-"
         "stage seeds), or {min: 6, max: 12, half_width: 1.5} for Stein's two-stage design")
    need(all(is_int(s) for s in seeds), source, "seeds must be integers")
    need(len(seeds) <= MAX_SEEDS, source, f"{len(seeds):,} seeds, more than {MAX_SEEDS}")
    need(len(set(seeds)) == len(seeds), source, "seeds must not repeat")
    return list(seeds), None


def recorded_seeds(seeds: Any, rule: SeedRule | None) -> Any:
    """The spec's `seeds` as a run folder's spec.yaml records them: a two-stage rule names its design, so that the
    run folder says which rule decided its seeds."""
    if rule is None or not isinstance(seeds, dict):
        return seeds
    return {**seeds, "design": rule.design}
