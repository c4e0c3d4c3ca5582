"""The report's sections on what the search found (issue 17): '## Learning rates' (the curve per arm, the effect at
each learning rate, its range near the optima), '## Tuning budget' (expected best dev accuracy against the number
of search points, the repeats of the search, the search's luck and the selection's optimism), and the lead
sentences they add. Each says what it can and cannot show for the run at hand (one seed per learning rate, no
shared learning rates, no repeats)."""
from __future__ import annotations

import math

import pandas as pd

from ..load import Run
from ..statistics.lr_effects import WINDOW, LrEffects
from ..markdown_text import code
from ..formats import Fmt, fmt_p, fmt_param
from ..context import MAX_LEADS
from ..statistics.search_luck import lucks
from .search_luck_text import search_luck_lines
from ..statistics.tuning_budget import CURVE_MAX_POINTS, Repeats, spread


def _lr_name(lr: LrEffects) -> str:
    return "learning rate" if lr.param == "lr" else lr.param


def _stage(lr: LrEffects) -> str:
    return "tuning" if lr.stage == "tune" else lr.stage


def _values(values) -> str:
    return ", ".join(fmt_param(float(v)) for v in values)


def _pm(f: Fmt, mean: float, low: float, high: float, cut: bool) -> str:
    return f.pm(mean, low, high, bool(cut))


def _runs_text(lr: LrEffects) -> str:
    low, high = lr.seeds_per_point
    return ("1 run" if high == 1 else f"{low} runs") if low == high else f"{low}–{high} runs"


def near_text(lr: LrEffects, arm: str) -> str:
    near = lr.curves[(lr.curves["arm"] == arm) & lr.curves["near_optimal"]]["lr"]
    return _values(near) or "none"


def range_lines(run: Run, lr: LrEffects, comparisons: pd.DataFrame) -> list[str]:
    """Per compared pair: the range of the effect over the near-optimal learning rates, beside the confirm result."""
    f = Fmt.of(run)
    what = "test" if lr.metric == "test" else "dev"
    one = (" Each learning rate ran under one seed, so each point is a single run." if lr.one_seed else "")
    lines = []
    for (a, b), (low, high) in lr.ranges.items():
        c = comparisons[(comparisons["arm_a"] == a) & (comparisons["arm_b"] == b)]
        at = f" (at the configurations the {run.final_stage} stage ran: {f.pp(c['diff'].iloc[0])} pp)" if len(c) else ""
        lines.append(f"{code(a)} minus {code(b)} over the {_lr_name(lr)}s within {100 * WINDOW:g} pp of each arm's "
                     f"best mean dev accuracy ({code(a)}: {near_text(lr, a)}; {code(b)}: {near_text(lr, b)}): from "
                     f"{f.pp(low)} to {f.pp(high)} pp{at}, as differences of the {_stage(lr)} stage's mean {what} "
                     f"accuracies ({_runs_text(lr)} per {_lr_name(lr)}).{one}")
    return lines


def lr_section(run: Run, lr: LrEffects, comparisons: pd.DataFrame) -> list[str]:
    """'## Learning rates': the curves, the near-optimal window, the effect per learning rate and its range."""
    f = Fmt.of(run)
    name = _lr_name(lr)
    stage = _stage(lr)
    lines = [f"Each arm's {stage} trials grouped by {name}: mean and 95 % t-interval over the seeds that ran it "
             f"({_runs_text(lr)} per {name}), of the best dev accuracy and of the test accuracy of the best-dev "
             "checkpoint. A run that diverged or failed counts at chance (it is a result of that "
             f"{name}); a tuning trial the search stopped early is left out. Full precision: `lr_curves.csv`, figure "
             "`lr_curves`."]
    if lr.one_seed:
        lines.append(f"Every {name} here ran under one seed, so there are no intervals: each point mixes the {name}'s "
                     f"effect with that seed's luck, and a choice by the best single run favours lucky seeds. A search "
                     f"that runs each {name} under several seeds shows the spread.")
    lines += ["", f"| arm | {name} | runs | failed | dev acc. (%) | test acc. (%) | |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in lr.curves.itertuples():
        marks = ", ".join(m for m, on in (("chosen", r.chosen), ("best mean dev", r.best),
                                          (f"within {100 * WINDOW:g} pp", r.near_optimal and not r.best)) if on)
        lines.append(f"| {code(r.arm, table=True)} | {fmt_param(r.lr)} | {r.n} | {r.failed} | "
                     f"{_pm(f, r.dev_mean, r.dev_low, r.dev_high, r.dev_cut)} | "
                     f"{_pm(f, r.test_mean, r.test_low, r.test_high, r.test_cut)} | {marks} |")
    lines.append("")
    for arm in run.arm_names:
        mine = lr.curves[lr.curves["arm"] == arm]
        if mine.empty:
            continue
        best, chosen = mine[mine["best"]], mine[mine["chosen"]]
        text = (f"- {code(arm)}: best mean dev accuracy at {name} {_values(best['lr'])}; within {100 * WINDOW:g} pp of "
                f"it: {near_text(lr, arm)} (of {_values(mine['lr'])}).")
        if len(chosen) and not chosen["best"].any():
            text += (f" The {run.final_stage} stage ran {name} {_values(chosen['lr'])}, which is not the best by mean "
                     "dev accuracy here (chosen by one run's dev accuracy, or by another repeat of the search).")
        lines.append(text)
    lines += ["", f"Effect at each {name} both arms of a compared pair ran ({lr.metric} accuracy; paired by seed over "
                  "the seeds both ran, else the unpaired difference of the means with a Welch interval):", ""]
    if lr.effects.empty:
        lines.append(f"No {name} was run by both arms of a compared pair (the search proposed different values to "
                     f"each arm), so the effect cannot be given per {name}; the range below compares near-optimal "
                     "points of each arm.")
    else:
        lines += [f"| arm A | arm B | {name} | seeds | A − B (pp) | 95 % CI (pp) | sign-flip p |",
                  "|---|---|---:|---|---:|---:|---:|"]
        for e in lr.effects.itertuples():
            seeds = f"{e.n_pairs} pairs" if e.paired else f"not paired ({e.n_a} vs {e.n_b} runs, no shared seed)"
            ci = f.ci(e.ci_low, e.ci_high) + ("†" if e.ci_cut else "")
            lines.append(f"| {code(e.arm_a, table=True)} | {code(e.arm_b, table=True)} | {fmt_param(e.lr)} | {seeds} | "
                         f"{f.pp(e.diff)} | {ci} | {fmt_p(e.p_sign_flip)} |")
        lines.append("")
        lines.append("Per-learning-rate p-values are not corrected for the number of learning rates; they describe, "
                     "they do not select. Full precision: `lr_effects.csv`.")
    ranges = range_lines(run, lr, comparisons)
    if ranges:
        lines += ["", "Range of the effect near the optima: " + " ".join(ranges)]
    return lines


BUDGET_TEXT = (
    "Expected best dev accuracy of a search of n points, n = 1 … N, per arm: the exact mean, over every set of n of "
    "the arm's N search points drawn without replacement, of the dev score of the point the study's selection would "
    "choose from the set (Tang et al. 2020's unbiased estimator of the expected validation performance of Dodge et "
    "al. 2019, whose draws with replacement are biased). A point is scored and ranked as selection scores and ranks "
    "it: the mean over its tuning seeds of each seed's best dev accuracy, a seed that diverged or failed counting 0; "
    "ties to the lower mean dev loss, then the earlier point; a point stopped by halving below every point that ran "
    "to the end; a point whose seeds all failed is never chosen (a set of only such points scores 0). With repeats "
    "of the search every repeat's points count, each scored by its own seeds. ± (the band of figure "
    "`expected_max`): the standard deviation of the chosen point's score over the same sets, the spread of single "
    "searches of n points (0 at n = N), not a confidence interval of the curve: Tang et al. show that bootstrap "
    "bands of it cover poorly, and N points cannot tell what other points would have scored.")


def budget_section(run: Run, curves: pd.DataFrame, reps: Repeats | None, lr: LrEffects | None) -> list[str]:
    """'## Tuning budget': the expected-max curves, the repeats of the search, the search's luck and the
    selection's optimism."""
    f = Fmt.of(run)
    lines = [BUDGET_TEXT + " Full precision: `expected_max.csv`.", ""]
    if curves.empty:
        lines.append("No tuning point has a score, so there is no curve.")
    for arm in run.arm_names:
        c = curves[curves["arm"] == arm].set_index("n")
        if c.empty:
            continue
        big_n = int(c["points"].iloc[0])
        points = sorted({1, max(1, big_n // 2), big_n})
        parts = [f"n = {n}: {f.pct(c.loc[n, 'expected_max'])} ± {f.acc(c.loc[n, 'sd'])}" for n in points]
        every = "" if big_n <= CURVE_MAX_POINTS else f"; the curve at {len(c)} values of n"
        lines.append(f"- {code(arm)} ({big_n} search points{every}): " + "; ".join(parts) + ".")
    arms = [a for a in run.arm_names if (curves["arm"] == a).any()]
    if len(arms) == 2:
        a, b = arms
        ca, cb = (curves[curves["arm"] == x].set_index("n")["expected_max"] for x in (a, b))
        shared = ca.index.intersection(cb.index)
        sign = (ca[shared] - cb[shared]).apply(lambda d: 0 if abs(d) < 1e-12 else (1 if d > 0 else -1))
        if len(shared) and (sign > 0).all():
            lines.append(f"- {code(a)} is ahead at every budget from 1 to {int(shared.max())} points.")
        elif len(shared) and (sign < 0).all():
            lines.append(f"- {code(b)} is ahead at every budget from 1 to {int(shared.max())} points.")
        elif len(shared):
            turns = [int(n) for n, prev, now in zip(shared[1:], sign.to_numpy()[:-1], sign.to_numpy()[1:]) if prev != now]
            lines.append(f"- The arms' order changes with the budget (at n = {', '.join(map(str, turns)) or 'n/a'}): a "
                         "smaller or larger search could have ranked them the other way.")
    lines += ["", *repeat_lines(run, reps, lr)]
    luck = search_luck_lines(run)
    if luck:
        lines += ["", *luck]
    return lines


def repeat_lines(run: Run, reps: Repeats | None, lr: LrEffects | None) -> list[str]:
    f = Fmt.of(run)
    if reps is None:
        return ["Repeats of the search: one search was run (the tuning rows carry no `repeat`), so no second search "
                "under another sampler seed re-chose the configurations (Bouthillier et al. 2021); `study --budget "
                "full` repeats the search under 3 or more sampler seeds. The search-luck paragraph below says what "
                "this one search's own trials can tell instead."]
    param = lr.param if lr is not None else None
    lines = [f"Tuning luck (Bouthillier et al. 2021): the search was repeated {len(reps.repeats)} times (repeats "
             f"{', '.join(map(str, reps.repeats))}); each repeat chose its own configuration per arm, and its effect "
             f"is the paired difference of the {run.final_stage} runs of those configurations. The Results and the "
             "lead's first sentences are those of repeat " + f"{reps.repeats[0]}'s choice.", ""]
    for arm in run.arm_names:
        picks = [reps.choices[k].get(arm) for k in reps.repeats]
        if param is not None:
            vals = [p.get(param) for p in picks if p and p.get(param) is not None]
            low, high, _ = spread([float(v) for v in vals])
            text = (f"{param} chosen per repeat: {', '.join(fmt_param(float(v)) for v in vals)}"
                    + ("" if math.isnan(low) or low == high else f" (from {fmt_param(low)} to {fmt_param(high)})"))
        else:
            text = "; ".join(", ".join(f"{k} = {fmt_param(v)}" for k, v in (p or {}).items()) for p in picks)
        lines.append(f"- {code(arm)}: {text}.")
    for (a, b), g in reps.effects.groupby(["arm_a", "arm_b"], sort=False):
        low, high, sd = spread(g["diff"])
        per = "; ".join(f"repeat {r.repeat}: {f.pp(r.diff)} pp ({r.n_pairs} pairs)" for r in g.itertuples())
        sd_text = "" if math.isnan(sd) else f", SD {100 * sd:.{f.digits}f} pp"
        lines.append(f"- {code(a)} minus {code(b)}: {per}; from {f.pp(low)} to {f.pp(high)} pp across the repeats"
                     f"{sd_text}.")
    return lines


def lead_more(run: Run, lr: LrEffects | None, reps: Repeats | None, comparisons: pd.DataFrame,
              optimism: pd.DataFrame | None = None) -> list[str]:
    """The lead's sentences beyond the confirm result: the range over near-optimal learning rates, the repeats, a
    search whose luck could not be measured (a measured luck stands beside each effect in the lead), and the
    selection's optimism."""
    f = Fmt.of(run)
    lines = range_lines(run, lr, comparisons) if lr is not None else []
    if len(lines) > MAX_LEADS:  # as many as the lead's pairs; the rest are in their section
        lines = lines[:MAX_LEADS] + [f"… {len(lines) - MAX_LEADS} more pairs' ranges in the Learning rates section "
                                     "and `lr_effects.csv`."]
    if reps is not None:
        for (a, b), g in reps.effects.groupby(["arm_a", "arm_b"], sort=False):
            low, high, _ = spread(g["diff"])
            lines.append(f"Across {len(reps.repeats)} repeats of the search, {code(a)} minus {code(b)} ranged from "
                         f"{f.pp(low)} to {f.pp(high)} pp.")
    elif lr is not None and lr.stage == "tune":
        luck = [f"One search was run: how much {code(x.arm_a)} minus {code(x.arm_b)} moves with the search's own "
                f"luck is not measured ({x.note})." for x in lucks(run) if x.method != "replay"]
        if len(luck) > MAX_LEADS:
            luck = luck[:MAX_LEADS] + [f"… {len(luck) - MAX_LEADS} more pairs' search luck in the Tuning budget "
                                       "section and `search_luck.csv`."]
        lines += luck
    if optimism is not None and len(optimism) and optimism["optimism_pp"].notna().any():
        per = ", ".join(f"{code(r.arm)} {r.optimism_pp:+.{f.digits}f} pp" for r in optimism.itertuples()
                        if pd.notna(r.optimism_pp))
        lines.append(f"Selection optimism: the search's dev score of each chosen point minus the dev accuracy its "
                     f"confirm runs reached with fresh seeds: {per} (Tuning budget section).")
    return lines
