"""Enough seeds: the seeds each paired comparison's verdict needs for 80 % power (simulated with the verdict rule;
the noncentral-t power behind it checked against published sample sizes and a simulation), `analyze --min-effect`,
and the adaptive seed rule as the report states it."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from typer.testing import CliRunner

from ablate.analysis.statistics.compare import compare
from ablate.analysis.load import load_run
from ablate.analysis.statistics.power import add_power, seeds_for_power, t_test_power
from ablate.analysis.statistics.seed_design import simulate
from ablate.analysis.text.seeding import power_lines, rule_lines, rule_outcome
from ablate.cli.app import app
from helpers.runs import build_run, spec_doc

RES, PLAIN = "residual=true", "residual=false"


@pytest.mark.parametrize("d, n, power", [(0.5, 34, 0.8078), (0.8, 15, 0.8213), (1.0, 10, 0.8031)])
def test_seeds_for_power_gives_the_published_sample_sizes(d, n, power):
    # two-sided paired t-test, alpha 0.05, 80 % power: the sample sizes G*Power gives for these effect sizes d_z
    need = seeds_for_power(d * 0.02, 0.02, n_observed=3)
    assert need.n == n and need.power == pytest.approx(power, abs=5e-4) and need.reason is None
    assert t_test_power(n - 1, d, 1.0) < 0.8 <= t_test_power(n, d, 1.0)
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert need.normal_n == math.ceil((z / d) ** 2) < n  # the normal approximation is optimistic


def test_the_power_is_what_a_simulation_of_paired_t_tests_finds():
    rng = np.random.default_rng(0)
    n, d, sims = 15, 0.8, 40_000
    x = rng.normal(d, 1.0, size=(sims, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > st.t.ppf(0.975, n - 1))
    assert rejected == pytest.approx(t_test_power(n, d, 1.0), abs=0.008)


def test_what_cannot_be_estimated_says_why():
    assert "SD 0" in seeds_for_power(0.02, 0.0, 3).reason and seeds_for_power(0.02, 0.0, 3).n is None
    zero = seeds_for_power(1e-17, 0.01, 3)  # 0 up to float rounding
    assert zero.n is None and "observed mean difference is 0" in zero.reason and "--min-effect" in zero.reason
    assert "at least 2 seed pairs" in seeds_for_power(0.02, math.nan, 1).reason
    assert "more than 10,000" in seeds_for_power(1e-4, 0.05, 3).reason


def paired(tmp_path, name, a, b, doc=None):
    trials = [{"arm": arm, "seed": s, "test_acc": acc} for s, (x, y) in enumerate(zip(a, b))
              for arm, acc in ((RES, x), (PLAIN, y))]
    return build_run(tmp_path / name, trials, doc or spec_doc(seeds=list(range(len(a)))))


def test_the_report_says_cannot_be_estimated_for_no_spread_and_for_no_difference(tmp_path):
    for name, a, b, why in (("flat", [0.6, 0.7, 0.8], [0.5, 0.6, 0.7], "are all equal (SD 0)"),
                            ("even", [0.5, 0.6, 0.55], [0.6, 0.5, 0.55], "the observed mean difference is 0")):
        run = load_run(paired(tmp_path, name, a, b))
        lines = "\n".join(power_lines(run, add_power(compare(run))))
        row = next(line for line in lines.splitlines() if line.startswith(f"| `{RES}`"))
        assert "| cannot be estimated | n/a |" in row and why in lines, lines


@pytest.mark.slow
def test_the_smoke_reports_power_line_is_the_verdict_rules_answer(tuned_analysis, tuned_study):
    trials = pd.read_csv(tuned_study / "trials.csv")
    confirm = trials[trials["stage"] == "confirm"].pivot(index="seed", columns="arm", values="test_acc")
    d = 100 * (confirm[RES] - confirm[PLAIN])
    comp = pd.read_csv(tuned_analysis.comparisons_csv)
    assert comp.loc[0, "power_target"] == "observed"
    md = tuned_analysis.report.read_text()
    seeds = md[md.index("## Seeds"): md.index("## Checkpoints")]
    assert "Seeds: the spec's fixed list (0, 1, 2), 3 per arm in the confirm stage." in seeds
    assert "the verdict rule itself" in seeds and "noncentral-t" in seeds
    row = next(line for line in seeds.splitlines() if line.startswith(f"| `{RES}`"))
    assert f"| 3 | {d.mean():+.1f} | {d.std(ddof=1):.2f} | {abs(d.mean()):.1f} |" in row
    if not pd.isna(comp.loc[0, "seeds_needed"]):
        n = int(comp.loc[0, "seeds_needed"])
        assert f"| {n} |" in row and n >= 6  # the sign-flip test reaches 0.05 from 6 pairs that differ


def adaptive_run(tmp_path, name, half_width, seeds, maximum=5):
    # residual beats plain by 5, 8, 6, 7, 4 pp on seeds 0..4
    a, b = [0.90, 0.92, 0.91, 0.93, 0.89], [0.85, 0.84, 0.85, 0.86, 0.85]
    doc = spec_doc(seeds={"min": 2, "max": maximum, "half_width": half_width})
    return paired(tmp_path, name, a[:seeds], b[:seeds], doc)


def test_a_run_of_the_older_width_rule_still_analyses_and_says_the_rule_inflates(tmp_path):
    # with 2 seeds the 95 % interval is about ±19 pp, with 3 about ±3.8 pp: a ±5 pp rule stopped at 3 of up to 5
    run_dir = adaptive_run(tmp_path, "precision", 5.0, 3)
    out = tmp_path / "analysis"
    result = CliRunner().invoke(app, ["analyze", str(run_dir), "--out", str(out), "--min-effect", "1.5"])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    seeds = md[md.index("## Seeds"): md.index("## Checkpoints")]
    assert "`seeds: {min: 2, max: 5, half_width: 5, design: width, step: 1}`" in seeds
    assert "It stopped on precision at 3 seeds (0, 1, 2)" in seeds and "the widest ±3." in seeds
    assert f"`{RES}` 3 (3 scored); `{PLAIN}` 3 (3 scored)" in seeds
    assert "made with the width rule of an older ablate" in seeds and "inflates false positives" in seeds
    # 3 seeds were planned, not the rule's 5 candidates
    assert "Every planned trial has a result" in md and "seeds [0, 1, 2];" in md
    assert list(pd.read_csv(out / "summary.csv")["planned"]) == [3, 3]
    # --min-effect: the power figures ask about 1.5 pp, for the verdict rule itself (simulated)
    c = pd.read_csv(out / "comparisons.csv").loc[0]
    assert "calls a difference of 1.5 pp (named with `--min-effect`) *supported*" in seeds
    n, sd = int(c["seeds_needed"]), 100 * c["diff_sd"]
    assert c["power_method"] == "simulated verdict" and 6 <= n <= 16
    assert simulate(1.5, sd, n=n).supported_right >= 0.8 > simulate(1.5, sd, n=n - 1).supported_right
    assert re.search(rf"\| 1\.5 \| {n} \|", seeds)
    assert c["design_power"] == 0.0  # at most 5 seeds: the sign-flip test can never reach 0.05
    assert f"To detect 1.5 pp with 80 % power its verdict needs about {n} seed pairs" in (out / "report.html").read_text()


def test_a_two_stage_run_reports_steins_interval_and_the_designs_error_rates(tmp_path):
    a = [0.90, 0.92, 0.91, 0.93, 0.89, 0.91, 0.92, 0.90]
    b = [0.85, 0.84, 0.85, 0.86, 0.85, 0.85, 0.86, 0.84]  # differences 5, 8, 6, 7, 4, 6 | 6, 6 pp
    doc = spec_doc(seeds={"min": 6, "max": 8, "half_width": 1.0, "design": "two-stage"})
    run = load_run(paired(tmp_path, "stein", a, b, doc))
    assert run.seeds == list(range(8)) and run.seeds_final
    d = 100 * (np.array(a) - np.array(b))
    s0 = d[:6].std(ddof=1)
    c = compare(run).iloc[0]
    half = st.t.ppf(0.975, 5) * s0 / math.sqrt(8)
    assert (100 * c["diff_ci_low"], 100 * c["diff_ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert c["pilot"] == 6 and c["interval"] == "two-stage (pilot 6)"
    asked = math.ceil((st.t.ppf(0.975, 5) * s0 / 1.0) ** 2)
    text = " ".join(rule_lines(run))
    assert (f"The pilot (0, 1, 2, 3, 4, 5) gave a largest SD of the compared paired differences of {s0:.2f} pp, which "
            f"asked for {asked} seed pairs in all for a 95 % interval within ±1 pp (more than its maximum of 8)") in text
    assert "It stopped at its maximum of 8 seeds (0, 1, 2, 3, 4, 5, 6, 7)" in text
    assert "Stein's: the mean of all the seed pairs ± t_{0.975, 5}" in text
    assert re.search(r"with no true difference the verdict would be \*supported\* in \d\.\d % of runs", text)


def test_a_rule_that_ran_out_of_seeds_says_so(tmp_path):
    run = load_run(adaptive_run(tmp_path, "max", 0.5, 4, maximum=4))
    assert run.seeds == [0, 1, 2, 3] and run.seeds_final
    text = " ".join(rule_lines(run))
    assert "It stopped at its maximum of 4 seeds (0, 1, 2, 3) without reaching that precision" in text
    assert "wider than ±0.5 pp" in text


def test_an_unfinished_adaptive_run_plans_only_the_seeds_decided_so_far(tmp_path):
    run = load_run(adaptive_run(tmp_path, "running", 0.5, 3))  # the rule has asked for a 4th seed
    assert run.seeds == [0, 1, 2, 3] and not run.seeds_final
    assert run.missing_lines() == [f"confirm stage, arm {a}: 3 of 4 planned trials finished" for a in (RES, PLAIN)]
    assert "It has not decided yet" in " ".join(rule_lines(run))


@pytest.mark.parametrize("value", ["0", "-2", "nan", "100"])
def test_min_effect_must_be_a_positive_number_of_points(tmp_path, value):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "nowhere"), "--out", str(out), "--min-effect", value])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --min-effect must be") and not out.exists()


def test_the_rules_outcome_is_that_of_the_answers_confirm_runs_not_every_repeats(tmp_path):
    # three repeats of the search; repeat 1 chose plain lr 0.01, whose confirm runs spread widely: the rule decided
    # on repeat 0's choice (lr 0.03), and so must the report (it mixed the repeats: "max, widest ±5.99" for ±0.53)
    from helpers.runs import tune_rows

    search = {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}}, "trials": 4, "sampler_seed": 0}
    doc = spec_doc(seeds={"min": 6, "max": 6, "half_width": 1.0, "design": "two-stage"}, search=search)
    runs = lambda dev_test: [(100 + s, dev_test[0] + 0.001 * s, dev_test[1]) for s in range(3)]  # noqa: E731
    trials = []
    for k, plain_best in enumerate((0.03, 0.01, 0.03)):
        trials += tune_rows(RES, {0.03: runs((.90, .88)), 0.1: runs((.60, .58))}, repeat=k, first_round=10 * k)
        trials += tune_rows(PLAIN, {plain_best: runs((.70, .68)), 0.3: runs((.30, .28))}, repeat=k,
                            first_round=10 * k + 5)
    res = [.900, .905, .910, .900, .905, .910]
    plain = {0.03: [.700, .705, .705, .700, .710, .705], 0.01: [.50, .80, .40, .90, .30, .70]}
    trials += [{"arm": RES, "seed": s, "params": {"lr": 0.03}, "test_acc": a} for s, a in enumerate(res)]
    trials += [{"arm": PLAIN, "seed": s, "params": {"lr": lr}, "test_acc": a} for lr, accs in plain.items()
               for s, a in enumerate(accs)]
    run = load_run(build_run(tmp_path / "run", trials, doc=doc))
    out = rule_outcome(run)
    d = 100 * (np.array(res) - np.array(plain[0.03]))
    assert out.widest == pytest.approx(st.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6))
    assert out.per_arm == {RES: (6, 6), PLAIN: (6, 6)} and out.state == "planned"
