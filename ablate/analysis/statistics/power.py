"""How many seeds a paired comparison needs: the chance that the verdict rule actually used calls a true
difference *supported* (power), and the seed pairs at which that chance reaches 80 %.

The verdict asks for a 95 % interval that excludes 0 and an exact sign-flip p below alpha (ablate.analysis.statistics.compare),
and the adaptive rule decides the seeds (ablate.spec.seed_rule), so its power is simulated with those very rules
(ablate.analysis.statistics.seed_design.simulate: normal paired differences with the SD observed here, on the lattice of the
run's test-set size). `seeds_for_verdict` finds the smallest fixed number of seed pairs whose simulated power
reaches 80 % (the sign-flip test can reach alpha only from 6 pairs that differ, so no fewer); above 16 pairs the
sign-flip test no longer limits anything and the noncentral-t power of the paired t-test stands in for the
simulation:

    power(n) = P(T > t_{1 - alpha/2, n-1}) + P(T < -t_{1 - alpha/2, n-1}),   T ~ nct(n - 1, delta sqrt(n) / sigma).

sigma is the SD observed in the run, taken as the true one: with few seeds it is itself uncertain, so the answer is
a guide for planning the next run, not a guarantee.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from scipy import integrate
from scipy import stats as _st

from ablate.errors import AblateError
from ablate.spec import SeedRule, holm_family, nonzero_needed
from .seed_design import LATTICE_PP, REPS, simulate

if TYPE_CHECKING:
    from ..load import Run

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 10_000
ZERO = 1e-12  # accuracies are fractions k/N: a mean difference this small is 0 up to float rounding
MAX_POWER_ROWS = 12  # above this many pairs only the pairs that differ in one factor get power figures
EXACT_UP_TO = 16  # seed pairs up to which the verdict's power is simulated (the exact sign-flip test's range)
COLUMNS = ["power_target", "power_target_pp", "seeds_needed", "power_achieved", "power_method", "design_power",
           "design_mean_seeds", "observed_seeds_needed", "power_note"]


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


def seeds_for_verdict(effect: float, sd: float, n_observed: int, family: int = 1, lattice_pp: float = 0.5,
                      reps: int = REPS) -> SeedsNeeded:
    """The smallest fixed number of seed pairs at which the verdict rule (95 % interval excludes 0 and the exact
    sign-flip p < alpha / family) calls a true difference `effect` (a fraction of accuracy) *supported* in its
    direction with probability >= 80 %, the paired differences' SD being `sd`: simulated up to EXACT_UP_TO pairs,
    the paired t-test's noncentral-t answer above (the normal approximation beside it, as `normal_n`)."""
    first = seeds_for_power(effect, sd, n_observed)
    if first.reason is not None and first.n is None and "more than" not in first.reason:
        return first
    low = max(2, nonzero_needed(family))
    power = lambda n: simulate(100 * effect, 100 * sd, n=n, family=family, lattice_pp=lattice_pp,  # noqa: E731
                               reps=reps).supported_right
    if power(EXACT_UP_TO) < POWER:
        return first if first.n is None or first.n > EXACT_UP_TO else SeedsNeeded(
            EXACT_UP_TO + 1, t_test_power(EXACT_UP_TO + 1, effect, sd), first.normal_n, None)
    lo, hi = low - 1, EXACT_UP_TO  # power(hi) >= POWER; power(lo) < POWER (or lo below the reachable)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power(mid) >= POWER:
            hi = mid
        else:
            lo = mid
    return SeedsNeeded(hi, power(hi), first.normal_n, None)


def lattice_pp(run: "Run") -> float:
    """The step of a test-accuracy difference in pp: one test image (100 / test_size), where the arms agree on it."""
    size = run.config_value("test_size")
    return 100 / size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else LATTICE_PP


def run_power(run: "Run", comparisons: pd.DataFrame, min_effect: float | None = None) -> pd.DataFrame:
    """add_power with what the run says: the spec's min_effect, its seed rule, the Holm family of its scored arms,
    its test-set size, and (with many pairs) only the pairs the study compares."""
    from ablate.spec import compared_pairs

    scored = len(set(comparisons["arm_a"]) | set(comparisons["arm_b"])) if len(comparisons) else 0
    many = len(comparisons) > MAX_POWER_ROWS
    return add_power(comparisons, min_effect, declared=run.study.min_effect, rule=run.study.seed_rule,
                     family=holm_family(scored), lattice_pp=lattice_pp(run),
                     pairs=set(compared_pairs(run.study)) if many else None)


def paired_verdicts(run: "Run", min_effect: float | None = None) -> pd.DataFrame:
    """The comparisons of a run as analyze writes them to comparisons.csv: every pair of scored arms paired by seed
    and per image, its verdict (ablate.analysis.statistics.compare.compare) and the seeds it needs for power
    (run_power). `min_effect` (pp) as in run_power."""
    from ..load import load_predictions
    from .compare import compare

    return run_power(run, compare(run, load_predictions(run), min_effect), min_effect)


def _target(c: dict, min_effect: float | None, declared: float | None) -> tuple[str, float | None]:
    if min_effect is not None:
        return "named (--min-effect)", min_effect / 100
    if declared is not None:
        return "declared (spec min_effect)", declared / 100
    return "observed", c["diff"]


def add_power(comparisons: pd.DataFrame, min_effect: float | None = None, *, declared: float | None = None,
              rule: SeedRule | None = None, family: int = 1, lattice_pp: float = 0.5,
              pairs: set | None = None) -> pd.DataFrame:
    """comparisons with the seeds each pair's verdict needs for 80 % power and the power of the design as run: at
    the difference named with `min_effect` (pp), else the one the spec declares (`declared`), else the observed
    mean difference; the seeds the observed difference would need beside it. From the observed SD of the paired
    differences. `rule`: the study's adaptive seed rule (else the design is its fixed number of seeds); `family`:
    the pairs the Holm correction spans; `pairs`: only these (arm_a, arm_b) get the simulation (others: NaN)."""
    out = comparisons.copy()
    rows = []
    for c in out.to_dict("records"):
        kind, target = _target(c, min_effect, declared)
        n_obs, sd = int(c["n_pairs"]), c["diff_sd"]
        row = {"power_target": kind, "power_target_pp": 100 * target if target is not None else math.nan,
               "seeds_needed": None, "power_achieved": math.nan, "power_method": "", "design_power": math.nan,
               "design_mean_seeds": math.nan, "observed_seeds_needed": None, "power_note": ""}
        if pairs is not None and (c["arm_a"], c["arm_b"]) not in pairs:
            row["power_note"] = "not computed: not one of the pairs the study compares (arms differing in one factor)"
            rows.append(row)
            continue
        need = seeds_for_verdict(target, sd, n_obs, family, lattice_pp)
        row.update(seeds_needed=need.n, power_achieved=need.power, power_note=need.reason or "",
                   power_method="" if need.n is None else "simulated verdict" if need.n <= EXACT_UP_TO
                   else "paired t-test (noncentral t) above 16 pairs")
        if need.n is not None or (sd is not None and math.isfinite(sd) and sd > 0 and target):
            if n_obs >= 2 and math.isfinite(sd) and sd > 0 and target is not None and abs(target) > ZERO:
                sim = (simulate(100 * target, 100 * sd, rule=rule, family=family, lattice_pp=lattice_pp) if rule
                       is not None else simulate(100 * target, 100 * sd, n=max(n_obs, 2), family=family,
                                                 lattice_pp=lattice_pp))
                row.update(design_power=sim.supported_right, design_mean_seeds=sim.mean_n)
        if kind != "observed":
            obs = seeds_for_verdict(c["diff"], sd, n_obs, family, lattice_pp)
            row["observed_seeds_needed"] = obs.n
        rows.append(row)
    extra = pd.DataFrame(rows, columns=COLUMNS, index=out.index)
    for col in COLUMNS:
        out[col] = extra[col]
    for col in ("seeds_needed", "observed_seeds_needed"):
        out[col] = out[col].astype("Int64")
    return out
