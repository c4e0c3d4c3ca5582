"""The analysis figures, each written as PNG (screen) and PDF (print).

The only module in the project that imports seaborn. Figures are built on matplotlib Figure
objects, never through pyplot, so analysing a run changes no global state and needs no display.
Styling for print: large fonts, the colour-blind-safe seaborn palette plus a marker per arm (so
the arms stay apart in grey-scale), units on every axis.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from . import stats
from .load import Run, series_of

MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h", "<", ">", "p"]
DPI = 200


@contextmanager
def theme():
    rc = {**sns.axes_style("ticks"), **sns.plotting_context("notebook", font_scale=1.35),
          "axes.grid": True, "grid.color": "#dddddd", "grid.linewidth": 0.6, "pdf.fonttype": 42,
          "axes.spines.right": False, "axes.spines.top": False, "legend.frameon": False}
    with matplotlib.rc_context(rc):
        yield


def label(arm: str) -> str:
    return arm.replace(",", ", ")


def arm_styles(arms: list[str]) -> dict[str, dict]:
    colours = sns.color_palette("colorblind", max(len(arms), 1))
    return {a: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]} for i, a in enumerate(arms)}


def _clip(x, low: float | None = None, high: float | None = None):
    """Intervals are drawn inside the metric's range (an accuracy CI from 2 seeds can pass 100 %);
    the tables keep the unclipped numbers."""
    return np.clip(x, low if low is not None else -np.inf, high if high is not None else np.inf)


def _plain_log_labels(axis) -> None:
    """Log-axis tick labels as plain numbers (0.3, 2, 10) rather than 3×10^-1."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def _legend_below(fig: Figure, handles, labels, ncol: int | None = None) -> None:
    ncol = ncol or min(len(labels), 3)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def _arm_handles(arms: list[str], styles: dict) -> list[Line2D]:
    return [Line2D([], [], color=styles[a]["color"], marker=styles[a]["marker"], lw=2, ms=8) for a in arms]


# --- 1: test accuracy per arm ----------------------------------------------------------------------
def accuracy_per_arm(run: Run) -> Figure:
    arms = run.arm_names
    styles = arm_styles(arms)
    ok = run.ok.assign(test_pct=lambda d: 100 * d["test_acc"])
    fig = Figure(figsize=(8, 1.8 + 0.75 * len(arms)), layout="constrained")
    ax = fig.subplots()
    sns.stripplot(data=ok, x="test_pct", y="arm", hue="arm", order=arms, hue_order=arms,
                  palette={a: styles[a]["color"] for a in arms}, size=8, alpha=0.65, jitter=0.15,
                  ax=ax, legend=False, orient="h")
    for i, arm in enumerate(arms):
        ci = stats.mean_ci(ok.loc[ok["arm"] == arm, "test_pct"])
        if ci.n == 0:
            comp = run.completeness
            c = comp[(comp["stage"] == run.final_stage) & (comp["arm"] == arm)].iloc[0]
            ax.text(0.01, i, f"no test score ({c['diverged']} diverged, {c['error']} failed, "
                    f"{c['finished']}/{c['planned']} run)", transform=ax.get_yaxis_transform(), va="center",
                    color="dimgrey")
            continue
        low, high = _clip(ci.low, 0, 100), _clip(ci.high, 0, 100)
        err = None if math.isnan(low) else [[ci.mean - low], [high - ci.mean]]
        ax.errorbar(ci.mean, i, xerr=err, fmt="D", color="black", ms=9, capsize=7, lw=2, zorder=5)
    ax.set_yticks(range(len(arms)), [label(a) for a in arms])
    ax.set_ylim(len(arms) - 0.5, -0.5)  # every arm gets its row, scored or not, first arm on top
    ax.set(xlabel="test accuracy (%)", ylabel="", title=f"{run.study.name}: test accuracy per arm ({run.final_stage} stage)")
    handles = [Line2D([], [], color="grey", marker="o", ls="", ms=8, alpha=0.65),
               Line2D([], [], color="black", marker="D", ls="-", ms=8)]
    _legend_below(fig, handles, ["one seed", "mean ± 95 % CI (t)"], ncol=2)
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
    styles = arm_styles(arms)
    n_steps = int(curves_df["step"].max()) if len(curves_df) else 1
    # Per-step minibatch loss is noise-dominated over long runs; a short running mean per seed keeps
    # the trend readable while still showing early instability.
    window = max(1, round(n_steps / 50))
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for arm in arms:
        sub = curves_df[curves_df["arm"] == arm]
        if sub.empty:
            continue
        loss = sub.dropna(subset=["train_loss"]).sort_values("step").copy()
        loss["train_loss"] = loss.groupby("seed")["train_loss"].transform(lambda s: s.rolling(window, min_periods=1).mean())
        for ax, frame, col, scale, top in ((ax_loss, loss, "train_loss", 1.0, None),
                                           (ax_acc, sub.dropna(subset=["dev_acc"]), "dev_acc", 100.0, 100.0)):
            band = _band(frame, col)
            if band.empty:
                continue
            st = styles[arm]
            marker = st["marker"] if len(band) <= 30 else None
            ax.plot(band["step"], scale * band["mean"], color=st["color"], marker=marker, lw=2, ms=6)
            ax.fill_between(band["step"], _clip(scale * band["low"], 0, top), _clip(scale * band["high"], 0, top),
                            color=st["color"], alpha=0.2, lw=0)
    # The smoothing note goes in the title: a long y label would stretch past the axes.
    smooth = f" (running mean of {window} steps)" if window > 1 else ""
    ax_loss.set(xlabel="training step (SGD updates)", ylabel="cross-entropy (nats)",
                title=f"training loss{smooth}")
    ax_acc.set(xlabel="training step (SGD updates)", ylabel="dev accuracy (%)", title="dev accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{run.study.name}: mean over seeds ± 95 % CI (t), {run.final_stage} stage")
    _legend_below(fig, _arm_handles(arms, styles), [label(a) for a in arms], ncol=min(len(arms), 4))
    return fig


# --- 3 and 4: gradient norms -----------------------------------------------------------------------
def _geo_mean(values: pd.Series) -> float:
    v = values[values > 0]
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


def grad_profile(run: Run, grads: pd.DataFrame) -> Figure:
    arms = [a for a in run.arm_names if (grads["arm"] == a).any()]
    styles = arm_styles(run.arm_names)
    layers = grads[grads["kind"] == "layer"]
    last = layers.groupby("trial_id")["step"].transform("max")
    snapshots = {"at initialisation (step 0)": layers[layers["step"] == 0],
                 "end of training (last logged step)": layers[layers["step"] == last]}
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (title, frame) in zip(axes, snapshots.items()):
        steps = sorted(frame["step"].unique().tolist())
        for arm in arms:
            sub = frame[frame["arm"] == arm]
            if sub.empty:
                continue
            agg = sub.groupby("layer_index")["grad_norm"].agg([_geo_mean, "min", "max"]).reset_index()
            st = styles[arm]
            ax.plot(agg["layer_index"], agg["_geo_mean"], color=st["color"], marker=st["marker"], lw=2, ms=5)
            ax.fill_between(agg["layer_index"], agg["min"], agg["max"], color=st["color"], alpha=0.18, lw=0)
        if title.startswith("end") and steps:
            title = f"end of training (step {steps[0]})" if len(steps) == 1 else f"end of training (steps {steps[0]}–{steps[-1]})"
        ax.set(yscale="log", xlabel="layer index (0 = input side)", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _plain_log_labels(ax.yaxis)
    axes[0].set_ylabel("gradient L2 norm (log scale)")
    fig.suptitle(f"{run.study.name}: per-layer gradient norm, geometric mean over seeds (band: min–max)")
    _legend_below(fig, _arm_handles(arms, styles), [label(a) for a in arms], ncol=min(len(arms), 4))
    return fig


def grad_heatmap(run: Run, grads: pd.DataFrame) -> Figure:
    arms = [a for a in run.arm_names if (grads["arm"] == a).any()]
    layers = grads[(grads["kind"] == "layer") & (grads["grad_norm"] > 0)]
    tables = {a: layers[layers["arm"] == a].pivot_table(index="layer_index", columns="step", values="grad_norm",
                                                         aggfunc=_geo_mean) for a in arms}
    values = np.concatenate([t.to_numpy().ravel() for t in tables.values()])
    values = values[np.isfinite(values) & (values > 0)]
    # One colour scale for all panels, so equal colours mean equal norms across arms.
    norm = LogNorm(vmin=float(values.min()), vmax=float(values.max())) if values.size else LogNorm()
    ncols = min(len(arms), 2 if len(arms) <= 4 else 4)
    nrows = math.ceil(len(arms) / ncols)
    fig = Figure(figsize=(6.5 * ncols + 1.2, 4.6 * nrows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    mappable = None
    for ax, arm in zip(axes, arms):
        table = tables[arm]
        sns.heatmap(table, ax=ax, norm=norm, cmap="viridis", cbar=False, xticklabels="auto", yticklabels="auto")
        mappable = ax.collections[0]
        ax.set(title=label(arm), xlabel="training step", ylabel="layer index (0 = input)")
        ax.tick_params(axis="x", labelrotation=0)
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes[: len(arms)].tolist(), label="gradient L2 norm (log scale)", shrink=0.9)
        _plain_log_labels(bar.ax.yaxis)
    fig.suptitle(f"{run.study.name}: gradient norm per layer and step (geometric mean over seeds)")
    return fig


# --- 5: depth --------------------------------------------------------------------------------------
def _depth_axis(ax, frame: pd.DataFrame, value: str, series: list[str], styles: dict, scale: float,
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
        lows = np.array([_clip(c.low, None if log else 0, top) for _, c in pts])
        highs = np.array([_clip(c.high, None if log else 0, top) for _, c in pts])
        lo = np.nan_to_num(means - lows)
        hi = np.nan_to_num(highs - means)
        ax.errorbar(xs, means, yerr=[lo, hi], color=st["color"], marker=st["marker"], ms=9, lw=2, capsize=6)
    ax.set_xticks(depths)
    if log:
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis)


def depth_figure(run: Run) -> Figure:
    ok = run.ok.copy()
    ok["depth"] = ok["depth"].astype(int)
    ok["series"] = [series_of(run, a) for a in ok["arm"]]
    series = list(dict.fromkeys(series_of(run, a) for a in run.arm_names))
    styles = arm_styles(series)
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    _depth_axis(ax_loss, ok, "final_train_loss", series, styles, 1.0)
    _depth_axis(ax_acc, ok, "test_acc", series, styles, 100.0, top=100.0)
    ax_loss.set(xlabel="depth (weighted layers)", ylabel="final train loss (nats, last-epoch mean)", title="training loss")
    ax_acc.set(xlabel="depth (weighted layers)", ylabel="test accuracy (%)", title="test accuracy")
    fig.suptitle(f"{run.study.name}: plain vs residual against depth (mean ± 95 % CI (t), dots: seeds)")
    _legend_below(fig, _arm_handles(series, styles), series, ncol=min(len(series), 4))
    return fig


def grad_ratios(grads: pd.DataFrame) -> pd.DataFrame:
    """Per trial: gradient norm of the first layer over that of the last layer, at step 0."""
    init = grads[(grads["kind"] == "layer") & (grads["step"] == 0)]
    rows = []
    for trial_id, group in init.groupby("trial_id"):
        first = group.loc[group["layer_index"].idxmin(), "grad_norm"]
        last = group.loc[group["layer_index"].idxmax(), "grad_norm"]
        if last > 0:
            rows.append({"trial_id": trial_id, "ratio": float(first / last)})
    return pd.DataFrame(rows, columns=["trial_id", "ratio"])


def depth_grad_ratio(run: Run, grads: pd.DataFrame) -> Figure | None:
    ratios = grad_ratios(grads)
    if ratios.empty:
        return None
    ok = run.ok.merge(ratios, on="trial_id")
    ok["depth"] = ok["depth"].astype(int)
    ok["series"] = [series_of(run, a) for a in ok["arm"]]
    series = list(dict.fromkeys(series_of(run, a) for a in run.arm_names))
    styles = arm_styles(series)
    fig = Figure(figsize=(8, 5.4), layout="constrained")
    ax = fig.subplots()
    _depth_axis(ax, ok, "ratio", series, styles, 1.0, log=True)
    ax.axhline(1.0, color="grey", ls=":", lw=1.5)
    ax.set(xlabel="depth (weighted layers)", ylabel="first-layer / last-layer gradient norm",
           title=f"{run.study.name}: gradient ratio at initialisation\n(geometric mean, 95 % CI (t) on log scale, dots: seeds)")
    _legend_below(fig, _arm_handles(series, styles), series, ncol=min(len(series), 4))
    return fig


# --- 6: tuning landscape / lr grid ---------------------------------------------------------------
def _log_x(ax, bounds: tuple[float, float]) -> None:
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


def lr_param(run: Run) -> str | None:
    names = [p.name for p in run.study.space if p.distribution != "choice"] or [
        k for k, v in run.study.grid.items() if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)]
    return "lr" if "lr" in names else (names[0] if names else None)


def tuning_landscape(run: Run) -> Figure | None:
    param = lr_param(run)
    if param is None:
        return None
    arms = run.arm_names
    styles = arm_styles(arms)
    fig = Figure(figsize=(9, 5.6), layout="constrained")
    ax = fig.subplots()
    log_x = True
    if run.study.space:
        tune = run.trials[(run.trials["stage"] == "tune") & run.trials["best_dev_acc"].notna()]
        if tune.empty:
            return None
        spec = next(p for p in run.study.space if p.name == param)
        log_x = spec.distribution == "loguniform"
        bounds = (spec.low, spec.high)  # the whole search range, so unexplored regions show as empty
        for arm in arms:
            sub = tune[tune["arm"] == arm]
            st = styles[arm]
            for stopped, part in sub.groupby(sub["status"] == "stopped"):
                ax.scatter(part[param], 100 * part["best_dev_acc"], s=70, marker=st["marker"], color=st["color"],
                           facecolors="none" if stopped else st["color"], linewidths=1.8, alpha=0.85)
            chosen = run.selected.get(arm, {}).get(param)
            # The star sits on the trial whose value went to the confirm stage (ties in dev accuracy are common).
            picked = sub[np.isclose(sub[param].astype(float), float(chosen))] if chosen is not None else sub.iloc[:0]
            if not picked.empty:
                best = picked.loc[picked["best_dev_acc"].idxmax()]
                ax.scatter([best[param]], [100 * best["best_dev_acc"]], s=380, marker="*", color=st["color"],
                           edgecolors="black", linewidths=1.2, zorder=5)
        ax.set(ylabel="best dev accuracy (%)", title=f"{run.study.name}: tuning stage, dev accuracy against {param}")
        extra = [Line2D([], [], color="grey", marker="*", ls="", mec="black", ms=16)]
        extra_labels = ["chosen for confirm"]
        if (tune["status"] == "stopped").any():
            extra.append(Line2D([], [], color="grey", marker="o", ls="", mfc="none", ms=8))
            extra_labels.append("stopped early (ASHA)")
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
            ax.plot(xs, means, color=st["color"], marker=st["marker"], lw=2, ms=8)
            lows = np.array([c.low for _, c in pts])
            if np.isfinite(lows).any():
                ax.fill_between(xs, _clip(lows, 0, 100), _clip(np.array([c.high for _, c in pts]), 0, 100),
                                color=st["color"], alpha=0.18, lw=0)
            chosen = run.selected.get(arm, {}).get(param)
            if chosen is not None:
                at = [c.mean for x, c in pts if x == chosen]
                ax.scatter([chosen] * len(at), at, s=380, marker="*", color=st["color"], edgecolors="black",
                           linewidths=1.2, zorder=5)
        ax.set(ylabel="test accuracy (%)", title=f"{run.study.name}: test accuracy against {param} (mean ± 95 % CI, dots: seeds)")
        extra = [Line2D([], [], color="grey", marker="*", ls="", mec="black", ms=16)]
        extra_labels = ["reported (best mean dev accuracy)"]
        values = [float(v) for v in run.study.grid[param]]
        bounds = (min(values), max(values))
        log_x = bounds[0] > 0 and bounds[1] / bounds[0] >= 5
    if log_x:
        _log_x(ax, bounds)
    if not run.study.space:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_formatter(NullFormatter())
    unit = " (SGD step size, log scale)" if param == "lr" and log_x else (" (log scale)" if log_x else "")
    ax.set_xlabel(f"{'learning rate' if param == 'lr' else param}{unit}")
    _legend_below(fig, _arm_handles(arms, styles) + extra, [label(a) for a in arms] + extra_labels,
                  ncol=min(len(arms) + len(extra), 3))
    return fig


