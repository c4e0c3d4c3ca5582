"""Comparisons between arms: paired by seed, and per test image from the saved predictions.

Seed level: every final-stage run of the reported configurations counts (intention to treat): a run that failed or
diverged is scored at chance, so an arm that fails more cannot look better by losing its bad seeds. The paired
differences d_s = acc_A(s) - acc_B(s) give the 95 % interval of their mean (Stein's two-stage interval when the
seeds came from the adaptive rule, see ablate.intervals; else Student's t), the effect size d_z = mean / SD, the
exact sign-flip test and (beside it) the t-test. Image level: per seed pair, which test images each model got
right (predictions.csv); a bootstrap over the images and the seed pairs gives a CI that includes the sampling of
test images, and an exact McNemar test per seed pair counts the images only one of the two models got right.

Verdicts: *supported* only when every interval excludes 0, the sign-flip p-value (Holm-corrected over all pairs
when there are more than two arms) is below ALPHA, and the arm called higher did not fail in more seeds than the
other; *no meaningful difference* when the margin (the spec's min_effect, or --min-effect) is declared and the
90 % interval lies inside (-margin, +margin): two one-sided tests at ALPHA each (TOST); else *inconclusive*, with
the reason.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from ablate.engine import itt_score
from ablate.spec import ALPHA, TWO_STAGE
from . import stats
from ..context import chance
from ..load import Run
from ..formats import p_eq
from ..markdown_text import code

BOOTSTRAP_SEED = 0
SUPPORTED, INCONCLUSIVE, EQUIVALENT, UNTESTED = "supported", "inconclusive", "no meaningful difference", "untested"
COLUMNS = ["arm_a", "arm_b", "mean_a", "mean_b", "n_pairs", "seeds", "failed_a", "failed_b", "diff", "diff_ci_low",
           "diff_ci_high", "diff_ci_cut", "interval", "pilot", "pilot_sd", "diff_sd", "effect_size", "nonzero",
           "p_sign_flip", "sign_flip_exact", "min_p", "t", "p_t", "p_holm", "margin", "eq_ci_low", "eq_ci_high",
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


def scored_arms(run: Run) -> list[str]:
    """Arms (spec order) with at least one reported final-stage run, finished or failed."""
    return [a for a in run.arm_names if (run.reported["arm"] == a).any()]


def paired_scores(run: Run, a: str, b: str) -> pd.DataFrame:
    """Per seed both arms ran (seed order): each arm's test accuracy counted by intention to treat (a run that failed
    or diverged scores chance) and whether it failed. Columns seed, score_a, score_b, failed_a, failed_b."""
    level = chance(run)
    rep = run.reported

    def side(arm: str) -> pd.DataFrame:
        rows = rep[rep["arm"] == arm].drop_duplicates("seed", keep="last")
        ok = (rows["status"] == "ok") & rows["test_acc"].notna()
        return pd.DataFrame({"seed": rows["seed"].to_numpy(), "score": [itt_score(r, level) for r in
                                                                       rows[["status", "test_acc"]].to_dict("records")],
                             "failed": (~ok).to_numpy()})

    out = side(a).merge(side(b), on="seed", suffixes=("_a", "_b")).sort_values("seed", kind="stable")
    return out.reset_index(drop=True)


def _pilot(run: Run, seeds: list) -> int:
    """The pilot size when these seed pairs came from Stein's two-stage rule and hold its whole pilot first; else 0
    (the Student t-interval)."""
    rule = run.study.seed_rule
    if rule is None or rule.design != TWO_STAGE or len(seeds) < rule.min:
        return 0
    return rule.min if list(seeds[:rule.min]) == list(run.study.seeds[:rule.min]) else 0


def compare(run: Run, predictions: pd.DataFrame | None = None, margin: float | None = None) -> pd.DataFrame:
    """Every pair of scored arms, in spec order (diff = arm_a - arm_b), paired by seed and per image. `margin` (pp):
    the equivalence margin, default the spec's min_effect (none: no equivalence test)."""
    margin = run.study.min_effect if margin is None else margin
    scored = scored_arms(run)
    rows = []
    for a, b in itertools.combinations(scored, 2):
        pairs = paired_scores(run, a, b)
        pilot = _pilot(run, pairs["seed"].tolist())
        d = stats.paired_diff(pairs["score_a"], pairs["score_b"], pilot=pilot)
        low, high, cut = stats.cut_to(d.low, d.high, -1.0, 1.0)  # a difference of accuracies lies in [-1, 1]
        row = {"arm_a": a, "arm_b": b, "mean_a": pairs["score_a"].mean(), "mean_b": pairs["score_b"].mean(),
               "n_pairs": d.n, "seeds": " ".join(str(s) for s in pairs["seed"]),
               "failed_a": int(pairs["failed_a"].sum()), "failed_b": int(pairs["failed_b"].sum()), "diff": d.mean,
               "diff_ci_low": low, "diff_ci_high": high, "diff_ci_cut": cut,
               "interval": f"two-stage (pilot {d.pilot})" if d.pilot else "t",
               "pilot": d.pilot, "pilot_sd": d.pilot_sd, "diff_sd": d.sd, "effect_size": d.effect, "nonzero": d.nonzero,
               "p_sign_flip": d.p_sign_flip, "sign_flip_exact": d.sign_flip_exact, "min_p": d.min_p,
               "t": d.t, "p_t": d.p_t, "margin": margin if margin is not None else math.nan,
               "eq_ci_low": d.eq_low, "eq_ci_high": d.eq_high}
        ok = pairs[~pairs["failed_a"] & ~pairs["failed_b"]]["seed"].tolist()
        row.update(_image_level(predictions, a, b, ok))
        rows.append(row)
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("p_holm", "verdict", "why")])
    df["p_holm"] = stats.holm(df["p_sign_flip"].tolist()) if len(scored) > 2 else df["p_sign_flip"]
    verdicts = [verdict(r, multiple=len(scored) > 2) for r in df.to_dict("records")]
    df["verdict"] = [v for v, _ in verdicts]
    df["why"] = [w for _, w in verdicts]
    return df[COLUMNS]


def _excludes_zero(low: float, high: float) -> bool:
    return not math.isnan(low) and (low > 0 or high < 0)


def _within(low: float, high: float, margin: float) -> bool:
    return not (math.isnan(low) or math.isnan(high) or math.isnan(margin)) and -margin < low and high < margin


def verdict(c: dict, multiple: bool = False) -> tuple[str, str]:
    """(SUPPORTED | EQUIVALENT | INCONCLUSIVE | UNTESTED, why) for one row of compare(); `multiple`: p_holm is
    Holm-corrected over several pairs. Rows without the newer keys (failures, equivalence) are judged without
    them."""
    n = int(c["n_pairs"])
    if n < 2:
        return UNTESTED, f"{n} seed pair(s): a paired comparison needs at least 2"
    holm = "Holm-corrected " if multiple else ""
    reasons = []
    if not _excludes_zero(c["diff_ci_low"], c["diff_ci_high"]):
        reasons.append("the 95 % interval of the paired difference spans 0")
    k = int(c.get("nonzero", n))
    if c["min_p"] >= ALPHA and c["sign_flip_exact"]:
        tied = f" ({n - k} of the {n} pairs tied at 0, which carry no sign)" if k < n else ""
        reasons.append(f"with {k} seed pairs that differ{tied} the exact sign-flip test cannot reach p < {ALPHA:g} "
                       f"(its smallest p is 2/2^{k} = {c['min_p']:.3g}), so more seeds are needed")
    elif not c["p_holm"] < ALPHA:
        reasons.append(f"the {holm}sign-flip {p_eq(c['p_holm'])} is not below {ALPHA:g}")
    if c["image_pairs"] and not _excludes_zero(c["image_ci_low"], c["image_ci_high"]):
        reasons.append("the CI over test images and seeds spans 0 (the choice of test images alone could produce "
                       "the difference)")
    fa, fb = int(c.get("failed_a") or 0), int(c.get("failed_b") or 0)
    higher = c["arm_a"] if c["diff"] > 0 else c["arm_b"]
    more = c["arm_a"] if fa > fb else c["arm_b"] if fb > fa else None
    if more is not None and more == higher and not reasons:
        reasons.append(f"{code(higher)} is ahead on average but failed in more seeds ({max(fa, fb)} of {n} against "
                       f"{min(fa, fb)}): an arm that fails more is never called higher")
    if not reasons:
        return SUPPORTED, (f"{code(higher)} is higher: every interval excludes 0 and the {holm}sign-flip p < {ALPHA:g}"
                           + (f" (failed seeds: {fa} and {fb}, scored at chance)" if fa or fb else ""))
    margin = c.get("margin", math.nan)
    margin = math.nan if margin is None else float(margin)
    if _within(100 * c.get("eq_ci_low", math.nan), 100 * c.get("eq_ci_high", math.nan), margin) and fa == fb:
        return EQUIVALENT, (f"the 90 % interval of the paired difference lies inside ±{margin:g} pp, the declared "
                            f"margin: two one-sided tests at {ALPHA:g} each reject a difference of {margin:g} pp or more "
                            "in either direction")
    if not math.isnan(margin):
        reasons.append(f"nor is it shown to be smaller than the declared margin of ±{margin:g} pp (its 90 % interval "
                       "reaches past it)" + (f"; the arms failed in different numbers of seeds ({fa} and {fb})"
                                              if fa != fb else ""))
    return INCONCLUSIVE, "; ".join(reasons)


def supported_best(run: Run, comparisons: pd.DataFrame) -> str | None:
    """The arm shown to be better than every other scored arm, else None (no bold row without support)."""
    scored = scored_arms(run)
    if len(scored) < 2:
        return None
    for arm in scored:
        wins = 0
        for c in comparisons.itertuples():
            if c.verdict == SUPPORTED and arm in (c.arm_a, c.arm_b):
                winner = c.arm_a if c.diff > 0 else c.arm_b
                wins += winner == arm
        if wins == len(scored) - 1:
            return arm
    return None
