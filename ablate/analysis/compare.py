"""Comparisons between arms: paired by seed, and per test image from the saved predictions.

Seed level: the paired differences d_s = acc_A(s) - acc_B(s) give the 95 % t-interval of their mean,
the effect size d_z = mean / SD, the exact sign-flip test and (beside it) the paired t-test.
Image level: per seed pair, which test images each model got right (predictions.csv); a bootstrap
over the images and the seed pairs gives a CI that includes the sampling of test images, and an
exact McNemar test per seed pair counts the images only one of the two models got right.

A difference is called *supported* only when every interval excludes 0 and the sign-flip p-value
(Holm-corrected over all pairs when there are more than two arms) is below ALPHA; else it is
*inconclusive*, with the reason.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from . import stats
from .load import Run
from .tables import p_eq
from .markdown_text import code

ALPHA = 0.05
BOOTSTRAP_SEED = 0
COLUMNS = ["arm_a", "arm_b", "mean_a", "mean_b", "n_pairs", "seeds", "diff", "diff_ci_low", "diff_ci_high", "diff_ci_cut",
           "diff_sd",
           "effect_size", "p_sign_flip", "sign_flip_exact", "min_p", "t", "p_t", "p_holm",
           "image_pairs", "images_shared", "image_diff", "image_ci_low", "image_ci_high", "mcnemar",
           "verdict", "why"]


def _image_level(pred: pd.DataFrame | None, a: str, b: str, seeds: list) -> dict:
    """Per-image analysis of arms a and b over the seeds both have predictions for (same images)."""
    empty = {"image_pairs": 0, "images_shared": None, "image_diff": math.nan, "image_ci_low": math.nan,
             "image_ci_high": math.nan, "mcnemar": ""}
    if pred is None:
        return empty
    diffs, groups, tests, keys = [], [], [], {}
    for seed in seeds:
        pa = pred[(pred["arm"] == a) & (pred["seed"] == seed)].sort_values("index")
        pb = pred[(pred["arm"] == b) & (pred["seed"] == seed)].sort_values("index")
        if pa.empty or pb.empty or pa["images"].iloc[0] != pb["images"].iloc[0] or len(pa) != len(pb) \
                or not np.array_equal(pa["label"].to_numpy(), pb["label"].to_numpy()):
            continue  # not scored on the same images: no per-image pairing
        ca = (pa["pred"].to_numpy() == pa["label"].to_numpy()).astype(float)
        cb = (pb["pred"].to_numpy() == pb["label"].to_numpy()).astype(float)
        diffs.append(ca - cb)
        groups.append(keys.setdefault(pa["images"].iloc[0], len(keys)))
        a_only, b_only = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
        tests.append(f"seed {seed}: {a_only}/{b_only} ({p_eq(stats.mcnemar_exact(a_only, b_only))})")
    if not diffs:
        return empty
    ci = stats.image_seed_bootstrap(diffs, groups, seed=BOOTSTRAP_SEED)
    return {"image_pairs": len(diffs), "images_shared": len(keys) == 1, "image_diff": ci.mean,
            "image_ci_low": ci.low, "image_ci_high": ci.high, "mcnemar": "; ".join(tests)}


def compare(run: Run, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every pair of scored arms, in spec order (diff = arm_a - arm_b), paired by seed and per image."""
    ok = run.ok
    scored = [a for a in run.arm_names if (ok["arm"] == a).any()]
    rows = []
    for a, b in itertools.combinations(scored, 2):
        xa = ok.loc[ok["arm"] == a, ["seed", "test_acc"]]
        xb = ok.loc[ok["arm"] == b, ["seed", "test_acc"]]
        pairs = xa.merge(xb, on="seed", suffixes=("_a", "_b")).sort_values("seed")
        d = stats.paired_diff(pairs["test_acc_a"], pairs["test_acc_b"])
        low, high, cut = stats.cut_to(d.low, d.high, -1.0, 1.0)  # a difference of accuracies lies in [-1, 1]
        row = {"arm_a": a, "arm_b": b, "mean_a": xa["test_acc"].mean(), "mean_b": xb["test_acc"].mean(),
               "n_pairs": d.n, "seeds": " ".join(str(s) for s in pairs["seed"]), "diff": d.mean,
               "diff_ci_low": low, "diff_ci_high": high, "diff_ci_cut": cut, "diff_sd": d.sd, "effect_size": d.effect,
               "p_sign_flip": d.p_sign_flip, "sign_flip_exact": d.sign_flip_exact, "min_p": d.min_p,
               "t": d.t, "p_t": d.p_t}
        row.update(_image_level(predictions, a, b, pairs["seed"].tolist()))
        rows.append(row)
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("p_holm", "verdict", "why")])
    df["p_holm"] = stats.holm(df["p_sign_flip"].tolist()) if len(scored) > 2 else df["p_sign_flip"]
    verdicts = [verdict(r, multiple=len(scored) > 2) for r in df.to_dict("records")]
    df["verdict"] = [v for v, _ in verdicts]
    df["why"] = [w for _, w in verdicts]
    return df[COLUMNS]


def _excludes_zero(low: float, high: float) -> bool:
    return not math.isnan(low) and (low > 0 or high < 0)


def verdict(c: dict, multiple: bool = False) -> tuple[str, str]:
    """('supported' | 'inconclusive' | 'untested', why) for one row of compare(); `multiple`: p_holm is
    Holm-corrected over several pairs."""
    n = int(c["n_pairs"])
    if n < 2:
        return "untested", f"{n} seed pair(s): a paired comparison needs at least 2"
    holm = "Holm-corrected " if multiple else ""
    reasons = []
    if not _excludes_zero(c["diff_ci_low"], c["diff_ci_high"]):
        reasons.append("the 95 % CI of the paired difference spans 0")
    if c["min_p"] >= ALPHA and c["sign_flip_exact"]:
        reasons.append(f"with {n} seed pairs the exact sign-flip test cannot reach p < {ALPHA:g} (its smallest p is "
                       f"2/2^{n} = {c['min_p']:.3g}), so more seeds are needed")
    elif not c["p_holm"] < ALPHA:
        reasons.append(f"the {holm}sign-flip {p_eq(c['p_holm'])} is not below {ALPHA:g}")
    if c["image_pairs"] and not _excludes_zero(c["image_ci_low"], c["image_ci_high"]):
        reasons.append("the CI over test images and seeds spans 0 (the choice of test images alone could produce "
                       "the difference)")
    if reasons:
        return "inconclusive", "; ".join(reasons)
    better = c["arm_a"] if c["diff"] > 0 else c["arm_b"]
    return "supported", f"{code(better)} is higher: every interval excludes 0 and the {holm}sign-flip p < {ALPHA:g}"


def supported_best(run: Run, comparisons: pd.DataFrame) -> str | None:
    """The arm shown to be better than every other scored arm, else None (no bold row without support)."""
    scored = [a for a in run.arm_names if (run.ok["arm"] == a).any()]
    if len(scored) < 2:
        return None
    for arm in scored:
        wins = 0
        for c in comparisons.itertuples():
            if c.verdict == "supported" and arm in (c.arm_a, c.arm_b):
                winner = c.arm_a if c.diff > 0 else c.arm_b
                wins += winner == arm
        if wins == len(scored) - 1:
            return arm
    return None
