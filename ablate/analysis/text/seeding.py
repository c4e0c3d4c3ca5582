"""'## Seeds': how many seeds ran and why (a fixed list, or the adaptive rule and where it stopped, with the error
rates of that design simulated at the spread observed here), and how many seeds each paired comparison's verdict
would need for 80 % power (ablate.analysis.statistics.power)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ablate.intervals import stein_pairs, two_stage_half_width, t_half_width, sample_sd
from ablate.spec import ALPHA, TWO_STAGE, compared_pairs, nonzero, nonzero_needed
from ..load import Run
from ..statistics.power import EXACT_UP_TO, MAX_POWER_ROWS, MAX_SEEDS, POWER, lattice_pp
from ..statistics.seed_design import simulate
from ..formats import Fmt
from ..markdown_text import code

SIM_REPS = 4000      # simulated runs behind the design's stated error rates in a report


@dataclass(frozen=True)
class RuleOutcome:
    state: str        # two-stage: "planned", "extended", "max", "running"; the older width rule: "precision", "max", "running"
    seeds: list[int]                   # the seeds decided so far
    widest: float                      # widest half-width (pp) of a compared paired difference's interval at those seeds
    widest_pair: tuple[str, str] | None
    per_arm: dict[str, tuple[int, int]]  # arm -> (final-stage trials finished, of them scored)
    pilot_sd: float = math.nan         # two-stage: the largest pilot SD (pp) of a compared difference
    asked: int = 0                     # two-stage: the seed pairs the pilot asked for in all (before the maximum)
    nonzero_least: int = 0             # the fewest pairs that differ in a compared difference, at the seeds run
    nonzero_needed: int = 0            # what the exact sign-flip test needs (with the Holm family)
    sd: float = math.nan               # the largest SD (pp) of a compared difference over the seeds run


def rule_outcome(run: Run) -> RuleOutcome | None:
    """Where the adaptive seed rule stopped (None without one), from what the engine's rule saw
    (ablate.engine.seed_decisions.rule_state: the answer's confirm runs, failed runs at chance)."""
    rule, state = run.study.seed_rule, run.rule
    if rule is None or state is None:
        return None
    final = run.trials[(run.trials["stage"] == run.final_stage) & run.trials["seed"].isin(run.seeds)]
    final = final[final["trial_id"].isin(run.reported["trial_id"])]
    ok = final[(final["status"] == "ok") & final["test_acc"].notna()]
    per_arm = {a: (int((final["arm"] == a).sum()), int((ok["arm"] == a).sum())) for a in run.arm_names}
    widest, widest_pair, pilot_sd, asked, sd = -math.inf, None, math.nan, rule.min, math.nan
    least = min((nonzero(d) for d in state.diffs), default=0)
    for (a, b, _), d in zip(state.pairs, state.diffs):
        if rule.design == TWO_STAGE:
            s0 = sample_sd(d[:rule.min])
            width = two_stage_half_width(s0, rule.min, len(d)) if len(d) >= rule.min else math.inf
            if math.isfinite(s0):
                pilot_sd = s0 if math.isnan(pilot_sd) else max(pilot_sd, s0)
                asked = max(asked, stein_pairs(s0, rule.min, rule.half_width))
        else:
            width = t_half_width(d)
        sd = sample_sd(d) if math.isnan(sd) else max(sd, sample_sd(d))
        if width > widest:
            widest, widest_pair = width, (a, b)
    n = len(state.seeds)
    if not state.final:
        outcome = "running"
    elif rule.design != TWO_STAGE:
        outcome = "precision" if widest <= rule.half_width else "max"
    elif n >= rule.max and (asked > rule.max or least < nonzero_needed(state.family)):
        outcome = "max"
    else:
        outcome = "extended" if n > min(asked, rule.max) else "planned"
    return RuleOutcome(outcome, list(state.seeds), widest, widest_pair, per_arm, pilot_sd, asked, least,
                       nonzero_needed(state.family), sd)


def _spec_text(run: Run) -> str:
    rule = run.study.seed_rule
    design = "" if rule.design == TWO_STAGE else f", design: {rule.design}, step: {rule.step}"
    return f"`seeds: {{min: {rule.min}, max: {rule.max}, half_width: {rule.half_width:g}{design}}}`"


def design_error_rates(run: Run, out: RuleOutcome) -> str:
    """The design's simulated type-I error and coverage at the SD observed here (one compared pair)."""
    rule = run.study.seed_rule
    sd = out.pilot_sd if rule.design == TWO_STAGE and math.isfinite(out.pilot_sd) else out.sd
    if not math.isfinite(sd) or sd <= 0:
        return ""
    family = run.rule.family if run.rule is not None else 1
    null = simulate(0.0, sd, rule=rule, family=family, reps=SIM_REPS, lattice_pp=lattice_pp(run))
    return (f"Simulated with this design at an SD of the paired differences of {sd:.2f} pp (the largest observed "
            f"here; {SIM_REPS:,} runs of normal differences on the lattice of one test image, "
            f"ablate.analysis.statistics.seed_design): with no true difference the verdict would be *supported* in "
            f"{100 * null.supported:.1f} % of runs (Monte Carlo SE {100 * null.se(null.supported):.1f}; α = "
            f"{100 * ALPHA:g} %), and the 95 % interval covered the true difference in {100 * null.covered:.1f} % "
            f"(SE {100 * null.se(null.covered):.1f}).")


def rule_lines(run: Run) -> list[str]:
    """The adaptive rule in words and where it stopped; nothing for a fixed list of seeds."""
    rule, out = run.study.seed_rule, rule_outcome(run)
    if rule is None or out is None:
        return []
    n = len(out.seeds)
    seeds = ", ".join(map(str, out.seeds))
    where = "" if out.widest_pair is None else f" ({code(out.widest_pair[0])} minus {code(out.widest_pair[1])})"
    widest = "n/a" if not math.isfinite(out.widest) else f"±{out.widest:.2f} pp"
    arms = "; ".join(f"{code(a)} {k} ({s} scored)" for a, (k, s) in out.per_arm.items())
    head = f"Seeds were chosen by the spec's adaptive rule {_spec_text(run)}: {rule.text()}."
    if rule.design != TWO_STAGE:
        if out.state == "precision":
            stop = (f"It stopped on precision at {n} seeds ({seeds}){' (its minimum)' if n == rule.min else ''}: "
                    f"every compared paired difference had a 95 % t-interval within ±{rule.half_width:g} pp, the "
                    f"widest {widest}{where}.")
        elif out.state == "max":
            stop = (f"It stopped at its maximum of {n} seeds ({seeds}) without reaching that precision: the widest "
                    f"95 % t-interval was still {widest}{where}, wider than ±{rule.half_width:g} pp.")
        else:
            stop = (f"It has not decided yet (the study is unfinished): {n} seeds ({seeds}) decided so far; the widest "
                    f"interval so far {widest}{where}.")
        caveat = ("This run was made with the width rule of an older ablate, which stops when the sample SD of the "
                  "differences happens to be small; the same small SD then narrows the t-interval, so the rule "
                  "inflates false positives (ablate now uses Stein's two-stage design). "
                  + design_error_rates(run, out))
        return [f"{head} {stop} Final-stage trials per arm: {arms}. {caveat}".rstrip()]
    pilot = ", ".join(map(str, run.study.seeds[:rule.min]))
    if out.state == "running":
        stop = (f"It has not decided yet (the study is unfinished): {n} seeds ({seeds}) asked for so far, of a pilot "
                f"of {rule.min} ({pilot}).")
    else:
        sd = "n/a" if math.isnan(out.pilot_sd) else f"{out.pilot_sd:.2f} pp"
        more = f" (more than its maximum of {rule.max})" if out.asked > rule.max else ""
        stop = (f"The pilot ({pilot}) gave a largest SD of the compared paired differences of {sd}, which asked for "
                f"{out.asked} seed pairs in all for a 95 % interval within ±{rule.half_width:g} pp{more}.")
        if out.state == "extended":
            stop += (f" It ran {n} seeds ({seeds}): more than that, because too few pairs differed for the exact "
                     f"sign-flip test to reach α (it needs {out.nonzero_needed}).")
        elif out.state == "max":
            short = (f" and the fewest pairs that differ in a compared difference are {out.nonzero_least}, where the "
                     f"sign-flip test needs {out.nonzero_needed}" if out.nonzero_least < out.nonzero_needed else "")
            stop += f" It stopped at its maximum of {n} seeds ({seeds}); the widest interval is {widest}{where}{short}."
        else:
            stop += f" It ran {n} seeds ({seeds}); the widest interval is {widest}{where}."
    why = (f"The intervals are Stein's: the mean of all the seed pairs ± t_{{0.975, {rule.min - 1}}} × the pilot's SD / "
           f"√n, so they cover the true difference with 95 % probability whatever number of seeds the pilot chose "
           "(an interval from the SD of all the seeds would not: a pilot whose SD happened to be small would both stop "
           "the rule early and narrow its interval).")
    return [f"{head} {stop} Final-stage trials per arm: {arms}. {why} {design_error_rates(run, out)}".rstrip()]


def _pairs_for_table(run: Run, comparisons: pd.DataFrame) -> pd.DataFrame:
    if len(comparisons) <= MAX_POWER_ROWS:
        return comparisons
    pairs = set(compared_pairs(run.study))
    return comparisons[[(c.arm_a, c.arm_b) in pairs for c in comparisons.itertuples()]]


def power_lines(run: Run, comparisons: pd.DataFrame, min_effect: float | None = None) -> list[str]:
    """The seeds each paired comparison's verdict needs for 80 % power, with what was computed (comparisons from
    power.add_power)."""
    if comparisons.empty or "seeds_needed" not in comparisons:
        return []
    f = Fmt.of(run)
    declared = run.study.min_effect
    target = (f"a difference of {min_effect:g} pp (named with `--min-effect`)" if min_effect is not None
              else f"a difference of {declared:g} pp (the spec's `min_effect`)" if declared is not None
              else "the mean paired difference observed here (the spec declares no `min_effect`)")
    design = (f"this study's adaptive rule {_spec_text(run)}" if run.study.seed_rule is not None
              else "this study's fixed number of seeds")
    lines = [f"Seeds for {100 * POWER:.0f} % power: for each pair, the smallest number of seed pairs n at which the "
             f"verdict rule itself (a 95 % interval that excludes 0 and an exact sign-flip p < {ALPHA:g}) calls "
             f"{target} *supported* in its direction with probability ≥ {100 * POWER:.0f} %, taking the SD of the "
             "paired differences observed here as the true SD. Simulated with the project's own rule and tests "
             "(ablate.analysis.statistics.seed_design: normal differences on the lattice of one test image, seeded) up to "
             f"{EXACT_UP_TO} pairs; above that the sign-flip test no longer limits anything and the paired t-test's "
             "noncentral-t power stands in (scipy.stats.nct, searched up to "
             f"{MAX_SEEDS:,}). *Power of this design* is that probability for {design}. An SD from a few seeds is "
             "itself uncertain, so read n as a guide for planning the next run (fix its seeds before it runs). With "
             "several pairs the verdict is Holm-corrected, which the figures take into account at its first step "
             "(p < α / pairs).", ""]
    shown = _pairs_for_table(run, comparisons)
    if len(shown) < len(comparisons):
        lines += [f"Shown: the {len(shown)} pairs of arms that differ in one factor; every pair is in "
                  "`comparisons.csv` (columns seeds_needed, power_achieved, design_power, observed_seeds_needed, "
                  "power_note).", ""]
    observed_col = "power_target" in shown and (shown["power_target"] != "observed").any()
    head = ("| arm A | arm B | seed pairs run | A − B (pp) | SD of differences (pp) | difference to detect (pp) | "
            "seeds needed (verdict) | power at that n | power of this design |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    if observed_col:
        head += " seeds needed for the observed difference |"
        rule += "---:|"
    lines += [head, rule]
    notes: dict[str, list[str]] = {}  # reason -> the pairs it applies to
    for c in shown.itertuples():
        sd = "n/a" if pd.isna(c.diff_sd) else f"{100 * c.diff_sd:.2f}"
        if pd.isna(c.seeds_needed):
            needed, achieved = "cannot be estimated" if c.power_note.startswith(("cannot", "not")) else f"> {MAX_SEEDS:,}", "n/a"
            notes.setdefault(c.power_note, []).append(f"{code(c.arm_a)} vs {code(c.arm_b)}")
        else:
            needed, achieved = f"{int(c.seeds_needed)}", f"{100 * c.power_achieved:.1f} %"
        detect = "n/a" if pd.isna(c.power_target_pp) else f"{abs(c.power_target_pp):.{f.digits}f}"
        design_power = ("n/a" if pd.isna(c.design_power) else
                        f"{100 * c.design_power:.1f} % (≈ {c.design_mean_seeds:.1f} seeds)")
        line = (f"| {code(c.arm_a, table=True)} | {code(c.arm_b, table=True)} | {int(c.n_pairs)} | {f.pp(c.diff)} | "
                f"{sd} | {detect} | {needed} | {achieved} | {design_power} |")
        if observed_col:
            line += f" {'n/a' if pd.isna(c.observed_seeds_needed) else int(c.observed_seeds_needed)} |"
        lines.append(line)
    if notes:
        lines += [""] + [f"- {', '.join(pairs)}: {why}." for why, pairs in notes.items()]
    return lines


def seeds_section(run: Run, comparisons: pd.DataFrame, min_effect: float | None = None) -> list[str]:
    """'## Seeds': how the seeds were decided, then the seeds each comparison would need."""
    how = rule_lines(run) or [f"Seeds: the spec's fixed list ({', '.join(map(str, run.seeds))}), "
                              f"{len(run.seeds)} per arm in the {run.final_stage} stage."]
    return ["## Seeds", "", *how, "", *power_lines(run, comparisons, min_effect), ""]
