"""Tuning budget and tuning luck: how good a search of n points is expected to be, and how much the chosen
configuration and the final effect move when the whole search is repeated under other sampler seeds (Bouthillier et
al. 2021, "Accounting for variance in machine learning benchmarks").

Expected best of n points (the expected validation performance of Dodge et al. 2019, "Show your work", estimated
as Tang et al. 2020, "Showing your work doesn't always work", show it must be): the unit is the unit the study's
selection ranks, a search point scored by the mean over its tuning seeds (ablate.analysis.statistics.search_points; a seed
that diverged or failed counts 0, as selection counts it). With an arm's N points ranked as selection ranks them,
worst first, and v(i) the score of the i-th, the mean over all C(N, n) sets of n points, drawn without
replacement, of the score of the point selection would choose from the set is

    E[best of n] = sum_{i >= n} v(i) C(i - 1, n - 1) / C(N, n),        n = 1 .. N,

Tang et al.'s unbiased estimator (Dodge et al.'s draws with replacement, sum_i v(i) [(i/N)^n - ((i-1)/N)^n], are
biased low and their bootstrap bands cover poorly). Ranking as selection does: a point stopped by halving ranks
below every point that ran to the end, a point whose seeds all failed below every other (a set of only such points
chooses nothing and scores 0). The band is the standard deviation of the chosen point's score over the same sets
(sqrt(E[best^2] - E[best]^2), exact): the spread of single searches of n points, 0 at n = N; it is not a confidence
interval of the curve, which N points cannot give. With repeats of the search every repeat's points count, each
scored by its own repeat's seeds.

Repeats: tuning rows of a run made with `--budget full` carry `repeat` (absent = 0); repeat r chose its own
configuration per arm (ablate.engine.selection.best_params on that repeat's tuning rows), and its effect is the
paired difference of the confirm runs of those configurations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.run_folder import read_registry
from ablate.engine import best_params
from ablate.spec import compared_pairs
from . import stats
from ..load import Run
from .search_points import Point, search_points

CURVE_MAX_POINTS = 400  # n values of one curve: every n up to this many points, else this many spread over 1 .. N
EXPECTED_MAX_CAPTION = ("Expected dev score of the point a search of n search points would choose, per arm (the "
                        "unbiased without-replacement estimator of Tang et al. 2020; points scored by the mean over "
                        "their tuning seeds, a failed seed 0, as selection scores them); band: ± the SD of that score "
                        "over the sets of n points (the spread of single searches, not a confidence interval); "
                        "dotted = chance.")
CURVE_COLUMNS = ["arm", "n", "points", "expected_max", "sd", "low", "high"]


def _weights(big_n: int, n: int) -> np.ndarray:
    """P(the i-th ranked of N, worst first, is the best of a random n-subset) = C(i-1, n-1) / C(N, n), i = 1 .. N,
    from the top down without a binomial coefficient: w(N) = n / N and w(i-1) = w(i) (i - n) / (i - 1), a product of
    factors <= 1 (no overflow; a weight too small for a float is 0)."""
    w = np.zeros(big_n)
    j = np.arange(n + 1, big_n + 1)                       # the factors (j - n) / (j - 1) for j = n + 1 .. N
    ratios = (j - n) / (j - 1)
    w[n - 1:] = (n / big_n) * np.concatenate([np.cumprod(ratios[::-1])[::-1], [1.0]])
    return w


def curve_ns(big_n: int) -> list[int]:
    """The n of a curve over N points: 1 .. N, or CURVE_MAX_POINTS of them (1, N // 2 and N among them)."""
    if big_n <= CURVE_MAX_POINTS:
        return list(range(1, big_n + 1))
    spread = np.unique(np.round(np.geomspace(1, big_n, CURVE_MAX_POINTS - 3)).astype(int))
    return sorted({1, max(1, big_n // 2), big_n, *map(int, spread)})


def expected_best(values, ns=None, ranked: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean, SD) over every set of n of the N values, drawn without replacement, of the value selection would
    choose from the set, for each n in `ns` (default 1 .. N). `ranked`: the values are in selection's order, worst
    first; else they are sorted by value (the best is the highest)."""
    v = np.asarray(values, dtype=float)
    if not ranked:
        v = np.sort(v)
    big_n = v.size
    ns = list(range(1, big_n + 1)) if ns is None else list(ns)
    mean, sd = np.empty(len(ns)), np.empty(len(ns))
    for j, n in enumerate(ns):
        if not 1 <= n <= big_n:
            raise ValueError(f"n must be from 1 to {big_n}, got {n}")
        w = _weights(big_n, n)
        mean[j] = w @ v
        sd[j] = math.sqrt(float(w @ (v - mean[j]) ** 2))
    return mean, sd


def expected_max(values, n_max: int | None = None) -> np.ndarray:
    """Tang et al.'s unbiased E[max of n] for n = 1 .. n_max (default N): the mean of the highest of n values drawn
    without replacement."""
    return expected_best(values, range(1, (n_max or len(values)) + 1))[0]


def ranked_points(run: Run) -> dict[str, list[Point]]:
    """Per arm, every tuning point of every repeat, ranked as selection ranks them, worst first."""
    out: dict[str, list[Point]] = {}
    for p in search_points(run.study, read_registry(run.run_dir)):
        out.setdefault(p.arm, []).append(p)
    return {arm: sorted(points, key=lambda p: p.rank(), reverse=True) for arm, points in out.items()}


def expected_max_curves(run: Run) -> pd.DataFrame:
    """Per arm and n: the expected dev score of the point a search of n of the arm's points would choose
    (`expected_max`), the SD of that score over the searches (`sd`), and expected_max -/+ sd cut at the lowest and
    highest point score (`low`, `high`)."""
    rows = []
    ranked = ranked_points(run)
    for arm in run.arm_names:
        points = ranked.get(arm, [])
        if not points:
            continue
        v = np.array([p.score.acc for p in points])
        ns = curve_ns(v.size)
        mean, sd = expected_best(v, ns, ranked=True)
        rows += [{"arm": arm, "n": n, "points": v.size, "expected_max": m, "sd": s,
                  "low": max(float(v.min()), m - s), "high": min(float(v.max()), m + s)}
                 for n, m, s in zip(ns, mean, sd)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


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
