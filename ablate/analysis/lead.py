"""The lead both report.md and report.html open with ('## At a glance'): per compared pair the paired difference
at the configurations the confirm stage ran, its verdict and the seeds 80 % power would need, then what the
learning-rate and tuning sections add (the effect's range over near-optimal learning rates, the repeats)."""
from __future__ import annotations

import pandas as pd

from ablate.spec.study_spec import compared_pairs
from .compare import ALPHA
from .load import Run
from .markdown_text import code
from .stats import smallest_sign_flip_p
from .tables import Fmt

MAX_LEADS = 8
TITLE = "At a glance"


def supported_needs() -> int:
    """The fewest seed pairs with which the exact sign-flip test can give p < ALPHA (its smallest p is 2/2^n)."""
    n = 1
    while smallest_sign_flip_p(n) >= ALPHA:
        n += 1
    return n


def lead_lines(run: Run, comparisons: pd.DataFrame) -> list[str]:
    """One sentence per compared pair (those differing in one factor when there are many): the paired difference
    with its CI, the verdict, and the seeds 80 % power would need (with what *supported* needs besides)."""
    f = Fmt.of(run)
    pairs = set(compared_pairs(run.study))
    rows = comparisons if len(comparisons) <= MAX_LEADS else comparisons[
        [(c.arm_a, c.arm_b) in pairs for c in comparisons.itertuples()]]
    lines, need_min = [], supported_needs()
    for c in rows.head(MAX_LEADS).itertuples():
        if not c.n_pairs:
            continue
        need = ""
        if "seeds_needed" in rows:
            if pd.isna(c.seeds_needed):
                need = f"; seeds for 80 % power: {c.power_note}"
            else:
                need = (f"; {int(c.seeds_needed)} seed pairs would detect a difference of "
                        f"{abs(c.power_target_pp):.{f.digits}f} pp with 80 % power (paired t-test)")
                if int(c.seeds_needed) < need_min:
                    need += (f", but a *supported* verdict needs at least {need_min} pairs: the exact sign-flip "
                             f"test's smallest two-sided p with n pairs is 2/2^n ({smallest_sign_flip_p(need_min - 1):.3g} "
                             f"with {need_min - 1})")
        lines.append(f"{code(c.arm_a)} minus {code(c.arm_b)}: {f.pp(c.diff)} pp (95 % CI {f.ci(c.diff_ci_low, c.diff_ci_high)} "
                     f"pp, {int(c.n_pairs)} seed pairs, {run.final_stage} stage), **{c.verdict}**{need}.")
    if len(rows) > MAX_LEADS:
        lines.append(f"… {len(rows) - MAX_LEADS} more pairs in the Results and Seeds sections and `comparisons.csv`.")
    return lines


def lead_section(run: Run, comparisons: pd.DataFrame, more: list[str] | None = None) -> list[str]:
    """'## At a glance' with its bullets (`more`: further lead sentences, e.g. from the learning-rate analysis)."""
    lines = lead_lines(run, comparisons) + list(more or [])
    if not lines:
        lines = ["No pair of arms has a seed finished in both, so there is no paired difference to lead with."]
    return [f"## {TITLE}", ""] + [f"- {line}" for line in lines] + [""]
