"""Student-t intervals of paired differences and Stein's two-stage sample size: shared by the analysis and by the
study engine's adaptive confirmation (which must not import the analysis and its plotting libraries).

Stein's two-stage design (Stein 1945): a pilot of n0 paired differences gives their SD s0; the number of pairs
to run in all is n = ceil((t_{1-a/2, n0-1} s0 / h)^2) (at least n0), so that the interval
mean(d_1..d_n) +- t_{1-a/2, n0-1} s0 / sqrt(n) is at most h wide on each side. The interval uses the pilot's SD
and n0 - 1 degrees of freedom, not the SD of all n: under normal differences the mean of all n is independent of
s0 given n (n depends on s0 alone), so the interval covers the true mean with probability exactly 1 - a whatever
n the pilot chose. The SD of all n pairs would not do: a pilot whose SD happened to be small stops early, and the
same small SD then narrows the interval (the width rule ablate used before inflated false positives that way).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence


def _finite(diffs: Sequence[float | None]) -> list[float]:
    return [float(d) for d in diffs if d is not None and math.isfinite(d)]


def sample_sd(diffs: Sequence[float | None]) -> float:
    """SD (ddof 1) of the finite values; NaN with fewer than 2."""
    values = _finite(diffs)
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@lru_cache(maxsize=4096)
def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t critical value t_{(1 + confidence) / 2, df}."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df=df))


def t_half_width(diffs: Sequence[float | None], confidence: float = 0.95) -> float:
    """Half-width of the Student-t confidence interval of the mean of `diffs`; inf with fewer than 2."""
    values = _finite(diffs)
    n = len(values)
    if n < 2:
        return math.inf
    return t_quantile(confidence, n - 1) * sample_sd(values) / math.sqrt(n)


def stein_pairs(pilot_sd: float, pilot_n: int, half_width: float, confidence: float = 0.95) -> int:
    """Stein's total number of pairs: the smallest n >= pilot_n whose two-stage interval (pilot SD, pilot_n - 1
    degrees of freedom) is at most `half_width` on each side. An SD that is not known gives pilot_n."""
    if pilot_n < 2 or not math.isfinite(pilot_sd) or half_width <= 0:
        return pilot_n
    return max(pilot_n, math.ceil((t_quantile(confidence, pilot_n - 1) * pilot_sd / half_width) ** 2 - 1e-9))


def two_stage_half_width(pilot_sd: float, pilot_n: int, n: int, confidence: float = 0.95) -> float:
    """Half-width of Stein's interval of the mean of n pairs whose first pilot_n gave the SD pilot_sd."""
    if pilot_n < 2 or n < 1 or not math.isfinite(pilot_sd):
        return math.nan
    return t_quantile(confidence, pilot_n - 1) * pilot_sd / math.sqrt(n)
