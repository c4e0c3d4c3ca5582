"""The planner of ablate.engine.planner, driven without Ray: rounds, halving, determinism, resume, repeats.

TrialPlans run in this process through the same function the Ray workers call (run_work), in
orders chosen by the test, so the results can be shown not to depend on that order.
"""
import csv
import io
import json

import optuna
import pytest

from ablate.run_folder.registry import read_registry
from ablate.engine.planner import FINISHED, Planner, remaining
from ablate.engine.progress_bar import Progress
from ablate.spec.study_spec import Halving, parse_study
from helpers.planner import csv_of, drive

BASE = {"family": "cifar", "depth": 20, "dataset": "digits", "train_size": 96, "dev_size": 48, "test_size": 48,
        "batch_size": 32, "epochs": 2, "eval_every": 1, "image_size": 16, "seed": 100}


def make_study(**search):
    doc = {"description": "planner test", "base": dict(BASE), "factors": {"residual": {"values": [True, False]}},
           "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.5}},
                      "trials": 4, "round": 2, "startup": 2, "halving": {"eta": 2}, **search},
           "seeds": [0, 1]}
    return parse_study(doc, source="test")


def test_rungs_lie_at_or_after_half_of_training_and_before_the_last_evaluation():
    h = Halving(eta=2, min_evals=2)
    assert h.rungs(6) == [3]  # 6 / 4 rounds up to 2: a third of training, too early
    assert h.rungs(4) == [2]
    assert h.rungs(2) == [] and h.rungs(1) == []
    assert h.rungs(16) == [8] and Halving(eta=2, min_evals=2, min_fraction=0.75).rungs(16) == []
    assert Halving(eta=3, min_evals=1).rungs(9) == []  # 9 / 3 = 3 evaluations is a third of training
    for evaluations in range(1, 40):
        assert all(evaluations / 2 <= r < evaluations for r in h.rungs(evaluations))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """make_study() driven first-in-first-out without a break: (its run folder, the segments it ran)."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    return run_dir, drive(make_study(), run_dir, "fifo")


@pytest.mark.slow
def test_the_order_work_runs_in_changes_nothing(tmp_path, straight):
    study = make_study()
    fifo, _ = straight
    drive(study, tmp_path / "random", "random", seed=3)  # (last-in-first-out: the kill test below)
    reference = csv_of(study, fifo)
    assert csv_of(study, tmp_path / "random") == reference
    rows = read_registry(fifo)
    assert sorted((r["stage"], r["arm"]) for r in rows) == sorted(
        [("tune", "residual=true")] * 4 + [("tune", "residual=false")] * 4
        + [("confirm", "residual=true")] * 2 + [("confirm", "residual=false")] * 2)
    # halving at every round: 2 proposals run to the rung, the better one goes on to the end
    for arm in ("residual=true", "residual=false"):
        for number in (0, 1):
            statuses = sorted(r["status"] for r in rows if r["arm"] == arm and r.get("round") == number)
            assert statuses in (["ok", "stopped"], ["diverged", "ok"], ["diverged", "stopped"]), statuses
    # a trial that ran all its evaluations is never "stopped"; a stopped one stopped at the rung, half of training
    for r in rows:
        metrics = json.loads((fifo / "trials" / r["trial_id"] / "metrics.json").read_text())
        if r["status"] == "stopped":
            assert metrics["stopped_at_evaluations"] == 3 and metrics["steps"] == 3
        if r["status"] == "ok":
            assert metrics["steps"] == 6
    assert remaining(study, rows) == {"tune": 0, "confirm": 0}


@pytest.mark.slow
def test_killed_at_any_point_and_resumed_gives_the_same_trials(tmp_path, straight):
    study = make_study()
    run, total = straight
    reference = csv_of(study, run)
    run_dir = tmp_path / "killed"
    segments = 0
    for kill_after in (1, 3, 2, 4, 5):  # a fresh planner each time, as after a crash
        segments += drive(study, run_dir, "lifo", stop_after=kill_after)
    segments += drive(study, run_dir, "random", seed=1)
    assert csv_of(study, run_dir) == reference
    assert segments == total  # nothing ran twice


@pytest.mark.slow
def test_later_rounds_are_asked_after_earlier_results_are_told(tmp_path):
    study = make_study(trials=6, round=2, startup=2)
    drive(study, tmp_path / "run")
    for arm in ("residual=true", "residual=false"):
        trials = optuna.load_study(study_name=arm, storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}").trials
        by_round = {}
        for t in trials:
            by_round.setdefault(t.user_attrs["round"], []).append(t)
        assert sorted(by_round) == [0, 1, 2] and all(len(v) == 2 for v in by_round.values())
        for number in (1, 2):
            asked = min(t.datetime_start for t in by_round[number])
            told = max(t.datetime_complete for r in range(number) for t in by_round[r])
            assert asked >= told, f"round {number} was proposed before round {number - 1}'s results were told"
        assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}


def test_tpe_proposals_depend_on_the_results_it_was_told(tmp_path):
    """Two arms whose first rounds score in opposite orders get different TPE proposals in round 2 (and the
    same random startup proposals in round 1): the sampler used the results."""
    from ablate.engine.optuna_rounds import ArmSampler, PointOutcome

    study = make_study(trials=6, round=3, startup=3, halving=False)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first, second = {}, {}
    for name, good_first in (("a", True), ("b", False)):
        sampler = ArmSampler(study, "residual=true", url, name, tmp_path)
        round0 = sampler.points(0, 3)
        lrs = [p.params["lr"] for p in round0]
        ranks = sorted(range(3), key=lambda i: lrs[i], reverse=not good_first)
        scores = [0.0] * 3
        for place, i in enumerate(ranks):
            scores[i] = [0.9, 0.5, 0.1][place]
        sampler.tell(0, [PointOutcome("complete", s) for s in scores])
        first[name], second[name] = lrs, [p.params["lr"] for p in sampler.points(1, 3)]
    assert first["a"] == first["b"]  # the random startup does not look at results
    assert second["a"] != second["b"]
    # asked again (a resumed run), a round's proposals come back unchanged
    again = ArmSampler(study, "residual=true", url, "a", tmp_path)
    assert [p.params["lr"] for p in again.points(1, 3)] == second["a"]


def test_a_round_is_read_from_optunas_storage_once_and_told_once(tmp_path):
    """The planner asks for every round's points and tells every finished round at each registration; a round
    asked in full and a round told are kept in memory (they never change), and what is kept is what the storage
    holds."""
    from ablate.engine.optuna_rounds import ArmSampler, PointOutcome

    study = make_study(trials=4, round=2, startup=2, halving=False)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    sampler = ArmSampler(study, "residual=true", url, "a", tmp_path)
    asked = sampler.points(0, 2)
    assert 0 not in sampler.asked  # asked now: read back from the storage at the next call, then kept
    again = sampler.points(0, 2)
    assert again == asked and sampler.asked[0] == asked
    again.pop()  # a caller's list is its own
    assert sampler.points(0, 2) == asked
    sampler.tell(0, [PointOutcome("complete", 0.5), PointOutcome("complete", 0.7)])
    assert sampler.told == {0}
    sampler.tell(0, [PointOutcome("complete", 0.1), PointOutcome("complete", 0.1)])  # told already: left alone
    fresh = ArmSampler(study, "residual=true", url, "a", tmp_path)  # another process, the storage alone
    assert fresh.points(0, 2) == asked
    assert [t.value for t in fresh.ostudy.trials] == [0.5, 0.7]


def test_the_planner_reads_a_trials_curve_again_once_the_file_changed(tmp_path):
    """Dev curves are kept by the file's inode, size and modification time: a rewritten curves.csv (a trial run
    again, a paused trial's curve grown), even of the same size, is read again."""
    from ablate.engine.planner import _dev_curve, _parsed_dev_curve
    from ablate.run_folder.trial_records import write_curves

    write_curves(tmp_path, [2.0, 1.0, 0.5, 0.25], [2, 4], [0.5, 0.4], [0.6, 0.7])
    assert _dev_curve(tmp_path) == ([0.6, 0.7], [0.5, 0.4])
    hits = _parsed_dev_curve.cache_info().hits
    assert _dev_curve(tmp_path) == ([0.6, 0.7], [0.5, 0.4])
    assert _parsed_dev_curve.cache_info().hits == hits + 1  # the unchanged file was not parsed again
    acc, _ = _dev_curve(tmp_path)
    acc.append(1.0)  # a caller's list is its own
    assert _dev_curve(tmp_path) == ([0.6, 0.7], [0.5, 0.4])
    write_curves(tmp_path, [2.0, 1.0, 0.5, 0.25], [2, 4], [0.5, 0.4], [0.6, 0.8])  # same size
    assert _dev_curve(tmp_path) == ([0.6, 0.8], [0.5, 0.4])
    write_curves(tmp_path, [2.0, 1.0, 0.5, 0.25, 0.2, 0.1], [2, 4, 6], [0.5, 0.4, 0.3], [0.6, 0.8, 0.9])
    assert _dev_curve(tmp_path) == ([0.6, 0.8, 0.9], [0.5, 0.4, 0.3])
    (tmp_path / "curves.csv").unlink()
    assert _dev_curve(tmp_path) == ([], [])
    assert _parsed_dev_curve.cache_info().maxsize == 10_000  # the cache has a bound (least recently used go)


def test_a_round_asked_halfway_before_a_crash_is_asked_again_identically(tmp_path):
    from ablate.engine.optuna_rounds import ArmSampler

    study = make_study(trials=4, round=2, startup=0, halving=False)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    whole = [p.params for p in ArmSampler(study, "residual=true", url, "whole", tmp_path).points(0, 2)]
    cut = ArmSampler(study, "residual=true", url, "cut", tmp_path)
    trial = cut.ostudy.ask(cut.space)  # the crash came after one ask of the round was recorded
    trial.set_user_attr("index", 0)
    trial.set_user_attr("round", 0)
    cut.ostudy.ask(cut.space).set_user_attr("index", 1)  # ... and another before its round was recorded
    again = ArmSampler(study, "residual=true", url, "cut", tmp_path)
    assert [p.params for p in again.points(0, 2)] == whole
    states = [t.state.name for t in again.ostudy.trials]
    assert states.count("FAIL") == 2 and states.count("RUNNING") == 2


@pytest.mark.slow
def test_a_choice_space_with_repeats_finishes(tmp_path):
    study = make_study(space={"lr": {"distribution": "choice", "choices": [0.05, 0.1]}}, trials=4, round=2,
                       startup=2, halving=False)
    drive(study, tmp_path / "run")
    rows = read_registry(tmp_path / "run")
    tune = [r for r in rows if r["stage"] == "tune"]
    assert len(tune) == 8 and len([r for r in rows if r["stage"] == "confirm"]) == 4
    # 4 proposals from 2 choices: some repeat, and a repeat reuses the trial that ran
    assert any(r.get("repeat_of") for r in tune)
    assert len({r["trial_id"] for r in tune}) <= 4
    assert Planner(study, tmp_path / "run").remaining() == {"tune": 0, "confirm": 0}


@pytest.mark.slow
def test_int_search_parameters_work(tmp_path):
    study = make_study(space={"batch_size": {"distribution": "int", "low": 16, "high": 48},
                              "lr": {"distribution": "loguniform", "low": 0.01, "high": 0.1}},
                       trials=2, round=2, halving=False)
    assert study.space[0].low == 16 and isinstance(study.space[0].low, int)
    drive(study, tmp_path / "run")
    rows = read_registry(tmp_path / "run")
    sizes = [r["params"]["batch_size"] for r in rows if r["stage"] == "tune"]
    assert all(isinstance(s, int) and 16 <= s <= 48 for s in sizes)


@pytest.mark.slow
def test_a_finished_run_reports_no_work_left_and_runs_nothing(tmp_path):
    study = make_study(trials=2, round=2)
    drive(study, tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    planner = Planner(study, tmp_path / "run")
    assert planner.next() == FINISHED and planner.remaining() == {"tune": 0, "confirm": 0}
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p.name != "optuna.db"} == {p: t for p, t in before.items() if p.name != "optuna.db"}


@pytest.mark.slow
def test_rungs_follow_each_arms_own_length(tmp_path):
    """With epochs as a factor, the 2-epoch arm's trials are halved at rungs of their own length and the ones
    that go on run all their steps (not cut where the 1-epoch arm ends)."""
    doc_study = make_study(trials=2, round=2)
    doc = dict(doc_study.raw)
    doc.pop("budget")
    doc["factors"] = {"epochs": {"values": [1, 3]}}
    from ablate.spec.study_spec import parse_study as parse

    study = parse(doc, source="test")
    drive(study, tmp_path / "run")
    rows = [r for r in read_registry(tmp_path / "run") if r["stage"] == "tune"]
    for arm, epochs in (("epochs=1", 1), ("epochs=3", 3)):
        total = study.arm_config(next(a for a in study.arms if a.name == arm), lr=0.1).total_steps()
        assert total == 3 * epochs
        ran = sorted(json.loads((tmp_path / "run" / "trials" / r["trial_id"] / "metrics.json").read_text())["steps"]
                     for r in rows if r["arm"] == arm)
        rungs = Halving().rungs(total)  # eval_every 1: one evaluation per step
        assert ran == sorted([rungs[0], total]), (arm, ran, rungs)


@pytest.mark.slow
@pytest.mark.parametrize("half_width", [1000.0, 1e-9])
def test_the_two_stage_rule_runs_what_its_pilot_asks_for_killed_or_not(tmp_path, half_width):
    from ablate.engine.seed_decisions import rule_state
    from ablate.intervals import sample_sd, stein_pairs
    from ablate.spec.seed_rule import nonzero

    study = make_study(trials=2, round=2, halving=False)
    doc = dict(study.raw)
    doc.pop("budget")
    doc["seeds"] = {"min": 6, "max": 8, "half_width": half_width}
    study = parse_study(doc, source="test")
    assert study.seeds == list(range(8)) and study.seed_rule.min == 6
    (tmp_path / "run").mkdir()
    progress = Progress(study, Planner(study, tmp_path / "run"))
    assert progress.totals == {"tune": 4, "confirm": 12}  # the pilot's 6 seeds per arm, to begin with
    drive(study, tmp_path / "run", "lifo", stop_after=9)  # killed on the way, then resumed
    drive(study, tmp_path / "run", "random", seed=2)
    rows = read_registry(tmp_path / "run")
    confirm = {(r["arm"], r["seed"]): r["test_acc"] for r in rows if r["stage"] == "confirm"}
    ran = sorted({s for _, s in confirm})
    diffs = [100 * (confirm[("residual=true", s)] - confirm[("residual=false", s)]) for s in ran]
    asked = min(8, stein_pairs(sample_sd(diffs[:6]), 6, half_width))
    if half_width == 1e-9:
        assert asked == 8 and ran == list(range(8))  # an interval this narrow needs more than the maximum
    else:
        assert asked == 6  # the pilot is enough; more only where too few pairs differ for the sign-flip test
        assert ran == list(range(6)) if nonzero(diffs[:6]) >= 6 else len(ran) > 6
    assert rule_state(study, rows).final
    progress.planner = Planner(study, tmp_path / "run")
    progress.refresh()  # the progress line's totals follow the seeds the rule asked for
    assert progress.totals == {"tune": 4, "confirm": 2 * len(ran)} and progress.bar.total == progress.bar.n
    progress.close()
    assert Planner(study, tmp_path / "run").remaining() == {"tune": 0, "confirm": 0}


@pytest.mark.slow
def test_fused_groups_are_fixed_by_the_plan_so_order_and_crashes_change_nothing(tmp_path):
    study = make_study(trials=4, round=2, startup=2, halving=False)
    doc = dict(study.raw)
    doc.pop("budget")
    doc["seeds"] = [0, 1, 2]
    doc["base"] = {**doc["base"], "train_size": 64, "dev_size": 32, "test_size": 32, "image_size": 8}  # 14 trials, 5 drives
    study = parse_study(doc, source="test")
    straight = drive(study, tmp_path / "fifo", fuse=2)
    reference = csv_of(study, tmp_path / "fifo")
    drive(study, tmp_path / "random", "random", seed=4, fuse=2)
    assert csv_of(study, tmp_path / "random") == reference
    for kill_after in (1, 2, 3):
        drive(study, tmp_path / "killed", "lifo", stop_after=kill_after, fuse=2)
    drive(study, tmp_path / "killed", fuse=2)
    assert csv_of(study, tmp_path / "killed") == reference
    rows = read_registry(tmp_path / "fifo")
    fused_with = {r["trial_id"]: json.loads((tmp_path / "fifo" / "trials" / r["trial_id"] / "metrics.json").read_text())
                  .get("fused_with") for r in rows}
    # each round's 2 proposals ran as one model; an arm's confirm seeds 0 and 1 together, seed 2 alone
    for r in rows:
        partner = fused_with[r["trial_id"]]
        if r["stage"] == "confirm" and r["seed"] == 2:
            assert partner is None
        else:
            assert partner and len(partner) == 1
    # 2 arms x (2 tuning rounds + 2 confirm groups): 8 Ray trials instead of 14 single ones
    assert straight == 8 and len(rows) == 14


def test_a_fused_studys_trials_csv_marks_its_fused_rows(tmp_path):
    """Fusing changes a trial's numbers slightly, so a fused row names its partners (fused_with) in trials.csv and
    the registry, and no row of a fused run looks like the same trial's row run alone."""
    base = {**BASE, "train_size": 64, "dev_size": 32, "test_size": 32, "image_size": 8, "epochs": 1, "eval_every": 2}
    study = parse_study({"description": "fuse marks", "base": base,
                         "factors": {"residual": {"values": [True, False]}}, "seeds": [0, 1]}, source="test")
    drive(study, tmp_path / "fused", fuse=2)
    drive(study, tmp_path / "alone")
    fused, alone = ({r["trial_id"]: r for r in read_registry(tmp_path / name)} for name in ("fused", "alone"))
    assert fused.keys() == alone.keys() and len(fused) == 4  # the same trials, under the same ids
    for trial_id, row in fused.items():
        partner = row["fused_with"]
        assert len(partner) == 1 and fused[partner[0]]["fused_with"] == [trial_id]
        assert fused[partner[0]]["arm"] == row["arm"] and alone[trial_id]["fused_with"] is None
    tables = {name: list(csv.DictReader(io.StringIO(csv_of(study, tmp_path / name)))) for name in ("fused", "alone")}
    for f, a in zip(tables["fused"], tables["alone"]):
        assert f["trial_id"] == a["trial_id"] and f["fused_with"] == " ".join(fused[f["trial_id"]]["fused_with"])
        assert a["fused_with"] == "" and f != a


def test_the_progress_counts_a_tuning_trial_when_it_ends_not_when_its_round_is_registered(tmp_path):
    """A grid is one round: its trials are registered together when the last one ends, and until then the
    progress line must still move (a default study showed 0/30 for its whole tuning stage)."""
    doc = {"description": "progress", "base": {**BASE, "epochs": 1}, "factors": {"residual": {"values": [True]}},
           "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.1}}, "sampler": "grid",
                      "points": 2, "tuning_seeds": 2}, "seeds": [0]}
    study = parse_study(doc, source="test")
    assert drive(study, tmp_path / "run", stop_after=3) == 3  # three of the round's four trials
    planner = Planner(study, tmp_path / "run")
    planner.refresh()
    assert planner.counts()["tune"] == 0 and planner.finished_counts()["tune"] == 3
    drive(study, tmp_path / "run")
    planner = Planner(study, tmp_path / "run")
    planner.refresh()
    assert planner.counts() == planner.finished_counts() == {"tune": 4, "confirm": 1}


@pytest.mark.slow
@pytest.mark.parametrize("stops", [True, False], ids=["rule-stops-at-its-pilot", "rule-asks-for-more"])
def test_a_seed_run_ahead_of_the_rule_counts_only_when_the_rule_asks_for_it(tmp_path, stops):
    """While the pilot's last trials run, a free slot runs each arm's next seed ahead of the seed rule's decision.
    The rule asks for it: it is registered as if it had run after the decision. The rule stops without it: it is
    cancelled where it runs and leaves no folder. Either way trials.csv is the one a single slot gives, where
    nothing can run ahead."""
    if stops:  # arms apart on 6 of the pilot's 7 seeds and a wide interval: the pilot is enough
        doc = {"description": "ahead", "base": {**BASE, "train_size": 128, "epochs": 4, "eval_every": 4, "momentum": 0.9},
               "factors": {"lr": {"values": [0.05, 1e-6]}}, "seeds": {"min": 7, "max": 9, "half_width": 1000.0}}
    else:  # an interval this narrow needs every seed up to the maximum
        doc = dict(make_study(trials=2, round=2, halving=False).raw)
        doc.pop("budget")
        doc["seeds"] = {"min": 6, "max": 8, "half_width": 1e-9}
    study = parse_study(doc, source="test")
    alone = drive(study, tmp_path / "one", slots=1)
    cancelled = []
    ran = drive(study, tmp_path / "many", cancelled=cancelled)  # every ready trial handed out at once
    assert csv_of(study, tmp_path / "many") == csv_of(study, tmp_path / "one")
    rows = read_registry(tmp_path / "many")
    registered = {r["trial_id"] for r in rows}
    assert alone == len(registered)  # one slot: nothing ran ahead
    assert {p.name for p in (tmp_path / "many" / "trials").iterdir()} == registered
    final = study.stages[-1]
    seeds = sorted({r["seed"] for r in rows if r["stage"] == final})
    if stops:  # both arms' seed 7 ran ahead and were cancelled as they started
        assert seeds == list(range(7)) and ran == len(registered) + 2 and len(cancelled) == 2
    else:  # what ran ahead was what the rule asked for
        assert seeds == list(range(8)) and ran == len(registered) and not cancelled
