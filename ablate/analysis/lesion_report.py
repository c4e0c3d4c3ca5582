"""The lesion study's figure and report section, from the table ablate.lesion.lesion_run returns.

Columns used: trial_id, arm, seed, block, block_index, replacement, test_acc, lesioned_acc, drop;
the row with block "none" is the intact model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import stats
from .figures import _arm_handles, _clip, _legend_below, arm_styles, label
from .load import Run, arm_value
from .summary import pct, pp

NEEDED = {"trial_id", "arm", "seed", "block", "block_index", "replacement", "test_acc", "lesioned_acc", "drop"}


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    missing = NEEDED - set(table.columns)
    if missing:
        raise ValueError(f"lesion table lacks column(s) {', '.join(sorted(missing))}")
    return table


def per_block(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm and block: lesioned accuracy mean and t-interval over seeds, mean drop, replacement."""
    rows = []
    lesions = table[table["block"] != "none"]
    for (arm, index), group in lesions.groupby(["arm", "block_index"], sort=False, observed=True):
        ci = stats.mean_ci(group["lesioned_acc"])
        rows.append({"arm": arm, "block_index": int(index), "block": group["block"].iloc[0],
                     "replacement": group["replacement"].iloc[0], "n": ci.n, "lesioned_mean": ci.mean,
                     "lesioned_low": ci.low, "lesioned_high": ci.high, "drop_mean": float(group["drop"].mean())})
    return pd.DataFrame(rows)


def lesion_figure(run: Run, table: pd.DataFrame) -> Figure:
    blocks = per_block(table)
    arms = [a for a in run.arm_names if (blocks["arm"] == a).any()] if len(blocks) else []
    styles = arm_styles(run.arm_names)
    intact = table[table["block"] == "none"].groupby("arm", observed=True)["test_acc"].mean()
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    ax = fig.subplots()
    for arm in arms:
        sub = blocks[blocks["arm"] == arm].sort_values("block_index")
        st = styles[arm]
        x, y = sub["block_index"].to_numpy(), 100 * sub["lesioned_mean"].to_numpy()
        ax.plot(x, y, color=st["color"], lw=2)
        # Hollow markers: blocks that change shape keep a shortcut path when dropped (not a pure identity).
        same = (sub["replacement"] == "identity").to_numpy()
        ax.scatter(x[same], y[same], color=st["color"], marker=st["marker"], s=60, zorder=3)
        ax.scatter(x[~same], y[~same], facecolors="none", edgecolors=st["color"], marker=st["marker"], s=80,
                   linewidths=2, zorder=3)
        low, high = 100 * sub["lesioned_low"].to_numpy(), 100 * sub["lesioned_high"].to_numpy()
        if np.isfinite(low).any():
            ax.fill_between(x, _clip(low, 0, 100), _clip(high, 0, 100), color=st["color"], alpha=0.15, lw=0)
        if arm in intact:
            ax.axhline(100 * intact[arm], color=st["color"], ls="--", lw=1.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="dropped block (index from the input)", ylabel="test accuracy with the block dropped (%)",
           title=f"{run.study.name}: lesion study, one block dropped at test time (mean over seeds ± 95 % CI)")
    extra = [Line2D([], [], color="grey", ls="--", lw=1.5),
             Line2D([], [], color="grey", marker="o", ls="", mfc="none", mew=2, ms=8)]
    _legend_below(fig, _arm_handles(arms, styles) + extra,
                  [label(a) for a in arms] + ["intact model", "block changes shape (replaced by a shortcut)"],
                  ncol=min(len(arms) + 2, 3))
    return fig


def lesion_lines(run: Run, table: pd.DataFrame) -> list[str]:
    """Report sentences: per arm the intact accuracy, the mean and the worst single-block drop."""
    blocks = per_block(table)
    lines = ["Each residual block of each final-stage model (best-dev weights) was dropped in turn at test time "
             "(Veit et al. 2016); a block that changes shape keeps its shortcut path. Drops are in percentage points "
             "of test accuracy, averaged over seeds."]
    mean_drop = {}
    for arm in run.arm_names:
        sub = blocks[blocks["arm"] == arm] if len(blocks) else blocks
        intact = table[(table["arm"] == arm) & (table["block"] == "none")]["test_acc"]
        if sub.empty or intact.empty:
            continue
        worst = sub.loc[sub["drop_mean"].idxmax()]
        mean_drop[arm] = float(sub["drop_mean"].mean())
        lines.append(f"`{arm}`: intact {pct(intact.mean())}; dropping one block costs {pp(mean_drop[arm])} pp on "
                     f"average over its {len(sub)} blocks ({int(sub['n'].max())} seed(s)); worst is `{worst['block']}` "
                     f"({worst['replacement']}), {pp(worst['drop_mean'])} pp.")
    plain = [a for a in mean_drop if not arm_value(run, a, "residual")]
    residual = [a for a in mean_drop if arm_value(run, a, "residual")]
    if plain and residual:
        mp = float(np.mean([mean_drop[a] for a in plain]))
        mr = float(np.mean([mean_drop[a] for a in residual]))
        verdict = "more" if mp > mr else "less" if mp < mr else "as"
        lines.append(f"Averaged over arms, plain networks lose {pp(mp)} pp per dropped block and residual networks "
                     f"{pp(mr)} pp: plain networks are {verdict} {'sensitive as' if verdict == 'as' else 'sensitive than'} "
                     "residual ones to losing a single block.")
    return lines
