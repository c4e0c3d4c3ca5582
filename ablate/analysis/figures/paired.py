"""The paired-difference figure: the verdict is about the differences between two arms under the same seed, so this
shows them: one dot per seed pair (a cross where either run failed and was scored at chance), the mean with the
95 % interval the verdict used, and zero marked. One row per compared pair (the lead's pairs)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..statistics.compare import paired_scores
from .arms import label
from ..context import MAX_LEADS
from ..load import Run
from ablate.spec import compared_pairs


def shown_pairs(run: Run, comparisons: pd.DataFrame) -> pd.DataFrame:
    """The rows of comparisons the figure draws: the pairs the study compares when there are many, at most MAX_LEADS."""
    rows = comparisons[comparisons["n_pairs"] > 0]
    if len(rows) > MAX_LEADS:
        pairs = set(compared_pairs(run.study))
        rows = rows[[(c.arm_a, c.arm_b) in pairs for c in rows.itertuples()]]
    return rows.head(MAX_LEADS)


def paired_differences(run: Run, comparisons: pd.DataFrame) -> Figure | None:
    rows = shown_pairs(run, comparisons)
    if rows.empty:
        return None
    fig = Figure(figsize=(8.5, 1.2 + 0.9 * len(rows)))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # vertical jitter only, so equal differences stay readable
    for y, c in enumerate(rows.itertuples()):
        pairs = paired_scores(run, c.arm_a, c.arm_b)
        d = 100 * (pairs["score_a"] - pairs["score_b"]).to_numpy()
        failed = (pairs["failed_a"] | pairs["failed_b"]).to_numpy()
        jitter = y + rng.uniform(-0.18, 0.18, size=d.size)
        ax.scatter(d[~failed], jitter[~failed], s=28, color="#4c72b0", alpha=0.75, zorder=2,
                   label="seed pair" if y == 0 else None)
        if failed.any():
            ax.scatter(d[failed], jitter[failed], s=40, marker="x", color="#c44e52", zorder=3,
                       label="a run failed (scored at chance)")
        ax.errorbar([100 * c.diff], [y + 0.38], xerr=[[100 * (c.diff - c.diff_ci_low)], [100 * (c.diff_ci_high - c.diff)]],
                    fmt="D", color="black", capsize=5, markersize=7, zorder=4,
                    label="mean and 95 % interval" if y == 0 else None)
    ax.axvline(0, color="#555555", linestyle="--", linewidth=1.2, zorder=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{label(c.arm_a)}\nminus {label(c.arm_b)}" for c in rows.itertuples()])
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xlabel("paired difference in test accuracy (pp)")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    fig.legend(list(seen.values()), list(seen.keys()), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(3, len(seen)))
    return fig
