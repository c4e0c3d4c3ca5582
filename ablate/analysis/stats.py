"""Small, pure statistics for comparing arms over seeds.

Every function takes plain sequences of numbers and returns plain numbers, so each can be checked
against scipy on known inputs. NaNs mean "not defined for this input" (e.g. a CI from one seed),
never an error: a half-finished study should still produce a report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

NAN = float("nan")
WILCOXON_MIN_N = 6  # below this the exact signed-rank test cannot reach p < 0.05 two-sided


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean with a Student-t confidence interval (the usual choice for a handful of seeds)."""
    x = _clean(values)
    n = x.size
    if n == 0:
        return Interval(NAN, NAN, NAN, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, NAN, NAN, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(_st.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n)


def std(values: Sequence[float]) -> float:
    x = _clean(values)
    return float(x.std(ddof=1)) if x.size > 1 else NAN


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000,
                      confidence: float = 0.95, seed: int = 0) -> Interval:
    """mean(a) - mean(b) with a percentile bootstrap CI, resampling each group independently.

    Groups are resampled separately (not as pairs) because the interval should also hold when
    seeds are missing from one arm; the paired test is where seed pairing is used.
    """
    x, y = _clean(a), _clean(b)
    if x.size == 0 or y.size == 0:
        return Interval(NAN, NAN, NAN, 0)
    diff = float(x.mean() - y.mean())
    if x.size < 2 and y.size < 2:
        return Interval(diff, NAN, NAN, x.size + y.size)
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    my = y[rng.integers(0, y.size, size=(n_resamples, y.size))].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(mx - my, [alpha / 2, 1 - alpha / 2])
    return Interval(diff, float(low), float(high), x.size + y.size)


@dataclass(frozen=True)
class PairedTest:
    test: str          # "wilcoxon", "paired t" or "none"
    statistic: float
    pvalue: float
    n: int             # number of pairs
    reason: str        # one phrase saying why this test (or why none)


def paired_test(a: Sequence[float], b: Sequence[float], min_wilcoxon: int = WILCOXON_MIN_N) -> PairedTest:
    """Two-sided paired test on equal-length sequences (pair i = the same seed in both arms).

    Wilcoxon signed-rank from `min_wilcoxon` pairs up (no normality assumption); below that the
    signed-rank test cannot reach p < 0.05 at all, so the paired t-test is used instead.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have equal length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    n = int(d.size)
    if n < 2:
        return PairedTest("none", NAN, NAN, n, f"only {n} seed pair(s); a paired test needs at least 2")
    # Accuracies are fractions k/N: differences that are equal on paper differ by float rounding.
    tol = 1e-12 * max(1.0, float(np.abs(x[keep]).max()), float(np.abs(y[keep]).max()))
    if np.all(np.abs(d) <= tol):
        # Identical results under every seed: no evidence of any difference.
        return PairedTest("none", 0.0, 1.0, n, "the two arms gave identical results under every seed")
    if n >= min_wilcoxon:
        res = _st.wilcoxon(x[keep], y[keep])
        return PairedTest("wilcoxon", float(res.statistic), float(res.pvalue), n,
                          f"{n} seed pairs, at least {min_wilcoxon}, so no normality assumption is needed")
    if np.all(np.abs(d - d[0]) <= tol):
        # A constant non-zero difference has zero variance: t is infinite and scipy returns NaN.
        return PairedTest("paired t", math.copysign(math.inf, d[0]), 0.0, n,
                          f"only {n} seed pairs, too few for the signed-rank test to reach p < 0.05; the difference is identical under every seed")
    res = _st.ttest_rel(x[keep], y[keep])
    return PairedTest("paired t", float(res.statistic), float(res.pvalue), n,
                      f"only {n} seed pairs, too few for the signed-rank test to reach p < 0.05")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaNs stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, NAN)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        # The step-down maximum keeps adjusted p-values monotone in the raw ones.
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
