"""Collapsed runs: per arm, the share of final-stage runs whose test accuracy fell far below the arm's own typical
run, with an exact (Clopper-Pearson) 95 % interval, and the mean of the runs that did not collapse.

A run *collapsed* when its test accuracy is below chance + (the arm's median - chance) / 2: halfway from the
arm's median run down to guessing (83.0 / 79.5 / 38.0 % with 10 classes: median 79.5, threshold 44.8, one of three
collapsed). A run that diverged or failed without a test score counts as collapsed. An arm whose median is at or
below chance has no threshold (every typical run is a guess).
"""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats as _st

from . import stats
from ..context import chance
from ..load import Run

COLUMNS = ["arm", "runs", "collapsed", "failed", "median", "threshold", "rate", "rate_low", "rate_high",
           "kept_mean", "kept_low", "kept_high", "kept_cut", "seeds_collapsed"]
RULE = ("a run *collapsed* when its test accuracy is below chance + (the arm's median − chance) / 2, halfway from the "
        "arm's median run down to guessing; a run that diverged or failed without a test score counts as collapsed")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a proportion k / n (NaN for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(_st.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(_st.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def collapse(run: Run) -> pd.DataFrame:
    """Per arm (spec order), over its reported final-stage runs: the rule's numbers (COLUMNS)."""
    level = chance(run)
    rows = []
    for arm in run.arm_names:
        rep = run.reported[run.reported["arm"] == arm]
        if rep.empty:
            continue
        scored = (rep["status"] == "ok") & rep["test_acc"].notna()
        acc = rep.loc[scored, "test_acc"]
        median = float(acc.median()) if len(acc) else math.nan
        threshold = level + (median - level) / 2 if median > level else math.nan
        low_run = scored & (rep["test_acc"] < threshold) if not math.isnan(threshold) else scored & False
        down = low_run | ~scored
        k, n = int(down.sum()), len(rep)
        kept = stats.mean_ci(rep.loc[scored & ~low_run, "test_acc"], bounds=(0, 1))
        lo, hi = clopper_pearson(k, n)
        rows.append({"arm": arm, "runs": n, "collapsed": k,
                     "failed": int((~scored).sum()), "median": median, "threshold": threshold, "rate": k / n,
                     "rate_low": lo, "rate_high": hi, "kept_mean": kept.mean, "kept_low": kept.low,
                     "kept_high": kept.high, "kept_cut": kept.cut,
                     "seeds_collapsed": " ".join(str(int(s)) for s in rep.loc[down, "seed"])})
    return pd.DataFrame(rows, columns=COLUMNS)
