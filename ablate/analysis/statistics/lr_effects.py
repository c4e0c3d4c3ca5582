"""The effect across learning rates, not at one point (issue 17): per arm the learning rate -> accuracy curve over
the search's seeds, per compared pair the effect at each learning rate, paired by seed, and the range of the effect
over the learning rates near each arm's optimum.

The search points are the tuning trials (a grid study: the grid's trials) of each arm. A point (arm, learning
rate) run under several seeds gets the mean and 95 % t-interval over them, of the best dev accuracy and of the test
accuracy of the best-dev checkpoint; a run that diverged or failed counts at chance (it is a result of that
learning rate), a tuning trial the search stopped early is left out (its numbers are those of a shorter run). The
same trial serving several repeats of the search is counted once.

At each learning rate both arms of a compared pair ran, the effect is paired by seed (same seed: same
initialisation and data order) over the seeds both ran; where they share no seed it is the unpaired difference of
the means with a Welch interval, and says so. Near-optimal learning rates of an arm: those whose mean dev accuracy
is within WINDOW of its best mean dev accuracy; the lead gives the range of the difference of mean test accuracies
over every near-optimal learning rate of one arm against every near-optimal one of the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _st

from ablate.spec import compared_pairs
from . import stats
from ..context import chance
from ..load import Run, completed

WINDOW = 0.02  # near-optimal: mean dev accuracy within 2 pp of the arm's best (one pp is 2 dev images of 200)
CURVE_COLUMNS = ["arm", "lr", "n", "failed", "seeds", "dev_mean", "dev_low", "dev_high", "dev_cut", "test_mean",
                 "test_low", "test_high", "test_cut", "best", "near_optimal", "chosen"]
EFFECT_COLUMNS = ["arm_a", "arm_b", "lr", "paired", "n_pairs", "n_a", "n_b", "seeds", "diff", "ci_low", "ci_high",
                  "ci_cut", "p_sign_flip"]


def lr_param(run: Run) -> str | None:
    """The numeric parameter searched or gridded over: lr when it is one, else the first numeric one."""
    names = [p.name for p in run.study.space if p.distribution != "choice"] or [
        k for k, v in run.study.grid.items() if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)]
    return "lr" if "lr" in names else (names[0] if names else None)


def search_stage(run: Run) -> str | None:
    """The stage whose trials are the search points: tune (a tuned study) or grid (a grid study), else None."""
    return "tune" if run.study.space else "grid" if run.study.grid else None


def _key(x: float) -> float:
    return float(f"{float(x):.10g}")  # equal learning rates proposed twice compare equal


def search_trials(run: Run, param: str) -> pd.DataFrame:
    """One row per distinct trial of the search stage that ran to its end or failed: arm, lr (the parameter), seed,
    failed, dev, test (fractions; a failed run at chance)."""
    stage = search_stage(run)
    rows = run.trials[run.trials["stage"] == stage].drop_duplicates("trial_id")
    if rows.empty or param not in rows:
        return pd.DataFrame(columns=["arm", "lr", "seed", "failed", "dev", "test"])
    failed = rows["status"].isin(["diverged", "error"])
    keep = completed(rows) | failed
    rows, failed = rows[keep], failed[keep]
    level = chance(run)
    return pd.DataFrame({"arm": rows["arm"].astype(str), "lr": [_key(v) for v in rows[param]], "seed": rows["seed"],
                         "failed": failed, "dev": rows["best_dev_acc"].where(~failed, level),
                         "test": rows["test_acc"].where(~failed, level)}).reset_index(drop=True)


@dataclass
class LrEffects:
    param: str
    stage: str
    metric: str                      # "test" (test accuracy of the best-dev checkpoint) or "dev" where tests lack
    curves: pd.DataFrame             # CURVE_COLUMNS, per arm and learning rate
    effects: pd.DataFrame            # EFFECT_COLUMNS, per compared pair and shared learning rate
    ranges: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # pair -> (low, high)
    seeds_per_point: tuple[int, int] = (0, 0)   # fewest and most runs behind one (arm, learning rate)

    @property
    def one_seed(self) -> bool:
        return self.seeds_per_point[1] <= 1


def _curves(run: Run, trials: pd.DataFrame, param: str) -> pd.DataFrame:
    rows = []
    for (arm, lr), g in trials.groupby(["arm", "lr"], sort=True):
        dev, test = stats.mean_ci(g["dev"], bounds=(0, 1)), stats.mean_ci(g["test"], bounds=(0, 1))
        rows.append({"arm": arm, "lr": lr, "n": len(g), "failed": int(g["failed"].sum()),
                     "seeds": " ".join(str(s) for s in sorted(g["seed"].dropna().astype(int))),
                     "dev_mean": dev.mean, "dev_low": dev.low, "dev_high": dev.high, "dev_cut": dev.cut,
                     "test_mean": test.mean, "test_low": test.low, "test_high": test.high, "test_cut": test.cut})
    out = pd.DataFrame(rows, columns=[c for c in CURVE_COLUMNS if c not in ("best", "near_optimal", "chosen")])
    top = out.groupby("arm")["dev_mean"].transform("max")
    out["best"] = out["dev_mean"] == top
    out["near_optimal"] = out["dev_mean"] >= top - WINDOW - 1e-12
    picked = {arm: run.selected.get(arm, {}).get(param) for arm in out["arm"].unique()}
    out["chosen"] = [picked[a] is not None and _key(picked[a]) == lr for a, lr in zip(out["arm"], out["lr"])]
    order = {a: i for i, a in enumerate(run.arm_names)}
    return out.sort_values(["arm", "lr"], key=lambda c: c.map(order) if c.name == "arm" else c).reset_index(drop=True)


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95 % Welch interval of mean(a) - mean(b); NaN with fewer than 2 runs on a side or no spread."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return math.nan, math.nan
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(_st.t.ppf(0.975, df)) * math.sqrt(va + vb)
    d = float(a.mean() - b.mean())
    return d - half, d + half


def _effects(run: Run, trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = []
    for a, b in compared_pairs(run.study):
        ta, tb = trials[trials["arm"] == a], trials[trials["arm"] == b]
        for lr in sorted(set(ta["lr"]) & set(tb["lr"])):
            xa = ta[ta["lr"] == lr].dropna(subset=[metric]).drop_duplicates("seed").set_index("seed")[metric]
            xb = tb[tb["lr"] == lr].dropna(subset=[metric]).drop_duplicates("seed").set_index("seed")[metric]
            shared = sorted(set(xa.index) & set(xb.index))
            if shared:
                d = stats.paired_diff(xa[shared].to_numpy(), xb[shared].to_numpy())
                low, high, cut = stats.cut_to(d.low, d.high, -1.0, 1.0)
                row = {"paired": True, "n_pairs": d.n, "seeds": " ".join(str(int(s)) for s in shared), "diff": d.mean,
                       "ci_low": low, "ci_high": high, "ci_cut": cut, "p_sign_flip": d.p_sign_flip}
            else:
                low, high, cut = stats.cut_to(*_welch(xa.to_numpy(), xb.to_numpy()), -1.0, 1.0)
                row = {"paired": False, "n_pairs": 0, "seeds": "", "diff": float(xa.mean() - xb.mean()),
                       "ci_low": low, "ci_high": high, "ci_cut": cut, "p_sign_flip": math.nan}
            rows.append({"arm_a": a, "arm_b": b, "lr": lr, "n_a": len(xa), "n_b": len(xb), **row})
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _ranges(run: Run, curves: pd.DataFrame, metric: str) -> dict[tuple[str, str], tuple[float, float]]:
    out = {}
    col = f"{metric}_mean"
    for a, b in compared_pairs(run.study):
        na = curves[(curves["arm"] == a) & curves["near_optimal"]][col].dropna().to_numpy()
        nb = curves[(curves["arm"] == b) & curves["near_optimal"]][col].dropna().to_numpy()
        if len(na) and len(nb):
            diffs = na[:, None] - nb[None, :]
            out[(a, b)] = (float(diffs.min()), float(diffs.max()))
    return out


def lr_effects(run: Run) -> LrEffects | None:
    """The learning-rate analysis of a run, or None when it has no numeric parameter searched or gridded over."""
    param, stage = lr_param(run), search_stage(run)
    if param is None or stage is None:
        return None
    trials = search_trials(run, param)
    if trials.empty:
        return None
    metric = "test" if trials.loc[~trials["failed"], "test"].notna().any() else "dev"
    curves = _curves(run, trials, param)
    counts = curves["n"]
    return LrEffects(param, stage, metric, curves, _effects(run, trials, metric), _ranges(run, curves, metric),
                     (int(counts.min()), int(counts.max())))
