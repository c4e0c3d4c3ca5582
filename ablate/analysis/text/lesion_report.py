"""The lesion study's figure and report section, from the table ablate.probes.lesion.lesion_run returns.

Columns used: trial_id, arm, seed, block, block_index, replacement, test_acc, lesioned_acc, drop;
block_type and changed when present (older tables lack them: those numbers read n/a). The row
with block "none" is the intact model.

Numbers are per block type (same-shape blocks, replaced by the identity, vs downsampling blocks,
replaced by a shortcut), because the two kinds of lesion are different operations: per seed the
mean over that type's blocks, then mean and 95 % t-interval over seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..statistics import stats
from ..context import chance, title
from ..figures.arms import FEW_SEEDS, arm_handles, clip, label, legend_below, note, run_styles
from ..load import Run
from ..formats import Fmt
from ..markdown_text import code

NEEDED = {"trial_id", "arm", "seed", "block", "block_index", "replacement", "test_acc", "lesioned_acc", "drop"}
NEAR_CHANCE = 0.05  # a lesioned accuracy within 5 pp of chance is "at chance"
REPLACED_BY = {
    "identity": "the block's input, passed on unchanged (identity)",
    "projection": "the block's own trained 1×1 projection shortcut (conv + BN), then ReLU",
    "zero-pad": "the block's own parameter-free shortcut (subsample, zero-padded channels)",
    "shortcut": "the block's own shortcut module (its ablate.Residual shortcut), then its `after` module if it has one",
    "zero-pad-added": ("a parameter-free subsample + zero-pad shortcut added for the lesion: the plain net has no "
                       "shortcut of its own, so this is not like for like with a residual net's lesion"),
}


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    missing = NEEDED - set(table.columns)
    if missing:
        raise ValueError(f"lesion table lacks column(s) {', '.join(sorted(missing))}")
    return table


def _lesions(table: pd.DataFrame) -> pd.DataFrame:
    les = table[table["block"] != "none"].copy()
    if "block_type" not in les:
        les["block_type"] = np.where(les["replacement"] == "identity", "same-shape", "downsampling")
    if "changed" not in les:
        les["changed"] = np.nan
    return les


def per_block(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm and block: lesioned accuracy mean and t-interval over seeds, mean drop, share changed."""
    rows = []
    for (arm, index), group in _lesions(table).groupby(["arm", "block_index"], sort=False, observed=True):
        ci = stats.mean_ci(group["lesioned_acc"])
        rows.append({"arm": arm, "block_index": int(index), "block": group["block"].iloc[0],
                     "block_type": group["block_type"].iloc[0], "replacement": group["replacement"].iloc[0],
                     "n": ci.n, "lesioned_mean": ci.mean, "lesioned_low": ci.low, "lesioned_high": ci.high,
                     "drop_mean": float(group["drop"].mean()), "changed_max": float(group["changed"].max())})
    return pd.DataFrame(rows)


def per_type(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm and block type: per seed the mean over that type's blocks, then mean and t-CI over seeds."""
    les = _lesions(table)
    seedwise = (les.groupby(["arm", "block_type", "trial_id"], observed=True)
                .agg(lesioned=("lesioned_acc", "mean"), drop=("drop", "mean"), changed=("changed", "mean"),
                     blocks=("block", "nunique"), replacement=("replacement", "first")).reset_index())
    rows = []
    for (arm, kind), g in seedwise.groupby(["arm", "block_type"], sort=False, observed=True):
        les_ci, drop_ci = stats.mean_ci(g["lesioned"], bounds=(0, 1)), stats.mean_ci(g["drop"], bounds=(-1, 1))
        ch = stats.mean_ci(g["changed"])
        rows.append({"arm": arm, "block_type": kind, "replacement": g["replacement"].iloc[0],
                     "blocks": int(g["blocks"].max()), "seeds": len(g),
                     "lesioned_mean": les_ci.mean, "lesioned_low": les_ci.low, "lesioned_high": les_ci.high,
                     "drop_mean": drop_ci.mean, "drop_low": drop_ci.low, "drop_high": drop_ci.high,
                     "cut": les_ci.cut or drop_ci.cut,
                     "changed_mean": ch.mean})
    return pd.DataFrame(rows)


def lesion_figure(run: Run, table: pd.DataFrame) -> Figure:
    blocks = per_block(table)
    arms = [a for a in run.arm_names if (blocks["arm"] == a).any()] if len(blocks) else []
    styles = run_styles(run)
    intact = table[table["block"] == "none"].groupby("arm", observed=True)["test_acc"].mean()
    few = len(blocks) > 0 and int(blocks["n"].max()) <= FEW_SEEDS
    level = chance(run)
    fig = Figure(figsize=(11, 6.2), layout="constrained")
    ax = fig.subplots()
    for arm in arms:
        sub = blocks[blocks["arm"] == arm].sort_values("block_index")
        st = styles[arm]
        x, y = sub["block_index"].to_numpy(), 100 * sub["lesioned_mean"].to_numpy()
        ax.plot(x, y, color=st["color"], ls=st["ls"], lw=2)
        same = (sub["block_type"] == "same-shape").to_numpy()
        ax.scatter(x[same], y[same], color=st["color"], marker=st["marker"], s=60, zorder=3)
        ax.scatter(x[~same], y[~same], facecolors="none", edgecolors=st["color"], marker=st["marker"], s=80,
                   linewidths=2, zorder=3)
        low, high = 100 * sub["lesioned_low"].to_numpy(), 100 * sub["lesioned_high"].to_numpy()
        if np.isfinite(low).any() and not few:
            ax.fill_between(x, clip(fig, low, 0, 100), clip(fig, high, 0, 100), color=st["color"], alpha=0.15, lw=0)
        if arm in intact:
            ax.axhline(100 * intact[arm], color=st["color"], ls="--", lw=1.5)
    ax.axhline(100 * level, color="black", ls=":", lw=1.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="dropped block (index from the input)", ylabel="test accuracy with the block dropped (%)",
           title=title(run, "lesion study: one block dropped at test time (mean over seeds"
                       + (")" if few else " ± 95 % CI)")))
    if few:
        note(fig, f"With at most {FEW_SEEDS} seeds no interval is drawn per block; the report gives 95 % t-intervals "
                  "per block type.")
    extra = [Line2D([], [], color="grey", ls="--", lw=1.5), Line2D([], [], color="black", ls=":", lw=1.5),
             Line2D([], [], color="grey", marker="o", ls="", mfc="none", mew=2, ms=8)]
    legend_below(fig, arm_handles(arms, styles) + extra,
                 [label(a) for a in arms] + ["intact model", f"chance ({100 * level:g} %)",
                                             "downsampling block (replaced by a shortcut)"],
                 ncol=min(len(arms) + 3, 3))
    if "recalibrated" in table and _lesions(table)["recalibrated"].fillna(False).astype(bool).any():
        note(fig, "After each lesion the BatchNorm statistics were re-estimated on the training images.")
    for kind in dict.fromkeys(_lesions(table)["replacement"]):
        arms_with = sorted({str(a) for a in table.loc[table["replacement"] == kind, "arm"]})
        note(fig, f"{kind} ({', '.join(arms_with)}): replaced by {REPLACED_BY.get(kind, kind)}.")
    return fig


def lesion_lines(run: Run, table: pd.DataFrame) -> list[str]:
    """The intro (what was done and what replaced each block), then one bullet per arm and block type."""
    f = Fmt.of(run)
    level = chance(run)
    types = per_type(table)
    used = _lesions(table).groupby("replacement", sort=False)["arm"].agg(lambda a: sorted({str(x) for x in a}))
    replaced = "; ".join(f"{REPLACED_BY.get(kind, kind)} [{kind}: " + ", ".join(f"{code(a)}" for a in arms) + "]"
                         for kind, arms in used.items())
    recalibrated = "recalibrated" in table and bool(_lesions(table)["recalibrated"].fillna(False).astype(bool).any())
    statistics = ("after each lesion the BatchNorm running statistics were re-estimated on the model's training images "
                  "(in batches of 256) before scoring, as later work on lesions does (Veit et al. did not), so a drop "
                  "measures the removed computation without the shift of the statistics later layers see; the intact "
                  "row keeps the trained statistics" if recalibrated else
                  "the BatchNorm statistics stayed those of training, as in Veit et al. 2016, so a drop includes the "
                  "shift of the statistics the later layers see (`analyze --lesion --lesion-recalibrate` re-estimates "
                  "them after each lesion)")
    lines = [f"Each residual block of each final-stage model (best-dev weights) was dropped in turn at test time "
             f"(Veit et al. 2016) and the model scored on its test images; {statistics}. Same-shape blocks (replaced "
             "by their identity skip) and downsampling blocks (replaced by a shortcut) are reported apart: the two "
             f"lesions are different operations. A dropped block was replaced by: {replaced}. "
             f"Per seed the mean over the blocks of one type, then the mean and 95 % t-interval over seeds; chance is "
             f"{100 * level:g} % ({round(1 / level)} classes), and a lesioned accuracy within {100 * NEAR_CHANCE:g} pp "
             "of it is called at chance."]
    for arm in run.arm_names:
        intact = table[(table["arm"] == arm) & (table["block"] == "none")]["test_acc"]
        sub = types[types["arm"] == arm] if len(types) else types
        if sub.empty or intact.empty:
            continue
        for r in sub.itertuples():
            cut = " (cut at what is possible)" if getattr(r, "cut", False) else ""
            les_ci = "" if np.isnan(r.lesioned_low) else f" (95 % CI {f.acc(r.lesioned_low)} to {f.acc(r.lesioned_high)} %{cut})"
            drop_ci = "" if np.isnan(r.drop_low) else f" (95 % CI {f.ci(r.drop_low, r.drop_high)} pp{cut})"
            at_chance = abs(r.lesioned_mean - level) <= NEAR_CHANCE
            changed = "n/a" if np.isnan(r.changed_mean) else f"{100 * r.changed_mean:.0f} %"
            text = (f"{code(arm)}, {r.blocks} {r.block_type} block(s) ({r.seeds} seed(s)): intact {f.pct(intact.mean())}; "
                    f"lesioned {f.pct(r.lesioned_mean)}{les_ci}; drop {f.pp(r.drop_mean)} pp{drop_ci}; predictions "
                    f"changed: {changed}.")
            if at_chance:
                text += (" At chance: this drop is the intact accuracy minus chance, the most a lesion can cost, "
                         "not a measure of how much the block mattered.")
            lines.append(text)
    blocks = per_block(table)
    if "changed" in table and len(blocks):
        inert = blocks[blocks["changed_max"] == 0]
        if len(inert):
            names = "; ".join(f"{code(a)}: " + ", ".join(f"{b} ({t})" for b, t in zip(g["block"], g["block_type"]))
                              for a, g in inert.groupby("arm", sort=False, observed=True))
            lines.append(f"Blocks whose removal changed no test prediction in any seed: {names}.")
    return lines
