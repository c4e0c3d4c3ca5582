"""Figures and report paragraphs of `analyze --diagnostics`, from the tables ablate.probes.diagnostics computes.

Each paragraph says what was measured, on what and how, and gives the numbers per arm (mean and 95 %
t-interval over seeds); none of them draws a conclusion for the reader. Every figure overlays the arms
in the study's encoding (figures.run_styles).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..statistics import stats
from ..context import chance, readable_arm, title
from ..figures.arms import arm_handles, clip, label, legend_below, note, run_styles
from ..load import Run, arm_value
from ..formats import Fmt
from ..markdown_text import code, plot_text, text

CAPTIONS = {
    "landscape": "Loss landscape (Li et al. 2018) of the best-dev weights: training loss along filter-normalised random "
                 "directions (thin: each seed and direction; bold: their geometric mean), and the curvature at 0 per "
                 "arm.",
    "landscape_2d": "Loss landscape in the plane of the first two directions (first seed of each arm), contours of "
                    "log10 training loss over the three decades above the lowest loss (higher losses share the top "
                    "colour); the cross marks the trained weights.",
    "shattered": "Shattered gradients (Balduzzi et al. 2017) at initialisation: autocorrelation of the input gradient "
                 "along a line between two training images, against the lag (mean over seeds), and its lag-1 value.",
    "signal": "Signal propagation at initialisation (Brock et al. 2021, whose plots are of pre-activation nets): per "
              "block, the average squared channel mean and the average channel variance of the block's output, and the "
              "variance of its residual branch at the branch's last convolution, before a basic block's closing "
              "BatchNorm (mean over seeds).",
    "signal_user": "Signal propagation at initialisation (Brock et al. 2021): per block the network marks "
                   "(ablate.Residual), the average squared channel mean and the average channel variance of the "
                   "block's output, and the variance of its branch's output (mean over seeds).",
    "lesions_k": "Lesions of k blocks (Veit et al. 2016): test accuracy with k blocks of one type (same-shape, "
                 "downsampling: one panel each), drawn at random, dropped at once (mean over draws and seeds; thin: each "
                 "seed); dotted: chance.",
}


def _label(run: Run, arm: str) -> str:
    """'depth 20, plain', 'residual, stage 1 only': the arm's factor levels in words (arm names get long)."""
    return plot_text(readable_arm(run, arm)) if run.study.factor_names else label(arm)


def _arms(run: Run, frame: pd.DataFrame) -> list[str]:
    return [a for a in run.arm_names if len(frame) and (frame["arm"] == a).any()]


CUT = ("†: the 95 % t-interval passed what the quantity can be (a correlation outside [-1, 1], a variance or a loss "
       "below 0, an accuracy outside [0, 100] %) and is cut at that bound.")


def _ci_text(f: Fmt, values, digits: int = 3, bounds: tuple = (None, None)) -> str:
    ci = stats.mean_ci(values, bounds=bounds)
    if ci.n == 0:
        return "n/a"
    out = f"{ci.mean:.{digits}g}"
    return (out + ("" if math.isnan(ci.low) else f" [{ci.low:.{digits}g}, {ci.high:.{digits}g}]{'†' if ci.cut else ''}")
            + f" (n = {ci.n})")


# --- figures ---------------------------------------------------------------------------------------
def landscape_figure(run: Run, land: pd.DataFrame, sharp: pd.DataFrame) -> Figure | None:
    arms = _arms(run, land)
    if not arms:
        return None
    styles = run_styles(run)
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    ax, ax_s = fig.subplots(1, 2, width_ratios=[2, 1])
    for arm in arms:
        sub, st = land[land["arm"] == arm], styles[arm]
        for _, one in sub.groupby(["seed", "direction"]):
            ax.plot(one["alpha"], one["loss"], color=st["color"], ls=st["ls"], lw=0.8, alpha=0.4)
        # Losses span decades on these slices: the bold line is the geometric mean, the middle on the log axis.
        mean = np.exp(np.log(sub["loss"].clip(lower=1e-12)).groupby(sub["alpha"]).mean())
        ax.plot(mean.index, mean.to_numpy(), color=st["color"], ls=st["ls"], lw=2.4)
    ax.set(yscale="log", xlabel="step along the direction (α; 1 = one filter norm)", ylabel="training loss (nats, log)",
           title="1-D slices through the trained weights")
    for i, arm in enumerate(arms):
        vals = sharp.loc[sharp["arm"] == arm, "curvature"].to_numpy(dtype=float)
        ci = stats.mean_ci(vals)
        st = styles[arm]
        ax_s.scatter(vals, np.full(len(vals), i), color=st["color"], marker=st["marker"], alpha=0.5, s=40)
        if ci.n:
            err = None if math.isnan(ci.low) else [[ci.mean - ci.low], [ci.high - ci.mean]]
            ax_s.errorbar(ci.mean, i, xerr=err, fmt="D", color="black", ms=8, capsize=6, lw=2)
    ax_s.set_yticks(range(len(arms)), [_label(run, a) for a in arms])
    ax_s.set_ylim(len(arms) - 0.5, -0.5)
    ax_s.set(xlabel="curvature at 0 (nats per α²)", title="sharpness: mean ± 95 % CI over seeds")
    if (sharp["curvature"] > 0).all():
        ax_s.set_xscale("log")
        lows = [stats.mean_ci(sharp.loc[sharp["arm"] == a, "curvature"]).low for a in arms]
        if any(low <= 0 for low in lows if not math.isnan(low)):
            note(fig, "Curvature intervals that reach 0 or below run to the left edge of the log axis; the report "
                      "gives them in full.")
    fig.suptitle(title(run, "loss landscape of the best-dev weights"))
    legend_below(fig, arm_handles(arms, styles), [_label(run, a) for a in arms], ncol=min(len(arms), 3))
    return fig


def landscape_2d_figure(run: Run, plane: pd.DataFrame) -> Figure | None:
    arms = _arms(run, plane)
    if not arms:
        return None
    ncols = min(len(arms), 3)
    nrows = math.ceil(len(arms) / ncols)
    fig = Figure(figsize=(5.2 * ncols + 1.0, 4.6 * nrows + 1.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    logs = np.log10(plane["loss"].clip(lower=1e-8))
    # The basin, not the walls: three decades above the lowest loss of all panels, the rest in the top colour.
    levels = np.linspace(float(logs.min()), min(float(logs.max()), float(logs.min()) + 3), 16)
    mappable = None
    for ax, arm in zip(axes, arms):
        sub = plane[plane["arm"] == arm]
        table = sub.pivot_table(index="beta", columns="alpha", values="loss")
        mappable = ax.contourf(table.columns, table.index, np.log10(table.to_numpy().clip(1e-8)), levels=levels,
                               cmap="viridis", extend="max")
        ax.contour(table.columns, table.index, np.log10(table.to_numpy().clip(1e-8)), levels=levels, colors="white",
                   linewidths=0.4)
        ax.plot([0], [0], marker="x", color="red", ms=10, mew=2)
        ax.set(title=f"{_label(run, arm)} (seed {int(sub['seed'].iloc[0])})", xlabel="direction 1 (α)", ylabel="direction 2 (β)")
        ax.grid(False)
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[: len(arms)].tolist(), label="log10 training loss (one scale for all panels)")
    fig.suptitle(title(run, "loss landscape, 2-D (filter-normalised directions)"))
    return fig


def shattered_figure(run: Run, acf: pd.DataFrame) -> Figure | None:
    arms = _arms(run, acf)
    if not arms:
        return None
    styles = run_styles(run)
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    ax, ax_1 = fig.subplots(1, 2, width_ratios=[3, 2])
    for arm in arms:
        sub, st = acf[acf["arm"] == arm], styles[arm]
        mean = sub.groupby("lag")["autocorrelation"].mean()
        ax.plot(mean.index, mean.to_numpy(), color=st["color"], ls=st["ls"], lw=2.2)
    ax.axhline(0, color="black", lw=1, ls=":")
    ax.set(xlabel="lag (points along the line of inputs)", ylabel="autocorrelation of the input gradient",
           title="autocorrelation against lag (mean over seeds)")
    lag1 = acf[acf["lag"] == 1]
    depth = run.is_depth_study()
    positions = {}
    for i, arm in enumerate(arms):
        vals = lag1.loc[lag1["arm"] == arm, "autocorrelation"].to_numpy(dtype=float)
        # Residual and plain arms of one depth sit either side of it, so their bars do not hide each other.
        shift = (1.0 if arm_value(run, arm, "residual") else -1.0) if depth else 0.0
        x = float(arm_value(run, arm, "depth")) + shift if depth else float(i)
        positions[arm] = x
        st = styles[arm]
        ci = stats.mean_ci(vals)
        ax_1.scatter(np.full(len(vals), x), vals, color=st["color"], marker=st["marker"], alpha=0.45, s=30)
        if ci.n:
            err = None if math.isnan(ci.low) else [[ci.mean - clip(fig, ci.low, -1, 1)], [clip(fig, ci.high, -1, 1) - ci.mean]]
            ax_1.errorbar(x, ci.mean, yerr=err, color=st["color"], marker=st["marker"], ms=9, capsize=6, lw=2)
    if depth:
        ax_1.set_xticks(sorted({int(arm_value(run, a, "depth")) for a in arms}))
        ax_1.set_xlabel("depth (weighted layers)")
    else:
        ax_1.set_xticks(range(len(arms)), [_label(run, a) for a in arms], rotation=30, ha="right")
    ax_1.set(ylabel="lag-1 autocorrelation", title="lag 1: mean ± 95 % CI over seeds", ylim=(-1.05, 1.05))
    fig.suptitle(title(run, "shattered gradients at initialisation"))
    legend_below(fig, arm_handles(arms, styles), [_label(run, a) for a in arms], ncol=min(len(arms), 3))
    return fig


def signal_figure(run: Run, sig: pd.DataFrame) -> Figure | None:
    arms = _arms(run, sig)
    if not arms:
        return None
    styles = run_styles(run)
    fig = Figure(figsize=(15, 5.4), layout="constrained")
    panels = [("sq_mean", "average squared channel mean"), ("variance", "average channel variance"),
              ("branch_variance", "residual branch variance")]
    for ax, (col, name) in zip(fig.subplots(1, 3), panels):
        for arm in arms:
            sub, st = sig[sig["arm"] == arm], styles[arm]
            mean = sub.groupby("block_index")[col].mean()
            ax.plot(mean.index, mean.to_numpy(), color=st["color"], ls=st["ls"], marker=st["marker"], lw=2, ms=5)
        values = sig.loc[sig[col] > 0, col]
        if len(values) and values.max() / values.min() > 10:
            ax.set_yscale("log")  # values spanning decades
            if (sig[col] <= 0).any():
                note(fig, f"Blocks whose {name} is 0 are left off its log axis.")
        else:
            # A narrow range: a linear axis from 0, so that nearly equal values look nearly equal.
            ax.set_ylim(0, 1.15 * float(values.max()) if len(values) else 1.0)
        ax.set(xlabel="block (index from the input)", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title(run, "signal propagation at initialisation, one batch in train mode"))
    legend_below(fig, arm_handles(arms, styles), [_label(run, a) for a in arms], ncol=min(len(arms), 3))
    return fig


def _per_seed_k(les: pd.DataFrame) -> pd.DataFrame:
    """Per trial, block type and k: mean accuracy over the draws (tables made before lesions were drawn per block
    type read as one type, "all")."""
    les = les.assign(block_type=les["block_type"] if "block_type" in les else np.where(les["k"] == 0, "none", "all"))
    return les.groupby(["arm", "trial_id", "seed", "block_type", "k"], observed=True)["accuracy"].mean().reset_index()


def _lesion_types(per: pd.DataFrame) -> list[str]:
    return [t for t in ("same-shape", "downsampling", "all") if (per["block_type"] == t).any()]


def lesions_k_figure(run: Run, les: pd.DataFrame) -> Figure | None:
    arms = _arms(run, les)
    if not arms:
        return None
    styles = run_styles(run)
    per = _per_seed_k(les)
    types = _lesion_types(per)
    fig = Figure(figsize=(6.5 * max(len(types), 1) + 1, 6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(types), 1), sharey=True))
    for ax, kind in zip(axes, types):
        for arm in arms:
            intact = per[(per["arm"] == arm) & (per["k"] == 0)]
            sub, st = pd.concat([intact, per[(per["arm"] == arm) & (per["block_type"] == kind)]]), styles[arm]
            for _, one in sub.groupby("trial_id"):
                ax.plot(one["k"], 100 * one["accuracy"], color=st["color"], ls=st["ls"], lw=0.8, alpha=0.4)
            mean = sub.groupby("k")["accuracy"].mean()
            ax.plot(mean.index, 100 * mean.to_numpy(), color=st["color"], ls=st["ls"], marker=st["marker"], lw=2.2, ms=6)
        ax.axhline(100 * chance(run), color="black", ls=":", lw=1.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        what = {"same-shape": "same-shape blocks (replaced by the identity)",
                "downsampling": "downsampling blocks (replaced by a shortcut)", "all": "blocks of any type"}[kind]
        ax.set(xlabel=f"{kind} blocks dropped at once (k)", ylabel="test accuracy (%)", ylim=(0, 100), title=what)
    fig.suptitle(title(run, "lesions of k random blocks at test time (best-dev weights)"))
    legend_below(fig, arm_handles(arms, styles), [_label(run, a) for a in arms], ncol=min(len(arms), 3))
    return fig


def diagnostic_figures(run: Run, diag) -> dict[str, Figure | None]:
    return {"landscape": landscape_figure(run, diag.landscape, diag.sharpness),
            "landscape_2d": landscape_2d_figure(run, diag.landscape_2d) if len(diag.landscape_2d) else None,
            "shattered": shattered_figure(run, diag.shattered),
            "signal": signal_figure(run, diag.signal),
            "lesions_k": lesions_k_figure(run, diag.lesions_k)}


# --- report ----------------------------------------------------------------------------------------
def _cost_text(diag, name: str) -> str:
    c = diag.cost[diag.cost["diagnostic"] == name]
    if c.empty:
        return ""
    per_arm = c["seconds"].to_numpy(dtype=float)
    return (f" Measured cost here: {per_arm.mean():.1f} s per arm on average (largest {per_arm.max():.1f} s), all of an "
            f"arm's {int(c['trials'].max())} seed(s) together.")


def caption(run: Run, name: str) -> str:
    """The caption of diagnostic figure `name` for this run's networks (a user's marks its blocks itself)."""
    if run.study.model is not None and f"{name}_user" in CAPTIONS:
        return CAPTIONS[f"{name}_user"]
    return CAPTIONS[name]


def _signal_method(run: Run, s: dict) -> str:
    """What the signal-propagation numbers are, for the shipped ResNets or for a user's network."""
    if run.study.model is not None:
        return (f"At initialisation, one forward pass of the first {s['BATCH_IMAGES']} training images in train mode "
                "(a BatchNorm, where the network has one, uses the batch's statistics, as at the first training "
                "step). Per block the network marks (ablate.Residual): the average over channels of the squared "
                "channel mean and of the channel variance of the block's output, and the average channel variance of "
                "its branch's output (the block before the addition; in a plain block, the same path). Channels are "
                "dimension 1 of an image tensor and the features (last dimension) of a (batch, tokens, features) "
                "one. Brock, De & Smith 2021 plot these statistics for pre-activation ResNets.")
    return (f"At initialisation, one forward pass of the first {s['BATCH_IMAGES']} training images in train mode "
            "(BatchNorm uses the batch's statistics, as at the first training step). Per block: the average over "
            "channels of the squared channel mean and of the channel variance of the block's output, and the "
            "average channel variance of its residual branch (the block's main path before the addition; in a "
            "plain block, the same path) at the branch's last convolution: in a basic block that is before the "
            "BatchNorm that closes the branch, whose train-mode output has variance 1 by construction (scale 1 at "
            "initialisation), so measured after it the branch would say nothing. Brock, De & Smith 2021 plot "
            "these statistics for pre-activation nets, whose branch ends in that convolution; for basic "
            "(post-activation) blocks the output statistics are those after the closing ReLU, so the two are "
            "not the same curves.")


def diagnostics_lines(run: Run, diag) -> list[str]:
    """'## Diagnostics': one paragraph per diagnostic, then a bullet per arm with its numbers."""
    f = Fmt.of(run)
    s = diag.settings
    builder = "build_model" if run.study.model is None else "the model factory"
    lines = ["Measurements on each reported final-stage trial, from its best-dev weights (landscape, lesions) and from "
             f"its own seeded initialisation (seed_everything(seed), then {builder}, as the trial itself started: "
             "shattered gradients, signal propagation). Numbers per arm are the mean over seeds with the 95 % "
             "t-interval in brackets. They describe these models under this short protocol; they are measurements, "
             "not verdicts. Per-trial values: `diagnostics/*.csv`; seconds per arm and diagnostic: "
             "`diagnostics/cost.csv`.", ""]
    for key, why in diag.skipped.items():
        lines.append(f"- Left out ({text(key)}): {text(why)}.")
    if diag.skipped:
        lines.append("")
    if len(diag.sharpness):
        lines += ["### Loss landscape", "",
                  f"Training loss (mean cross-entropy, BatchNorm in eval mode with its trained statistics) on the first "
                  f"{s['LANDSCAPE_IMAGES']} images of each trial's training subset, at {s['LANDSCAPE_POINTS']} points over "
                  f"[-1, 1] along {s['LANDSCAPE_DIRECTIONS']} random Gaussian directions per seed, each filter-normalised "
                  "(every conv output channel and linear output neuron scaled to the norm of the same filter of the "
                  "weights; biases and BatchNorm parameters not moved), as Li et al. 2018. Sharpness: the second "
                  f"derivative at 0 of a least-squares parabola through the points with |α| ≤ {s['SHARPNESS_WINDOW']:g}, "
                  "averaged over the directions. Top Hessian eigenvalue: the eigenvalue of largest magnitude of the "
                  "Hessian of the same loss in all weights, by power iteration on Hessian-vector products (double "
                  f"backpropagation; at most {s.get('HESSIAN_ITERATIONS', 20)} products, stopped when the Rayleigh "
                  "quotient changed by under 0.1 %)." + _cost_text(diag, "landscape"), ""]
        for arm in _arms(run, diag.sharpness):
            sub = diag.sharpness[diag.sharpness["arm"] == arm]
            top = (f"; top Hessian eigenvalue {_ci_text(f, sub['hessian_top'])}" if "hessian_top" in sub else "")
            lines.append(f"- {code(arm)}: curvature {_ci_text(f, sub['curvature'])} nats per α²{top}; loss at the "
                         f"trained weights {_ci_text(f, sub['loss_at_0'], bounds=(0, None))} nats.")
        lines += ["", matched_loss_line(run, diag.sharpness)]
        if len(diag.landscape_2d):
            lines += ["", f"2-D: a {s['LANDSCAPE_2D_POINTS']}×{s['LANDSCAPE_2D_POINTS']} grid over [-1, 1]² in the plane "
                          f"of the first two directions, first seed of each arm, on the first "
                          f"{s.get('LANDSCAPE_2D_IMAGES', s['LANDSCAPE_IMAGES'])} training images."
                          + _cost_text(diag, "landscape_2d")]
        lines.append("")
    if len(diag.shattered):
        lines += ["### Shattered gradients", "",
                  f"At initialisation, BatchNorm statistics fixed on the first {s['BATCH_IMAGES']} training images "
                  f"(then eval mode, so inputs do not interact); {s['LINE_POINTS']} inputs evenly spaced on the line "
                  "from the first training image to the first one of another class; at each, the gradient of a fixed "
                  "random unit projection of the logits with respect to the input. Autocorrelation of that sequence of "
                  "gradients (mean over the line removed, all pixels pooled) against the lag, as Balduzzi et al. "
                  "2017; 1 = the gradient changes smoothly along the line, 0 = like white noise."
                  + _cost_text(diag, "shattered"), ""]
        lag1 = diag.shattered[diag.shattered["lag"] == 1]
        for arm in _arms(run, lag1):
            lines.append(f"- {code(arm)}: lag-1 autocorrelation {_ci_text(f, lag1.loc[lag1['arm'] == arm, 'autocorrelation'], bounds=(-1, 1))}.")
        lines.append("")
    if len(diag.signal):
        lines += ["### Signal propagation", "", _signal_method(run, s) + _cost_text(diag, "signal"), ""]
        for arm in _arms(run, diag.signal):
            sub = diag.signal[diag.signal["arm"] == arm]
            last = sub[sub["block_index"] == sub["block_index"].max()]
            first = sub[sub["block_index"] == 0]
            lines.append(f"- {code(arm)} ({int(sub['block_index'].max()) + 1} blocks): output variance first block "
                         f"{_ci_text(f, first['variance'], bounds=(0, None))}, last block "
                         f"{_ci_text(f, last['variance'], bounds=(0, None))}; squared channel "
                         f"mean at the last block {_ci_text(f, last['sq_mean'])}; residual branch variance at the last "
                         f"block {_ci_text(f, last['branch_variance'], bounds=(0, None))}.")
        lines.append("")
    if len(diag.lesions_k):
        lines += ["### Lesions of k blocks", "",
                  f"Best-dev weights on the test images, with k blocks of one type dropped at once (each replaced by its "
                  f"skip path, as in the one-block lesion study; BatchNorm statistics those of training): same-shape "
                  f"blocks (replaced by the identity) and downsampling blocks (replaced by a shortcut) apart, since the "
                  f"two lesions are different operations; for up to {s['LESION_KS']} values of k from 1 to the number of "
                  f"blocks of that type, {s['LESION_SAMPLES']} distinct random sets per k (all of them when fewer "
                  "exist); per seed the mean over the sets, then mean and t-interval over seeds, as Veit et al. 2016. "
                  f"Chance is {100 * chance(run):g} %." + _cost_text(diag, "lesions_k"), ""]
        per = _per_seed_k(diag.lesions_k)
        for arm in _arms(run, per):
            mine = per[per["arm"] == arm]
            intact = mine[mine["k"] == 0]
            parts = [f"intact {f.pct(intact['accuracy'].mean())}"]
            for kind in _lesion_types(mine):
                sub = mine[mine["block_type"] == kind]
                ks = sorted(sub["k"].unique())
                mid = min(ks, key=lambda k: abs(k - ks[-1] / 2))
                parts.append(f"{kind} blocks ({ks[-1]}): " + ", ".join(
                    f"k = {k}: {f.pct(sub.loc[sub['k'] == k, 'accuracy'].mean())}" + _pp_ci(f, sub.loc[sub["k"] == k, "accuracy"])
                    for k in dict.fromkeys([1, mid, ks[-1]])))
            lines.append(f"- {code(arm)}: " + "; ".join(parts) + ".")
        lines.append("")
    if any("†" in line for line in lines):
        lines += [CUT, ""]
    return lines


def matched_loss_line(run: Run, sharp: pd.DataFrame) -> str:
    """Why these landscapes are not Li et al.'s comparison when the arms' training losses differ or are high."""
    level = math.log(1 / chance(run))
    loss = sharp.groupby("arm", observed=True)["loss_at_0"].mean()
    loss = loss[[a for a in run.arm_names if a in loss.index]]
    high = [a for a, v in loss.items() if v >= level / 2]
    text_ = ("Matched training loss: Li et al. 2018 compare landscapes of nets trained to a low training loss; here "
             "each arm is measured at its best-dev checkpoint, the only weights a trial saves, so the landscapes are "
             "not at matched training loss (" + ", ".join(f"{code(a)} {v:.3g} nats" for a, v in loss.items()) + ")"
             + (f"; they differ by a factor of {loss.max() / loss.min():.2g}, so differences in curvature and in the "
                "top eigenvalue partly reflect how far training got"
                if len(loss) > 1 and loss.min() > 0 and loss.max() / loss.min() >= 1.5 else "")
             + ".")
    if high:
        text_ += (" " + ", ".join(code(a) for a in high) + f" still had a training loss of at least half the loss at "
                  f"chance (ln {round(1 / chance(run))} = {level:.2f} nats): weights still near their start, not a "
                  "trained minimum.")
    return text_


def _pp_ci(f: Fmt, values) -> str:
    ci = stats.mean_ci(values, bounds=(0, 1))
    return "" if math.isnan(ci.low) else f" [{f.acc(ci.low)}, {f.acc(ci.high)}]{'†' if ci.cut else ''}"
