"""'## Seeds': how many seeds ran and why (a fixed list, or the adaptive rule and where it stopped), and how
many seeds each paired comparison would need for 80 % power (ablate.analysis.power)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ablate.intervals import t_half_width
from ablate.spec.study_spec import compared_pairs
from .load import Run
from .power import ALPHA, MAX_SEEDS, POWER
from .tables import Fmt
from .markdown_text import code

MAX_POWER_ROWS = 12  # above this many pairs the table keeps the pairs that differ in one factor


@dataclass(frozen=True)
class RuleOutcome:
    state: str                         # "precision", "max" or "running"
    seeds: list[int]                   # the seeds decided so far
    widest: float                      # widest half-width (pp) of a compared paired difference at those seeds
    widest_pair: tuple[str, str] | None
    per_arm: dict[str, tuple[int, int]]  # arm -> (final-stage trials finished, of them scored)


def rule_outcome(run: Run) -> RuleOutcome | None:
    """Where the adaptive seed rule stopped (None without one): recomputed from the registered results the way
    ablate.engine.planner.decided_seeds decides, at the seeds it decided."""
    rule = run.study.seed_rule
    if rule is None:
        return None
    final = run.trials[run.trials["stage"] == run.final_stage]
    final = final[final["seed"].isin(run.seeds)]
    points = list(run.study.grid) if run.study.grid else []
    ok = final[(final["status"] == "ok") & final["test_acc"].notna()]
    widest, widest_pair = -math.inf, None
    for a, b in compared_pairs(run.study):
        xa, xb = ok[ok["arm"] == a], ok[ok["arm"] == b]
        if xa.empty or xb.empty:
            continue
        merged = xa.merge(xb, on=["seed", *points], suffixes=("_a", "_b"))
        groups = merged.groupby(points, dropna=False) if points else [((), merged)]
        for _, g in groups:
            width = t_half_width(100 * (g["test_acc_a"] - g["test_acc_b"]))
            if width > widest:
                widest, widest_pair = width, (a, b)
    per_arm = {a: (int((final["arm"] == a).sum()), int((ok["arm"] == a).sum())) for a in run.arm_names}
    if not run.seeds_final:
        state = "running"
    else:
        state = "precision" if widest <= rule.half_width else "max"
    return RuleOutcome(state, list(run.seeds), widest, widest_pair, per_arm)


def rule_lines(run: Run) -> list[str]:
    """The adaptive rule in words and where it stopped; nothing for a fixed list of seeds."""
    rule, out = run.study.seed_rule, rule_outcome(run)
    if rule is None or out is None:
        return []
    spec = f"`seeds: {{min: {rule.min}, max: {rule.max}, half_width: {rule.half_width:g}, step: {rule.step}}}`"
    n = len(out.seeds)
    seeds = ", ".join(map(str, out.seeds))
    where = "" if out.widest_pair is None else f" ({code(out.widest_pair[0])} minus {code(out.widest_pair[1])})"
    widest = "n/a" if not math.isfinite(out.widest) else f"±{out.widest:.2f} pp"
    if out.state == "precision":
        stop = (f"It stopped on precision at {n} seeds ({seeds}){' (its minimum)' if n == rule.min else ''}: every "
                f"compared paired difference had a 95 % t-interval within ±{rule.half_width:g} pp, the widest "
                f"{widest}{where}.")
    elif out.state == "max":
        stop = (f"It stopped at its maximum of {n} seeds ({seeds}) without reaching that precision: the widest 95 % "
                f"t-interval was still {widest}{where}, wider than ±{rule.half_width:g} pp.")
    else:
        stop = (f"It has not decided yet (the study is unfinished): {n} seeds ({seeds}) decided so far; the widest "
                f"interval so far {widest}{where}.")
    arms = "; ".join(f"{code(a)} {k} ({s} scored)" for a, (k, s) in out.per_arm.items())
    return [f"Seeds were chosen by the spec's adaptive rule {spec}: {rule.text()}. {stop} Final-stage trials per arm: "
            f"{arms}. The rule looks at the spread of the differences, not at whether they exclude 0, so stopping "
            "on it does not inflate false positives (adding seeds until p < 0.05 would)."]


def _pairs_for_table(run: Run, comparisons: pd.DataFrame) -> pd.DataFrame:
    if len(comparisons) <= MAX_POWER_ROWS:
        return comparisons
    pairs = set(compared_pairs(run.study))
    return comparisons[[(c.arm_a, c.arm_b) in pairs for c in comparisons.itertuples()]]


def power_lines(run: Run, comparisons: pd.DataFrame, min_effect: float | None = None) -> list[str]:
    """The seeds each paired comparison needs for 80 % power, with what was computed (comparisons from
    power.add_power)."""
    if comparisons.empty or "seeds_needed" not in comparisons:
        return []
    f = Fmt.of(run)
    target = (f"a difference of {min_effect:g} pp (named with `--min-effect`)" if min_effect is not None
              else "the mean paired difference observed here")
    lines = [f"Seeds for {100 * POWER:.0f} % power: for each pair, the smallest number of seed pairs n at which a "
             f"two-sided paired t-test at α = {ALPHA:g} detects {target} with probability ≥ {100 * POWER:.0f} %, taking "
             "the SD of the paired differences observed here as the true SD. Computed exactly: the power is "
             "P(|T| > t_{1−α/2, n−1}) for T noncentral t with n − 1 degrees of freedom and noncentrality δ√n / σ "
             f"(scipy.stats.nct; where it gives no number, at 1 to 3 degrees of freedom with a large noncentrality, "
             "the same probability integrated numerically over the t statistic's denominator), searched over n up to "
             f"{MAX_SEEDS:,}; the normal approximation "
             "n ≈ ((z_{1−α/2} + z_{0.8}) σ / δ)² is given beside it. An SD from a few seeds is itself uncertain, so "
             "read n as a guide for planning the next run (fix its seeds before it runs). Per comparison, before "
             "any Holm correction; the *supported* verdict also needs the exact sign-flip test, whose smallest p "
             "with n pairs is 2/2^n, so at least 6 pairs.", ""]
    shown = _pairs_for_table(run, comparisons)
    if len(shown) < len(comparisons):
        lines += [f"Shown: the {len(shown)} pairs of arms that differ in one factor; every pair is in "
                  "`comparisons.csv` (columns seeds_needed, seeds_needed_normal, power_achieved, power_note).", ""]
    lines += ["| arm A | arm B | seed pairs run | A − B (pp) | SD of differences (pp) | difference to detect (pp) | "
              "seeds needed (noncentral t) | power at that n | normal approximation |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes: dict[str, list[str]] = {}  # reason -> the pairs it applies to
    for c in shown.itertuples():
        sd = "n/a" if pd.isna(c.diff_sd) else f"{100 * c.diff_sd:.2f}"
        if pd.isna(c.seeds_needed):
            needed, achieved = "cannot be estimated" if c.power_note.startswith("cannot") else f"> {MAX_SEEDS:,}", "n/a"
            notes.setdefault(c.power_note, []).append(f"{code(c.arm_a)} vs {code(c.arm_b)}")
        else:
            needed, achieved = f"{int(c.seeds_needed)}", f"{100 * c.power_achieved:.1f} %"
        normal = "n/a" if pd.isna(c.seeds_needed_normal) else f"{int(c.seeds_needed_normal):,}"
        detect = "n/a" if pd.isna(c.power_target_pp) else f"{abs(c.power_target_pp):.{f.digits}f}"
        lines.append(f"| {code(c.arm_a, table=True)} | {code(c.arm_b, table=True)} | {int(c.n_pairs)} | {f.pp(c.diff)} | {sd} | {detect} | {needed} | "
                     f"{achieved} | {normal} |")
    if notes:
        lines += [""] + [f"- {', '.join(pairs)}: {why}." for why, pairs in notes.items()]
    return lines


def seeds_section(run: Run, comparisons: pd.DataFrame, min_effect: float | None = None) -> list[str]:
    """'## Seeds': how the seeds were decided, then the seeds each comparison would need."""
    how = rule_lines(run) or [f"Seeds: the spec's fixed list ({', '.join(map(str, run.seeds))}), "
                              f"{len(run.seeds)} per arm in the {run.final_stage} stage."]
    return ["## Seeds", "", *how, "", *power_lines(run, comparisons, min_effect), ""]
