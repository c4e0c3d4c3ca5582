"""How many seeds a paired comparison needs: the sample size of a two-sided paired t-test at 80 % power.

With n seed pairs whose differences have mean delta and SD sigma, the paired t statistic follows a noncentral
t distribution with n - 1 degrees of freedom and noncentrality delta * sqrt(n) / sigma, so the test at level
alpha rejects with probability

    power(n) = P(T > t_{1 - alpha/2, n-1}) + P(T < -t_{1 - alpha/2, n-1}),   T ~ nct(n - 1, delta sqrt(n) / sigma).

`seeds_for_power` finds the smallest n >= 2 with power(n) >= the target by searching over n with that exact
formula (scipy.stats.nct, or where it returns NaN the same probability integrated numerically); the normal
approximation n = ((z_{1-alpha/2} + z_power) sigma / delta)^2 is returned beside it for comparison (it is always a
little optimistic for small n). sigma is the SD observed in the run,
taken as the true one: with few seeds it is itself uncertain, so the answer is a guide for planning the next
run, not a guarantee.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import integrate
from scipy import stats as _st

from ablate.errors import AblateError

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 10_000
ZERO = 1e-12  # accuracies are fractions k/N: a mean difference this small is 0 up to float rounding
COLUMNS = ["power_target", "power_target_pp", "seeds_needed", "seeds_needed_normal", "power_achieved", "power_note"]


@dataclass(frozen=True)
class SeedsNeeded:
    n: int | None            # smallest number of seed pairs reaching the power; None: cannot be estimated / above max
    power: float             # the power reached at n (NaN when n is None)
    normal_n: int | None     # the normal approximation, for comparison
    reason: str | None       # why n is None


def t_test_power(n: int, effect: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level alpha with n pairs, true mean difference `effect`, true SD `sd`.

    scipy.stats.nct gives NaN for some arguments (1 to 3 degrees of freedom with a large noncentrality, and
    others), and NaN < 0.8 is False: a NaN would read as "power reached". Where it does, the same probability
    is integrated directly: T = (Z + nc) / S with S = sqrt(chi2_df / df) independent of Z ~ N(0, 1), so
    P(|T| > c) = E_S[Phi(nc - c S) + Phi(-nc - c S)], integrated over S's density (scipy.integrate.quad)."""
    if n < 2:
        return math.nan
    df = n - 1
    nc = abs(effect) / sd * math.sqrt(n)
    crit = float(_st.t.ppf(1 - alpha / 2, df))
    power = float(_st.nct.sf(crit, df, nc) + _st.nct.cdf(-crit, df, nc))
    if not math.isfinite(power):
        power = _power_by_integration(df, nc, crit)
    return min(1.0, max(0.0, power))


def _power_by_integration(df: int, nc: float, crit: float) -> float:
    s = _st.chi(df, scale=1 / math.sqrt(df))
    low, high = float(s.ppf(1e-15)), float(s.isf(1e-15))
    value, _ = integrate.quad(lambda x: (_st.norm.cdf(nc - crit * x) + _st.norm.cdf(-nc - crit * x)) * s.pdf(x),
                              low, high, limit=200)
    return float(value)


def normal_approximation(effect: float, sd: float, power: float = POWER, alpha: float = ALPHA) -> int:
    z = float(_st.norm.ppf(1 - alpha / 2) + _st.norm.ppf(power))
    return max(2, math.ceil((z * sd / abs(effect)) ** 2))


def seeds_for_power(effect: float, sd: float, n_observed: int, power: float = POWER, alpha: float = ALPHA,
                    max_n: int = MAX_SEEDS) -> SeedsNeeded:
    """The smallest number of seed pairs at which the paired t-test detects `effect` with probability >= power,
    given the SD of the paired differences `sd` (from `n_observed` pairs); or why it cannot be estimated."""
    if n_observed < 2 or sd is None or not math.isfinite(sd):
        return SeedsNeeded(None, math.nan, None, f"cannot be estimated: the SD of the paired differences needs at "
                           f"least 2 seed pairs, this comparison has {n_observed}")
    if effect is None or not math.isfinite(effect):
        return SeedsNeeded(None, math.nan, None, "cannot be estimated: no mean difference was measured")
    if sd == 0:
        return SeedsNeeded(None, math.nan, None, f"cannot be estimated: the {n_observed} paired differences are all "
                           "equal (SD 0), so the t-test's power is undefined; an SD of 0 from so few seeds does not "
                           "mean the next seeds will agree as well, so run more seeds to measure the spread")
    if abs(effect) <= ZERO:
        return SeedsNeeded(None, math.nan, None, "cannot be estimated: the observed mean difference is 0, so there is "
                           "no difference to detect; name the smallest difference that matters with "
                           "`analyze --min-effect PP`")
    normal = normal_approximation(effect, sd, power, alpha)
    if t_test_power(max_n, effect, sd, alpha) < power:
        return SeedsNeeded(None, math.nan, normal, f"more than {max_n:,} seed pairs would be needed (the difference is "
                           "tiny against the spread of the paired differences)")
    # power(n) increases with n: bisection between a failing and a passing n.
    low, high = 1, 2
    while t_test_power(high, effect, sd, alpha) < power:
        low, high = high, min(2 * high, max_n)
    while high - low > 1:
        mid = (low + high) // 2
        if t_test_power(mid, effect, sd, alpha) >= power:
            high = mid
        else:
            low = mid
    return SeedsNeeded(high, t_test_power(high, effect, sd, alpha), normal, None)


def check_min_effect(min_effect: float | None) -> None:
    """--min-effect: a difference in percentage points of accuracy, above 0 and below 100."""
    if min_effect is None:
        return
    if not isinstance(min_effect, (int, float)) or not math.isfinite(min_effect) or not 0 < min_effect < 100:
        raise AblateError(f"--min-effect must be a difference in percentage points above 0 and below 100 (e.g. 1.5), "
                          f"got {min_effect!r}")


def add_power(comparisons: pd.DataFrame, min_effect: float | None = None) -> pd.DataFrame:
    """comparisons with the seeds each pair needs for 80 % power: to detect the named difference (`min_effect`,
    in pp) when given, else the observed mean difference; from the observed SD of the paired differences."""
    out = comparisons.copy()
    rows = []
    for c in out.to_dict("records"):
        target = min_effect / 100 if min_effect is not None else c["diff"]
        need = seeds_for_power(target, c["diff_sd"], int(c["n_pairs"]))
        rows.append({"power_target": "named (--min-effect)" if min_effect is not None else "observed",
                     "power_target_pp": 100 * target if target is not None else math.nan,
                     "seeds_needed": need.n, "seeds_needed_normal": need.normal_n, "power_achieved": need.power,
                     "power_note": need.reason or ""})
    extra = pd.DataFrame(rows, columns=COLUMNS, index=out.index)
    for col in COLUMNS:
        out[col] = extra[col]
    out["seeds_needed"] = out["seeds_needed"].astype("Int64")
    out["seeds_needed_normal"] = out["seeds_needed_normal"].astype("Int64")
    return out
