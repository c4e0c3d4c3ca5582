"""Defects of the report found in issue 17 (item 5), each on a constructed run folder whose right answer is known:
power at 1-3 degrees of freedom, the depth rule that cannot fire, intervals past what is possible, a linear trend
for a non-monotone effect, the methods' machines and checkpoint wording, the figures' markers and lines, the lead
report.md and report.html share, and citations in report.html."""
from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ablate.analysis import analyze
from ablate.analysis.figures import arms as F
from ablate.analysis.statistics.compare import compare
from ablate.analysis.statistics.factorial import factorial
from ablate.analysis.text.factorial_report import answer_lines, effects_figure
from ablate.analysis.figures.tuning import tuning_landscape
from ablate.analysis.text.sections import depth_lines
from ablate.analysis.statistics.summary import summarize
from ablate.analysis.load import load_curves, load_run
from ablate.analysis.text.methods import methods
from ablate.analysis.statistics.power import seeds_for_power, t_test_power
from helpers.runs import BASE, build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"
CIFAR = {**BASE, "family": "cifar", "shortcut": "identity"}


# --- seeds for power ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, d", [(2, 30.0), (2, 100.0), (3, 40.0), (4, 25.0), (10, 10.0), (34, 2.0)])
def test_power_where_scipys_noncentral_t_gives_nan_is_what_a_simulation_finds(n, d):
    crit = st.t.ppf(0.975, n - 1)
    nc = d * math.sqrt(n)
    raw = st.nct.sf(crit, n - 1, nc) + st.nct.cdf(-crit, n - 1, nc)
    power = t_test_power(n, d, 1.0)
    assert math.isfinite(power) and 0 <= power <= 1
    x = np.random.default_rng(0).normal(d, 1.0, size=(200_000, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    assert power == pytest.approx(np.mean(np.abs(t) > crit), abs=0.004)
    if n == 2 and d == 30.0:
        assert math.isnan(raw)  # the case of the issue: scipy's answer, which read as "power reached"


def test_the_seeds_power_needs_are_never_nan_and_grow_with_the_spread():
    for sd in np.geomspace(1e-4, 0.5, 40):
        need = seeds_for_power(0.30, sd, n_observed=2)
        assert need.n is None or (need.n >= 2 and math.isfinite(need.power) and need.power >= 0.8)
    assert seeds_for_power(0.30, 0.01, 2).n == 2


def paired(tmp_path, name, res, plain, doc=None):
    trials = [{"arm": arm, "seed": s, "test_acc": acc} for s, (x, y) in enumerate(zip(res, plain))
              for arm, acc in ((RES, x), (PLAIN, y))]
    return build_run(tmp_path / name, trials, doc or spec_doc(seeds=list(range(len(res)))))


def test_no_nan_in_the_report_and_the_lead_says_why_it_is_inconclusive_and_what_to_run(tmp_path):
    # two seeds, a large difference with a small spread: scipy's noncentral t gave NaN here ("2 seeds, nan %")
    result = analyze(paired(tmp_path, "two", [0.90, 0.905], [0.50, 0.503]))
    md, page = result.report.read_text(), result.html.read_text()
    assert not re.search(r"\bnan\b", md)  # how Python prints a NaN (the methods text may name "NaN")
    c = result.comparisons.iloc[0]
    # the paired t-test alone would need 2 pairs; the verdict's exact sign-flip test needs 6 that differ
    assert seeds_for_power(c["diff"], c["diff_sd"], 2).n == 2
    assert c["seeds_needed"] == 6 and c["power_method"] == "simulated verdict" and c["power_achieved"] >= 0.8
    lead = md[md.index("## At a glance"): md.index("## Completeness")]
    assert ("**inconclusive** because with 2 seed pairs that differ the exact sign-flip test cannot reach p < 0.05 "
            "(its smallest p is 2/2^2 = 0.5), so more seeds are needed. To detect 40.1 pp with 80 % power its verdict "
            "needs about 6 seed pairs at the SD seen here: run the study again with `seeds: [0, 1, 2, 3, 4, 5]` in "
            "the spec.") in lead
    assert "run the study again with <code>seeds: [0, 1, 2, 3, 4, 5]</code>" in page


# --- the depth rule ----------------------------------------------------------------------------------
def depth_run(tmp_path, plain_by_seed):
    depths = [20, 32, 44, 56]
    doc = spec_doc(base=CIFAR, seeds=[0, 1], factors={"depth": {"values": depths}, "residual": {"values": [True, False]}})
    trials = []
    for s, plain in enumerate(plain_by_seed):
        for d, acc in zip(depths, plain):
            trials.append({"arm": f"depth={d},residual=true", "seed": s, "test_acc": 0.9 + 0.005 * s})
            trials.append({"arm": f"depth={d},residual=false", "seed": s, "test_acc": acc})
    return build_run(tmp_path / "depth", trials, doc=doc)


def test_a_depth_rule_that_cannot_fire_says_cannot_be_assessed_and_what_the_data_show(tmp_path):
    # the smoke run: plain 53.2 -> 23.5 -> 22.7 -> 11.8 % on average, lower at every depth in both seeds
    run = load_run(depth_run(tmp_path, [(0.632, 0.285, 0.247, 0.138), (0.432, 0.185, 0.207, 0.098)]))
    section = "\n".join(depth_lines(run, summarize(run)))
    assert "does not degrade" not in section
    assert "The plain network: **cannot be assessed** by this rule: with 2 seeds the 95 % t-interval at depth 20" in section
    assert "at or below chance (10 %)" in section
    assert ("What the data show: mean test accuracy 53.2 % (depth 20) → 23.5 % (depth 32) → 22.7 % (depth 44) → "
            "11.8 % (depth 56); seeds scoring lower than at depth 20 (same seed): depth 32: 2 of 2; depth 44: 2 of 2; "
            "depth 56: 2 of 2.") in section


def test_a_depth_rule_that_can_fire_still_finds_the_degradation(tmp_path):
    run = load_run(depth_run(tmp_path, [(0.90, 0.89, 0.80, 0.70), (0.91, 0.90, 0.81, 0.71)]))
    assert "starts to degrade at depth **44**" in "\n".join(depth_lines(run, summarize(run)))


# --- intervals past what is possible -----------------------------------------------------------------
def test_intervals_are_cut_at_what_is_possible_in_every_table_and_csv(tmp_path):
    trials = [{"arm": a, "seed": s, "test_acc": acc, "scored_train_acc": tr, "scored_train_loss": loss}
              for s, (acc, tr, loss) in enumerate([(0.60, 0.999, 0.0010), (0.20, 0.990, 0.0640)])
              for a in (RES, PLAIN)]
    result = analyze(build_run(tmp_path / "run", trials, doc=spec_doc(seeds=[0, 1])), figures=False)
    summary = pd.read_csv(result.summary_csv).set_index("arm")
    row = summary.loc[RES]
    half = lambda v: st.t.ppf(0.975, 1) * st.sem(v)
    assert row["scored_train_acc_ci_high"] == 1.0 and row["scored_train_acc_ci_cut"]
    assert row["scored_train_acc_ci_low"] == pytest.approx(0.9945 - half([0.999, 0.990]))
    assert row["scored_train_loss_ci_low"] == 0.0 and row["scored_train_loss_ci_cut"]
    assert row["test_acc_ci_low"] == 0.0 and row["test_acc_ci_high"] == 1.0 and row["test_acc_ci_cut"]
    md = result.report.read_text()
    table = next(l for l in md.splitlines() if l.startswith(f"| {RES} |"))
    assert "| 40.0 [0.0, 100.0]† |" in table and "| 99.4 [93.7, 100.0]† |" in table and "| 0.0325 [0.0000, 0.4327]† |" in table
    assert "±" not in table and "†: the 95 % t-interval reached past what is possible" in md
    assert "$^\\dagger$" in result.summary_tex.read_text() and "†: the 95 % t-interval" in result.table
    for csv in (result.summary_csv, result.comparisons_csv):
        frame = pd.read_csv(csv)
        for col in [c for c in frame.columns if c.endswith("_ci_low") and not c.startswith(("diff", "image"))]:
            assert (frame[col].dropna() >= 0).all(), col
        for col in [c for c in frame.columns if c.endswith("_ci_high") and "loss" not in c and not c.startswith(("diff", "image"))]:
            assert (frame[col].dropna() <= 1).all(), col


def test_a_diagnostics_correlation_interval_is_cut_at_one(tmp_path):
    from ablate.analysis.text.diagnostics_report import diagnostics_lines
    from ablate.probes.diagnostics import Diagnostics

    run = load_run(paired(tmp_path, "run", [0.9, 0.91, 0.92], [0.8, 0.81, 0.82]))
    shattered = pd.DataFrame([{"trial_id": f"t{s}{a}", "arm": a, "seed": s, "lag": lag, "autocorrelation": v}
                              for a in (RES, PLAIN) for s, r1 in enumerate((0.99, 0.85, 0.92))
                              for lag, v in ((0, 1.0), (1, r1))])
    empty = pd.DataFrame()
    diag = Diagnostics(empty, empty, empty, shattered, empty, empty, pd.DataFrame(columns=["arm", "diagnostic",
                                                                                            "trials", "seconds"]))
    text = "\n".join(diagnostics_lines(run, diag))
    low = np.mean([0.99, 0.85, 0.92]) - st.t.ppf(0.975, 2) * st.sem([0.99, 0.85, 0.92])
    assert f"lag-1 autocorrelation 0.92 [{low:.3g}, 1]† (n = 3)" in text
    assert "†: the 95 % t-interval passed what the quantity can be" in text


# --- a linear trend for a non-monotone effect --------------------------------------------------------
def lr_grid_run(tmp_path, effects):
    lrs = [0.01, 0.03, 0.085, 0.25]
    doc = spec_doc(seeds=[0, 1, 2], grid={"lr": lrs})
    trials = []
    for s in range(3):
        for lr, e in zip(lrs, effects):
            trials.append({"arm": RES, "seed": s, "params": {"lr": lr}, "test_acc": 0.35 + e + 0.01 * (s - 1),
                           "best_dev_acc": 0.5})
            trials.append({"arm": PLAIN, "seed": s, "params": {"lr": lr}, "test_acc": 0.35, "best_dev_acc": 0.5})
    return build_run(tmp_path / "grid", trials, doc=doc)


def test_a_non_monotone_effect_gets_no_bold_trend_but_its_per_level_effects(tmp_path):
    # the numbers: residual minus plain +13.8, +35.2, +58.2, +27.5 pp at lr 0.01, 0.03, 0.085, 0.25
    run = load_run(lr_grid_run(tmp_path, [0.138, 0.352, 0.582, 0.275]))
    fact = factorial(run)
    answer = "\n".join(answer_lines(run, fact.design, fact.effects, fact.interactions))
    assert "per tenfold increase of lr**" not in answer
    assert ("is not monotone in lr: +13.8 / +35.2 / +58.2 / +27.5 pp at lr 0.01 / 0.03 / 0.085 / 0.25; a straight "
            "line does not describe it, so no trend is stated") in answer
    trend = fact.interactions[fact.interactions["kind"] == "linear trend"].iloc[0]
    assert not trend["monotone"]
    assert "the linear trend" not in answer  # nor is it among what the data support
    with F.theme():
        fig = effects_figure(run, fact.design, fact.effects, fact.interactions)
    assert any("not monotone in lr, so no linear trend is drawn" in n for n in F.notes(fig))
    assert not [l for l in fig.axes[0].get_lines() if l.get_linestyle() == "--"]


def test_a_monotone_effect_keeps_its_trend(tmp_path):
    run = load_run(lr_grid_run(tmp_path, [0.10, 0.20, 0.30, 0.40]))
    fact = factorial(run)
    assert "pp per tenfold increase of lr**" in "\n".join(answer_lines(run, fact.design, fact.effects, fact.interactions))
    assert fact.interactions[fact.interactions["kind"] == "linear trend"].iloc[0]["monotone"]


# --- methods -----------------------------------------------------------------------------------------
def test_methods_count_machines_not_ray_nodes_and_say_the_best_dev_checkpoint_is_scored(tmp_path):
    doc = spec_doc(seeds=[0, 1], search={"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                                         "trials": 2, "sampler_seed": 0})
    # one machine, resumed once: Ray gave the trials of each session another node id
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "best_dev_acc": 0.8, "node": "n1",
               "host": "box"} for a in (RES, PLAIN) for lr in (0.01, 0.1)]
    trials += [{"arm": a, "seed": s, "params": {"lr": 0.01}, "test_acc": 0.9, "node": f"n{s + 1}", "host": "box"}
               for a in (RES, PLAIN) for s in (0, 1)]
    manifest = {"host": "box"}
    run = load_run(build_run(tmp_path / "run", trials, doc, manifest, resumes=[{"started_at": "2026-01-02T10:00:00+0000"}]))
    text = methods(run, compare(run)).text
    assert "on one machine" in text and "Ray nodes" not in text
    assert "without early stopping" not in text
    assert "the checkpoint with the best validation accuracy was selected and scored on the test set" in text
    two = load_run(build_run(tmp_path / "two", [{**t, "host": f"box{t['seed'] % 2}"} for t in trials], doc, manifest))
    assert "on 2 machines" in methods(two, compare(two)).text


def test_report_html_renders_citations_as_text(tmp_path):
    result = analyze(paired(tmp_path, "run", [0.9, 0.91, 0.93], [0.8, 0.82, 0.81]))
    page = result.html.read_text()
    methods_html = page[page.index('<p class="methods">'): page.index("</ol>")]
    assert "[@" not in methods_html and "(He et al. 2016a)" in methods_html
    assert "[@he2016deep]" in result.methods.read_text()  # methods.md keeps its pandoc keys


# --- the lead ------------------------------------------------------------------------------------------
def test_report_md_opens_with_the_lead_report_html_shows(tmp_path):
    result = analyze(paired(tmp_path, "run", [0.9, 0.91, 0.93, 0.92], [0.8, 0.82, 0.81, 0.80]))
    md = result.report.read_text()
    headings = re.findall(r"^## (.+)$", md, re.M)
    assert headings[0] == "At a glance"
    lead = md[md.index("## At a glance") + len("## At a glance"): md.index("## Completeness")].strip()
    page = result.html.read_text()
    glance = page[page.index('<h2 id="glance">'): page.index('<h2 id="run">')]
    plain = lambda s: " ".join(html.unescape(re.sub(r"<[^>]+>|[*`]", "", s)).split())
    for line in lead.splitlines():
        assert plain(line.lstrip("- ")) in plain(glance), line
    assert page.count("At a glance") == 2  # the nav link and the heading: the lead is not repeated below


# --- figures -------------------------------------------------------------------------------------------
def test_plain_arms_are_squares_and_dashed_whatever_their_order(tmp_path):
    doc = spec_doc(factors={"residual": {"values": [False, True]}})
    run = load_run(paired(tmp_path, "run", [0.9, 0.91, 0.93], [0.8, 0.82, 0.81], doc=doc))
    assert run.arm_names == [PLAIN, RES]
    styles = F.run_styles(run)
    assert (styles[PLAIN]["marker"], styles[PLAIN]["ls"]) == ("s", "--")
    assert (styles[RES]["marker"], styles[RES]["ls"]) == ("o", "-")
    with F.theme():
        fig = F.accuracy_per_arm(run)
    ax = fig.axes[0]
    markers = {tuple(np.round(c.get_offsets()[:, 1]).astype(int)): c.get_paths()[0].vertices.shape[0]
               for c in ax.collections if len(c.get_offsets()) == 3}
    assert len(markers) == 2 and markers[(0, 0, 0)] != markers[(1, 1, 1)]  # a square is not a circle
    chance = [l for l in ax.get_lines() if l.get_linestyle() == ":"]
    assert len(chance) == 1 and list(chance[0].get_xdata()) == [10.0, 10.0]


def test_the_tuning_figure_draws_failed_trials_and_separates_the_arms(tmp_path):
    doc = spec_doc(seeds=[0], search={"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.5}},
                                      "trials": 3, "sampler_seed": 0})
    tune = [(RES, 0.01, "ok", 0.95), (RES, 0.3, "diverged", None), (PLAIN, 0.01, "ok", 0.95), (PLAIN, 0.3, "diverged", 0.4)]
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "status": s, "best_dev_acc": dev, "steps": 80}
              for a, lr, s, dev in tune]
    trials += [{"arm": a, "seed": 0, "params": {"lr": 0.01}, "test_acc": 0.9} for a in (RES, PLAIN)]
    run = load_run(build_run(tmp_path / "run", trials, doc=doc))
    with F.theme():
        fig = tuning_landscape(run)
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    at_001 = points[np.isclose(points[:, 0], 0.01, rtol=0.05) & np.isclose(points[:, 1], 95.0)]
    assert len(at_001) >= 2 and len(set(np.round(at_001[:, 0], 8))) >= 2  # the two arms' markers are apart
    failed = points[np.isclose(points[:, 0], 0.3, rtol=0.05)]
    assert sorted(np.round(failed[:, 1], 6)) == [10.0, 40.0]  # at chance without a dev score, else at its best
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "diverged or failed (at its best dev accuracy, else chance)" in legend and "chance (10 %)" in legend


def test_dev_curve_ticks_sit_at_the_evaluation_steps(tmp_path):
    evals = list(range(15, 15 * 31, 15))  # 30 evaluations every 15 steps
    trials = [{"arm": a, "seed": s, "test_acc": 0.9,
               "curves": [{"step": t, "train_loss": 1.0, "dev_acc": 0.5} for t in evals]} for a in (RES, PLAIN)
              for s in (0, 1, 2)]
    run = load_run(build_run(tmp_path / "run", trials))
    with F.theme():
        fig = F.curves(run, load_curves(run))
    ticks = [int(t) for t in fig.axes[1].get_xticks()]
    assert set(ticks) <= set(evals) and ticks[-1] == evals[-1] and 4 <= len(ticks) <= 10


# --- gradient ratios -------------------------------------------------------------------------------------
def test_both_gradient_ratios_and_the_end_panel_says_when_learning_rates_differ(tmp_path):
    from ablate.analysis.figures import grad as G
    from ablate.analysis.load import load_grad_norms

    layers = [("stem.0", "stem", 40.0, 2.0), ("stages.0.0.conv1", "stages.0.0", 6.0, 3.0),
              ("stages.0.0.conv2", "stages.0.0", 2.0, 3.0), ("fc", "head", 0.4, 1.0)]
    grads = [{"step": step, "layer": n, "layer_index": i, "block": b, "kind": "layer", "grad_norm": g, "weight_norm": w}
             for step in (0, 80) for i, (n, b, g, w) in enumerate(layers)]
    doc = spec_doc(seeds=[0, 1], search={"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                                         "trials": 2, "sampler_seed": 0})
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "best_dev_acc": 0.8}
              for a, lr in ((RES, 0.03), (PLAIN, 0.085))]
    trials += [{"arm": a, "seed": s, "params": {"lr": lr}, "test_acc": 0.9, "grad_norms": grads}
               for a, lr in ((RES, 0.03), (PLAIN, 0.085)) for s in (0, 1)]
    run = load_run(build_run(tmp_path / "run", trials, doc=doc))
    ratios = G.grad_ratios(load_grad_norms(run)).iloc[0]
    assert ratios["ratio"] == pytest.approx(3.0) and ratios["rel_ratio"] == pytest.approx(3.0)
    assert ratios["stem_ratio"] == pytest.approx(100.0) and ratios["stem_rel_ratio"] == pytest.approx(20 / 0.4)
    with F.theme():
        fig = G.grad_profile(run, load_grad_norms(run))
    titles = [ax.get_title() for ax in fig.axes]
    assert any("end of training (step 80)\narms at different learning rates" in t for t in titles)
    assert ("The arms trained at different learning rates (residual=true: 0.03, residual=false: 0.085)"
            in " ".join(F.notes(fig)))
    assert sum("At initialisation, gradient norm of" in n for n in F.notes(fig)) == 2


# --- diagnostics and lesions in the report -----------------------------------------------------------
def test_diagnostics_report_the_hessian_the_unmatched_loss_the_branch_before_bn_and_lesions_per_type(tmp_path):
    from ablate.analysis.text.diagnostics_report import diagnostics_lines, lesions_k_figure
    from ablate.probes.diagnostics import Diagnostics

    run = load_run(paired(tmp_path, "run", [0.9, 0.91, 0.92], [0.3, 0.31, 0.32]))
    ids = {(a, s): f"t{s}{a[9]}" for a in (RES, PLAIN) for s in range(3)}
    sharp = pd.DataFrame([{"trial_id": ids[a, s], "arm": a, "seed": s, "curvature": c, "loss_at_0": loss,
                           "hessian_top": h} for s in range(3) for a, c, loss, h in
                          ((RES, 1.0 + s, 0.05, 10.0 + s), (PLAIN, 0.2, 2.1, 0.5 + 0.1 * s))])
    signal = pd.DataFrame([{"trial_id": ids[a, s], "arm": a, "seed": s, "block": "stages.0.0", "block_index": 0,
                            "residual": a == RES, "sq_mean": 0.1, "variance": 1.2, "branch_variance": 0.4}
                           for a in (RES, PLAIN) for s in range(3)])
    les = [{"trial_id": ids[a, s], "arm": a, "seed": s, "residual": a == RES, "block_type": kind, "n_blocks": n,
            "k": k, "sample": 0, "dropped": "", "accuracy": acc}
           for a in (RES, PLAIN) for s in range(3)
           for kind, n, k, acc in (("none", 9, 0, 0.9), ("same-shape", 7, 1, 0.85), ("same-shape", 7, 7, 0.5),
                                   ("downsampling", 2, 1, 0.4), ("downsampling", 2, 2, 0.2))]
    empty, cost = pd.DataFrame(), pd.DataFrame(columns=["arm", "diagnostic", "trials", "seconds"])
    diag = Diagnostics(pd.DataFrame({"arm": [RES]}), sharp, empty, empty, signal, pd.DataFrame(les), cost)
    text = "\n".join(diagnostics_lines(run, diag))
    h = [10.0, 11.0, 12.0]
    assert f"top Hessian eigenvalue 11 [{11 - st.t.ppf(0.975, 2) * st.sem(h):.3g}, " in text
    assert "not at matched training loss (`residual=true` 0.05 nats, `residual=false` 2.1 nats)" in text
    assert "they differ by a factor of 42" in text
    assert "`residual=false` still had a training loss of at least half the loss at chance (ln 10 = 2.30 nats)" in text
    assert "before the BatchNorm that closes the branch" in text and "pre-activation nets" in text
    assert ("- `residual=true`: intact 90.0 %; same-shape blocks (7): k = 1: 85.0 % [85.0, 85.0], k = 7: 50.0 % "
            "[50.0, 50.0]; downsampling blocks (2): k = 1: 40.0 % [40.0, 40.0], k = 2: 20.0 % [20.0, 20.0].") in text
    with F.theme():
        fig = lesions_k_figure(run, diag.lesions_k)
    assert [ax.get_title() for ax in fig.axes] == ["same-shape blocks (replaced by the identity)",
                                                   "downsampling blocks (replaced by a shortcut)"]


def test_lesion_recalibrate_needs_lesion(tmp_path):
    from typer.testing import CliRunner

    from ablate.cli.app import app

    run = paired(tmp_path, "run", [0.9, 0.91], [0.8, 0.82])
    result = CliRunner().invoke(app, ["analyze", str(run), "--lesion-recalibrate"])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --lesion-recalibrate adds to --lesion; pass both"
    assert not (run / "analysis").exists()


def test_the_lesion_report_says_whether_statistics_were_recalibrated(tmp_path):
    from ablate.analysis.text.lesion_report import lesion_lines

    run = load_run(paired(tmp_path, "run", [0.9, 0.91], [0.8, 0.82]))
    rows = [{"trial_id": f"t{a[9]}{s}", "arm": a, "seed": s, "residual": a == RES, "block": b, "block_index": i,
             "block_type": t, "replacement": r, "recalibrated": rec, "test_acc": 0.9, "lesioned_acc": acc,
             "drop": 0.9 - acc, "changed": 0.1}
            for a in (RES, PLAIN) for s in (0, 1)
            for b, i, t, r, rec, acc in (("none", -1, "none", "none", False, 0.9),
                                         ("stages.0.0", 0, "same-shape", "identity", True, 0.85),
                                         ("stages.1.0", 1, "downsampling", "projection", True, 0.5))]
    text = " ".join(lesion_lines(run, pd.DataFrame(rows)))
    assert "after each lesion the BatchNorm running statistics were re-estimated on the model's training images" in text
    assert "Same-shape blocks (replaced by their identity skip) and downsampling blocks" in text
    kept = " ".join(lesion_lines(run, pd.DataFrame([{**r, "recalibrated": False} for r in rows])))
    assert "the BatchNorm statistics stayed those of training, as in Veit et al. 2016" in kept
