"""The per-arm summary table (one row per arm) and the depth study's degradation rule."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ablate.intervals import t_half_width
from . import stats
from ..context import chance
from ..load import Run, arm_value, series_of

# Per arm: mean, SD and 95 % t-interval over the scored seeds of each of these registry columns, the interval cut
# at what the metric can be (an accuracy in [0, 1], a loss >= 0); <metric>_ci_cut says where it was.
BOUNDS = {"test_acc": (0.0, 1.0), "final_test_acc": (0.0, 1.0), "scored_train_acc": (0.0, 1.0),
          "scored_train_loss": (0.0, None), "final_train_loss": (0.0, None), "best_dev_acc": (0.0, 1.0)}
METRICS = tuple(BOUNDS)


def summarize(run: Run) -> pd.DataFrame:
    """One row per arm (spec order): settings, chosen params, counts, failures, mean/std/95 % t-CI per metric.

    `test_acc_all_*` scores every finished run, a failed one (diverged, crashed, or without a test
    score) at chance, so failures cannot silently leave the mean.
    """
    study = run.study
    rows = []
    for arm in study.arms:
        rep = run.reported[run.reported["arm"] == arm.name]
        ok = run.ok[run.ok["arm"] == arm.name]
        row: dict[str, Any] = {"arm": arm.name}
        row.update({k: study.trial_settings(arm).get(k) for k in study.factor_names})
        row.update({k: run.selected.get(arm.name, {}).get(k) for k in run.param_names})
        # For a grid study an arm reports one grid point, so its seeds are what is planned for it.
        datasets = sorted(rep["dataset"].dropna().astype(str).unique())
        row.update({"dataset": " + ".join(datasets) or run.dataset, "planned": len(run.seeds), "finished": len(rep),
                    "n": len(ok), "diverged": int((rep["status"] == "diverged").sum()),
                    "error": int((rep["status"] == "error").sum())})
        row["failed"] = row["finished"] - row["n"]
        for metric in METRICS:
            ci = stats.mean_ci(ok[metric], bounds=BOUNDS[metric])
            row.update({f"{metric}_mean": ci.mean, f"{metric}_std": stats.std(ok[metric]),
                        f"{metric}_ci_low": ci.low, f"{metric}_ci_high": ci.high, f"{metric}_ci_cut": ci.cut})
        scored = rep["test_acc"].where((rep["status"] == "ok") & rep["test_acc"].notna(), chance(run))
        ci = stats.mean_ci(scored, bounds=(0.0, 1.0))
        row.update({"test_acc_all_mean": ci.mean, "test_acc_all_ci_low": ci.low, "test_acc_all_ci_high": ci.high,
                    "test_acc_all_ci_cut": ci.cut})
        row.update({"best_step_median": float(ok["best_step"].median()) if ok["best_step"].notna().any() else math.nan,
                    "total_steps": float(rep["total_steps"].max()) if len(rep) else math.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def degradation(run: Run, summary: pd.DataFrame) -> list[dict[str, Any]]:
    """For depth studies, per plain series: the first depth where plain accuracy drops (see DEGRADE_RULE), or why
    the rule cannot be applied, and what the data show (the mean per depth; per deeper depth, in how many of the
    seeds both depths share that seed scored lower than at the smallest depth)."""
    if not run.is_depth_study():
        return []
    s = summary.assign(series=[series_of(run, a) for a in summary["arm"]],
                       plain=[not bool(arm_value(run, a, "residual")) for a in summary["arm"]])
    level = chance(run)
    out = []
    for series, group in s[s["plain"]].groupby("series", sort=False):
        g = group.dropna(subset=["test_acc_mean"]).sort_values("depth")
        if g.empty:
            continue
        base = g.iloc[0]
        ok = run.ok
        acc = {int(r.depth): ok.loc[ok["arm"] == r.arm].set_index("seed")["test_acc"] for r in g.itertuples()}
        base_depth = int(base["depth"])
        n = len(acc[base_depth])
        half = t_half_width(acc[base_depth].tolist()) if n >= 2 else math.nan
        lower = {}
        for d, values in acc.items():
            if d != base_depth:
                shared = values.index.intersection(acc[base_depth].index)
                lower[d] = (int((values[shared] < acc[base_depth][shared]).sum()), len(shared))
        result = {"series": series, "base_depth": base_depth, "base_mean": base["test_acc_mean"], "seeds": n,
                  "half_width": half, "threshold": base["test_acc_mean"] - half, "chance": level,
                  "depths": [int(d) for d in g["depth"]], "means": dict(zip(g["depth"].astype(int), g["test_acc_mean"])),
                  "lower": lower, "degrades_at": None}
        if math.isnan(half):
            result["reason"] = f"the CI at depth {base_depth} needs at least 2 seeds, it has {n}"
        elif result["threshold"] <= level:
            result["reason"] = (f"with {n} seeds the 95 % t-interval at depth {base_depth} is ±{100 * half:.1f} pp wide, "
                                f"so its threshold lies at or below chance ({100 * level:g} %) and no mean can fall below it")
        else:
            for r in g.iloc[1:].itertuples():
                if r.test_acc_mean < result["threshold"]:
                    result["degrades_at"] = int(r.depth)
                    break
        out.append(result)
    return out


DEGRADE_RULE = ("the plain network *degrades* at the first depth whose mean test accuracy falls below its "
                "mean test accuracy at the smallest depth by more than the half-width of that smallest-depth "
                "mean's 95 % t-interval")

