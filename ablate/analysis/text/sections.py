"""The report's text sections that interpret numbers: comparisons, failures, collapsed runs, checkpoints, tuning
counts, depth (the learning-rate and tuning-budget sections: tuning_sections).

Each function returns Markdown lines and states what was computed and on what.
"""
from __future__ import annotations

import math

import pandas as pd

from ..statistics import stats
from ..statistics.compare import ALPHA, BOOTSTRAP_SEED
from ..statistics.collapse import RULE
from ..context import chance
from ..load import Run, completed
from ..statistics.summary import DEGRADE_RULE, degradation
from ..formats import Fmt, fmt_p, loss_pm, p_eq
from ..markdown_text import code

DEV_FALL = 0.05  # a dev accuracy 5 pp or more below the run's best is a fall the checkpoints section names


# --- comparisons -----------------------------------------------------------------------------------
def pair_lines(run: Run, c: dict, multiple: bool = False) -> list[str]:
    """Bullets for one compare() row: paired difference, tests, per-image analysis, verdict."""
    f = Fmt.of(run)
    a, b, n = c["arm_a"], c["arm_b"], int(c["n_pairs"])
    if n == 0:
        return [f"{code(a)} vs {code(b)}: no seed finished in both arms, so there is no paired comparison."]
    sd = "" if math.isnan(c["diff_sd"]) else f"; SD of the differences {100 * c['diff_sd']:.{f.digits}f} pp"
    effect = c["effect_size"]
    es = ("" if math.isnan(effect) else
          ", effect size d_z not defined (the difference is the same under every seed)" if math.isinf(effect) or c["diff_sd"] == 0
          else f", effect size d_z = mean / SD = {effect:.3g}")
    fa, fb = int(c.get("failed_a") or 0), int(c.get("failed_b") or 0)
    failed = (f" Runs that failed or diverged count at chance (intention to treat): {fa} of {code(a)}'s and {fb} of "
              f"{code(b)}'s." if fa or fb else "")
    if c.get("pilot"):
        kind = (f"Stein's two-stage 95 % interval (the mean of all {n} pairs ± t_{{0.975, {c['pilot'] - 1}}} × the SD "
                f"of the first {c['pilot']}, the rule's pilot, {100 * c['pilot_sd']:.{f.digits}f} pp, / √{n})")
    else:
        kind = "95 % t-interval of the paired differences"
    lines = [f"{code(a)} minus {code(b)}, paired by seed ({n} pair(s): seeds {c['seeds']}; {run.final_stage} stage, test "
             f"accuracy of the best-dev checkpoints): mean difference {f.pp(c['diff'])} pp, {kind} "
             f"{f.ci(c['diff_ci_low'], c['diff_ci_high'])} pp"
             f"{' (cut at ±100 pp, what a difference of accuracies can be)' if c.get('diff_ci_cut') else ''}{sd}{es}."
             f"{failed}"]
    k = int(c.get("nonzero", n))
    tied = f", {n - k} tied at 0" if k < n else ""
    flip = (f"exact sign-flip test over all 2^{n} = {2 ** n} sign patterns: {p_eq(c['p_sign_flip'])} (the smallest "
            f"p {k} pairs that differ allow is {c['min_p']:.3g}{tied})" if c["sign_flip_exact"] else
            f"sign-flip test on 100,000 random sign patterns: {p_eq(c['p_sign_flip'])}")
    tname = "Stein's t" if c.get("pilot") else "paired t-test"
    ttest = (f"{tname} beside it: not defined (no spread in the differences)" if math.isnan(c["p_t"]) else
             f"{tname} beside it: t = {c['t']:.2f}, {p_eq(c['p_t'])}")
    holm = f"; Holm-corrected over all pairs {p_eq(c['p_holm'])}" if multiple else ""
    lines.append(f"Tests of a zero mean difference: {flip}{holm}; {ttest}.")
    if c["image_pairs"]:
        shared = ("the same test images, shared by every seed (one resample of them per draw)" if c["images_shared"]
                  else "each seed pair's own test images")
        lines.append(f"Per test image ({c['image_pairs']} seed pair(s) with predictions.csv, {shared}): mean "
                     f"difference {f.pp(c['image_diff'])} pp, 95 % bootstrap CI over images and seed pairs "
                     f"{f.ci(c['image_ci_low'], c['image_ci_high'])} pp ({stats.IMAGE_BOOTSTRAP_RESAMPLES:,} "
                     f"resamples, generator seed {BOOTSTRAP_SEED}). Exact McNemar test per seed (images only "
                     f"{code(a)} / only {code(b)} got right): {c['mcnemar']}.")
    else:
        lines.append("Per test image: not analysed (no predictions.csv from both arms on the same images; runs "
                     "made before predictions were saved).")
    margin = c.get("margin")
    if margin is not None and not (isinstance(margin, float) and math.isnan(margin)):
        lines.append(f"Equivalence at the declared margin of ±{margin:g} pp (two one-sided tests at {ALPHA:g}): the 90 % "
                     f"interval {f.ci(c['eq_ci_low'], c['eq_ci_high'])} pp "
                     f"{'lies inside' if -margin < 100 * c['eq_ci_low'] and 100 * c['eq_ci_high'] < margin else 'reaches past'}"
                     " the margin.")
    word = {"supported": "supported", "inconclusive": "inconclusive", "untested": "not tested",
            "no meaningful difference": "no meaningful difference"}[c["verdict"]]
    lines.append(f"**Verdict: {word}**: {c['why']}.")
    return lines


def comparison_lines(run: Run, comparisons: pd.DataFrame) -> list[str]:
    if comparisons.empty:
        return ["Fewer than two arms have test scores, so no arms are compared."]
    interval = ("Stein's two-stage 95 % interval (the seed rule's design)" if comparisons["pilot"].any()
                else "paired 95 % t-interval")
    same = "initialisation, data order and data subsets" if run.study.resample_data else "initialisation and data order"
    lines = [f"Each pair of arms is compared by seed (same seed = same {same}), every run counted: one that failed "
             f"or diverged scores chance (intention to treat). A difference is called *supported* only when its "
             f"{interval} excludes 0, the exact sign-flip p-value is below {ALPHA:g}"
             + (" after Holm's correction over all pairs" if len(comparisons) > 1 else "") +
             ", where predictions were saved the CI over test images and seeds excludes 0, and the arm called higher "
             "did not fail in more seeds; *no meaningful difference* when a margin is declared (the spec's "
             "`min_effect`, or `--min-effect`) and the 90 % interval lies inside it (two one-sided tests); otherwise "
             "it is *inconclusive*."]
    rows = comparisons.to_dict("records")
    if len(rows) > 3:
        # Many arms: every pair is in the table below; in words only the residual-vs-plain contrasts.
        rows = [c for c in rows if _differs_only_in(run, c["arm_a"], c["arm_b"]) == "residual"]
        lines.append("All pairs are in the table below; described here: each residual arm against the plain arm "
                     "with otherwise equal settings." if rows else "All pairs are in the table below.")
    for c in rows:
        lines += [""] + [f"- {line}" for line in pair_lines(run, c, multiple=len(comparisons) > 1)]
    return lines


def _differs_only_in(run: Run, a: str, b: str) -> str | None:
    """The one setting in which arms a and b differ, None when they differ in none or several."""
    sa, sb = (next(x.settings for x in run.study.arms if x.name == n) for n in (a, b))
    keys = [k for k in dict.fromkeys([*sa, *sb]) if sa.get(k) != sb.get(k)]
    return keys[0] if len(keys) == 1 else None


def pairs_table(run: Run, comparisons: pd.DataFrame) -> str:
    f = Fmt.of(run)
    lines = ["| arm A | arm B | A − B (pp) | 95 % CI (pp) | d_z | sign-flip p | p (Holm) | per-image 95 % CI (pp) | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in comparisons.itertuples():
        es = "n/a" if math.isnan(c.effect_size) or math.isinf(c.effect_size) else f"{c.effect_size:.2f}"
        lines.append(f"| {code(c.arm_a, table=True)} | {code(c.arm_b, table=True)} | {f.pp(c.diff)} | {f.ci(c.diff_ci_low, c.diff_ci_high)} | {es} | "
                     f"{fmt_p(c.p_sign_flip)} | {fmt_p(c.p_holm)} | {f.ci(c.image_ci_low, c.image_ci_high)} | {c.verdict} |")
    return "\n".join(lines) + "\n"


def failure_lines(run: Run, summary: pd.DataFrame) -> list[str]:
    """Per arm with a failed final-stage run: what failed, and the mean with failures scored at chance."""
    f = Fmt.of(run)
    lines = []
    for r in summary.itertuples():
        if not r.failed:
            continue
        parts = [f"{k} {s}" for k, s in ((r.diverged, "diverged"), (r.error, "crashed")) if k]
        other = r.failed - r.diverged - r.error
        parts += [f"{other} finished without a test score"] if other else []
        lines.append(f"{code(r.arm)}: {r.failed} of {r.finished} finished run(s) failed ({', '.join(parts)}). Mean test "
                     f"accuracy over its {r.n} completed run(s): {f.pct(r.test_acc_mean)}; over all {r.finished} runs, "
                     f"each failure scored at chance ({100 * chance(run):g} %): {f.pct(r.test_acc_all_mean)}.")
    return lines


def collapse_lines(run: Run, table: pd.DataFrame) -> list[str]:
    """Per arm: how many final-stage runs collapsed (collapse.RULE), with an exact binomial interval, and the mean of
    the others."""
    if table.empty:
        return []
    f = Fmt.of(run)
    lines = [f"Collapsed runs ({run.final_stage} stage): {RULE}. Share with its exact (Clopper–Pearson) 95 % interval; "
             "mean and 95 % t-interval of the runs that did not collapse.", "",
             "| arm | runs | collapsed | share (95 % CI) | threshold | median | mean of the others (%) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        threshold = "none (median at chance)" if math.isnan(r.threshold) else f.pct(r.threshold)
        share = f"{100 * r.rate:.0f} % ({100 * r.rate_low:.0f}–{100 * r.rate_high:.0f} %)"
        lines.append(f"| {code(r.arm, table=True)} | {r.runs} | {r.collapsed} | {share} | {threshold} | {f.pct(r.median)} | "
                     f"{f.pm(r.kept_mean, r.kept_low, r.kept_high, bool(r.kept_cut))} |")
    hit = table[table["collapsed"] > 0]
    if len(hit):
        lines += [""] + [f"- {code(r.arm)}: seed(s) {r.seeds_collapsed} collapsed." for r in hit.itertuples()]
    if int(table["runs"].max()) < 10:
        lines += ["", f"With {int(table['runs'].max())} runs or fewer per arm the interval of a share is wide: no "
                      "collapse in a handful of runs does not show that an arm never collapses."]
    return lines


# --- checkpoints -----------------------------------------------------------------------------------
def last_dev(curves: pd.DataFrame) -> pd.Series:
    """Per trial: dev accuracy at its last evaluation."""
    if curves.empty:
        return pd.Series(dtype=float)
    dev = curves.dropna(subset=["dev_acc"]).sort_values("step")
    return dev.groupby("trial_id")["dev_acc"].last()


def checkpoint_lines(run: Run, curves: pd.DataFrame) -> list[str]:
    """Best-dev vs final checkpoint per arm and per seed, with the scored checkpoint's train numbers."""
    f = Fmt.of(run)
    ok = run.ok.assign(last_dev_acc=lambda d: d["trial_id"].map(last_dev(curves)))
    lines = ["The reported test accuracy is that of the checkpoint with the best dev accuracy (evaluated every "
             f"{run.config_value('eval_every') or 'few'} steps), not of the model at the end of training. Per "
             "final-stage run:", "",
             "| arm | seed | best-dev step / steps | dev acc. best / last (%) | test acc. best-dev ckpt (%) | "
             "test acc. final ckpt (%) | train acc. best-dev ckpt (%) | train loss best-dev ckpt |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ok.sort_values(["arm", "seed"]).itertuples():
        step = "n/a" if math.isnan(r.best_step) else f"{int(r.best_step)} / " + (
            "?" if math.isnan(r.total_steps) else f"{int(r.total_steps)}")
        lines.append(f"| {code(r.arm, table=True)} | {r.seed} | {step} | {f.acc(r.best_dev_acc)} / {f.acc(r.last_dev_acc)} | "
                     f"{f.acc(r.test_acc)} | {f.acc(r.final_test_acc)} | {f.acc(r.scored_train_acc)} | "
                     f"{loss_pm(r.scored_train_loss, math.nan, math.nan)} |")
    lines.append("")
    for arm in run.arm_names:
        sub = ok[ok["arm"] == arm]
        if sub.empty:
            continue
        if sub["final_test_acc"].isna().all():
            lines.append(f"- {code(arm)}: the final checkpoint's test accuracy is n/a (not recorded by this run).")
            continue
        d = stats.paired_diff(sub["test_acc"], sub["final_test_acc"])
        low, high, _ = stats.cut_to(d.low, d.high, -1.0, 1.0)
        if d.n and d.sd == 0 and d.mean == 0:
            lines.append(f"- {code(arm)}: the best-dev and the final checkpoint scored the same on test in all {d.n} seed(s).")
            continue
        fell = sub[(sub["best_dev_acc"] - sub["last_dev_acc"]) >= DEV_FALL]
        text = (f"- {code(arm)}: best-dev minus final checkpoint on test {f.pp(d.mean)} pp on average over {d.n} seed(s)"
                + ("" if math.isnan(low) else f" (95 % t-interval {f.ci(low, high)} pp)") + ".")
        if len(fell):
            seeds = ", ".join(f"seed {r.seed}: {f.acc(r.best_dev_acc)} → {f.acc(r.last_dev_acc)} %" for r in fell.itertuples())
            text += (f" Dev accuracy fell by 5 pp or more between the best and the last evaluation ({seeds}): "
                     "best-dev checkpointing keeps the earlier, better model, and the reported score depends on it.")
        lines.append(text)
    return lines


# --- tuning ---------------------------------------------------------------------------------------
def tuning_lines(run: Run) -> list[str]:
    """How many tuning trials ran to their end, were stopped early, or failed (the learning rates they tried are in
    '## Learning rates')."""
    tune = run.trials[run.trials["stage"] == "tune"].drop_duplicates("trial_id")
    if tune.empty:
        return []
    done = completed(tune)
    early = tune[(tune["status"] == "stopped") & ~done]
    relabelled = tune[(tune["status"] == "stopped") & done]
    lines = [f"{len(tune)} tuning trial(s): {int(done.sum())} trained to their last step, {len(early)} stopped early "
             f"by the search, {int(tune['status'].isin(['diverged', 'error']).sum())} diverged or failed."]
    if len(relabelled):
        lines[-1] += (f" {len(relabelled)} trial(s) recorded as stopped had reached their last step; they count as "
                      "completed here.")
    if len(early):
        lines += ["", "The search chose where to try and stopped some trials early, so the completed trials "
                      "over-represent good learning rates, and ranges are bounded by the values tried, not by the "
                      "search space."]
    return lines


# --- depth -----------------------------------------------------------------------------------------
def depth_lines(run: Run, summary: pd.DataFrame) -> list[str]:
    f = Fmt.of(run)
    results = degradation(run, summary)
    if not results:
        return ["No plain (residual = false) arm has finished trials, so plain-network degradation is not assessed."]
    lines = [f"Definition: {DEGRADE_RULE}."]
    for r in results:
        who = "The plain network" if r["series"] == "plain" else f"The plain series {code(r['series'])}"
        base = (f"{f.pct(r['base_mean'])} at depth {r['base_depth']}"
                + ("" if math.isnan(r["half_width"]) else f", threshold {f.pct(r['threshold'])}"))
        if r.get("reason"):
            lines.append(f"{who}: **cannot be assessed** by this rule: {r['reason']} ({base}).")
        elif r["degrades_at"] is None:
            lines.append(f"{who}: no deeper net's mean fell below the threshold at any depth tested "
                         f"({', '.join(map(str, r['depths']))}; {base}).")
        else:
            lines.append(f"{who} starts to degrade at depth **{r['degrades_at']}** ({base}).")
        means = " → ".join(f"{f.pct(m)} (depth {d})" for d, m in r["means"].items())
        seeds = "; ".join(f"depth {d}: {k} of {n}" for d, (k, n) in r["lower"].items())
        lines.append(f"What the data show: mean test accuracy {means}"
                     + (f"; seeds scoring lower than at depth {r['base_depth']} (same seed): {seeds}." if seeds else "."))
    return lines
