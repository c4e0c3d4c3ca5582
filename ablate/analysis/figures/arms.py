"""The analysis figures, each written as PNG (screen) and PDF (print): common styling, test accuracy
per arm, training curves and the depth figure (gradient figures: figures_grad; tuning: figures_tuning).

The analysis package is the only part of the project that imports seaborn. Figures are built on
matplotlib Figure objects, never through pyplot, so analysing a run changes no global state and
needs no display. Styling for print: large fonts, the colour-blind-safe seaborn palette plus a
marker per arm (so the arms stay apart in grey-scale), units on every axis.

A figure function may attach notes to its figure (`note`): facts of this figure that its caption
must state (an interval cut at 100 %, what the gradients actually do). The report appends them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ..statistics import stats
from ..context import chance, title
from ..load import Run, arm_value, series_of
from ..markdown_text import plot_text

MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h", "<", ">", "p"]
DPI = 200
FEW_SEEDS = 3  # curves with at most this many seeds per arm show every seed instead of a t-band
CLIP_NOTE = ("Some 95 % t-intervals reach past 0 % or 100 % and are drawn cut at that limit, as the tables give "
             "them (marked †).")


@contextmanager
def theme():
    rc = {**sns.axes_style("ticks"), **sns.plotting_context("notebook", font_scale=1.35),
          "axes.grid": True, "grid.color": "#dddddd", "grid.linewidth": 0.6, "pdf.fonttype": 42,
          "axes.spines.right": False, "axes.spines.top": False, "legend.frameon": False}
    with matplotlib.rc_context(rc):
        yield


def note(fig: Figure, text: str) -> None:
    notes = fig.__dict__.setdefault("_ablate_notes", [])
    if text not in notes:
        notes.append(text)


def notes(fig: Figure) -> list[str]:
    return list(getattr(fig, "_ablate_notes", []))


def label(arm: str) -> str:
    """An arm's name for a legend or tick label (spec text: never read as mathtext)."""
    return plot_text(arm.replace(",", ", "))


def arm_styles(arms: list[str]) -> dict[str, dict]:
    colours = sns.color_palette("colorblind", max(len(arms), 1))
    return {a: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]} for i, a in enumerate(arms)}


def clip(fig: Figure, x, low: float | None = None, high: float | None = None):
    """Intervals are drawn inside the metric's range (an accuracy CI from 2 seeds can pass 100 %);
    when that cuts one, the figure gets CLIP_NOTE. The tables cut them the same way (stats.cut_to)."""
    arr = np.asarray(x, dtype=float)
    lo = low if low is not None else -np.inf
    hi = high if high is not None else np.inf
    finite = arr[np.isfinite(arr)]
    if finite.size and (np.any(finite < lo - 1e-9) or np.any(finite > hi + 1e-9)):
        note(fig, CLIP_NOTE)
    return np.clip(arr, lo, hi)


def plain_log_labels(axis, minor: bool = True) -> None:
    """Log-axis tick labels as plain numbers (0.3, 2, 10) rather than 3×10^-1; minor labels at 2 and 5 only."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if minor and f"{v:.0e}"[0] in "25" else ""))


def log_x_axis(ax, bounds: tuple[float, float]) -> None:
    """Log axis labelled with plain numbers (0.01, not 10^-2); minor ticks labelled when it spans under a decade."""
    low, high = bounds
    ax.set_xscale("log")
    ax.set_xlim(low / 1.25, high * 1.25)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(plain)
    few = math.log10(high / low) < 1.2
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2, 3, 5) if few else (2, 3, 4, 5, 6, 7, 8, 9)))
    ax.xaxis.set_minor_formatter(plain if few else NullFormatter())


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def legend_below(fig: Figure, handles, labels, ncol: int | None = None) -> None:
    ncol = ncol or min(len(labels), 3)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def arm_handles(arms: list[str], styles: dict) -> list[Line2D]:
    return [Line2D([], [], color=styles[a]["color"], marker=styles[a]["marker"], ls=styles[a].get("ls", "-"), lw=2, ms=8)
            for a in arms]


def run_styles(run: Run) -> dict[str, dict]:
    """Colour, marker and line style per arm. Wherever arms differ in `residual`, a plain arm is drawn with squares
    and dashed lines and a residual one with circles and solid lines. A study of two factors, one of them
    true/false (residual, say), encodes that one by marker and line style (true: circle, solid; false: square,
    dashed) and the other by colour (ordered palette for numbers, the colour-blind palette otherwise; grey for an
    arm that lacks it, e.g. the plain arm of a nested factor), so one colour is one level of the other factor in
    every figure. Other studies: one colour and marker per arm."""
    arms, study = run.arm_names, run.study
    settings = {a.name: a.settings for a in study.arms}
    factors = list(study.factor_names)
    flags = [f for f in factors if all(isinstance(settings[a].get(f, False), bool) for a in arms)]
    flag = "residual" if "residual" in flags else (flags[0] if flags else None)
    others = [f for f in factors if f != flag]
    if flag is None or len(others) != 1:
        styles = {a: {**st, "ls": "-"} for a, st in arm_styles(arms).items()}
        if "residual" in flags:
            for a in arms:
                on = bool(arm_value(run, a, "residual"))
                styles[a].update(marker="o" if on else "s", ls="-" if on else "--")
        return styles
    other = others[0]
    levels = list(dict.fromkeys(repr(settings[a][other]) for a in arms if other in settings[a]))
    values = [settings[a][other] for a in arms if other in settings[a]]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    palette = sns.color_palette("flare" if numeric else "colorblind", max(len(levels), 1))
    out = {}
    for a in arms:
        on = bool(arm_value(run, a, flag))
        colour = palette[levels.index(repr(settings[a][other]))] if other in settings[a] else (0.45, 0.45, 0.45)
        out[a] = {"color": colour, "marker": "o" if on else "s", "ls": "-" if on else "--"}
    return out


# --- 1: test accuracy per arm ----------------------------------------------------------------------
def accuracy_per_arm(run: Run) -> Figure:
    arms = run.arm_names
    styles = run_styles(run)
    ok = run.ok.assign(test_pct=lambda d: 100 * d["test_acc"])
    fig = Figure(figsize=(8, 2.4 + 0.75 * len(arms)), layout="constrained")
    ax = fig.subplots()
    jitter = np.random.default_rng(0)  # seeds of one arm spread vertically (a fixed draw: the same figure every time)
    for i, arm in enumerate(arms):
        vals = ok.loc[ok["arm"] == arm, "test_pct"].to_numpy(dtype=float)
        ax.scatter(vals, i + jitter.uniform(-0.15, 0.15, len(vals)), color=styles[arm]["color"],
                   marker=styles[arm]["marker"], s=64, alpha=0.65, zorder=3)
    level = 100 * chance(run)
    ax.axvline(level, color="black", ls=":", lw=1.5)
    for i, arm in enumerate(arms):
        ci = stats.mean_ci(ok.loc[ok["arm"] == arm, "test_pct"])
        if ci.n == 0:
            comp = run.completeness
            c = comp[(comp["stage"] == run.final_stage) & (comp["arm"] == arm)].iloc[0]
            ax.text(0.01, i, f"no test score ({c['diverged']} diverged, {c['error']} failed, "
                    f"{c['finished']}/{c['planned']} run)", transform=ax.get_yaxis_transform(), va="center",
                    color="dimgrey")
            continue
        low, high = clip(fig, ci.low, 0, 100), clip(fig, ci.high, 0, 100)
        err = None if math.isnan(low) else [[ci.mean - low], [high - ci.mean]]
        ax.errorbar(ci.mean, i, xerr=err, fmt="D", color="black", ms=9, capsize=7, lw=2, zorder=5)
    ax.set_yticks(range(len(arms)), [label(a) for a in arms])
    ax.set_ylim(len(arms) - 0.5, -0.5)  # every arm gets its row, scored or not, first arm on top
    ax.set(xlabel="test accuracy (%), best-dev checkpoint", ylabel="",
           title=title(run, f"test accuracy per arm ({run.final_stage} stage)"))
    handles = [Line2D([], [], color="grey", marker="o", ls="", ms=8, alpha=0.65),
               Line2D([], [], color="black", marker="D", ls="-", ms=8), Line2D([], [], color="black", ls=":", lw=1.5)]
    cut = ", cut at the axis limit" if CLIP_NOTE in notes(fig) else ""
    legend_below(fig, handles, ["one seed (marker: the arm's)", f"mean ± 95 % CI (t){cut}", f"chance ({level:g} %)"],
                 ncol=3)
    return fig


# --- 2: training curves ----------------------------------------------------------------------------
def _band(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per step: mean and t-interval over seeds."""
    rows = []
    for step, group in frame.groupby("step"):
        ci = stats.mean_ci(group[value])
        if ci.n:
            rows.append((step, ci.mean, ci.low, ci.high))
    return pd.DataFrame(rows, columns=["step", "mean", "low", "high"])


def curves(run: Run, curves_df: pd.DataFrame) -> Figure:
    arms = run.arm_names
    styles = run_styles(run)
    n_steps = int(curves_df["step"].max()) if len(curves_df) else 1
    # Per-step minibatch loss is noise-dominated over long runs; a short running mean per seed keeps
    # the trend readable while still showing early instability.
    window = max(1, round(n_steps / 50))
    seeds = curves_df.groupby("arm", observed=True)["seed"].nunique()
    few = bool(len(seeds)) and int(seeds.max()) <= FEW_SEEDS
    fig = Figure(figsize=(13, 5.4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for arm in arms:
        sub = curves_df[curves_df["arm"] == arm]
        if sub.empty:
            continue
        loss = sub.dropna(subset=["train_loss"]).sort_values("step").copy()
        loss["train_loss"] = loss.groupby("seed")["train_loss"].transform(lambda s: s.rolling(window, min_periods=1).mean())
        st = styles[arm]
        for ax, frame, col, scale, top in ((ax_loss, loss, "train_loss", 1.0, None),
                                           (ax_acc, sub.dropna(subset=["dev_acc"]).sort_values("step"), "dev_acc", 100.0, 100.0)):
            band = _band(frame, col)
            if band.empty:
                continue
            marker = st["marker"] if len(band) <= 30 else None
            if few:
                # With a handful of seeds a t-band says little (and is huge): show every seed instead.
                for _, one in frame.groupby("seed"):
                    ax.plot(one["step"], scale * one[col], color=st["color"], ls=st["ls"], lw=0.9, alpha=0.55)
            ax.plot(band["step"], scale * band["mean"], color=st["color"], ls=st["ls"], marker=marker, lw=2.2, ms=6)
            if not few:
                ax.fill_between(band["step"], clip(fig, scale * band["low"], 0, top), clip(fig, scale * band["high"], 0, top),
                                color=st["color"], alpha=0.2, lw=0)
    smooth = f" (running mean of {window} steps)" if window > 1 else ""
    ax_loss.set(xlabel="training step (SGD updates)", ylabel="cross-entropy (nats)",
                title=f"training loss, mini-batch{smooth}")
    ax_acc.set(xlabel="training step (SGD updates); ticks at dev evaluations", ylabel="dev accuracy (%)",
               title="dev accuracy")
    ax_acc.axhline(100 * chance(run), color="black", ls=":", lw=1.5)
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xticks(evaluation_ticks(curves_df))
    how = "thin lines: seeds, bold: mean" if few else "mean over seeds ± 95 % CI (t)"
    fig.suptitle(title(run, f"training curves, {run.final_stage} stage ({how})"))
    if few:
        note(fig, f"With at most {FEW_SEEDS} seeds per arm every seed is drawn as a thin line and the bold line is "
                  "their mean; no interval is drawn.")
    legend_below(fig, arm_handles(arms, styles) + [Line2D([], [], color="black", ls=":", lw=1.5)],
                 [label(a) for a in arms] + [f"chance ({100 * chance(run):g} %)"], ncol=min(len(arms) + 1, 4))
    return fig


def evaluation_ticks(curves_df: pd.DataFrame, most: int = 9) -> list[int]:
    """The steps at which the dev set was evaluated (every `most`-th one when there are more, the last always)."""
    steps = sorted({int(s) for s in curves_df.dropna(subset=["dev_acc"])["step"]}) if len(curves_df) else []
    if len(steps) <= most:
        return steps
    picked = steps[::math.ceil(len(steps) / most)]
    if picked[-1] != steps[-1]:
        if steps[-1] - picked[-1] < (picked[-1] - picked[-2]) / 2:
            picked[-1] = steps[-1]  # too close to its neighbour to carry a label of its own
        else:
            picked.append(steps[-1])
    return picked


# --- 5: depth --------------------------------------------------------------------------------------
def depth_axis(fig: Figure, ax, frame: pd.DataFrame, value: str, series: list[str], styles: dict, scale: float,
               log: bool = False, top: float | None = None) -> None:
    depths = sorted(frame["depth"].unique())
    # Series sit side by side around each depth so their error bars and seed dots do not overlap.
    spread = 0.04 * max((depths[-1] - depths[0]) if len(depths) > 1 else 10, 10)
    offsets = np.linspace(-spread, spread, len(series)) if len(series) > 1 else [0.0]
    for off, name in zip(offsets, series):
        sub = frame[frame["series"] == name]
        st = styles[name]
        pts = []
        for depth, group in sub.groupby("depth"):
            vals = group[value].to_numpy(dtype=float) * scale
            vals = vals[np.isfinite(vals)]
            if log:
                vals = vals[vals > 0]
                ci = stats.mean_ci(np.log10(vals))
                ci = stats.Interval(10 ** ci.mean, 10 ** ci.low, 10 ** ci.high, ci.n)
            else:
                ci = stats.mean_ci(vals)
            if ci.n == 0:
                continue
            pts.append((depth, ci))
            ax.scatter(np.full(len(vals), depth + off), vals, color=st["color"], marker=st["marker"], alpha=0.45, s=30)
        if not pts:
            continue
        xs = np.array([d for d, _ in pts], dtype=float) + off
        means = np.array([c.mean for _, c in pts])
        lows = clip(fig, [c.low for _, c in pts], None if log else 0, top)
        highs = clip(fig, [c.high for _, c in pts], None if log else 0, top)
        ax.errorbar(xs, means, yerr=[np.nan_to_num(means - lows), np.nan_to_num(highs - means)], color=st["color"],
                    marker=st["marker"], ms=9, lw=2, capsize=6)
    ax.set_xticks(depths)
    if log:
        ax.set_yscale("log")
        plain_log_labels(ax.yaxis, minor=False)


def depth_figure(run: Run) -> Figure:
    ok = run.ok.copy()
    ok["depth"] = ok["depth"].astype(int)
    ok["series"] = [series_of(run, a) for a in ok["arm"]]
    series = list(dict.fromkeys(series_of(run, a) for a in run.arm_names))
    styles = arm_styles(series)
    # The train loss of the scored checkpoint (eval mode, whole training subset) when every run has it;
    # older runs only have the last epoch's mean mini-batch loss, of weights changing under it.
    scored = ok["scored_train_loss"].notna().all()
    loss_col = "scored_train_loss" if scored else "final_train_loss"
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    depth_axis(fig, ax_loss, ok, loss_col, series, styles, 1.0)
    depth_axis(fig, ax_acc, ok, "test_acc", series, styles, 100.0, top=100.0)
    ax_loss.set(xlabel="depth (weighted layers)",
                ylabel="train loss (nats)", title="train loss, best-dev checkpoint" if scored
                else "train loss, last-epoch mini-batch mean")
    ax_acc.set(xlabel="depth (weighted layers)", ylabel="test accuracy (%)", title="test accuracy, best-dev checkpoint")
    ax_acc.axhline(100 * chance(run), color="black", ls=":", lw=1.5)
    note(fig, f"Dotted line in the accuracy panel: chance ({100 * chance(run):g} %).")
    fig.suptitle(title(run, "plain vs residual against depth (mean ± 95 % CI (t), dots: seeds)"))
    legend_below(fig, arm_handles(series, styles), series, ncol=min(len(series), 4))
    return fig
