"""The factorial answers in words (the report's first lines and its 'Factor effects' section) and the
figure of the focus factor's effect against the other factor."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..statistics.compare import ALPHA
from ..context import context_text, level_text, title
from ..statistics.factorial import Design, is_numeric, key, log_scale, trend_unit
from ..figures.arms import MARKERS, clip, legend_below, log_x_axis, note
from ..load import Run
from ..markdown_text import text
from ..formats import Fmt, fmt_p, p_eq


def effect_name(factor: str, level, reference) -> str:
    """'residual minus plain', 'stage 1 only minus all stages', 'depth 32 minus depth 20'."""
    return f"{level_text(factor, level)} minus {level_text(factor, reference)}"


def _seeds_text(eff: pd.DataFrame) -> str:
    ns = sorted({int(n) for n in eff["n_pairs"]})
    return (f"{ns[0]} seed pairs per effect" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} seed pairs per effect") \
        if ns else "no seed pairs"


def _effect_text(f: Fmt, r) -> str:
    where = text(context_text(r.context))
    ci = "" if math.isnan(r.ci_low) else f"{f.ci(r.ci_low, r.ci_high)} pp, "
    mark = ", **supported**" if r.verdict == "supported" else ""
    return f"{f.pp(r.diff)} pp{' ' + where if where else ''} ({ci}{p_eq(r.p_holm)}{mark})"


def _is_trend(r) -> bool:
    """A linear-trend row whose effect is monotone across the levels (only then does a slope describe it)."""
    m = getattr(r, "monotone", True)
    return r.kind == "linear trend" and (m is None or (isinstance(m, float) and math.isnan(m)) or bool(m))


def _per_level(f: Fmt, eff: pd.DataFrame, r) -> str:
    """'+13.8 / +35.2 / +58.2 / +27.5 pp at lr 0.01 / 0.03 / 0.085 / 0.25': the focus effect at each level."""
    mine = eff[(eff["factor"] == r.focus) & (eff["level"].map(key) == key(r.level))]
    mine = mine[[r.other in c for c in mine["context"]]]
    order = sorted(mine.itertuples(), key=lambda e: float(e.context[r.other]))
    return (" / ".join(f.pp(e.diff) for e in order) + f" pp at {r.other} "
            + " / ".join(f"{e.context[r.other]:g}" if isinstance(e.context[r.other], float) else str(e.context[r.other])
                         for e in order))


def _interaction_text(f: Fmt, r, name: str, rows: int, eff: pd.DataFrame | None = None) -> str:
    ci = "no interval" if math.isnan(r.ci_low) else f"95 % t-interval {f.ci(r.ci_low, r.ci_high)} pp"
    p = f"sign-flip {p_eq(r.p_sign_flip)}" + (f", Holm over the {rows} interaction rows {p_eq(r.p_holm)}" if rows > 1 else "")
    if r.kind == "linear trend" and not _is_trend(r):
        levels = f": {_per_level(f, eff, r)}" if eff is not None else ""
        return (f"The effect ({name}) is not monotone in {r.other}{levels}; a straight line does not describe it, so "
                f"no trend is stated (the least-squares slope, {f.pp(r.estimate)} pp {r.unit}, {ci}, {p}, is in "
                "`interactions.csv`).")
    if r.kind == "linear trend":
        return (f"The effect ({name}) changes by **{f.pp(r.estimate)} pp {r.unit}**: mean over {r.n_seeds} seeds of "
                f"each seed's least-squares slope against {r.other}, {ci}, {p}.")
    return (f"Interaction: the effect ({name}) at {text(r.contrast)}, paired by seed ({r.n_seeds} seeds): "
            f"**{f.pp(r.estimate)} pp** ({ci}, {p}).")


def _interaction_name(r) -> str:
    return (f"the linear trend of the effect against {r.other}" if r.kind == "linear trend"
            else f"the difference of the effect between {text(r.contrast.replace(' minus ', ' and '))}")


def answer_lines(run: Run, d: Design, eff: pd.DataFrame, inter: pd.DataFrame) -> list[str]:
    """The report's first lines: each factor's effect at each level of the others (focus first), then the interaction."""
    f = Fmt.of(run)
    if eff.empty:
        return ["No factor effect could be computed: no two cells that differ in one factor both have scored seeds."]
    tuned = " Each arm ran at its own tuned learning rate, so an effect includes what tuning did for it." \
        if run.study.space else ""
    lines = [f"Test accuracy of the best-dev checkpoints ({run.final_stage} stage), paired by seed "
             f"({_seeds_text(eff)}): each effect is the mean paired difference in percentage points with its 95 % "
             f"t-interval; p is the exact sign-flip test, Holm-corrected within the factor's family (all effects of "
             f"that factor).{tuned}", ""]
    order = [d.focus] + [x for x in d.factors if x != d.focus]
    for factor in order:
        mine = eff[eff["factor"] == factor]
        for _, group in mine.groupby(mine["level"].map(key), sort=False):
            first = group.iloc[0]
            name = effect_name(factor, first["level"], first["reference"])
            lines.append(f"- **{text(name)}**: " + "; ".join(_effect_text(f, r) for r in group.itertuples()) + ".")
        if factor == d.focus:
            for r in inter.itertuples():
                name = effect_name(r.focus, r.level, d.reference(r.focus))
                lines.append(f"- {_interaction_text(f, r, text(name), len(inter), eff)}")
    supported = eff[eff["verdict"] == "supported"]
    held = inter[(inter["p_holm"] < ALPHA) & ((inter["ci_low"] > 0) | (inter["ci_high"] < 0))] if len(inter) else inter
    held = held[[r.kind != "linear trend" or _is_trend(r) for r in held.itertuples()]] if len(held) else held
    lines.append("")
    if supported.empty and held.empty:
        n = int(eff["n_pairs"].max())
        why = (f" with {n} seed pairs the exact sign-flip test cannot go below p = 2/2^{n} = {2 / 2 ** n:.3g}"
               if n and 2 / 2 ** n >= ALPHA else " each has a CI that spans 0 or a Holm-corrected p of 0.05 or more")
        lines.append(f"None of these differences is supported by the data:{why}. The intervals say how large the "
                     "effects may be.")
    else:
        lines.append(f"Supported by the data (CI excludes 0 and Holm-corrected p < {ALPHA:g}): "
                     + "; ".join(text(f"{effect_name(r.factor, r.level, r.reference)} {context_text(r.context)}".strip())
                                 for r in supported.itertuples())
                     + ("; " if len(supported) and len(held) else "")
                     + "; ".join(_interaction_name(r) for r in held.itertuples()) + ".")
    return lines


def effects_section(run: Run, d: Design, eff: pd.DataFrame, inter: pd.DataFrame) -> list[str]:
    """'## Factor effects': every effect and interaction as a table (full precision in the CSVs)."""
    f = Fmt.of(run)
    refs = text("; ".join(f"{x}: {level_text(x, d.reference(x))}" for x in d.factors))
    grid = (" A grid parameter counts as a factor: each arm at each grid point is a cell, every grid point "
            "reported (not only the one chosen by dev accuracy).") if d.grid else ""
    lines = [f"Factors: {', '.join(d.factors)}; reference levels (false for a true/false factor, else the first value "
             f"listed): {refs}.{grid} An effect compares two cells that differ in one factor only; a cell that lacks a "
             "nested factor (one with `requires`) serves as the reference at every level of it.", "",
             "| factor | effect | where | seeds | difference (pp) | 95 % t-CI (pp) | sign-flip p | Holm p | verdict |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in eff.itertuples():
        lines.append(f"| {r.factor} | {text(effect_name(r.factor, r.level, r.reference))} | {text(context_text(r.context)) or '–'} "
                     f"| {r.n_pairs} | {f.pp(r.diff)} | {f.ci(r.ci_low, r.ci_high)} | {fmt_p(r.p_sign_flip)} | "
                     f"{fmt_p(r.p_holm)} | {r.verdict} |")
    if len(inter):
        lines += ["", "Interaction of the focus factor with the other (Holm over the rows below):", "",
                  "| effect | contrast | seeds | estimate (pp) | 95 % t-CI (pp) | sign-flip p | Holm p |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in inter.itertuples():
            what = text(f"{r.contrast} ({r.unit})" if r.unit else r.contrast)
            if r.kind == "linear trend" and not _is_trend(r):
                what += " (the effect is not monotone: no trend)"
            lines.append(f"| {text(effect_name(r.focus, r.level, d.reference(r.focus)))} | {what} | {r.n_seeds} | "
                         f"{f.pp(r.estimate)} | {f.ci(r.ci_low, r.ci_high)} | {fmt_p(r.p_sign_flip)} | "
                         f"{fmt_p(r.p_holm)} |")
    elif len(d.factors) == 2:
        lines += ["", "No interaction is computed: the focus factor's effect is not measured at every level of the "
                      "other factor against its own reference cell (a nested design), so differences between its "
                      "effects are the other factor's effects above."]
    else:
        lines += ["", "Interactions are computed for two factors only; this study has "
                      f"{len(d.factors)}."]
    return lines + ["", "Full precision: `effects.csv`, `interactions.csv`."]


def effects_figure(run: Run, d: Design, eff: pd.DataFrame, inter: pd.DataFrame) -> Figure | None:
    """The focus factor's effect (mean ± 95 % t-CI, dots: seeds) against the other factor's levels."""
    mine = eff[eff["factor"] == d.focus]
    if mine.empty:
        return None
    others = [x for x in d.factors if x != d.focus]
    other = others[0] if len(others) == 1 else None
    numeric = other is not None and is_numeric(d.levels[other])
    f = Fmt.of(run)
    fig = Figure(figsize=(9.5, 6.0), layout="constrained")
    ax = fig.subplots()
    labels = list(dict.fromkeys(context_text(c) for c in mine["context"]))
    levels = list(dict.fromkeys(mine["level"].map(key)))
    colours = sns.color_palette("colorblind", max(len(levels), 1))
    handles, names = [], []
    for i, (lk, group) in enumerate(mine.groupby(mine["level"].map(key), sort=False)):
        colour, marker = colours[i % len(colours)], MARKERS[i % len(MARKERS)]
        xs = [float(r.context[other]) if numeric else labels.index(context_text(r.context)) for r in group.itertuples()]
        offset = 0.0 if numeric else (i - (len(levels) - 1) / 2) * 0.12
        xs = np.array(xs) + offset
        means = 100 * group["diff"].to_numpy(dtype=float)
        lows = clip(fig, 100 * group["ci_low"].to_numpy(dtype=float), -100, 100)
        highs = clip(fig, 100 * group["ci_high"].to_numpy(dtype=float), -100, 100)
        for x, diffs in zip(xs, group["diffs"]):
            ax.scatter(np.full(len(diffs), x), 100 * np.asarray(diffs, dtype=float), color=colour, marker=marker,
                       alpha=0.4, s=30)
        ax.errorbar(xs, means, yerr=[np.nan_to_num(means - lows), np.nan_to_num(highs - means)], color=colour,
                    marker=marker, ms=9, lw=2, capsize=6, ls="-" if numeric else "none")
        first = group.iloc[0]
        handles.append(Line2D([], [], color=colour, marker=marker, lw=2, ms=8))
        names.append(effect_name(d.focus, first["level"], first["reference"]))
        trend = inter[(inter["kind"] == "linear trend") & (inter["level"].map(key) == lk)] if len(inter) else inter
        if numeric and len(trend) and not _is_trend(trend.iloc[0]):
            note(fig, f"The effect ({names[-1]}) is not monotone in {other}, so no linear trend is drawn.")
        elif numeric and len(trend):
            # The least-squares line through the mean effects: its slope is the mean of the per-seed slopes.
            log = log_scale(d.levels[other])
            unit, step = trend_unit(other, d.levels[other])
            grid = np.array(sorted(float(v) for v in d.levels[other]))
            at = (lambda v: np.log10(v)) if log else (lambda v: v)
            line = means.mean() + 100 * trend.iloc[0]["estimate"] / step * (at(grid) - at(xs).mean())
            ax.plot(grid, line, color=colour, ls="--", lw=1.5)
            handles.append(Line2D([], [], color=colour, ls="--", lw=1.5))
            names.append(f"linear trend: {f.pp(trend.iloc[0]['estimate'])} pp {unit}")
    ax.axhline(0, color="black", lw=1.2, ls=":")
    if numeric:
        values = [float(v) for v in d.levels[other]]
        if log_scale(d.levels[other]):
            log_x_axis(ax, (min(values), max(values)))
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_xlabel("depth (weighted layers)" if other == "depth" else other)
    else:
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
        ax.set_xlabel(", ".join(others) if others else "")
    ax.set_ylabel("difference in test accuracy (pp)")
    against = f" against {other}" if other else ""
    first = mine.iloc[0]
    fig.suptitle(title(run, f"{effect_name(d.focus, first['level'], first['reference'])}{against}"))
    ax.set_title("paired by seed: mean ± 95 % CI (t), dots = seeds", fontsize="medium")
    legend_below(fig, handles, names, ncol=min(len(names), 2))
    note(fig, "Each point is the mean over seeds of the paired difference between two cells that differ only in "
              f"{d.focus}; the dotted line is no difference.")
    return fig
