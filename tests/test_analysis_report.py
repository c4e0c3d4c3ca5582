"""The report's statistics, failures, checkpoints and precision, on constructed run folders whose
right answers are known (paired differences chosen here, checked against scipy or by hand)."""
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ablate.analysis import analyze
from ablate.analysis.context import acc_digits
from ablate.analysis.load import load_run
from helpers.runs import build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"


def first_k(k: int, n: int = 200) -> np.ndarray:
    """k of n test images right (the first k): nested sets, so a larger k only adds images."""
    return np.arange(n) < k


def paired_run(tmp_path, k_res, k_plain, doc=None, **trial_extra):
    trials = []
    for seed, (kr, kp) in enumerate(zip(k_res, k_plain)):
        trials.append({"arm": RES, "seed": seed, "correct": first_k(kr), **trial_extra})
        trials.append({"arm": PLAIN, "seed": seed, "correct": first_k(kp), **trial_extra})
    return build_run(tmp_path / "run", trials, doc=doc or spec_doc(seeds=list(range(len(k_res)))))


def results(md: str) -> str:
    return md[md.index("## Results"): md.index("## Checkpoints")]


def test_the_issues_case_is_inconclusive_with_a_paired_ci_effect_size_and_exact_test(tmp_path):
    # residual 99.0/99.5/99.5 %, plain 89.5/94.0/98.5 % on the same 200 images, as in the issue
    run = paired_run(tmp_path, [198, 199, 199], [179, 188, 197])
    result = analyze(run, figures=False)
    d = np.array([19, 11, 2]) / 200
    low, high = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
    c = result.comparisons.iloc[0]
    assert (c["arm_a"], c["arm_b"], c["n_pairs"]) == (RES, PLAIN, 3)
    assert c["diff"] == pytest.approx(d.mean()) and (c["diff_ci_low"], c["diff_ci_high"]) == pytest.approx((low, high))
    assert c["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert c["p_sign_flip"] == pytest.approx(0.25) and c["p_t"] == pytest.approx(st.ttest_rel(d, 0 * d).pvalue)
    assert c["verdict"] == "inconclusive" and result.winner is None
    md = results(result.report.read_text())
    assert "Winner" not in md and "**Best arm" not in md and "| **" not in md
    assert f"95 % t-interval of the paired differences [{100 * low:+.1f}, {100 * high:+.1f}] pp" in md
    assert f"effect size d_z = mean / SD = {d.mean() / d.std(ddof=1):.3g}" in md
    assert "exact sign-flip test over all 2^3 = 8 sign patterns: p = 0.250 (the smallest p 3 pairs that differ allow is 0.25)" in md
    assert f"paired t-test beside it: t = {st.ttest_1samp(d, 0).statistic:.2f}" in md
    assert "**Verdict: inconclusive**: the 95 % interval of the paired difference spans 0; with 3 seed pairs that " \
           "differ the exact sign-flip test cannot reach p < 0.05" in md
    # per image: the residual net got every image the plain one got, plus 19 / 11 / 2 more
    assert ("images only `residual=true` / only `residual=false` got right): seed 0: 19/0 (p < 0.001); "
            f"seed 1: 11/0 (p < 0.001); seed 2: 2/0 (p = {st.binomtest(0, 2).pvalue:.3f})") in md
    assert "No arm is shown to be better than every other" in md


def test_a_constant_difference_over_two_seeds_is_not_p_zero(tmp_path):
    # one test image (0.5 pp) in favour of residual under both seeds
    run = paired_run(tmp_path, [181, 182], [180, 181])
    result = analyze(run, figures=False)
    c = result.comparisons.iloc[0]
    assert c["p_sign_flip"] == pytest.approx(0.5) and math.isnan(c["p_t"]) and c["verdict"] == "inconclusive"
    md = results(result.report.read_text())
    assert "p = 0.000" not in md and "p = 0.500 (the smallest p 2 pairs that differ allow is 0.5)" in md
    assert "effect size d_z not defined (the difference is the same under every seed)" in md
    assert "paired t-test beside it: not defined (no spread in the differences)" in md


def test_a_difference_the_data_support_is_bold_and_says_why(tmp_path):
    k_res = [190, 192, 188, 195, 191, 193]
    k_plain = [170, 175, 168, 180, 172, 174]
    run = paired_run(tmp_path, k_res, k_plain)
    result = analyze(run, figures=False)
    c = result.comparisons.iloc[0]
    d = (np.array(k_res) - np.array(k_plain)) / 200
    assert c["p_sign_flip"] == pytest.approx(2 / 64) and c["diff_ci_low"] > 0 and c["image_ci_low"] > 0
    assert c["image_diff"] == pytest.approx(d.mean())
    assert c["verdict"] == "supported" and result.winner == RES
    md = result.report.read_text()
    assert "**Verdict: supported**: `residual=true` is higher" in md and "**Best arm: `residual=true`**" in md
    assert "| **residual=true** |" in md and "| residual=false |" in md
    assert result.table.splitlines()[2].startswith("* residual=true")
    tex = result.summary_tex.read_text()
    assert tex.count(r"\textbf{") >= 2 and r"\textbf{residual}" in tex and "Bold: better than every other arm" in tex


def test_the_report_says_which_test_images_were_used(tmp_path):
    same = analyze(paired_run(tmp_path / "a", [190, 191], [180, 181]), figures=False)
    md = same.report.read_text()
    assert "every seed and arm was scored on the same 200 test images (resample_data: false)" in md
    assert "the same test images, shared by every seed" in md and bool(same.comparisons.iloc[0]["images_shared"])
    own = analyze(paired_run(tmp_path / "b", [190, 191], [180, 181], doc=spec_doc(seeds=[0, 1], resample_data=True)), figures=False)
    md = own.report.read_text()
    assert "each seed drew its own data subsets (resample_data: true, data seed = seed)" in md
    assert "each seed pair's own test images" in md and not own.comparisons.iloc[0]["images_shared"]


def test_failed_runs_are_reported_and_scored_at_chance_in_the_all_runs_mean(tmp_path):
    trials = [{"arm": RES, "seed": s, "test_acc": a} for s, a in enumerate([0.95, 0.96, 0.97])]
    trials += [{"arm": PLAIN, "seed": 0, "test_acc": 0.9},
               {"arm": PLAIN, "seed": 1, "status": "diverged", "test_acc": None},
               {"arm": PLAIN, "seed": 2, "status": "error", "test_acc": None}]
    result = analyze(build_run(tmp_path / "run", trials), figures=False)
    row = result.summary.set_index("arm").loc[PLAIN]
    assert (row["n"], row["failed"], row["diverged"], row["error"]) == (1, 2, 1, 1)
    assert row["test_acc_mean"] == pytest.approx(0.9)
    assert row["test_acc_all_mean"] == pytest.approx((0.9 + 0.1 + 0.1) / 3)
    md = results(result.report.read_text())
    assert ("`residual=false`: 2 of 3 finished run(s) failed (1 diverged, 1 crashed). Mean test accuracy over its 1 "
            "completed run(s): 90.0 %; over all 3 runs, each failure scored at chance (10 %): 36.7 %.") in md
    header = md[md.index("| arm |"):].splitlines()[0]
    assert "| failed | all runs, failure = chance (%) |" in header
    assert result.summary.set_index("arm").loc[RES, "test_acc_all_mean"] == pytest.approx(0.96)


@pytest.mark.parametrize("test_size, digits", [(200, 1), (64, 1), (1000, 1), (2000, 2)])
def test_accuracies_carry_the_precision_of_the_test_set(tmp_path, test_size, digits):
    doc = spec_doc(seeds=[0, 1], base={**spec_doc()["base"], "test_size": test_size})
    k = [round(0.9 * test_size), round(0.95 * test_size)]
    trials = [{"arm": a, "seed": s, "test_acc": k[s] / test_size - (0.01 if a == PLAIN else 0)} for a in (RES, PLAIN)
              for s in (0, 1)]
    result = analyze(build_run(tmp_path / "run", trials, doc=doc), figures=False)
    assert acc_digits(load_run(result.run_dir)) == digits
    row = next(l for l in result.report.read_text().splitlines() if l.startswith(f"| {RES} |"))
    cell = row.split(" | ")[2]  # arm, seeds, test accuracy
    # 2 seeds at 90 and 95 %: the t-interval passes 100 % and is cut there, so it reads [low, 100.0]†
    assert re.fullmatch(rf"\d+\.\d{{{digits}}} \[\d+\.\d{{{digits}}}, 100\.0{{{digits}}}\]†", cell), cell


def test_a_run_made_before_the_new_metrics_reads_n_a(tmp_path):
    trials = [{"arm": a, "seed": s, "test_acc": 0.9 + 0.01 * s} for a in (RES, PLAIN) for s in (0, 1)]
    result = analyze(build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1])), figures=False)
    md = result.report.read_text()
    row = next(l for l in md.splitlines() if l.startswith(f"| {RES} |"))
    assert row.endswith("| n/a | n/a | n/a |")
    assert "Per test image: not analysed" in md
    assert "the final checkpoint's test accuracy is n/a (not recorded by this run)" in md


@pytest.mark.slow  # a second or more of 2 cores
def test_checkpoints_section_shows_what_best_dev_checkpointing_changed(tmp_path):
    steps = [15, 30, 45, 60, 75, 80]
    collapse = [0.3, 0.8, 0.9, 0.975, 0.9, 0.85]
    steady = [0.3, 0.8, 0.9, 0.95, 0.96, 0.97]
    trials = []
    for s in range(3):
        trials.append({"arm": RES, "seed": s, "test_acc": 0.99, "final_test_acc": 0.99, "best_dev_acc": 0.97,
                       "best_step": 80, "scored_train_acc": 1.0, "scored_train_loss": 0.0023,
                       "curves": [{"step": t, "dev_acc": a} for t, a in zip(steps, steady)]})
        plain_dev = collapse if s == 2 else steady
        trials.append({"arm": PLAIN, "seed": s, "test_acc": [0.895, 0.94, 0.985][s], "final_test_acc": [0.895, 0.95, 0.88][s],
                       "best_dev_acc": max(plain_dev), "best_step": 60 if s == 2 else 80, "scored_train_acc": 0.99,
                       "scored_train_loss": 0.0589, "curves": [{"step": t, "dev_acc": a} for t, a in zip(steps, plain_dev)]})
    result = analyze(build_run(tmp_path / "run", trials))
    md = result.report.read_text()
    section = md[md.index("## Checkpoints"): md.index("## Figures")]
    assert "| `residual=false` | 2 | 60 / 80 | 97.5 / 85.0 | 98.5 | 88.0 | 99.0 | 0.0589 |" in section
    d = np.array([0.895, 0.94, 0.985]) - np.array([0.895, 0.95, 0.88])
    low, high = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
    assert (f"`residual=false`: best-dev minus final checkpoint on test {100 * d.mean():+.1f} pp on average over 3 "
            f"seed(s) (95 % t-interval [{100 * low:+.1f}, {100 * high:+.1f}] pp). Dev accuracy fell by 5 pp or more "
            "between the best and the last evaluation (seed 2: 97.5 → 85.0 %)") in section
    assert "`residual=true`: the best-dev and the final checkpoint scored the same on test in all 3 seed(s)" in section
    # the summary table carries the final checkpoint and the scored checkpoint's train numbers
    row = next(l for l in md.splitlines() if l.startswith(f"| {PLAIN} |")).split(" | ")
    assert row[3] == f"{100 * np.mean([0.895, 0.95, 0.88]):.1f} ± {100 * st.sem([0.895, 0.95, 0.88]) * st.t.ppf(0.975, 2):.1f}"


def test_protocol_limits_are_stated(tmp_path):
    trials = [{"arm": a, "seed": s, "test_acc": 0.9} for a in (RES, PLAIN) for s in (0, 1)]
    md = analyze(build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1])), figures=False).report.read_text()
    line = next(l for l in md.splitlines() if l.startswith("Protocol:"))
    for text in ("ResNet-18 (imagenet layout", "plain SGD (lr 0.01, momentum 0.0, weight decay 0.0, batch 64",
                 "80 steps (5 epochs over 1000 training images)", "no data augmentation", "dev set 200 images",
                 "test set 200 images", "resized to 32×32", "not converged training"):
        assert text in line, text


@pytest.mark.slow  # a second or more of 2 cores
def test_tuning_counts_trials_that_reached_their_last_step_and_gives_the_learning_rates_tried(tmp_path):
    doc = spec_doc(seeds=[0], search={"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.5}},
                                      "trials": 4, "sampler_seed": 0})
    tune = [(RES, 0.01, "ok", 0.95, 80), (RES, 0.03, "stopped", 0.97, 80), (RES, 0.1, "stopped", 0.5, 30),
            (RES, 0.3, "ok", 0.93, 80), (PLAIN, 0.01, "ok", 0.90, 80), (PLAIN, 0.03, "ok", 0.96, 80),
            (PLAIN, 0.1, "ok", 0.70, 80), (PLAIN, 0.3, "ok", 0.20, 80)]
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "status": s, "best_dev_acc": dev, "steps": n}
              for a, lr, s, dev, n in tune]
    trials += [{"arm": a, "seed": 0, "params": {"lr": 0.03}, "test_acc": 0.9} for a in (RES, PLAIN)]
    result = analyze(build_run(tmp_path / "run", trials, doc=doc))
    md = result.report.read_text()
    section = md[md.index("## Tuning"): md.index("## Figures")]
    assert "8 tuning trial(s): 7 trained to their last step, 1 stopped early by the search" in section
    assert "1 trial(s) recorded as stopped had reached their last step; they count as completed here." in section
    # the learning rates the trials tried, one run each (the early stop left out): the window is 2 pp of mean dev
    lrs = md[md.index("## Learning rates"): md.index("## Tuning budget")]
    assert ("- `residual=true`: best mean dev accuracy at learning rate 0.03; within 2 pp of it: 0.01, 0.03 (of 0.01, "
            "0.03, 0.3).") in lrs
    assert ("- `residual=false`: best mean dev accuracy at learning rate 0.03; within 2 pp of it: 0.03 (of 0.01, 0.03, "
            "0.1, 0.3).") in lrs
    assert "Every learning rate here ran under one seed, so there are no intervals" in lrs
    assert "over-represent good learning rates" in section
    assert result.summary.set_index("arm").loc[RES, "lr"] == pytest.approx(0.03)
    # the report names the sampler that actually ran (4 trials in rounds of 4: TPE never started)
    assert ("Search: all 4 proposals random (TPE would need 2 results first), rounds of 4, sampler seed 0; "
            "4 tuning trials per arm") in md


def test_partial_ci_table_cells_never_print_nan(tmp_path):
    trials = [{"arm": RES, "seed": 0, "test_acc": 0.9}, {"arm": PLAIN, "seed": 0, "test_acc": 0.8}]
    result = analyze(build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1])), figures=False)
    md = result.report.read_text()
    assert "nan" not in md.lower().replace("n/a", "")
    assert "1 seed pair(s): a paired comparison needs at least 2" in md
    assert pd.read_csv(result.comparisons_csv).loc[0, "verdict"] == "untested"


@pytest.mark.slow  # a second or more of 2 cores
def test_no_figures_writes_the_same_tables_and_report_and_says_the_figures_were_not_drawn(tmp_path):
    from typer.testing import CliRunner

    from ablate.cli.app import app

    run = paired_run(tmp_path, [198, 199, 199], [179, 188, 197])
    drawn = analyze(run, tmp_path / "drawn")
    plain = analyze(run, tmp_path / "drawn-again", figures=False)
    assert drawn.figures and not plain.figures
    assert set(plain.skipped) == set(drawn.figures) | set(drawn.skipped)
    assert all(plain.skipped[name] == "not drawn: analyze was asked for no figures (--no-figures)" for name in drawn.figures)
    for name in ("summary_csv", "summary_tex", "comparisons_csv", "methods", "references"):
        assert getattr(plain, name).read_text() == getattr(drawn, name).read_text(), name
    md, md_drawn = plain.report.read_text(), drawn.report.read_text()
    assert md.split("## Figures")[0] == md_drawn.split("## Figures")[0]
    assert "![" not in md and "test_accuracy: not drawn: analyze was asked for no figures" in md
    assert "<img" not in plain.html.read_text() and "<img" in drawn.html.read_text()
    # into the folder of a drawn analysis: its figures do not outlive it
    result = CliRunner().invoke(app, ["analyze", str(run), "--out", str(tmp_path / "drawn"), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "drawn" / "figures").glob("*.p*"))
    assert "figures: not drawn (--no-figures)" in result.output and "skipped test_accuracy" not in result.output
