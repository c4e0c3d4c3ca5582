"""Gradient figures from grad_norms.csv: per-layer profiles (raw ‖g‖ and ‖g‖/‖w‖), the layer × step
heatmap, and the depth study's input-side / output-side gradient ratio.

Layers are the main path only (projection shortcuts are left out by load_grad_norms); index 0 is
the stem conv and the highest index the classifier. A user's network's layers are its weight matrices in forward
order, and its figures label them by name. Raw gradient norms are not comparable between
layers of different widths, and BatchNorm makes a conv's output invariant to its weights' scale,
so the gradient shrinks as the weights grow: ‖g‖/‖w‖ (the relative gradient) is drawn beside them.
The captions' notes say what the data show at initialisation, not what is expected.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..context import title
from .arms import arm_handles, arm_styles, depth_axis, label, legend_below, note, plain_log_labels, run_styles
from ..load import Run, arm_value, series_of

RATIO_DEFINITION = ("the first conv of the first residual block over the last conv of the last block (both 3×3 convs "
                    "on the main path; the stem and the classifier are left out), at step 0")
STEM_DEFINITION = ("the stem conv over the classifier (the first and the last weighted layer, of different shapes and "
                   "widths), at step 0")
# A user's network (its layers are its weight matrices in forward order, ablate.train.telemetry.GradTelemetry):
USER_RATIO_DEFINITION = ("the first weight matrix inside the first marked residual block over the last one inside the "
                         "last block (in forward order; shortcuts left out), at step 0")
USER_STEM_DEFINITION = ("the network's first weight matrix over its last (in forward order; of different shapes), at "
                        "step 0")
MAX_LAYER_LABELS = 40  # more layers than this: every k-th is labelled by name


def definitions(run: Run) -> tuple[str, str]:
    """(RATIO, STEM) definitions of the two input-side / output-side ratios for this run's networks."""
    if run.study.model is not None:
        return USER_RATIO_DEFINITION, USER_STEM_DEFINITION
    return RATIO_DEFINITION, STEM_DEFINITION


def layer_labels(run: Run, grads: pd.DataFrame) -> dict[int, str] | None:
    """For a user's network, each main-path layer index's name (the names of every arm at that index, joined by
    " / " where they differ); None for the shipped ResNets, whose layers are numbered from the stem conv."""
    if run.study.model is None or "layer" not in grads:
        return None
    layers = grads[grads["kind"] == "layer"]
    return {int(index): " / ".join(dict.fromkeys(str(n) for n in names))
            for index, names in layers.groupby("layer_index")["layer"]}


def label_layers(axis, labels: dict[int, str]) -> None:
    """Ticks at the layers, labelled by name (every k-th where there are more than MAX_LAYER_LABELS)."""
    positions = sorted(labels)
    step = max(1, math.ceil(len(positions) / MAX_LAYER_LABELS))
    shown = positions[::step]
    axis.set_ticks(shown, [labels[i] for i in shown], fontsize="x-small")
    if axis.axis_name == "x":
        for tick in axis.get_ticklabels():
            tick.set_rotation(90)


def geo_mean(values: pd.Series) -> float:
    v = values[values > 0]
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


def with_relative(grads: pd.DataFrame) -> pd.DataFrame:
    """Adds rel_norm = ‖g‖/‖w‖ (NaN where the weight norm was not logged)."""
    w = pd.to_numeric(grads["weight_norm"], errors="coerce") if "weight_norm" in grads else np.nan
    return grads.assign(rel_norm=grads["grad_norm"] / w)


RATIO_COLUMNS = ["trial_id", "first_layer", "last_layer", "ratio", "rel_ratio", "stem_layer", "head_layer",
                 "stem_ratio", "stem_rel_ratio"]


def _ratio(first: pd.Series, last: pd.Series) -> tuple[float, float]:
    """(raw ‖g‖ ratio, ‖g‖/‖w‖ ratio) of two layers' rows; NaN where the denominator is 0 or not logged."""
    raw = float(first["grad_norm"] / last["grad_norm"]) if last["grad_norm"] > 0 else math.nan
    rel = float(first["rel_norm"] / last["rel_norm"]) if last["rel_norm"] > 0 else math.nan
    return raw, rel


def grad_ratios(grads: pd.DataFrame) -> pd.DataFrame:
    """Per trial at step 0, both input-side over output-side ratios, raw ‖g‖ and ‖g‖/‖w‖: `ratio`, `rel_ratio` of
    RATIO_DEFINITION's two layers, and `stem_ratio`, `stem_rel_ratio` of STEM_DEFINITION's."""
    g = with_relative(grads)
    init = g[(g["kind"] == "layer") & (g["step"] == 0)]
    ends = init.groupby("trial_id")["layer_index"].transform
    blocks = init["block"].fillna("").astype(str) if "block" in init else None
    if blocks is not None and blocks.eq("stem").any():  # a shipped ResNet: stem, blocks, head
        is_stem, is_head = blocks.eq("stem"), blocks.eq("head")
        in_body = ~(is_stem | is_head)
    else:  # by index: the first and the last layer (the telemetry's convention for a ResNet's file without blocks)
        is_stem, is_head = init["layer_index"].eq(ends("min")), init["layer_index"].eq(ends("max"))
        in_body = ~(is_stem | is_head)
        if blocks is not None:  # a user's network: the body is what its marked residual blocks hold
            in_body &= blocks.ne("")
    rows = []
    for trial_id, group in init.groupby("trial_id"):
        body = group[in_body[group.index]]
        if body.empty:
            continue
        first, last = body.loc[body["layer_index"].idxmin()], body.loc[body["layer_index"].idxmax()]
        if not last["grad_norm"] > 0:
            continue
        ratio, rel = _ratio(first, last)
        row = {"trial_id": trial_id, "first_layer": first["layer"], "last_layer": last["layer"], "ratio": ratio,
               "rel_ratio": rel, "stem_layer": None, "head_layer": None, "stem_ratio": math.nan,
               "stem_rel_ratio": math.nan}
        stem, head = group[is_stem[group.index]], group[is_head[group.index]]
        if len(stem) and len(head):
            s, h = stem.loc[stem["layer_index"].idxmin()], head.loc[head["layer_index"].idxmax()]
            row["stem_ratio"], row["stem_rel_ratio"] = _ratio(s, h)
            row["stem_layer"], row["head_layer"] = s["layer"], h["layer"]
        rows.append(row)
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


def times(x: float) -> str:
    """A ratio as '0.76×', '3.2×', '54×', '1300×'."""
    return f"{x:.0f}×" if x >= 10 else f"{x:.2g}×"


def init_direction_lines(run: Run, grads: pd.DataFrame) -> list[str]:
    """What the gradients do at initialisation, per arm, by both definitions (RATIO_DEFINITION, STEM_DEFINITION),
    geometric mean over seeds."""
    ratios = grad_ratios(grads).merge(run.ok[["trial_id", "arm"]], on="trial_id")
    out = []
    ratio_definition, stem_definition = definitions(run)
    for definition, raw_col, rel_col in ((ratio_definition, "ratio", "rel_ratio"),
                                         (stem_definition, "stem_ratio", "stem_rel_ratio")):
        lines = []
        for arm in run.arm_names:
            sub = ratios[ratios["arm"] == arm]
            raw, rel = geo_mean(sub[raw_col]), geo_mean(sub[rel_col])
            if sub.empty or math.isnan(raw):
                continue
            where = "larger near the input" if raw > 1 else "smaller near the input" if raw < 1 else "equal"
            rel_text = "" if math.isnan(rel) else f" (‖g‖/‖w‖: {times(rel)})"
            lines.append(f"{arm} {times(raw)}{rel_text}, {where}")
        if lines:
            out.append(f"At initialisation, gradient norm of {definition.replace(', at step 0', '')}, geometric mean "
                       "over seeds: " + "; ".join(lines) + ".")
    return out


def lr_note(run: Run) -> str | None:
    """When the arms trained at different learning rates, says so (end-of-training gradients depend on it)."""
    lrs = {a: p.get("lr") for a, p in run.selected.items() if p.get("lr") is not None}
    if not lrs:
        lrs = {a: arm_value(run, a, "lr") for a in run.arm_names}
    if len({float(v) for v in lrs.values()}) <= 1:
        return None
    return ("The arms trained at different learning rates (" + ", ".join(f"{a}: {float(v):g}" for a, v in lrs.items())
            + "), so their end-of-training gradients are not at comparable points of training.")


def grad_profile(run: Run, grads: pd.DataFrame) -> Figure:
    arms = [a for a in run.arm_names if (grads["arm"] == a).any()]
    styles = run_styles(run)
    layers = with_relative(grads[grads["kind"] == "layer"])
    last = layers.groupby("trial_id")["step"].transform("max")
    snapshots = {"at initialisation (step 0)": layers[layers["step"] == 0],
                 "end of training": layers[layers["step"] == last]}
    values = [("grad_norm", "gradient norm ‖g‖")]
    names = layer_labels(run, grads)
    if layers["rel_norm"].notna().any():
        values.append(("rel_norm", "relative gradient ‖g‖/‖w‖"))
    fig = Figure(figsize=(13, 4.2 * len(values) + 1.2), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(values), 2, sharey="row", sharex=True))
    for col, (name, frame) in enumerate(snapshots.items()):
        steps = sorted(frame["step"].unique().tolist())
        if name.startswith("end") and steps:
            name = f"end of training (step {steps[0]})" if len(steps) == 1 else f"end of training (steps {steps[0]}–{steps[-1]})"
            if lr_note(run):
                name += "\narms at different learning rates"
        for row, (value, ylabel) in enumerate(values):
            ax = axes[row, col]
            for arm in arms:
                sub = frame[(frame["arm"] == arm) & (frame[value] > 0)]
                if sub.empty:
                    continue
                agg = sub.groupby("layer_index")[value].agg([geo_mean, "min", "max"]).reset_index()
                st = styles[arm]
                ax.plot(agg["layer_index"], agg["geo_mean"], color=st["color"], marker=st["marker"], ls=st["ls"], lw=2, ms=5)
                ax.fill_between(agg["layer_index"], agg["min"], agg["max"], color=st["color"], alpha=0.18, lw=0)
            ax.set(yscale="log", title=name if row == 0 else "")
            if names:
                label_layers(ax.xaxis, names)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            plain_log_labels(ax.yaxis)
            if col == 0:
                ax.set_ylabel(f"{ylabel}\n(log scale)")
            if row == len(values) - 1:
                ax.set_xlabel("layer, in forward order" if names else "layer index (0 = stem conv, last = classifier)")
    fig.suptitle(title(run, "per-layer gradients, main path (geometric mean over seeds, band: min–max)"))
    legend_below(fig, arm_handles(arms, styles), [label(a) for a in arms], ncol=min(len(arms), 4))
    for line in init_direction_lines(run, grads):
        note(fig, line)
    if lr_note(run):
        note(fig, lr_note(run))
    if len(values) == 1:
        note(fig, "Weight norms were not logged by this run, so ‖g‖/‖w‖ is not drawn.")
    return fig


def _edges(steps: list[float]) -> np.ndarray:
    """Cell edges for columns centred on unevenly spaced steps: midpoints, the ends mirrored."""
    s = np.asarray(steps, dtype=float)
    if s.size == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (mid[0] - s[0])], mid, [s[-1] + (s[-1] - mid[-1])]])


def grad_heatmap(run: Run, grads: pd.DataFrame) -> Figure:
    arms = [a for a in run.arm_names if (grads["arm"] == a).any()]
    layers = grads[(grads["kind"] == "layer") & (grads["grad_norm"] > 0)]
    tables = {a: layers[layers["arm"] == a].pivot_table(index="layer_index", columns="step", values="grad_norm",
                                                         aggfunc=geo_mean) for a in arms}
    values = np.concatenate([t.to_numpy().ravel() for t in tables.values()])
    values = values[np.isfinite(values) & (values > 0)]
    # One colour scale for all panels, so equal colours mean equal norms across arms.
    norm = LogNorm(vmin=float(values.min()), vmax=float(values.max())) if values.size else LogNorm()
    names = layer_labels(run, grads)
    ncols = min(len(arms), 2 if len(arms) <= 4 else 4)
    nrows = math.ceil(len(arms) / ncols)
    fig = Figure(figsize=(6.5 * ncols + 1.2, 4.6 * nrows + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    mappable = None
    for ax, arm in zip(axes, arms):
        table = tables[arm]
        # Columns sit at their real steps (the logged steps are not evenly spaced: 0, then every evaluation).
        x, y = _edges(list(table.columns)), _edges(list(table.index))
        mappable = ax.pcolormesh(x, y, np.ma.masked_invalid(table.to_numpy()), norm=norm, cmap="viridis")
        ax.set(title=label(arm), xlabel="training step", ylabel="layer (from the input)" if names else
               "layer index (0 = input)", xlim=(x[0], x[-1]), ylim=(y[-1], y[0]))
        if names:
            label_layers(ax.yaxis, {i: names[i] for i in table.index if i in names})
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(False)
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes[: len(arms)].tolist(), label="gradient norm ‖g‖ (log scale)", shrink=0.9)
        plain_log_labels(bar.ax.yaxis)
    fig.suptitle(title(run, "gradient norm per layer and logged step (geometric mean over seeds)"))
    return fig


def depth_grad_ratio(run: Run, grads: pd.DataFrame) -> Figure | None:
    """Both input-side / output-side ratios at initialisation against depth: block convs (RATIO_DEFINITION) and
    stem over classifier (STEM_DEFINITION), ‖g‖/‖w‖ where every trial logged weight norms."""
    ratios = grad_ratios(grads)
    if ratios.empty:
        return None
    ok = run.ok.merge(ratios, on="trial_id")
    ok["depth"] = ok["depth"].astype(int)
    ok["series"] = [series_of(run, a) for a in ok["arm"]]
    series = list(dict.fromkeys(series_of(run, a) for a in run.arm_names))
    styles = arm_styles(series)
    ratio_definition, stem_definition = definitions(run)
    user = run.study.model is not None
    panels = [("rel_ratio", "ratio", "first block's first layer\n÷ last block's last layer" if user else
               "first block's first conv\n÷ last block's last conv", ratio_definition),
              ("stem_rel_ratio", "stem_ratio", "first layer ÷ last layer" if user else "stem conv ÷ classifier",
               stem_definition)]
    panels = [p for p in panels if ratios[p[1]].notna().any()]
    fig = Figure(figsize=(8.0 * len(panels), 6.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    whats = []
    for ax, (rel, raw, ylabel, definition) in zip(axes, panels):
        value = rel if ratios[rel].notna().all() else raw
        what = "‖g‖/‖w‖" if value == rel else "‖g‖"
        whats.append(what)
        depth_axis(fig, ax, ok, value, series, styles, 1.0, log=True)
        ax.axhline(1.0, color="grey", ls=":", lw=1.5)
        ax.set(xlabel="depth (weighted layers)", ylabel=f"{what}: {ylabel}")
        ax.set_title("geometric mean ± 95 % CI (t, log scale), dots: seeds;\nabove 1: larger near the input",
                     fontsize="small")
        note(fig, f"Ratio of {what} of {definition}.")
    fig.suptitle(title(run, f"input-side / output-side gradient at initialisation ({', '.join(dict.fromkeys(whats))})"))
    legend_below(fig, arm_handles(series, styles), series, ncol=min(len(series), 4))
    return fig
