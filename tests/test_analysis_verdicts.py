"""Verdicts a reviewer can sign: failed runs count (intention to treat) and an arm that failed more is never called
higher; 'no meaningful difference' by two one-sided tests at a declared margin; the lead and the LaTeX caption say
which sources of variance the intervals cover; the paired-difference figure."""
from __future__ import annotations

import numpy as np
import pytest

from ablate.analysis import analyze
from ablate.analysis.statistics.compare import EQUIVALENT, INCONCLUSIVE, SUPPORTED, compare
from ablate.analysis.load import load_run
from helpers.runs import build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"


def run_of(tmp_path, name, res, plain, **doc):
    """res / plain: test accuracy per seed, None = diverged."""
    trials = []
    for s, (x, y) in enumerate(zip(res, plain)):
        for arm, acc in ((RES, x), (PLAIN, y)):
            trials.append({"arm": arm, "seed": s, "test_acc": acc} if acc is not None else
                          {"arm": arm, "seed": s, "status": "diverged"})
    return build_run(tmp_path / name, trials, spec_doc(**{"seeds": list(range(len(res))), **doc}))


def lead(result) -> str:
    md = result.report.read_text()
    return md[md.index("## At a glance"): md.index("## Completeness")]


def test_a_run_where_residual_diverged_in_4_of_12_seeds_is_not_called_higher(tmp_path):
    # the constructed run: the 8 remaining pairs give +2.25 pp [+0.77, +3.73], p = 0.023, which dropping the
    # failed seeds pairwise called "supported: residual is higher"
    plain = [0.90, 0.89, 0.91, 0.90, 0.88, 0.92, 0.90, 0.89, 0.91, 0.90, 0.89, 0.91]
    ups = [0.030, 0.010, 0.035, 0.020, 0.040, 0.005, 0.030, 0.010]
    res = [p + u for p, u in zip(plain[:8], ups)] + [None] * 4
    result = analyze(run_of(tmp_path, "diverged", res, plain), figures=False)
    c = result.comparisons.iloc[0]
    kept = np.array(ups)
    assert kept.mean() == pytest.approx(0.0225)  # what the pairwise drop reported
    itt = np.array(res[:8] + [0.1] * 4) - np.array(plain)  # failures at chance (10 classes)
    assert c["n_pairs"] == 12 and (c["failed_a"], c["failed_b"]) == (4, 0)
    assert c["diff"] == pytest.approx(itt.mean()) and c["mean_a"] == pytest.approx(np.mean(res[:8] + [0.1] * 4))
    assert c["verdict"] != SUPPORTED and "residual=true` is higher" not in c["why"]
    text = lead(result)
    assert ("**Failures differ between arms**: runs failed or diverged in `residual=true` in 4 of 12 seeds, "
            "`residual=false` in 0 of 12 seeds") in text
    assert text.index("Failures differ") < text.index("minus")  # said first, before the difference
    assert result.winner is None


def test_an_arm_ahead_on_average_that_failed_more_is_not_called_higher(tmp_path):
    plain = [0.50] * 12
    res = [0.80] * 11 + [None]  # one failure scored at chance, still far ahead on average
    result = analyze(run_of(tmp_path, "ahead", [r if r is None else r + 0.001 * i for i, r in enumerate(res)], plain),
                     figures=False)
    c = result.comparisons.iloc[0]
    assert c["diff"] > 0.2 and c["diff_ci_low"] > 0 and c["p_sign_flip"] < 0.05  # every test says higher
    assert c["verdict"] == INCONCLUSIVE and "failed in more seeds (1 of 12 against 0)" in c["why"]
    assert "Look at why the runs failed" in lead(result)


def test_equal_failures_do_not_block_a_supported_difference(tmp_path):
    plain = [0.50, 0.51, 0.52, 0.50, 0.49, 0.51, 0.50, None]
    res = [0.80, 0.82, 0.81, 0.80, 0.79, 0.83, 0.80, None]
    c = compare(load_run(run_of(tmp_path, "equal", res, plain))).iloc[0]
    assert (c["failed_a"], c["failed_b"]) == (1, 1) and c["verdict"] == SUPPORTED
    assert "failed seeds: 1 and 1, scored at chance" in c["why"]


def test_no_meaningful_difference_needs_the_90_percent_interval_inside_the_declared_margin(tmp_path):
    rng = np.random.default_rng(0)
    plain = list(0.90 + rng.normal(0, 0.01, 12))
    res = [p + d for p, d in zip(plain, [0.005, -0.005, 0.0, 0.005, 0.0, -0.005, 0.005, 0.0, -0.005, 0.0, 0.005, 0.0])]
    run = load_run(run_of(tmp_path, "same", res, plain, min_effect=1.0))
    assert run.study.min_effect == 1.0
    c = compare(run).iloc[0]
    assert -1.0 < 100 * c["eq_ci_low"] < 100 * c["eq_ci_high"] < 1.0
    assert c["verdict"] == EQUIVALENT and "inside ±1 pp, the declared margin" in c["why"]
    # at a margin the 90 % interval reaches past, it is inconclusive and says so
    narrow = compare(run, margin=0.2).iloc[0]
    assert narrow["verdict"] == INCONCLUSIVE and "declared margin of ±0.2 pp" in narrow["why"]
    # without a margin there is no equivalence test
    assert compare(load_run(run_of(tmp_path, "none", res, plain))).iloc[0]["verdict"] == INCONCLUSIVE


def test_the_lead_and_the_latex_caption_say_what_the_intervals_cover(tmp_path):
    res, plain = [0.93, 0.94, 0.92, 0.95, 0.93, 0.94], [0.90, 0.91, 0.90, 0.91, 0.89, 0.92]
    fixed = analyze(run_of(tmp_path, "fixed", res, plain), figures=False)
    first = lead(fixed).split("\n- ")[1]
    assert first.startswith("The intervals cover weight initialisation and the order of the training data only, on "
                            "one fixed draw of 1000 training, 200 dev and 200 test images")
    assert "`resample_data: false`" in first
    tex = fixed.summary_tex.read_text()
    assert "one fixed draw of 1000 training, 200 dev and 200 test images" in tex.replace("\n", " ")
    drawn = analyze(run_of(tmp_path, "drawn", res, plain, resample_data=True), figures=False)
    first = lead(drawn).split("\n- ")[1]
    assert first.startswith("The intervals cover the variation from weight initialisation, the order of the training "
                            "data, and the draw of the 1000 training, 200 dev and 200 test images")
    assert "the draw of the 1000 training" in drawn.summary_tex.read_text().replace("\n", " ")


def test_the_paired_difference_figure_is_drawn_with_its_caption(tmp_path):
    res, plain = [0.93, 0.94, None, 0.95], [0.90, 0.91, 0.90, 0.91]
    result = analyze(run_of(tmp_path, "fig", res, plain))
    assert [p.suffix for p in result.figures["paired_differences"]] == [".png", ".pdf"]
    assert "one dot per seed pair (a cross where a run failed" in result.captions["paired_differences"]
    assert "![paired_differences]" in result.report.read_text()


def test_methods_md_says_how_the_verdicts_were_made_and_cites_it(tmp_path):
    rng = np.random.default_rng(0)
    plain = list(0.90 + rng.normal(0, 0.01, 8))
    res = [p + 0.03 for p in plain[:7]] + [None]
    doc = dict(min_effect=1.0, seeds={"min": 6, "max": 8, "half_width": 1.0, "design": "two-stage"})
    result = analyze(run_of(tmp_path, "methods", res, plain, **doc), figures=False)
    methods, bib = result.methods.read_text(), result.references.read_text()
    assert "every run counted (a run that failed or diverged scored at chance, intention to treat [@gupta2011intention])" in methods
    assert "the mean paired difference with its 95 % Stein two-stage interval" in methods
    assert "Stein's two-stage design [@stein1945two], fixed before the study: a pilot of 6 seeds" in methods
    assert "the margin of ±1 percentage points declared before the study (two one-sided tests" in methods
    for key in ("gupta2011intention", "stein1945two", "schuirmann1987comparison", "lakens2017equivalence"):
        assert f"@{key}" in methods and key in bib
