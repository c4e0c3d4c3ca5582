"""The analysis of the search (issue 17, items 3 and 4) on constructed run folders in the shape the robust search
writes (each learning rate under several tuning seeds, optionally repeated): learning-rate curves with seed
intervals, the effect at each learning rate paired by seed, its range near the optima, collapsed runs with exact
binomial intervals, the expected best dev accuracy against the number of trials, and the repeats of the search."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ablate.analysis import analyze
from ablate.analysis.statistics.collapse import clopper_pearson, collapse
from ablate.analysis.load import load_run
from ablate.analysis.statistics.lr_effects import lr_effects
from ablate.analysis.statistics.compare import compare
from ablate.analysis.text.methods import methods
from ablate.analysis.text.sections import collapse_lines
from ablate.analysis.statistics.search_luck import LUCK_COLUMNS, search_luck
from ablate.analysis.statistics.tuning_budget import expected_best, expected_max, expected_max_curves, repeats
from ablate.analysis.text.tuning_sections import budget_section, lead_more, lr_section
from helpers.runs import build_run, spec_doc, tune_rows

RES, PLAIN = "residual=true", "residual=false"
SEARCH = {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}}, "trials": 4, "sampler_seed": 0}
# (tuning seed, best dev accuracy, test accuracy); None: diverged
RES_POINTS = {0.01: [(100, .80, .78), (101, .82, .80), (102, .81, .79)],
              0.03: [(100, .90, .88), (101, .91, .90), (102, .89, .88)],
              0.085: [(100, .895, .89), (101, .90, .885), (102, .89, .88)],
              0.25: [(100, .70, .69), (101, None, None), (102, .72, .70)]}
PLAIN_POINTS = {0.01: [(100, .66, .64), (101, .64, .63), (102, .65, .64)],
                0.03: [(100, .655, .60), (101, .65, .61), (102, .64, .58)],
                0.085: [(100, .30, .31), (101, .45, .44), (102, .20, .21)],
                0.25: [(100, None, None), (101, None, None), (102, .10, .10)]}
PLAIN_CONFIRM = (0.830, 0.795, 0.380)  # the plain arm: one confirm seed of three collapsed


def robust_run(tmp_path, res_points=RES_POINTS, plain_points=PLAIN_POINTS, seeds=(0, 1, 2), plain=PLAIN_CONFIRM):
    doc = spec_doc(seeds=list(seeds), search=SEARCH)
    trials = tune_rows(RES, res_points) + tune_rows(PLAIN, plain_points)
    trials += [{"arm": RES, "seed": s, "params": {"lr": 0.03}, "test_acc": 0.88 + 0.01 * s} for s in seeds]
    trials += [{"arm": PLAIN, "seed": s, "params": {"lr": 0.01}, "test_acc": a} for s, a in zip(seeds, plain)]
    return build_run(tmp_path / "run", trials, doc=doc)


def t_interval(x):
    x = np.asarray(x, dtype=float)
    return st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))


def test_the_search_line_counts_the_points_and_the_trials_they_ran(tmp_path):
    """A default run's report said "5 tuning trials per arm" for 5 points under 3 seeds each: 15 trials."""
    from ablate.analysis.context import search_line

    search = {"space": SEARCH["space"], "sampler": "grid", "points": 4, "tuning_seeds": 3}
    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "params": {"lr": 0.03}, "test_acc": 0.9}
                                       for arm in (RES, PLAIN) for s in (0, 1)], doc=spec_doc(seeds=[0, 1], search=search))
    line = search_line(load_run(run))
    assert "4 points per arm, each trained under 3 tuning seeds (12 tuning trials per arm)" in line
    assert "the best mean dev accuracy went to the confirm stage" in line
    # the grid is the spec's own everywhere; results and choices only on the same hardware and library versions
    assert "the points are the spec's own on any machine" in line and "choices on any machine" not in line
    assert "the same results, proposals and choices on the same hardware and library versions, interrupted or not" in line


def test_lr_curves_are_means_over_tuning_seeds_with_failures_at_chance(tmp_path):
    run = load_run(robust_run(tmp_path))
    lr = lr_effects(run)
    assert (lr.param, lr.stage, lr.metric, lr.seeds_per_point) == ("lr", "tune", "test", (3, 3))
    c = lr.curves.set_index(["arm", "lr"])
    row = c.loc[(RES, 0.03)]
    assert row["dev_mean"] == pytest.approx(0.90) and (row["dev_low"], row["dev_high"]) == pytest.approx(t_interval([.90, .91, .89]))
    assert (row["test_low"], row["test_high"]) == pytest.approx(t_interval([.88, .90, .88]))
    failed = c.loc[(RES, 0.25)]
    assert failed["failed"] == 1 and failed["dev_mean"] == pytest.approx(np.mean([.70, .10, .72]))  # at chance
    assert failed["dev_cut"] and failed["dev_low"] == 0.0  # the interval passes 0 % and is cut there
    # near-optimal: mean dev within 2 pp of the arm's best (residual: 0.90 at 0.03, 0.895 at 0.085)
    assert c.xs(RES)["near_optimal"].to_dict() == {0.01: False, 0.03: True, 0.085: True, 0.25: False}
    assert c.xs(PLAIN)["near_optimal"].to_dict() == {0.01: True, 0.03: True, 0.085: False, 0.25: False}
    assert c.xs(RES)["chosen"].to_dict() == {0.01: False, 0.03: True, 0.085: False, 0.25: False}


def test_the_effect_at_each_learning_rate_is_paired_by_tuning_seed(tmp_path):
    run = load_run(robust_run(tmp_path))
    e = lr_effects(run).effects.set_index("lr")
    d = np.array([.88, .90, .88]) - np.array([.60, .61, .58])
    assert e.loc[0.03, "paired"] and e.loc[0.03, "n_pairs"] == 3 and e.loc[0.03, "seeds"] == "100 101 102"
    assert e.loc[0.03, "diff"] == pytest.approx(d.mean())
    assert (e.loc[0.03, "ci_low"], e.loc[0.03, "ci_high"]) == pytest.approx(t_interval(d))
    assert e.loc[0.03, "p_sign_flip"] == pytest.approx(0.25)
    # at 0.25 the failed runs count at chance on both sides
    assert e.loc[0.25, "diff"] == pytest.approx(np.mean(np.array([.69, .10, .70]) - np.array([.10, .10, .10])))


def test_arms_without_shared_seeds_are_compared_unpaired_and_say_so(tmp_path):
    shifted = {lr: [(s + 10, dev, test) for s, dev, test in runs] for lr, runs in PLAIN_POINTS.items()}
    run = load_run(robust_run(tmp_path, plain_points=shifted))
    lr = lr_effects(run)
    e = lr.effects.set_index("lr").loc[0.01]
    a, b = np.array([.78, .80, .79]), np.array([.64, .63, .64])
    se = np.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3)
    df = se ** 4 / ((a.var(ddof=1) / 3) ** 2 / 2 + (b.var(ddof=1) / 3) ** 2 / 2)
    half = st.t.ppf(0.975, df) * se
    assert not e["paired"] and e["n_pairs"] == 0
    assert (e["ci_low"], e["ci_high"]) == pytest.approx((a.mean() - b.mean() - half, a.mean() - b.mean() + half))
    assert "| 0.01 | not paired (3 vs 3 runs, no shared seed) |" in "\n".join(lr_section(run, lr, compare(run)))


@pytest.mark.slow  # a second or more of 2 cores
def test_the_report_gives_the_curves_the_per_lr_effects_and_the_range_near_the_optima(tmp_path):
    result = analyze(robust_run(tmp_path))
    md = result.report.read_text()
    section = md[md.index("## Learning rates"): md.index("## Tuning budget")]
    assert "mean and 95 % t-interval over the seeds that ran it (3 runs per learning rate)" in section
    assert "| `residual=true` | 0.03 | 3 | 0 | 90.0 ± 2.5 | 88.7 ± 2.9 | chosen, best mean dev |" in section
    assert "| `residual=true` | `residual=false` | 0.03 | 3 pairs | +29.0 |" in section
    # near-optimal: residual 0.03 and 0.085, plain 0.01 and 0.03; test means 88.7, 88.5 against 63.7, 59.7
    res = {0.03: np.mean([.88, .90, .88]), 0.085: np.mean([.89, .885, .88])}
    plain = {0.01: np.mean([.64, .63, .64]), 0.03: np.mean([.60, .61, .58])}
    diffs = [100 * (a - b) for a in res.values() for b in plain.values()]
    low, high = min(diffs), max(diffs)
    sentence = (f"`residual=true` minus `residual=false` over the learning rates within 2 pp of each arm's best mean dev "
                f"accuracy (`residual=true`: 0.03, 0.085; `residual=false`: 0.01, 0.03): from {low:+.1f} to {high:+.1f} pp "
                "(at the configurations the confirm stage ran:")
    assert sentence in section
    lead = md[md.index("## At a glance"): md.index("## Completeness")]
    luck = search_luck(load_run(result.run_dir)).iloc[0]
    # the search's luck stands beside the effect, apart from its interval
    assert sentence in lead and (f"seed pairs, confirm stage; search luck ±{luck['luck_sd_pp']:.1f} pp, SD over 10,000 "
                                 "replayed searches, not covered by the interval)") in lead
    assert "not measured" not in lead
    frame = pd.read_csv(result.out_dir / "lr_curves.csv")
    assert len(frame) == 8 and {"dev_mean", "test_low", "near_optimal", "chosen"} <= set(frame.columns)
    assert len(pd.read_csv(result.out_dir / "lr_effects.csv")) == 4
    assert pd.read_csv(result.out_dir / "search_luck.csv").columns.tolist() == LUCK_COLUMNS
    assert {"lr_curves", "expected_max"} <= set(result.figures)


def test_collapse_rate_with_an_exact_binomial_interval(tmp_path):
    run = load_run(robust_run(tmp_path))
    table = collapse(run).set_index("arm")
    plain = table.loc[PLAIN]
    assert plain["median"] == pytest.approx(0.795) and plain["threshold"] == pytest.approx(0.1 + (0.795 - 0.1) / 2)
    assert (plain["collapsed"], plain["runs"], plain["seeds_collapsed"]) == (1, 3, "2")
    ci = st.binomtest(1, 3).proportion_ci(method="exact")
    assert (plain["rate_low"], plain["rate_high"]) == pytest.approx((ci.low, ci.high))
    assert plain["kept_mean"] == pytest.approx(np.mean([0.830, 0.795]))
    assert table.loc[RES, "collapsed"] == 0 and table.loc[RES, "rate_high"] == pytest.approx(1 - 0.025 ** (1 / 3))
    assert all(np.isnan(clopper_pearson(0, 0)))  # no runs, no share
    md = "\n".join(collapse_lines(run, collapse(run)))
    assert "| `residual=false` | 3 | 1 | 33 % (1–91 %) | 44.8 % | 79.5 % | 81.2 [" in md
    assert "- `residual=false`: seed(s) 2 collapsed." in md


def test_a_diverged_confirm_run_counts_as_collapsed(tmp_path):
    run = robust_run(tmp_path)
    from ablate.run_folder.registry import append_registry, read_registry
    row = next(r for r in read_registry(run) if r["stage"] == "confirm" and r["arm"] == RES and r["seed"] == 2)
    metrics = run / "trials" / row["trial_id"] / "metrics.json"  # the trial ran again and diverged
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "status": "diverged", "test_acc": None}))
    append_registry(run, {**row, "status": "diverged", "test_acc": None})
    table = collapse(load_run(run)).set_index("arm")
    assert (table.loc[RES, "collapsed"], table.loc[RES, "failed"], table.loc[RES, "seeds_collapsed"]) == (1, 1, "2")


@pytest.mark.parametrize("values", [[0.5, 0.9], [0.2, 0.4, 0.4, 0.9], [0.7, 0.1, 0.3], [0.3, 0.8, 0.1, 0.6, 0.6, 0.95]])
def test_expected_max_is_the_exact_mean_of_the_best_of_every_n_subset(values):
    """Tang et al.'s estimator, against brute force: every set of n of the N values, drawn without replacement."""
    big_n = len(values)
    mean, sd = expected_best(values)
    for n in range(1, big_n + 1):
        best = [max(subset) for subset in itertools.combinations(values, n)]  # every n-subset, equally likely
        assert mean[n - 1] == pytest.approx(np.mean(best)) and expected_max(values)[n - 1] == pytest.approx(np.mean(best))
        assert sd[n - 1] == pytest.approx(np.std(best), abs=1e-9)  # population SD over the subsets
    assert mean[0] == pytest.approx(np.mean(values)) and mean[-1] == pytest.approx(max(values)) and sd[-1] == 0
    if big_n >= 3:  # Dodge et al.'s draws with replacement would give less: the same value can be drawn twice
        with_replacement = np.mean([max(d) for d in itertools.product(values, repeat=2)])
        assert with_replacement < mean[1]


def test_expected_max_follows_selections_order_not_the_values():
    """Ranked values (worst first as selection ranks them): the best of a set is the highest ranked, whatever its
    value, e.g. a point that ran to the end beats a higher-scoring one that halving stopped."""
    ranked = [0.2, 0.9, 0.5, 0.6]  # the 0.9 was stopped by halving: ranked below the two that ran to the end
    mean, _ = expected_best(ranked, ranked=True)
    for n in range(1, 5):
        chosen = [max(subset, key=ranked.index) for subset in itertools.combinations(ranked, n)]
        assert mean[n - 1] == pytest.approx(np.mean(chosen))
    assert mean[-1] == pytest.approx(0.6)


def test_the_tuning_budget_section_scores_points_by_their_seeds_mean_failures_at_zero(tmp_path):
    run = load_run(robust_run(tmp_path))
    curves = expected_max_curves(run)
    section = "\n".join(budget_section(run, curves, repeats(run), lr_effects(run)))
    # residual: 4 points, each the mean of its 3 seeds, the diverged seed counting 0 (as selection counts it)
    res = [np.mean([.80, .82, .81]), np.mean([.90, .91, .89]), np.mean([.895, .90, .89]), np.mean([.70, 0.0, .72])]
    mean, sd = expected_best(res)
    assert f"- `residual=true` (4 search points): n = 1: {100 * np.mean(res):.1f} % ± {100 * sd[0]:.1f}" in section
    assert f"n = 4: {100 * max(res):.1f} % ± 0.0" in section
    assert "`residual=true` is ahead at every budget from 1 to 4 points." in section
    assert "Tang et al. 2020's unbiased estimator" in section and "not a confidence interval" in section
    assert "bootstrap" not in section.replace("bootstrap bands of it cover poorly", "")
    assert "Repeats of the search: one search was run (the tuning rows carry no `repeat`)" in section
    assert len(curves) == 8 and set(curves["arm"]) == {RES, PLAIN}
    plain = curves[curves["arm"] == PLAIN].set_index("n")
    # plain at 0.25: two of three seeds diverged: (0 + 0 + 0.10) / 3, the worst point
    plain_scores = [np.mean([.66, .64, .65]), np.mean([.655, .65, .64]), np.mean([.30, .45, .20]), 0.10 / 3]
    assert plain["expected_max"].tolist() == pytest.approx(expected_best(plain_scores)[0].tolist())
    assert (plain["low"] >= min(plain_scores) - 1e-12).all() and (plain["high"] <= max(plain_scores) + 1e-12).all()
    text = methods(run, compare(run), budget=True)
    assert "[@dodge2019show]" in text.text and "[@tang2020showing]" in text.text
    assert "bootstrap band" not in text.text
    # one search, 3 seeds per point: its luck is replayed (Bouthillier et al. cited for it); no confirm run recorded a
    # dev accuracy, so there is no selection optimism to report
    assert "[@bouthillier2021accounting], as the standard deviation of the effect over 10,000 replays" in text.text
    assert "optimism" not in text.text
    assert "tang2020showing" in text.bib()
    assert "dodge2019show" not in methods(run, compare(run)).text  # cited only when the curves are reported


def repeated_run(tmp_path):
    """Three repeats of the search: repeat 0 and 2 choose lr 0.03 for the plain arm, repeat 1 chooses 0.01."""
    doc = spec_doc(seeds=[0, 1, 2], search=SEARCH)
    good, bad = (.90, .88), (.60, .58)
    trials = []
    for k, plain_best in enumerate((0.03, 0.01, 0.03)):
        runs = lambda dev_test: [(100 + s, dev_test[0] + 0.001 * s, dev_test[1]) for s in range(3)]
        trials += tune_rows(RES, {0.03: runs(good), 0.1: runs(bad)}, repeat=k, first_round=10 * k)
        trials += tune_rows(PLAIN, {plain_best: runs((.70, .68)), 0.3: runs((.30, .28))}, repeat=k,
                            first_round=10 * k + 5)
    confirm = {(RES, 0.03): (.90, .91, .92), (PLAIN, 0.03): (.70, .72, .71), (PLAIN, 0.01): (.60, .66, .63)}
    trials += [{"arm": a, "seed": s, "params": {"lr": lr}, "test_acc": acc} for (a, lr), accs in confirm.items()
               for s, acc in enumerate(accs)]
    return build_run(tmp_path / "run", trials, doc=doc)


def test_repeats_give_each_search_its_choice_and_its_effect(tmp_path):
    run = load_run(repeated_run(tmp_path))
    reps = repeats(run)
    assert reps.repeats == [0, 1, 2]
    assert [reps.choices[k][PLAIN]["lr"] for k in (0, 1, 2)] == [0.03, 0.01, 0.03]
    assert {reps.choices[k][RES]["lr"] for k in (0, 1, 2)} == {0.03}
    effects = reps.effects.set_index("repeat")["diff"]
    d03 = np.mean(np.array([.90, .91, .92]) - np.array([.70, .72, .71]))
    d01 = np.mean(np.array([.90, .91, .92]) - np.array([.60, .66, .63]))
    assert effects.tolist() == pytest.approx([d03, d01, d03])
    # the headline is the first search's choice: plain at 0.03, its 3 confirm runs only (not those of 0.01 too)
    assert run.selected[PLAIN]["lr"] == 0.03 and len(run.reported[run.reported["arm"] == PLAIN]) == 3
    c = compare(run).iloc[0]
    assert c["n_pairs"] == 3 and c["diff"] == pytest.approx(d03)
    lr = lr_effects(run)
    md = "\n".join(budget_section(run, expected_max_curves(run), reps, lr))
    assert "the search was repeated 3 times (repeats 0, 1, 2)" in md
    assert "The Results and the lead's first sentences are those of repeat 0's choice." in md
    assert "- `residual=false`: lr chosen per repeat: 0.03, 0.01, 0.03 (from 0.01 to 0.03)." in md
    lead = "\n".join(lead_more(run, lr, reps, compare(run)))
    assert (f"Across 3 repeats of the search, `residual=true` minus `residual=false` ranged from {100 * d03:+.1f} to "
            f"{100 * d01:+.1f} pp.") in lead
    assert "[@bouthillier2021accounting]" in methods(run, compare(run), budget=True, repeated=True).text


def test_an_older_run_with_one_seed_per_lr_says_what_it_cannot_show(tmp_path):
    doc = spec_doc(seeds=[0, 1], search=SEARCH)
    tune = [(RES, 0.013, 0.8), (RES, 0.05, 0.9), (PLAIN, 0.021, 0.7), (PLAIN, 0.2, 0.3)]  # TPE: no shared lr
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "best_dev_acc": dev, "test_acc": dev}
              for a, lr, dev in tune]
    trials += [{"arm": a, "seed": s, "params": {"lr": lr}, "test_acc": 0.8 + 0.01 * s}
               for a, lr in ((RES, 0.05), (PLAIN, 0.021)) for s in (0, 1)]
    run = load_run(build_run(tmp_path / "run", trials, doc=doc))
    section = "\n".join(lr_section(run, lr_effects(run), compare(run)))
    assert "Every learning rate here ran under one seed, so there are no intervals" in section
    assert "No learning rate was run by both arms of a compared pair" in section
    assert "Each learning rate ran under one seed, so each point is a single run." in section
    assert "nan" not in section.lower().replace("n/a", "")


def test_the_lead_gives_as_many_lr_ranges_as_pairs_and_points_to_the_rest(tmp_path):
    """A depth smoke study (8 arms) led with 8 pairs and then 16 ranges: the ranges follow the pairs' limit."""
    from ablate.analysis.context import MAX_LEADS
    from helpers.runs import BASE

    depths = (20, 32, 44)
    arms = [f"depth={d},residual={r}" for d in depths for r in ("true", "false")]
    points = {lr: [(100 + i, 0.5 + lr + 0.01 * i, 0.5 + lr) for i in range(3)] for lr in (0.01, 0.1)}
    trials = [row for arm in arms for row in tune_rows(arm, points)]
    trials += [{"arm": arm, "seed": s, "params": {"lr": 0.1}, "test_acc": 0.6 + 0.01 * s} for arm in arms for s in (0, 1)]
    doc = spec_doc(base={**BASE, "family": "cifar", "depth": 20}, seeds=[0, 1], search=SEARCH,
                   factors={"depth": {"values": list(depths)}, "residual": {"values": [True, False]}})
    md = analyze(build_run(tmp_path / "run", trials, doc=doc), figures=False).report.read_text()
    lead = md[md.index("## At a glance"): md.index("## Completeness")]
    ranges = [line for line in lead.splitlines() if "within 2 pp of each arm's best mean dev accuracy" in line]
    assert len(ranges) == MAX_LEADS and "more pairs' ranges in the Learning rates section" in lead
