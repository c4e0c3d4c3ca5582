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


_SIGNS: dict[int, np.ndarray] = {}  # n -> every pattern of n signs (2^n x n), built once


def _all_signs(n: int) -> np.ndarray:
    if n not in _SIGNS:
        _SIGNS[n] = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    return _SIGNS[n]


def sign_flip_pvalues(d: np.ndarray, samples: int = SIGN_FLIP_SAMPLES, seed: int = 0) -> tuple[np.ndarray, bool]:
    """The two-sided sign-flip test of mean = 0 for every row of `d` (R x n, finite values): (p per row, exact).

    Under the null each paired difference is as likely to have either sign, so the p-value is the share of the
    2^n sign patterns whose mean is at least as far from 0 as the observed one. Up to EXACT_MAX_N pairs all
    patterns are enumerated (a zero difference doubles both counts, so the smallest p with k non-zero differences
    is 2/2^k); above that `samples` random patterns (seeded, the same for every row) give p = (1 + hits) /
    (1 + samples). A row whose mean is 0 (up to float rounding) has p = 1.
    """
    d = np.atleast_2d(np.asarray(d, dtype=float))
    rows, n = d.shape
    if n == 0:
        return np.full(rows, NAN), True
    tol = np.array([_tolerance(r) for r in d])
    observed = np.abs(d.mean(axis=1))
    if n <= EXACT_MAX_N:
        # Every pattern, counted exactly by meeting in the middle: the sign sums of the first half (2^h) against the
        # sorted sign sums of the second, so each row costs 2^h binary searches instead of 2^n sums.
        h = n // 2
        left_signs, right_signs = _all_signs(h), _all_signs(n - h)
        hits = np.empty(rows)
        for i, x in enumerate(d):
            left = left_signs @ x[:h] if h else np.zeros(1)
            right = np.sort(right_signs @ x[h:])
            bound = n * (observed[i] - tol[i])  # |sum| at least this far from 0 counts as extreme
            above = right.size - np.searchsorted(right, bound - left, side="left")
            below = np.searchsorted(right, -bound - left, side="right")
            hits[i] = above.sum() + below.sum()
        p = hits / 2 ** n
        return np.where(observed <= tol, 1.0, np.minimum(p, 1.0)), True
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(samples, n))
    hits = np.empty(rows)
    chunk = max(1, 2 ** 22 // samples)  # at most ~4M pattern means in memory at once
    for start in range(0, rows, chunk):
        means = np.abs(signs @ d[start:start + chunk].T) / n  # patterns x rows
        hits[start:start + chunk] = np.sum(means >= observed[start:start + chunk] - tol[start:start + chunk], axis=0)
    return np.where(observed <= tol, 1.0, (1 + hits) / (1 + samples)), False


def sign_flip_test(d: Sequence[float], samples: int = SIGN_FLIP_SAMPLES, seed: int = 0) -> tuple[float, bool]:
    """Two-sided sign-flip (paired permutation) test of mean(d) = 0: (p, exact); see sign_flip_pvalues."""
    x = _clean(d)
    if x.size == 0:
        return NAN, True
    p, exact = sign_flip_pvalues(x[None, :], samples, seed)
    return float(p[0]), exact


def smallest_sign_flip_p(k: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with k non-zero paired differences."""
    return 2.0 / 2 ** k if k >= 1 else 1.0 if k == 0 else NAN


@dataclass(frozen=True)
class PairedDiff:
    """Paired comparison of two arms over seeds (d_s = a_s - b_s)."""

    n: int                 # number of pairs
    mean: float            # mean paired difference
    low: float             # 95 % interval of the mean paired difference: Student t, or Stein's two-stage one
    high: float
    sd: float              # SD of the paired differences (ddof 1)
    effect: float          # standardised effect size d_z = mean / sd (inf when sd = 0 and mean != 0)
    p_sign_flip: float     # two-sided, exact up to EXACT_MAX_N pairs
    sign_flip_exact: bool
    t: float               # t statistic (NaN when the SD is 0 or n < 2): paired, or Stein's mean sqrt(n) / s0
    p_t: float
    nonzero: int = 0       # pairs that differ (a zero difference has no sign for the sign-flip test)
    pilot: int = 0         # Stein's design: the first `pilot` pairs gave the SD of the interval (0: Student t)
    pilot_sd: float = NAN
    eq_low: float = NAN    # the (1 - 2 x 0.05) = 90 % interval of the same kind, for the equivalence test
    eq_high: float = NAN

    @property
    def min_p(self) -> float:
        return smallest_sign_flip_p(self.nonzero)


EQUIVALENCE_CONFIDENCE = 0.90  # two one-sided tests at 0.05 each: the 90 % interval inside (-margin, +margin)


def paired_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, pilot: int = 0) -> PairedDiff:
    """The paired comparison of equal-length sequences (pair i = the same seed in both arms).

    Pairs with a missing side drop out together. `pilot` > 1: the pairs come from Stein's two-stage design whose
    first `pilot` pairs (in the order given: seed order) were its pilot; the interval is then Stein's (the mean of
    all n pairs +- t_{pilot-1} s0 / sqrt(n), s0 the pilot's SD; see ablate.intervals) and t = mean sqrt(n) / s0 with
    pilot - 1 degrees of freedom. Otherwise (or when fewer than `pilot` pairs are there) the Student t-interval of
    all n.
    """
    from ablate.intervals import t_quantile, two_stage_half_width

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
    nonzero = int(np.sum(d != 0))
    p_flip, exact = sign_flip_test(d)
    mean = float(d.mean())
    if n < 2:
        return PairedDiff(n, mean, NAN, NAN, NAN, NAN, p_flip, exact, NAN, NAN, nonzero)
    sd = std(d)
    if np.all(np.abs(d - d[0]) <= tol):
        sd = 0.0
    effect = mean / sd if sd > 0 else (0.0 if abs(mean) <= tol else math.copysign(math.inf, mean))
    two_stage = pilot > 1 and n >= pilot
    s0, df = (std(d[:pilot]), pilot - 1) if two_stage else (sd, n - 1)
    if not s0 > 0:
        # No spread (in the pilot): the interval has width 0 and t is undefined; the sign-flip test still works.
        return PairedDiff(n, mean, mean, mean, sd, effect, p_flip, exact, NAN, NAN, nonzero,
                          pilot if two_stage else 0, s0 if two_stage else NAN, mean, mean)
    half = (two_stage_half_width(s0, pilot, n, confidence) if two_stage
            else t_quantile(confidence, df) * sd / math.sqrt(n))
    eq_half = half * t_quantile(EQUIVALENCE_CONFIDENCE, df) / t_quantile(confidence, df)
    t = mean * math.sqrt(n) / s0
    p_t = float(2 * _st.t.sf(abs(t), df))
    return PairedDiff(n, mean, mean - half, mean + half, sd, effect, p_flip, exact, t, p_t, nonzero,
                      pilot if two_stage else 0, s0 if two_stage else NAN, mean - eq_half, mean + eq_half)


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
