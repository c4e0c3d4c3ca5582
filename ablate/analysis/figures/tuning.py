"""The figures of the search: dev accuracy of every tuning trial against the learning rate (or the lr grid's test
accuracy), with each arm's completed trials joined in lr order; the learning-rate curves over seeds (lr_effects);
the expected best dev accuracy against the number of search points (tuning_budget)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from ..statistics import stats
from ..context import chance, title
from .arms import arm_handles, clip, label, legend_below, log_x_axis, note, run_styles
from ..load import Run, completed
from ..statistics.lr_effects import LrEffects, lr_param, search_trials


def spread(x, i: int, n: int, log: bool):
    """Arm i of n drawn slightly beside the others at the same x (1.5 % of a decade apart on a log axis), so that
    markers of different arms do not hide each other."""
    shift = (i - (n - 1) / 2) * 0.015
    return x * 10 ** shift if log else x + shift * (float(x.max() - x.min()) or 1.0)


def tuning_landscape(run: Run) -> Figure | None:
    param = lr_param(run)
    if param is None:
        return None
    arms = run.arm_names
    styles = run_styles(run)
    fig = Figure(figsize=(9.5, 6.2), layout="constrained")
    ax = fig.subplots()
    log_x = True
    level = 100 * chance(run)
    if run.study.space:
        tune = run.trials[run.trials["stage"] == "tune"].drop_duplicates("trial_id")
        failed = tune["status"].isin(["diverged", "error"])
        # A failed trial is drawn too: at its best dev accuracy before it failed, else at chance.
        tune = tune[tune["best_dev_acc"].notna() | failed].assign(
            done=lambda d: completed(d), failed=lambda d: d["status"].isin(["diverged", "error"]),
            dev=lambda d: 100 * d["best_dev_acc"].fillna(chance(run)))
        if tune.empty:
            return None
        spec = next(p for p in run.study.space if p.name == param)
        log_x = spec.distribution == "loguniform"
        bounds = (spec.low, spec.high)  # the whole search range, so unexplored regions show as empty
        for i, arm in enumerate(arms):
            sub = tune[tune["arm"] == arm]
            st = styles[arm]
            x = spread(sub[param].astype(float), i, len(arms), log_x)
            # A trial that trained to its last step counts as completed, whatever its status says.
            for (done, bad), part in sub.groupby(["done", "failed"]):
                xs = x[part.index]
                if bad:
                    ax.scatter(xs, part["dev"], s=90, marker="X", color=st["color"], edgecolors="black",
                               linewidths=0.8, alpha=0.9, zorder=4)
                else:
                    ax.scatter(xs, part["dev"], s=70, marker=st["marker"], color=st["color"],
                               facecolors=st["color"] if done else "none", linewidths=1.8, alpha=0.7)
            line = sub[sub["done"]].groupby(param)["dev"].mean().sort_index()
            ax.plot(line.index, line.to_numpy(), color=st["color"], ls=st["ls"], lw=1.6, alpha=0.8)
            chosen = run.selected.get(arm, {}).get(param)
            # The star sits on the trial whose value went to the confirm stage (ties in dev accuracy are common).
            picked = sub[np.isclose(sub[param].astype(float), float(chosen))] if chosen is not None else sub.iloc[:0]
            if not picked.empty:
                done = picked[picked["done"]]
                at = done["dev"].mean() if len(done) else picked["dev"].max()
                ax.scatter([float(chosen)], [at], s=380, marker="*", color=st["color"], edgecolors="black",
                           linewidths=1.2, zorder=5)
        ax.set(ylabel="best dev accuracy (%)",
               title=title(run, f"tuning stage: dev accuracy against {param} (line: mean of completed trials)"))
        extra = [Line2D([], [], color="grey", marker="*", ls="", mec="black", ms=16)]
        extra_labels = ["chosen for confirm (at its mean)"]
        if not (tune["done"] | tune["failed"]).all():
            extra.append(Line2D([], [], color="grey", marker="o", ls="", mfc="none", ms=8))
            extra_labels.append("stopped before its last step")
        if tune["failed"].any():
            extra.append(Line2D([], [], color="grey", marker="X", ls="", mec="black", ms=10))
            extra_labels.append("diverged or failed (at its best dev accuracy, else chance)")
        if len(arms) > 1:
            note(fig, "Markers of different arms at the same learning rate are drawn slightly apart; the line runs "
                      "through the true values.")
    else:
        grid = run.trials[(run.trials["stage"] == "grid") & (run.trials["status"] == "ok") & run.trials["test_acc"].notna()]
        if grid.empty:
            return None
        for arm in arms:
            sub = grid[grid["arm"] == arm]
            st = styles[arm]
            pts = [(x, stats.mean_ci(100 * g["test_acc"])) for x, g in sub.groupby(param)]
            if not pts:
                continue
            xs = np.array([x for x, _ in pts], dtype=float)
            means = np.array([c.mean for _, c in pts])
            ax.scatter(sub[param], 100 * sub["test_acc"], color=st["color"], marker=st["marker"], alpha=0.4, s=35)
            ax.plot(xs, means, color=st["color"], marker=st["marker"], ls=st["ls"], lw=2, ms=8)
            lows = np.array([c.low for _, c in pts])
            if np.isfinite(lows).any():
                ax.fill_between(xs, clip(fig, lows, 0, 100), clip(fig, np.array([c.high for _, c in pts]), 0, 100),
                                color=st["color"], alpha=0.18, lw=0)
            chosen = run.selected.get(arm, {}).get(param)
            if chosen is not None:
                at = [c.mean for x, c in pts if x == chosen]
                ax.scatter([chosen] * len(at), at, s=380, marker="*", color=st["color"], edgecolors="black",
                           linewidths=1.2, zorder=5)
        ax.set(ylabel="test accuracy (%)", title=title(run, f"test accuracy against {param} (mean ± 95 % CI, dots: seeds)"))
        extra = [Line2D([], [], color="grey", marker="*", ls="", mec="black", ms=16)]
        extra_labels = ["reported (best mean dev accuracy)"]
        values = [float(v) for v in run.study.grid[param]]
        bounds = (min(values), max(values))
        log_x = bounds[0] > 0 and bounds[1] / bounds[0] >= 5
    ax.axhline(level, color="black", ls=":", lw=1.5)
    extra.append(Line2D([], [], color="black", ls=":", lw=1.5))
    extra_labels.append(f"chance ({level:g} %)")
    if log_x:
        log_x_axis(ax, bounds)
    if not run.study.space:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_formatter(NullFormatter())
    unit = " (SGD step size, log scale)" if param == "lr" and log_x else (" (log scale)" if log_x else "")
    ax.set_xlabel(f"{'learning rate' if param == 'lr' else param}{unit}")
    legend_below(fig, arm_handles(arms, styles) + extra, [label(a) for a in arms] + extra_labels,
                  ncol=min(len(arms) + len(extra), 3))
    return fig


def lr_curves_figure(run: Run, lr: LrEffects) -> Figure | None:
    """Dev and test accuracy against the learning rate per arm: mean over seeds with its 95 % t-band, every run as
    a dot (a failed one as a cross at chance), the learning rate the final stage ran as a star, chance dotted."""
    curves = lr.curves
    if curves.empty:
        return None
    arms = [a for a in run.arm_names if (curves["arm"] == a).any()]
    styles = run_styles(run)
    trials = search_trials(run, lr.param)
    values = curves["lr"].to_numpy(dtype=float)
    log = bool(values.min() > 0 and values.max() / values.min() >= 5)
    fig = Figure(figsize=(14, 6.0), layout="constrained")
    level = 100 * chance(run)
    for ax, metric, name in zip(fig.subplots(1, 2, sharey=True), ("dev", "test"),
                                ("best dev accuracy", "test accuracy, best-dev checkpoint")):
        for i, arm in enumerate(arms):
            st, c = styles[arm], curves[curves["arm"] == arm]
            x = spread(c["lr"].astype(float), i, len(arms), log).to_numpy()
            mean = 100 * c[f"{metric}_mean"].to_numpy(dtype=float)
            ax.plot(x, mean, color=st["color"], ls=st["ls"], marker=st["marker"], lw=2.2, ms=8)
            low, high = 100 * c[f"{metric}_low"].to_numpy(dtype=float), 100 * c[f"{metric}_high"].to_numpy(dtype=float)
            if np.isfinite(low).any():
                ax.fill_between(x, clip(fig, low, 0, 100), clip(fig, high, 0, 100), color=st["color"], alpha=0.18, lw=0)
            runs = trials[trials["arm"] == arm]
            rx = spread(runs["lr"].astype(float), i, len(arms), log)
            ok = ~runs["failed"].to_numpy(dtype=bool)
            ax.scatter(rx[ok], 100 * runs.loc[ok, metric], color=st["color"], marker=st["marker"], s=22, alpha=0.35)
            ax.scatter(rx[~ok], 100 * runs.loc[~ok, metric], color=st["color"], marker="X", s=70, edgecolors="black",
                       linewidths=0.7, zorder=4)
            chosen = c[c["chosen"]]
            if len(chosen):
                ax.scatter(spread(chosen["lr"].astype(float), i, len(arms), log), 100 * chosen[f"{metric}_mean"],
                           s=380, marker="*", color=st["color"], edgecolors="black", linewidths=1.2, zorder=5)
        ax.axhline(level, color="black", ls=":", lw=1.5)
        if log:
            log_x_axis(ax, (float(values.min()), float(values.max())))
        ax.set(xlabel=f"{'learning rate' if lr.param == 'lr' else lr.param}{' (log scale)' if log else ''}",
               ylabel=f"{name} (%)", title=name)
    low, high = lr.seeds_per_point
    runs_text = ("1 run" if high == 1 else f"{low} runs") if low == high else f"{low}–{high} runs"
    stage = "tuning" if lr.stage == "tune" else lr.stage
    fig.suptitle(title(run, f"accuracy against {lr.param}, {stage} stage (mean ± 95 % CI over {runs_text} per point)"))
    extra = [Line2D([], [], color="grey", marker="*", ls="", mec="black", ms=16),
             Line2D([], [], color="grey", marker="X", ls="", mec="black", ms=10),
             Line2D([], [], color="black", ls=":", lw=1.5)]
    legend_below(fig, arm_handles(arms, styles) + extra,
                 [label(a) for a in arms] + [f"{run.final_stage} stage's {lr.param}", "diverged or failed (at chance)",
                                             f"chance ({level:g} %)"], ncol=min(len(arms) + 3, 5))
    if lr.one_seed:
        note(fig, f"Every {lr.param} ran under one seed: no band, and each point is one run.")
    if len(arms) > 1:
        note(fig, "Arms at the same learning rate are drawn slightly apart.")
    return fig


def expected_max_figure(run: Run, curves: pd.DataFrame) -> Figure | None:
    """Expected dev score of the chosen point against the number of search points per arm, ± its SD over searches."""
    arms = [a for a in run.arm_names if len(curves) and (curves["arm"] == a).any()]
    if not arms:
        return None
    styles = run_styles(run)
    fig = Figure(figsize=(9.5, 6.2), layout="constrained")
    ax = fig.subplots()
    for arm in arms:
        st, c = styles[arm], curves[curves["arm"] == arm]
        ax.plot(c["n"], 100 * c["expected_max"], color=st["color"], ls=st["ls"], marker=st["marker"], lw=2.2,
                ms=6 if len(c) <= 60 else 0)
        ax.fill_between(c["n"], 100 * c["low"], 100 * c["high"], color=st["color"], alpha=0.18, lw=0)
    level = 100 * chance(run)
    ax.axhline(level, color="black", ls=":", lw=1.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="search points (n), each scored by the mean over its tuning seeds",
           ylabel="dev score of the chosen point (%)",
           title="mean over every set of n points (no replacement); band: ± SD over the sets")
    fig.suptitle(title(run, "tuning budget (Tang et al. 2020)"))
    legend_below(fig, arm_handles(arms, styles) + [Line2D([], [], color="black", ls=":", lw=1.5)],
                 [label(a) for a in arms] + [f"chance ({level:g} %)"], ncol=min(len(arms) + 1, 4))
    return fig
