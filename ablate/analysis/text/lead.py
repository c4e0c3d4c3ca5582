"""The lead both report.md and report.html open with ('## At a glance'): first what the intervals cover (which
sources of variance), then any difference in failures between arms, then per compared pair the paired difference at
the configurations the confirm stage ran, with the search's luck beside it where it was measured, its verdict, and
for an inconclusive verdict why and what to run next; then what the learning-rate and tuning sections add."""
from __future__ import annotations

import math

import pandas as pd

from ablate.intervals import t_quantile
from ablate.spec import compared_pairs
from ..statistics.collapse import collapse
from ..statistics.compare import EQUIVALENT, INCONCLUSIVE, SUPPORTED
from ..context import MAX_LEADS
from ..load import Run
from ..markdown_text import code
from ..formats import Fmt
from ..statistics.variance import covers

TITLE = "At a glance"


def failure_sentence(run: Run) -> str | None:
    """Failed (diverged or errored) and collapsed final-stage runs per arm (ablate.analysis.statistics.collapse), when they
    differ between arms."""
    table = collapse(run)
    if table.empty or (table["failed"].nunique() <= 1 and table["collapsed"].nunique() <= 1):
        return None
    failed = ", ".join(f"{code(r.arm)} in {r.failed} of {r.runs} seeds" for r in table.itertuples())
    text_ = f"**Failures differ between arms**: runs failed or diverged in {failed}"
    if (table["collapsed"] != table["failed"]).any():
        text_ += ("; counting collapsed runs too (test accuracy below halfway from the arm's median run down to "
                  "chance, the Collapsed runs section): " + ", ".join(f"{code(r.arm)} {r.collapsed} of {r.runs}"
                                                                      for r in table.itertuples()))
    return (text_ + ". Every comparison below counts failed runs at chance (intention to treat), and no verdict calls "
            "an arm higher that failed more often.")


def _luck(luck: pd.DataFrame | None, a: str, b: str) -> str:
    if luck is None or luck.empty:
        return ""
    row = luck[(luck["arm_a"] == a) & (luck["arm_b"] == b)]
    if row.empty or pd.isna(row["luck_sd_pp"].iloc[0]):
        return ""
    how = {"repeats": f"SD over {int(row['luck_draws'].iloc[0])} repeats of the search",
           "replay": f"SD over {int(row['luck_draws'].iloc[0]):,} replayed searches"}.get(row["luck_method"].iloc[0])
    return f"; search luck ±{row['luck_sd_pp'].iloc[0]:.1f} pp, {how}, not covered by the interval" if how else ""


def next_step(run: Run, c) -> str:
    """For an inconclusive verdict: what to run next (a spec line), from the seeds its verdict would need."""
    if (c.failed_a or 0) != (c.failed_b or 0) and "failed in more seeds" in c.why:
        return " Look at why the runs failed (`trials/<id>/error.txt`, the Failed runs list) before adding seeds."
    need = getattr(c, "seeds_needed", None)
    if need is None or pd.isna(need) or pd.isna(c.diff_sd):
        return ""
    need, target, rule = int(need), abs(c.power_target_pp), run.study.seed_rule
    if rule is None and need <= 20:
        spec = f"`seeds: [{', '.join(map(str, range(need)))}]`"
    else:
        pilot = rule.min if rule is not None else 8
        # Stein's rule asks for about `need` pairs when half_width = t_{0.975, pilot-1} SD / sqrt(need)
        width = math.floor(20 * t_quantile(0.95, pilot - 1) * 100 * c.diff_sd / math.sqrt(need)) / 20
        spec = f"`seeds: {{min: {pilot}, max: {max(need, pilot)}, half_width: {max(width, 0.05):g}}}`"
    return (f" To detect {target:.{Fmt.of(run).digits}f} pp with 80 % power its verdict needs about {need} seed pairs "
            f"at the SD seen here: run the study again with {spec} in the spec.")


def lead_lines(run: Run, comparisons: pd.DataFrame, luck: pd.DataFrame | None = None) -> list[str]:
    """The variance sentence, the failures, then one sentence per compared pair (those differing in one factor when
    there are many): the paired difference with its CI, the search luck beside it, the verdict and, when it is
    inconclusive, why and what to run next."""
    f = Fmt.of(run)
    pairs = set(compared_pairs(run.study))
    rows = comparisons if len(comparisons) <= MAX_LEADS else comparisons[
        [(c.arm_a, c.arm_b) in pairs for c in comparisons.itertuples()]]
    lines = [covers(run)]
    failures = failure_sentence(run)
    if failures:
        lines.append(failures)
    for c in rows.head(MAX_LEADS).itertuples():
        if not c.n_pairs:
            continue
        kind = "Stein's two-stage interval" if getattr(c, "pilot", 0) else "t-interval"
        head = (f"{code(c.arm_a)} minus {code(c.arm_b)}: {f.pp(c.diff)} pp (95 % {kind} "
                f"{f.ci(c.diff_ci_low, c.diff_ci_high)} pp, {int(c.n_pairs)} seed pairs, {run.final_stage} stage"
                f"{_luck(luck, c.arm_a, c.arm_b)}), **{c.verdict}**")
        if c.verdict == SUPPORTED:
            lines.append(head + ".")
        elif c.verdict == EQUIVALENT:
            lines.append(head + f": {c.why}.")
        elif c.verdict == INCONCLUSIVE:
            lines.append(head + f" because {c.why.split('; ')[0]}." + next_step(run, c))
        else:
            lines.append(head + f": {c.why}.")
    if len(rows) > MAX_LEADS:
        lines.append(f"… {len(rows) - MAX_LEADS} more pairs in the Results and Seeds sections and `comparisons.csv`.")
    return lines


def lead_section(run: Run, comparisons: pd.DataFrame, more: list[str] | None = None,
                 luck: pd.DataFrame | None = None) -> list[str]:
    """'## At a glance' with its bullets (`more`: further lead sentences, e.g. from the learning-rate analysis)."""
    if comparisons.empty or not comparisons["n_pairs"].any():
        lines = ["No pair of arms has a seed finished in both, so there is no paired difference to lead with."]
        lines += list(more or [])
    else:
        lines = lead_lines(run, comparisons, luck) + list(more or [])
    return [f"## {TITLE}", ""] + [f"- {line}" for line in lines] + [""]

