"""Small, pure statistics for comparing arms over seeds and over test images.

Every function takes plain sequences (or arrays) of numbers and returns plain numbers, so each can
be checked against scipy or by hand on known inputs. NaNs mean "not defined for this input" (e.g. a
CI from one seed), never an error: a half-finished study should still produce a report.

The design is paired: seed s of one arm is compared with seed s of the other (same data, same
initialisation seed), so the unit of analysis is the paired difference d_s = a_s - b_s.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

NAN = float("nan")
EXACT_MAX_N = 16          # the sign-flip test enumerates all 2^n patterns up to here, else samples them
SIGN_FLIP_SAMPLES = 100_000
IMAGE_BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    cut: bool = False      # the interval reached past what the quantity can be and was cut at that bound

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def cut_to(low: float, high: float, lower: float | None = None, upper: float | None = None
           ) -> tuple[float, float, bool]:
    """(low, high) cut at the bounds of what the quantity can be (an accuracy in [0, 1], a loss >= 0, a
    correlation in [-1, 1]), and whether that cut anything. A t-interval from a few seeds can pass them
    (99.8 ± 0.8 %); reporting it uncut would claim accuracies above 100 %."""
    if math.isnan(low) or math.isnan(high):
        return low, high, False
    new_low = max(low, lower) if lower is not None else low
    new_high = min(high, upper) if upper is not None else high
    return new_low, new_high, (new_low != low or new_high != high)


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def mean_ci(values: Sequence[float], confidence: float = 0.95,
            bounds: tuple[float | None, float | None] = (None, None)) -> Interval:
    """Mean with a Student-t confidence interval (the usual choice for a handful of seeds), cut at `bounds`
    (what the quantity can be, see cut_to; `cut` says whether it was)."""
    x = _clean(values)
    n = x.size
    if n == 0:
        return Interval(NAN, NAN, NAN, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, NAN, NAN, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(_st.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    low, high, cut = cut_to(mean - half, mean + half, *bounds)
    return Interval(mean, low, high, n, cut)


def std(values: Sequence[float]) -> float:
    x = _clean(values)
    return float(x.std(ddof=1)) if x.size > 1 else NAN


def _tolerance(*arrays: np.ndarray) -> float:
    # Accuracies are fractions k/N: differences equal on paper differ by float rounding.
    top = max([1.0] + [float(np.abs(a).max()) for a in arrays if a.size])
    return 1e-12 * top


def sign_flip_test(d: Sequence[float], samples: int = SIGN_FLIP_SAMPLES, seed: int = 0) -> tuple[float, bool]:
    """Two-sided sign-flip (paired permutation) test of mean(d) = 0: (p, exact).

    Under the null each paired difference is as likely to have either sign, so the p-value is the
    share of the 2^n sign patterns whose mean is at least as far from 0 as the observed one. Up to
    EXACT_MAX_N pairs all patterns are enumerated (smallest p = 2 / 2^n); above that `samples`
    random patterns are drawn (seeded) and p = (1 + hits) / (1 + samples).
    """
    x = _clean(d)
    n = x.size
    if n == 0:
        return NAN, True
    tol = _tolerance(x)
    observed = abs(float(x.mean()))
    if observed <= tol:
        return 1.0, True
    if n <= EXACT_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ x) / n
        return float(np.mean(means >= observed - tol)), True
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(samples, n))
    hits = int(np.sum(np.abs(signs @ x) / n >= observed - tol))
    return (1 + hits) / (1 + samples), False


def smallest_sign_flip_p(n: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with n pairs."""
    return 2.0 / 2 ** n if n >= 1 else NAN


@dataclass(frozen=True)
class PairedDiff:
    """Paired comparison of two arms over seeds (d_s = a_s - b_s)."""

    n: int                 # number of pairs
    mean: float            # mean paired difference
    low: float             # 95 % Student-t interval of the mean paired difference
    high: float
    sd: float              # SD of the paired differences (ddof 1)
    effect: float          # standardised effect size d_z = mean / sd (inf when sd = 0 and mean != 0)
    p_sign_flip: float     # two-sided, exact up to EXACT_MAX_N pairs
    sign_flip_exact: bool
    t: float               # paired t statistic (NaN when sd = 0 or n < 2)
    p_t: float

    @property
    def min_p(self) -> float:
        return smallest_sign_flip_p(self.n)


def paired_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDiff:
    """The paired comparison of equal-length sequences (pair i = the same seed in both arms).

    Pairs with a missing side drop out together.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have equal length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    n = int(d.size)
    if n == 0:
        return PairedDiff(0, NAN, NAN, NAN, NAN, NAN, NAN, True, NAN, NAN)
    tol = _tolerance(x[keep], y[keep])
    d = np.where(np.abs(d) <= tol, 0.0, d)
    ci = mean_ci(d, confidence)
    sd = std(d)
    p_flip, exact = sign_flip_test(d)
    if n < 2:
        return PairedDiff(n, ci.mean, NAN, NAN, NAN, NAN, p_flip, exact, NAN, NAN)
    if np.all(np.abs(d - d[0]) <= tol):
        # No spread: the t-interval has width 0 and t is undefined; the sign-flip test still works.
        sd = 0.0
        effect = 0.0 if abs(d[0]) <= tol else math.copysign(math.inf, d[0])
        return PairedDiff(n, ci.mean, ci.mean, ci.mean, sd, effect, p_flip, exact, NAN, NAN)
    res = _st.ttest_1samp(d, 0.0)
    return PairedDiff(n, ci.mean, ci.low, ci.high, sd, ci.mean / sd, p_flip, exact,
                      float(res.statistic), float(res.pvalue))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar test on the discordant images: a_only = images only model A got right."""
    total = a_only + b_only
    if total == 0:
        return 1.0
    return float(_st.binomtest(min(a_only, b_only), total, 0.5).pvalue)


def image_seed_bootstrap(diffs: Sequence[np.ndarray], groups: Sequence[int], n_resamples: int = IMAGE_BOOTSTRAP_RESAMPLES,
                         confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap CI of the mean per-image accuracy difference over seeds and test images.

    diffs[s] holds, for seed pair s, correct_A - correct_B per test image (values -1, 0, 1), in the
    order of that seed's test subset. Pairs with the same `groups` value were scored on the same
    images: one resample of those images is shared by them (the images are one sample, reused), while
    different groups resample their own images. Each bootstrap draw resamples the seed pairs too.
    """
    if len(diffs) == 0:
        return Interval(NAN, NAN, NAN, 0)
    if len(diffs) != len(groups):
        raise ValueError("one group label per seed pair is needed")
    rng = np.random.default_rng(seed)
    n = len(diffs)
    per_pair = np.empty((n_resamples, n))
    draws: dict[int, np.ndarray] = {}
    for s, (d, g) in enumerate(zip(diffs, groups)):
        d = np.asarray(d, dtype=float)
        if g not in draws:
            m = d.size
            draws[g] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples)
        weights = draws[g]
        if weights.shape[1] != d.size:
            raise ValueError("seed pairs of one group must have the same number of images")
        per_pair[:, s] = weights @ d / d.size
    seed_counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    stats_ = (seed_counts * per_pair).sum(axis=1) / n
    mean = float(np.mean([np.mean(np.asarray(d, dtype=float)) for d in diffs]))
    alpha = 1 - confidence
    low, high = np.quantile(stats_, [alpha / 2, 1 - alpha / 2])
    return Interval(mean, float(low), float(high), n)


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
