"""The confirm stage's design and verdict, simulated: how often the verdict comes out *supported*, how often the
reported 95 % interval covers the true difference, and how many seeds the design runs, for a true mean paired
difference and SD of the paired differences. Behind the seeds-for-power figures, the design's stated error
rates in the report, and tests/test_seed_design.py.

Each simulated run draws its paired differences (percentage points) from a normal distribution and rounds them
to the lattice accuracies of a test subset take (0.5 pp for 200 test images), so that ties and zero differences
happen as they do in real runs. The number of seeds is what the study's own rule decides
(ablate.spec.seed_rule.SeedRule.wanted), or fixed; the interval and the exact sign-flip test are computed as
ablate.analysis.statistics.stats.paired_diff computes them (vectorised here; tests check that both agree), and *supported*
is what ablate.analysis.statistics.compare.verdict asks of them: the 95 % interval excludes 0 and the sign-flip p is below
alpha / family (Holm's first step; with one compared pair, alpha). The verdict's further conditions (the interval
over test images, the failure counts) can only turn *supported* into *inconclusive*, so the simulated rate of
*supported* is an upper bound of the real one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ablate.intervals import t_quantile
from ablate.spec import ALPHA, TWO_STAGE, SeedRule
from .stats import EQUIVALENCE_CONFIDENCE, sign_flip_pvalues

LATTICE_PP = 0.5   # one test image in 200
REPS = 1000        # simulated runs per figure in a report (the test runs more)
SEED = 0


@dataclass(frozen=True)
class DesignSim:
    """What `reps` simulated runs of a design gave."""

    effect_pp: float
    sd_pp: float
    reps: int
    supported: float     # share whose verdict was *supported* (either direction)
    supported_right: float  # share *supported* in the direction of the true difference (power when it is not 0)
    covered: float       # share whose 95 % interval covered the true difference
    equivalent: float    # share *no meaningful difference* (NaN without a margin)
    mean_n: float        # seeds run, on average
    stop_n: dict[int, int]  # seeds run -> runs that stopped there

    def se(self, share: float) -> float:
        """Monte Carlo standard error of a share of these runs."""
        return math.sqrt(max(share * (1 - share), 1e-12) / self.reps)


def intervals(d: np.ndarray, pilot: int = 0, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) per row of d (R x n): Stein's two-stage interval from the first `pilot` columns' SD when
    pilot > 1, else the Student t-interval; as stats.paired_diff computes it (a zero SD gives a zero width)."""
    n = d.shape[1]
    mean = d.mean(axis=1)
    if pilot > 1:
        sd, df = d[:, :pilot].std(axis=1, ddof=1), pilot - 1
    else:
        sd, df = d.std(axis=1, ddof=1), n - 1
    half = t_quantile(confidence, df) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _draw(rng: np.random.Generator, effect: float, sd: float, shape: tuple[int, int], lattice: float) -> np.ndarray:
    d = rng.normal(effect, sd, size=shape)
    return np.round(d / lattice) * lattice if lattice > 0 else d


def simulate(effect_pp: float, sd_pp: float, *, rule: SeedRule | None = None, n: int | None = None, family: int = 1,
             margin_pp: float | None = None, reps: int = REPS, seed: int = SEED, lattice_pp: float = LATTICE_PP,
             alpha: float = ALPHA) -> DesignSim:
    """`reps` runs of the design: Stein's two-stage rule `rule` (one compared pair, its Holm family `family`), or a
    fixed number `n` of seed pairs."""
    if (rule is None) == (n is None):
        raise ValueError("simulate needs either a seed rule or a fixed number of seeds")
    rng = np.random.default_rng(seed)
    most = rule.max if rule is not None else n
    draws = _draw(rng, effect_pp, sd_pp, (reps, most), lattice_pp)
    if rule is None:
        runs = np.full(reps, n)
    else:
        runs = np.empty(reps, dtype=int)
        for i, row in enumerate(draws):
            done = rule.min
            while True:
                wanted = rule.wanted([row[:done].tolist()], done, family)
                if wanted <= done:
                    break
                done = wanted
            runs[i] = done
    pilot = rule.min if rule is not None and rule.design == TWO_STAGE else 0  # the width rule's interval: t
    supported = np.zeros(reps, bool)
    right = np.zeros(reps, bool)
    covered = np.zeros(reps, bool)
    equivalent = np.zeros(reps, bool)
    for size in np.unique(runs):
        rows = np.flatnonzero(runs == size)
        d = draws[rows, :size]
        mean, low, high = intervals(d, pilot)
        p, _ = sign_flip_pvalues(d)
        ok = ((low > 0) | (high < 0)) & (p < alpha / family)
        supported[rows] = ok
        right[rows] = ok & (np.sign(mean) == np.sign(effect_pp)) if effect_pp != 0 else False
        covered[rows] = (low <= effect_pp) & (effect_pp <= high)
        if margin_pp is not None:
            _, eq_low, eq_high = intervals(d, pilot, EQUIVALENCE_CONFIDENCE)
            equivalent[rows] = ~ok & (eq_low > -margin_pp) & (eq_high < margin_pp)
    stops = {int(k): int(v) for k, v in zip(*np.unique(runs, return_counts=True))}
    return DesignSim(effect_pp, sd_pp, reps, float(supported.mean()), float(right.mean()), float(covered.mean()),
                     float(equivalent.mean()) if margin_pp is not None else math.nan, float(runs.mean()), stops)
