"""Tuning budget and tuning luck: how good a search of n trials is expected to be (Dodge et al. 2019, "Show your
work"), and how much the chosen configuration and the final effect move when the whole search is repeated under
other sampler seeds (Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks").

Expected maximum validation accuracy: with the N tuning results of an arm sorted, v(1) <= ... <= v(N), the best
of n draws with replacement from them has the expectation

    E[max of n] = sum_i v(i) [(i / N)^n - ((i - 1) / N)^n],        n = 1 .. N,

exactly as Dodge et al. define it. Its band is a percentile bootstrap (BOOTSTRAP resamples of the N results,
generator seed BOOTSTRAP_SEED): the curve recomputed on each resample, 2.5 and 97.5 % points per n. A tuning
result is one distinct tuning trial's best dev accuracy (a trial stopped early by the search: the best it reached;
one that diverged or failed: chance).

Repeats: tuning rows of a run made with `--budget full` carry `repeat` (absent = 0); repeat r chose its own
configuration per arm (ablate.engine.selection.best_params on that repeat's tuning rows), and its effect is the
paired difference of the confirm runs of those configurations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.engine.run_folder import read_registry
from ablate.engine.selection import best_params
from ablate.spec.study_spec import compared_pairs
from . import stats
from .context import chance
from .load import Run

BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0


def expected_max(values, n_max: int | None = None) -> np.ndarray:
    """E[max of n draws with replacement] for n = 1 .. n_max (default N = len(values)), Dodge et al.'s formula."""
    v = np.sort(np.asarray(values, dtype=float))
    big_n = v.size
    n = np.arange(1, (n_max or big_n) + 1)[:, None]
    i = np.arange(1, big_n + 1)[None, :]
    weights = (i / big_n) ** n - ((i - 1) / big_n) ** n
    return weights @ v


def expected_max_band(values, n_max: int | None = None, resamples: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap 95 % band of the expected-max curve: (low, high) per n."""
    v = np.asarray(values, dtype=float)
    big_n = v.size
    rng = np.random.default_rng(seed)
    draws = np.sort(v[rng.integers(0, big_n, size=(resamples, big_n))], axis=1)
    n = np.arange(1, (n_max or big_n) + 1)[:, None]
    i = np.arange(1, big_n + 1)[None, :]
    curves = draws @ ((i / big_n) ** n - ((i - 1) / big_n) ** n).T
    return np.quantile(curves, 0.025, axis=0), np.quantile(curves, 0.975, axis=0)


def tuning_results(run: Run) -> pd.DataFrame:
    """One row per distinct tuning trial: arm, dev (best dev accuracy; chance for a run that failed)."""
    tune = run.trials[run.trials["stage"] == "tune"].drop_duplicates("trial_id")
    failed = tune["status"].isin(["diverged", "error"])
    dev = tune["best_dev_acc"].where(~failed, chance(run))
    keep = dev.notna()
    return pd.DataFrame({"arm": tune.loc[keep, "arm"].astype(str), "dev": dev[keep]}).reset_index(drop=True)


def expected_max_curves(run: Run) -> pd.DataFrame:
    """Per arm and n = 1 .. N: the expected best dev accuracy of a search of n trials, with its bootstrap band."""
    res = tuning_results(run)
    rows = []
    for arm in run.arm_names:
        v = res.loc[res["arm"] == arm, "dev"].to_numpy(dtype=float)
        if not v.size:
            continue
        curve = expected_max(v)
        low, high = expected_max_band(v)
        rows += [{"arm": arm, "n": n + 1, "trials": v.size, "expected_max": curve[n], "low": low[n], "high": high[n]}
                 for n in range(v.size)]
    return pd.DataFrame(rows, columns=["arm", "n", "trials", "expected_max", "low", "high"])


@dataclass
class Repeats:
    repeats: list[int]
    choices: dict[int, dict[str, dict]]                   # repeat -> arm -> chosen params
    effects: pd.DataFrame                                  # per repeat and compared pair: n_pairs, diff, ci_low, ci_high


def repeats(run: Run) -> Repeats | None:
    """The repeats of the search and each one's choice and effect, or None when the run holds one search."""
    rows = [r for r in read_registry(run.run_dir) if r.get("stage") == "tune"]
    ids = sorted({int(r.get("repeat") or 0) for r in rows})
    if len(ids) < 2:
        return None
    choices = {k: best_params(run.study, [r for r in rows if int(r.get("repeat") or 0) == k]) for k in ids}
    final = [r for r in read_registry(run.run_dir) if r.get("stage") == run.final_stage and r.get("status") == "ok"
             and r.get("test_acc") is not None]

    def accs(arm: str, params: dict) -> dict[int, float]:
        return {int(r["seed"]): float(r["test_acc"]) for r in final if r["arm"] == arm and (r.get("params") or {}) == params}

    out = []
    for k in ids:
        for a, b in compared_pairs(run.study):
            if a not in choices[k] or b not in choices[k]:
                continue
            xa, xb = accs(a, choices[k][a]), accs(b, choices[k][b])
            seeds = sorted(set(xa) & set(xb))
            d = stats.paired_diff([xa[s] for s in seeds], [xb[s] for s in seeds])
            low, high, _ = stats.cut_to(d.low, d.high, -1.0, 1.0)
            out.append({"repeat": k, "arm_a": a, "arm_b": b, "n_pairs": d.n, "diff": d.mean, "ci_low": low,
                        "ci_high": high})
    return Repeats(ids, choices, pd.DataFrame(out, columns=["repeat", "arm_a", "arm_b", "n_pairs", "diff", "ci_low",
                                                             "ci_high"]))


def spread(values) -> tuple[float, float, float]:
    """(lowest, highest, SD) of finite values (SD NaN below 2)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not v.size:
        return math.nan, math.nan, math.nan
    return float(v.min()), float(v.max()), stats.std(v)
