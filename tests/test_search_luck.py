"""The search's luck and the selection's optimism (issue 24, item 1), the grid's methods paragraph (item 6): on
constructed run folders whose right answers are computed here independently (the replay's choice probabilities in
closed form, the optimism by hand), and on a real tiny grid study run through the command line."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as st

from ablate.analysis import analyze
from ablate.analysis.statistics.compare import compare
from ablate.analysis.context import search_line
from ablate.analysis.load import load_run
from ablate.analysis.text.methods import methods
from ablate.analysis.statistics.search_luck import (DRAWS, LUCK_COLUMNS, OPTIMISM_COLUMNS, TPE_CAVEAT, lucks, search_luck,
                                                    selection_optimism)
from ablate.analysis.text.search_luck_text import search_luck_lines
from ablate.analysis.statistics.search_points import chosen, choose_points, search_points
from ablate.engine.selection import best_params
from ablate.spec.study_spec import parse_study
from helpers.runs import build_run, spec_doc, tune_rows

RES, PLAIN = "residual=true", "residual=false"
GRID = {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.1}}, "sampler": "grid", "points": 2,
        "tuning_seeds": 4}
CHANCE = 0.1  # digits: 10 classes
# (tuning seed, best dev accuracy, test accuracy); None: diverged. Residual's lr 0.1 has the higher dev accuracy
# over the seeds that ran, but one of four diverged: selection scores it 0, so its score (0.80 + 0.82 + 0.78 + 0) / 4
# = 0.60 loses to lr 0.01's 0.63.
RES_POINTS = {0.01: [(100, .63, .70), (101, .65, .70), (102, .61, .70), (103, .63, .70)],
              0.1: [(100, .80, .75), (101, .82, .75), (102, .78, .75), (103, None, None)]}
PLAIN_POINTS = {0.01: [(100, .50, .55), (101, .52, .55), (102, .48, .55), (103, .50, .55)]}


def grid_run(tmp_path, res_points=RES_POINTS, plain_points=PLAIN_POINTS):
    trials = tune_rows(RES, res_points) + tune_rows(PLAIN, plain_points)
    trials += [{"arm": RES, "seed": s, "params": {"lr": 0.01}, "test_acc": t, "best_dev_acc": d}
               for s, (t, d) in enumerate([(.70, .62), (.71, .63), (.69, .61)])]
    trials += [{"arm": PLAIN, "seed": 0, "params": {"lr": 0.01}, "test_acc": .55, "best_dev_acc": .47},
               {"arm": PLAIN, "seed": 1, "params": {"lr": 0.01}, "test_acc": .56, "best_dev_acc": .49},
               {"arm": PLAIN, "seed": 2, "params": {"lr": 0.01}, "status": "diverged"}]
    return load_run(build_run(tmp_path / "run", trials, doc=spec_doc(search=GRID, seeds=[0, 1, 2])))


GRID_STEPS = 4000  # the numerical closed form's resolution of one dev accuracy (a value i / GRID_STEPS)


def _seed_pmf(mean: float, sd: float) -> np.ndarray:
    """One fresh tuning seed's dev accuracy as the replay draws it, normal(mean, sd) cut to [0, 1], on the grid i /
    GRID_STEPS (rounded to the nearest; the mass past 0 or 1 sits at 0 or 1)."""
    cdf = st.norm.cdf((np.arange(GRID_STEPS) + 0.5) / GRID_STEPS, mean, sd)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def choice_probabilities(points, sd, fail_value=0.0):
    """Numerical closed form of the replay's choice between the points of one arm (one or two, in tie order, the
    same seeds each): each point a tuple (seeds k, failure share, mean dev accuracy of the seeds that ran). A fresh
    search draws per point F ~ Binomial(k, share) failures scored `fail_value` (selection: 0) and k - F dev
    accuracies from the cut normal; its score is their mean; a point whose seeds all failed is never chosen; ties go
    to the first point. Returns (P(point j) ..., P(none))."""
    assert 1 <= len(points) <= 2 and len({k for k, _, _ in points}) == 1
    k = points[0][0]
    shift = round(fail_value * GRID_STEPS)
    sums = []  # per point and failure count F: (P(F), pmf of the sum of the k seeds' values on the grid)
    for _, share, mean in points:
        one, per_f = _seed_pmf(mean, sd), []
        for f in range(k + 1):
            pmf = np.array([1.0])
            for _ in range(k - f):
                pmf = np.convolve(pmf, one)
            pmf = np.concatenate([np.zeros(f * shift), pmf])
            per_f.append((st.binom.pmf(f, k, share), np.pad(pmf, (0, k * GRID_STEPS + 1 - pmf.size))))
        sums.append(per_f)
    prob = np.zeros(len(points) + 1)
    if len(points) == 1:
        prob[0], prob[1] = 1 - sums[0][k][0], sums[0][k][0]
        return prob
    for f1, (w1, pmf1) in enumerate(sums[0]):
        for f2, (w2, pmf2) in enumerate(sums[1]):
            w = w1 * w2
            if f1 == k and f2 == k:
                prob[2] += w
            elif f2 == k:
                prob[0] += w
            elif f1 == k:
                prob[1] += w
            else:
                first = float(pmf1 @ np.cumsum(pmf2))  # P(sum2 <= sum1): ties to the first point
                prob[0] += w * first
                prob[1] += w * (1 - first)
    return prob


def expected_luck(arms: dict, tests: dict, best: dict) -> tuple[float, float]:
    """SD and share off by > 1 pp of (effect at the chosen points - effect at the best ones), from each arm's choice
    probabilities (arms choose independently; searches where an arm chooses nothing are left out)."""
    a, b = list(arms)
    outcomes, weights = [], []
    for i, pa in enumerate(arms[a][:-1]):
        for j, pb in enumerate(arms[b][:-1]):
            outcomes.append((tests[a][i] - tests[b][j]) - (tests[a][best[a]] - tests[b][best[b]]))
            weights.append(pa * pb)
    d, w = np.array(outcomes), np.array(weights) / sum(weights)
    mean = w @ d
    return math.sqrt(w @ (d - mean) ** 2), float(w @ (np.abs(d) > 0.01 + 1e-12))


def test_the_replay_matches_the_closed_form_with_failures_scored_as_selection_scores_them(tmp_path):
    run = grid_run(tmp_path)
    (luck,) = lucks(run)
    # noise: pooled within-point SD over the stable points (residual 0.01, plain 0.01; residual 0.1 had a failure)
    devs = [np.array([.63, .65, .61, .63]), np.array([.50, .52, .48, .50])]
    sd = math.sqrt(sum(((x - x.mean()) ** 2).sum() for x in devs) / sum(len(x) - 1 for x in devs))
    assert (luck.noise.sd, luck.noise.points, luck.noise.df) == (pytest.approx(sd), 2, 6)
    # truth: residual's points in tie order (no dev loss recorded: the earlier point first), plain's one point
    res = choice_probabilities([(4, 0.0, .63), (4, 0.25, np.mean([.80, .82, .78]))], sd)
    plain = choice_probabilities([(4, 0.0, .50)], sd)
    tests = {RES: [.70, (3 * .75 + CHANCE) / 4], PLAIN: [.55]}  # a failed seed's test accuracy at chance
    want_sd, want_off = expected_luck({RES: res, PLAIN: plain}, tests, {RES: 0, PLAIN: 0})
    assert res[1] == pytest.approx(0.75 ** 4, abs=2e-3)  # lr 0.1 wins (almost) only when none of its 4 seeds fails
    assert luck.method == "replay" and luck.draws == DRAWS
    assert 100 * luck.sd == pytest.approx(100 * want_sd, abs=0.15)  # Monte Carlo: 10,000 searches
    tolerance = 4 * math.sqrt(want_off * (1 - want_off) / DRAWS)
    assert luck.off_share == pytest.approx(want_off, abs=tolerance)
    assert luck.best_effect == pytest.approx(.70 - .55)
    # had a failed seed counted at chance (0.625 instead of 0.60 with one failed), lr 0.1 would win more often, by
    # more than the tolerance: the test tells the two rules apart
    at_chance = choice_probabilities([(4, 0.0, .63), (4, 0.25, np.mean([.80, .82, .78]))], sd, fail_value=CHANCE)
    assert at_chance[1] - res[1] > 2 * tolerance
    frame = search_luck(run)
    assert frame.columns.tolist() == LUCK_COLUMNS
    row = frame.iloc[0]
    assert (row["arm_a"], row["arm_b"], row["luck_method"], row["luck_draws"]) == (RES, PLAIN, "replay", DRAWS)
    assert row["luck_sd_pp"] == pytest.approx(100 * luck.sd) and "TPE" not in row["luck_note"]


def test_a_large_search_is_replayed_in_blocks_with_the_same_law(tmp_path, monkeypatch):
    """MAX_CELLS bounds the memory of the replay: in blocks of 3 searches (7 cells over 2 points) it gives other
    draws, but of the same law (the closed form of the test above)."""
    import ablate.analysis.statistics.search_luck as luck_module

    run = grid_run(tmp_path)
    (whole,) = lucks(run)
    monkeypatch.setattr(luck_module, "MAX_CELLS", 7)
    (blocks,) = lucks(run)
    assert blocks.draws == whole.draws == DRAWS and blocks.sd != whole.sd
    res = choice_probabilities([(4, 0.0, .63), (4, 0.25, np.mean([.80, .82, .78]))], whole.noise.sd)
    want_sd, want_off = expected_luck({RES: res, PLAIN: np.array([1.0, 0.0])}, {RES: [.70, (3 * .75 + CHANCE) / 4],
                                                                                PLAIN: [.55]}, {RES: 0, PLAIN: 0})
    assert 100 * blocks.sd == pytest.approx(100 * want_sd, abs=0.15)
    assert blocks.off_share == pytest.approx(want_off, abs=4 * math.sqrt(want_off * (1 - want_off) / DRAWS))


def test_a_point_whose_seeds_all_failed_is_never_chosen_so_a_sure_choice_has_no_luck(tmp_path):
    failed = {0.01: RES_POINTS[0.01], 0.1: [(s, None, None) for s in range(100, 104)]}
    (luck,) = lucks(grid_run(tmp_path, res_points=failed))
    assert luck.method == "replay" and luck.sd == 0.0 and luck.off_share == 0.0


def test_the_replay_is_deterministic(tmp_path):
    run = grid_run(tmp_path)
    first, second = search_luck(run), search_luck(run)
    pd.testing.assert_frame_equal(first, second)
    assert search_luck_lines(run) == search_luck_lines(run)


def test_selection_optimism_is_the_chosen_points_tuning_score_minus_its_confirm_runs_dev_accuracy(tmp_path):
    """No simulation: residual's lr 0.01 scored 0.63 over its 4 tuning seeds, its confirm runs reached 0.62; plain's
    scored 0.50 and its confirm runs (0.47 + 0.49 + a diverged one at 0) / 3."""
    run = grid_run(tmp_path)
    table = selection_optimism(run).set_index("arm")
    assert list(selection_optimism(run).columns) == OPTIMISM_COLUMNS
    assert table.loc[RES].tolist() == pytest.approx([63.0, 62.0, 1.0, 4, 3])
    assert table.loc[PLAIN].tolist() == pytest.approx([50.0, (47 + 49) / 3, 50 - (47 + 49) / 3, 4, 3])
    lines = "\n".join(search_luck_lines(run))
    assert "| `residual=true` | lr = 0.01 | 63.0 | 4 | 62.0 | 3 | +1.0 |" in lines
    assert "| `residual=false` | lr = 0.01 | 50.0 | 4 | 32.0 | 3 | +18.0 |" in lines


@pytest.mark.slow  # a second or more of 2 cores
def test_the_report_writes_both_tables_and_says_what_was_replayed(tmp_path):
    run = grid_run(tmp_path)
    result = analyze(run.run_dir, figures=False)
    frame = pd.read_csv(result.out_dir / "search_luck.csv")
    assert frame.columns.tolist() == LUCK_COLUMNS and frame["luck_method"].tolist() == ["replay"]
    assert frame["luck_sd_pp"].iloc[0] == pytest.approx(search_luck(run)["luck_sd_pp"].iloc[0])
    assert pd.read_csv(result.out_dir / "selection_optimism.csv").columns.tolist() == OPTIMISM_COLUMNS
    md = result.report.read_text()
    section = md[md.index("## Tuning budget"):]
    assert "Measured by replaying the selection on this run's own tuning trials (a plug-in simulation)" in section
    assert f"{DRAWS:,} fresh searches (numpy generator seed 0) give every point 4 fresh tuning seeds" in section
    assert TPE_CAVEAT not in section  # a grid proposes nothing adaptively
    assert "Selection optimism:" in section
    lead = md[md.index("## At a glance"): md.index("## Completeness")]
    assert ("Selection optimism: the search's dev score of each chosen point minus the dev accuracy its confirm runs "
            "reached with fresh seeds: `residual=true` +1.0 pp, `residual=false` +18.0 pp") in lead
    # deterministic: the numbers recomputed now are the file's, to the last digit
    assert (result.out_dir / "search_luck.csv").read_text() == search_luck(load_run(run.run_dir)).to_csv(index=False)


def test_a_tpe_search_is_replayed_with_its_caveat_and_one_seed_per_point_is_not(tmp_path):
    tpe = {"space": GRID["space"], "trials": 2, "tuning_seeds": 4}
    trials = tune_rows(RES, RES_POINTS) + tune_rows(PLAIN, PLAIN_POINTS)
    trials += [{"arm": a, "seed": s, "params": {"lr": 0.01}, "test_acc": .6} for a in (RES, PLAIN) for s in (0, 1)]
    run = load_run(build_run(tmp_path / "tpe", trials, doc=spec_doc(search=tpe, seeds=[0, 1])))
    (luck,) = lucks(run)
    assert luck.method == "replay" and TPE_CAVEAT in luck.note
    assert f"Caveat: {TPE_CAVEAT}." in search_luck_lines(run)
    one = {"space": GRID["space"], "trials": 2}
    trials = [{"arm": a, "seed": 100, "stage": "tune", "params": {"lr": lr}, "best_dev_acc": d, "test_acc": d}
              for a in (RES, PLAIN) for lr, d in ((0.02, .6), (0.05, .7))]
    trials += [{"arm": a, "seed": s, "params": {"lr": 0.05}, "test_acc": .6} for a in (RES, PLAIN) for s in (0, 1)]
    single = load_run(build_run(tmp_path / "one", trials, doc=spec_doc(search=one, seeds=[0, 1])))
    row = search_luck(single).iloc[0]
    assert row["luck_method"] == "none" and "each search point ran under one tuning seed" in row["luck_note"]
    assert math.isnan(row["luck_sd_pp"]) and row["luck_draws"] == 0


def test_with_repeats_the_luck_is_the_sd_of_the_effect_over_the_repeats(tmp_path):
    from test_analysis_search import repeated_run

    run = load_run(repeated_run(tmp_path))
    d03 = np.mean(np.array([.90, .91, .92]) - np.array([.70, .72, .71]))
    d01 = np.mean(np.array([.90, .91, .92]) - np.array([.60, .66, .63]))
    row = search_luck(run).iloc[0]
    assert row["luck_method"] == "repeats" and row["luck_draws"] == 3
    assert row["luck_sd_pp"] == pytest.approx(100 * np.std([d03, d01, d03], ddof=1))
    assert row["luck_off_1pp_share"] == 0.5  # repeat 1 is 8 pp off repeat 0's answer, repeat 2 chose the same
    assert "not independent evidence" in row["luck_note"]


def test_a_study_without_a_search_has_no_luck_to_measure(tmp_path):
    trials = [{"arm": a, "seed": s, "test_acc": 0.5} for a in (RES, PLAIN) for s in (0, 1)]
    run = load_run(build_run(tmp_path / "fixed", trials, doc=spec_doc(seeds=[0, 1])))
    row = search_luck(run).iloc[0]
    assert row["luck_method"] == "none" and row["luck_note"].startswith("no search")
    assert selection_optimism(run).empty and search_luck_lines(run) == []


def _row(arm, lr, seed, acc, status="ok", loss=None, index=0, round_=0):
    return {"stage": "tune", "arm": arm, "params": {"lr": lr}, "seed": seed, "round": round_, "index": index,
            "status": status, "best_dev_acc": acc, "best_dev_loss": loss, "test_acc": acc}


@pytest.mark.parametrize("rows", [
    [_row("a", 0.1, 100, 0.95, index=2), _row("a", 0.1, 101, 0.40, index=2), _row("a", 0.03, 100, 0.7, index=1),
     _row("a", 0.03, 101, 0.66, index=1)],
    [_row("a", 0.3, 100, 0.99, index=2), _row("a", 0.3, 101, 0.9, "diverged", index=2),
     _row("a", 0.01, 100, 0.45, index=0), _row("a", 0.01, 101, 0.45, index=0)],
    [_row("a", 0.1, 100, 0.5, loss=0.9, index=2), _row("a", 0.03, 100, 0.5, loss=0.7, index=1),
     _row("a", 0.01, 100, 0.5, loss=0.7, index=0)],
    [_row("a", 0.1, 100, 0.9, "stopped", index=2), _row("a", 0.01, 100, 0.3, index=0),
     _row("a", 0.2, 100, 0.9, "diverged", index=3)],
])
def test_the_shared_points_choose_what_the_engines_selection_chooses(rows):
    study = parse_study(spec_doc(search={**GRID, "points": 3}), source="t")
    points = search_points(study, rows)
    assert chosen(points)[("a", 0)].params == best_params(study, rows)["a"]
    # and the vectorised chooser, with the points in tie order, picks the same column in a search of these scores
    order = sorted(points, key=lambda p: (p.score.loss, p.order))
    complete = [p for p in order if p.complete]
    pick = choose_points(np.array([[p.score.acc for p in complete]]), np.array([[p.eligible for p in complete]]))
    if all(p.complete for p in points):
        assert complete[int(pick[0])].params == best_params(study, rows)["a"]


def test_the_search_line_claims_reproducibility_only_on_the_same_hardware(tmp_path):
    run = grid_run(tmp_path)
    line = search_line(run)
    assert "on any machine, interrupted or not" not in line and "choices on any machine" not in line
    assert "the same hardware and library versions, interrupted or not" in line
    assert "on another CPU model" in line and "nearly tie" in line


def test_methods_of_a_grid_study_name_the_grid_and_cite_no_tpe(tmp_path):
    run = grid_run(tmp_path)
    text = methods(run, compare(run), budget=True).text
    assert ("a fixed grid of 2 points per variant, the same for every variant (lr at 2 values evenly spaced on a log "
            "scale from 0.01 to 0.1 (0.01, 0.1)); each point trained under 4 tuning seeds (100, 101, 102, 103), 8 "
            "tuning trials per variant") in text
    assert "TPE" not in text and "bergstra2011algorithms" not in text and "startup" not in text
    assert "[@tang2020showing]" in text and "selection's optimism" in text
    tpe = {"space": GRID["space"], "trials": 4, "round": 2, "startup": 2, "tuning_seeds": 2}
    trials = [{"arm": a, "seed": s, "params": {"lr": 0.02}, "test_acc": 0.6} for a in (RES, PLAIN) for s in (0, 1)]
    tpe_run = load_run(build_run(tmp_path / "tpe", trials, doc=spec_doc(search=tpe, seeds=[0, 1])))
    tpe_text = methods(tpe_run, compare(tpe_run)).text
    assert "proposed by the TPE sampler [@bergstra2011algorithms]" in tpe_text and "fixed grid" not in tpe_text
    assert "4 points per variant" in tpe_text and "8 tuning trials per variant" in tpe_text


# A real tiny grid study through the command line: 2 learning rates x 2 tuning seeds per arm, 2 confirm seeds, 12
# trials of 32 steps on 8x8 digits (about a minute on 2 busy cores): enough training that the arms differ and the
# seeds spread, with residual's dev accuracy near 100 %, where the replay's cut at 1 matters.
REAL = {"description": "tiny residual vs plain, lr on a grid",
        "base": {"family": "cifar", "depth": 20, "dataset": "digits", "image_size": 8, "train_size": 512,
                 "dev_size": 128, "test_size": 128, "batch_size": 32, "epochs": 2, "eval_every": 4, "seed": 100},
        "factors": {"residual": {"values": [True, False]}},
        "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.05, "high": 0.2}}, "sampler": "grid",
                   "points": 2, "tuning_seeds": 2},
        "seeds": [0, 1]}


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    from helpers.studies import run_study

    return run_study(tmp_path_factory.mktemp("grid"), "grid", REAL)


@pytest.mark.slow
def test_a_real_grid_studys_luck_and_optimism_recompute_from_its_registry(grid_study):
    rows = [json.loads(line) for line in (grid_study / "trials.jsonl").read_text().splitlines()]
    rows = list({(r["stage"], r["arm"], r.get("round"), r.get("index"), r["seed"]): r for r in rows}.values())
    failed = lambda r: r["status"] in ("diverged", "error")  # noqa: E731
    value = lambda r: 0.0 if failed(r) else max(0.0, r["best_dev_acc"])  # noqa: E731  (selection's score of a seed)
    points = {arm: {} for arm in (RES, PLAIN)}
    for r in rows:
        if r["stage"] == "tune":
            points[r["arm"]].setdefault(r["params"]["lr"], []).append(r)
    run = load_run(grid_study)
    optimism = selection_optimism(run).set_index("arm")
    stable_ss, stable_df, probs, tests, best = 0.0, 0, {}, {}, {}
    for arm, by_lr in points.items():
        # selection, by hand: the highest mean over the seeds, ties to the lower mean dev loss, then the smaller lr
        order = sorted(by_lr, key=lambda lr: (np.mean([r["best_dev_loss"] for r in by_lr[lr]]), lr))
        pick = max(order, key=lambda lr: (np.mean([value(r) for r in by_lr[lr]]), -order.index(lr)))
        confirm = [value(r) for r in rows if r["stage"] == "confirm" and r["arm"] == arm]
        assert {r["params"]["lr"] for r in rows if r["stage"] == "confirm" and r["arm"] == arm} == {pick}
        assert optimism.loc[arm, "tuning_dev_pp"] == pytest.approx(100 * np.mean([value(r) for r in by_lr[pick]]))
        assert optimism.loc[arm, "confirm_dev_pp"] == pytest.approx(100 * np.mean(confirm))
        assert (optimism.loc[arm, "tuning_runs"], optimism.loc[arm, "confirm_runs"]) == (2, 2)
        # the stable points' spread, and each point as the replay takes it
        top = max(np.mean([value(r) for r in rs]) for rs in by_lr.values())
        floor = CHANCE + (top - CHANCE) / 2
        spec = []
        for lr in order:
            rs = by_lr[lr]
            ok = np.array([r["best_dev_acc"] for r in rs if not failed(r)])
            if len(ok) == len(rs) >= 2 and ok.min() >= floor:
                stable_ss += ((ok - ok.mean()) ** 2).sum()
                stable_df += len(ok) - 1
            spec.append((len(rs), 1 - len(ok) / len(rs), ok.mean() if len(ok) else 0.0))
        probs[arm] = spec
        tests[arm] = [np.mean([CHANCE if failed(r) else r["test_acc"] for r in by_lr[lr]]) for lr in order]
        best[arm] = order.index(pick)
    (luck,) = lucks(run)
    assert stable_df > 0  # this protocol trains: at least one point of an arm is stable
    sd = math.sqrt(stable_ss / stable_df)
    assert luck.method == "replay" and luck.noise.sd == pytest.approx(sd) and luck.noise.df == stable_df
    want_sd, want_off = expected_luck({arm: choice_probabilities(spec, sd) for arm, spec in probs.items()}, tests, best)
    assert 100 * luck.sd == pytest.approx(100 * want_sd, abs=max(0.15, 0.05 * 100 * want_sd))
    assert luck.off_share == pytest.approx(want_off, abs=0.02)
    pd.testing.assert_frame_equal(search_luck(run), search_luck(run))  # deterministic


@pytest.mark.slow
def test_a_real_grid_studys_methods_and_report_name_the_grid(grid_study):
    result = analyze(grid_study, figures=False)
    text = result.methods.read_text()
    spec = yaml.safe_load((grid_study / "spec.yaml").read_text())
    assert spec["search"]["sampler"] == "grid"
    assert ("a fixed grid of 2 points per variant, the same for every variant (lr at 2 values evenly spaced on a log "
            "scale from 0.05 to 0.2 (0.05, 0.2)); each point trained under 2 tuning seeds (100, 101), 4 tuning trials "
            "per variant") in text
    assert "TPE" not in text and not re.search(r"bergstra|startup", text)
    assert "@tang2020showing" in result.references.read_text() or "tang2020showing" in result.references.read_text()
    assert "bergstra2011algorithms" not in result.references.read_text()
    md = result.report.read_text()
    assert "Search luck:" in md and "Selection optimism:" in md
    assert (result.out_dir / "search_luck.csv").is_file() and (result.out_dir / "selection_optimism.csv").is_file()
