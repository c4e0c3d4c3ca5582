"""Study specs: validation, budgets, arm expansion, planning and the registry (no Ray here)."""
from pathlib import Path

import re

import pytest
import yaml

from ablate.errors import AblateError
from ablate.run_folder.registry import append_registry, read_registry, registry_row
from ablate.run_folder.trial_table import trials_csv
from ablate.spec.study_spec import BUDGETS, list_studies, load_study, parse_study
from ablate.engine.trial_plan import plan_fixed_stage

BASE = {"family": "imagenet", "depth": 18, "train_size": 128, "dev_size": 64, "test_size": 64, "epochs": 1}
SEARCH = {"space": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.5}}, "trials": 2}


def spec(**over):
    doc = {"description": "test", "base": dict(BASE), "factors": {"residual": {"values": [True, False]}},
           "search": dict(SEARCH), "seeds": [0, 1]}
    doc.update(over)
    return doc


@pytest.mark.parametrize("name", ["residual-ablation", "shortcut", "depth", "lr-sweep", "reference"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_shipped_studies_load_under_every_budget(name, budget):
    study = load_study(name, budget)
    assert study.arms and study.seeds and study.budget == budget
    assert name in dict(list_studies())


def test_shipped_study_shapes():
    assert [a.name for a in load_study("residual-ablation").arms] == ["residual=true", "residual=false"]
    depth = load_study("depth")
    assert len(depth.arms) == 8 and {a.settings["depth"] for a in depth.arms} == {20, 32, 44, 56}
    ref = load_study("reference")
    assert ref.stages == ["confirm"] and ref.seeds == [100]
    assert {a.name: (a.settings["residual"], a.settings["lr"]) for a in ref.arms} == {"plain": (False, 0.005), "residual": (True, 0.01)}
    sweep = load_study("lr-sweep")
    # 2 arms x 6 learning rates x the adaptive rule's candidate seeds (up to 12)
    assert sweep.stages == ["grid"] and len(plan_fixed_stage(sweep, "grid")) == 2 * 6 * 12
    smoke = load_study("residual-ablation", "smoke")
    assert smoke.base["epochs"] < load_study("residual-ablation").base["epochs"]


def test_requires_limits_a_factor_to_the_arms_it_applies_to():
    study = parse_study(spec(factors={
        "residual": {"values": [True, False]},
        "shortcut": {"values": ["projection", "identity"], "requires": {"residual": True}},
    }))
    assert [a.name for a in study.arms] == [
        "residual=true,shortcut=projection", "residual=true,shortcut=identity", "residual=false"]
    assert study.varied()[:2] == ["residual", "shortcut"]


def test_tuned_confirm_plan_uses_best_params_and_every_seed():
    study = parse_study(spec())
    plan = plan_fixed_stage(study, "confirm", {"residual=true": {"lr": 0.05}, "residual=false": {"lr": 0.01}})
    assert len(plan) == 4
    assert {(p.arm, p.config.seed, p.config.lr) for p in plan} == {
        ("residual=true", 0, 0.05), ("residual=true", 1, 0.05), ("residual=false", 0, 0.01), ("residual=false", 1, 0.01)}
    again = plan_fixed_stage(study, "confirm", {"residual=true": {"lr": 0.05}, "residual=false": {"lr": 0.01}})
    assert [p.trial_id for p in plan] == [p.trial_id for p in again]
    assert len({p.trial_id for p in plan}) == 4


@pytest.mark.parametrize("over, fragment", [
    ({"factors": {"residuals": {"values": [True]}}}, "unknown factor"),
    ({"factors": {"residual": {"values": []}}}, "values must be a non-empty list"),
    ({"factors": {"residual": {"values": [True, False]}, "shortcut": {"values": ["identity"], "requires": {"plain": True}}}},
     "requires 'plain', which is not a factor"),
    ({"factors": {"residual": {"values": [True]}, "shortcut": {"values": ["identity"], "requires": {"residual": False}}}},
     "not one of its values"),
    ({"search": {**SEARCH, "space": {"lr": {"distribution": "loguniform", "low": 0.1, "high": 0.1}}}}, "empty range"),
    ({"search": {**SEARCH, "space": {"lr": {"distribution": "loguniform", "low": 0, "high": 0.1}}}}, "low > 0"),
    ({"search": {**SEARCH, "space": {"learning_rate": {"distribution": "uniform", "low": 0, "high": 1}}}}, "unknown search parameter"),
    ({"search": {**SEARCH, "space": {"lr": {"distribution": "normal", "low": 0, "high": 1}}}}, "unknown distribution"),
    ({"search": {**SEARCH, "space": {}}}, "at least one parameter"),
    ({"search": {**SEARCH, "trials": 0}}, "positive integer"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"seeds": [1, 1]}, "must not repeat"),
    ({"base": {**BASE, "depth": 19}}, "valid depths"),
    ({"base": {**BASE, "optimizer": "adam"}}, "unknown base setting"),
    ({"budgets": {"tiny": {}}}, "unknown budget key(s) tiny"),
    ({"stages": 2}, "unknown spec key(s) stages"),
    ({"grid": {"lr": [0.1]}}, "not both"),
    ({"factors": {"depth": {"values": [18, 20]}}}, "valid depths"),
])
def test_bad_specs_are_rejected(over, fragment):
    with pytest.raises(AblateError) as err:
        parse_study(spec(**over))
    assert fragment in str(err.value)


def test_bad_budget_name_and_malformed_yaml(tmp_path):
    with pytest.raises(AblateError, match="unknown budget 'huge'"):
        parse_study(spec(), budget="huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nbase:\n  lr: [0.1\nseeds: [0]\n")
    with pytest.raises(AblateError, match=r"malformed YAML in .*bad.yaml, line \d"):
        load_study(bad)
    with pytest.raises(AblateError, match="unknown study 'nope'; valid studies: .*residual-ablation"):
        load_study("nope")


def test_resolved_spec_round_trips_with_its_budget():
    study = load_study("residual-ablation", "smoke")
    study.pin(threads=1, dataset="mnist")
    again = parse_study(yaml.safe_load(study.resolved_yaml()))
    assert again.budget == "smoke" and again.base == study.base and again.trials_per_arm == study.trials_per_arm
    assert [a.name for a in again.arms] == [a.name for a in study.arms]


def test_registry_survives_a_cut_last_line_and_feeds_trials_csv(tmp_path):
    study = parse_study(spec())
    plan = plan_fixed_stage(study, "confirm", {"residual=true": {"lr": 0.05}, "residual=false": {"lr": 0.01}})
    for i, p in enumerate(plan):
        append_registry(tmp_path, registry_row(p, {"status": "ok", "best_dev_acc": 0.5 + i / 10, "test_acc": 0.9, "test_loss": float("nan")}))
    with open(tmp_path / "trials.jsonl", "a") as fh:
        fh.write('{"trial_id": "abc", "sta')  # what a SIGKILL mid-write can leave
    rows = read_registry(tmp_path)
    assert len(rows) == 4 and rows[0]["test_loss"] is None
    lines = trials_csv(study, rows).splitlines()
    assert lines[0].startswith("trial_id,stage,arm,round,index,residual,lr,seed,status")
    assert "train_seconds" not in lines[0] and "node" not in lines[0]  # results only: reruns give the same file
    assert len(lines) == 5 and all(",confirm," in l for l in lines[1:])


def test_a_trials_config_is_made_once_per_settings_and_follows_a_pinned_setting(monkeypatch):
    """Study.trial_config keeps the configs it made (frozen: shared safely), by the trial's merged settings, so a
    setting pinned after a first call (the dataset `auto` chose) gives a config of its own, never the kept one; the
    cache has a bound, past which it starts over."""
    from ablate.spec import study_spec

    study = load_study("residual-ablation", "smoke")
    monkeypatch.setattr(study_spec, "_CONFIGS_MOST", 3)
    made = [study.trial_config(study.arms[0], {"lr": 0.01}, seed) for seed in range(7)]
    assert len(study_spec._CONFIGS) <= 3 and [c.seed for c in made] == list(range(7))
    arm = study.arms[0]
    first = study.trial_config(arm, {"lr": 0.01}, 3)
    assert study.trial_config(arm, {"lr": 0.01}, 3) is first
    assert study.trial_config(arm, {"lr": 0.03}, 3).lr == 0.03
    assert study.trial_config(arm, {"lr": 0.01}, 4).seed == 4
    study.pin(dataset="digits")
    pinned = study.trial_config(arm, {"lr": 0.01}, 3)
    assert pinned.dataset == "digits" != first.dataset and pinned.trial_id() != first.trial_id()
    study.pin(dataset=first.dataset)
    assert study.trial_config(arm, {"lr": 0.01}, 3) == first


def test_resample_data_draws_each_seeds_subsets_from_the_seed():
    from ablate.spec.study_spec import parse_study
    from ablate.engine.trial_plan import plan_fixed_stage

    doc = yaml.safe_load((Path(__file__).resolve().parent.parent / "studies" / "lr-sweep.yaml").read_text())
    assert doc["resample_data"] is True  # every shipped study draws each seed's own images
    doc["seeds"], doc["resample_data"] = [3, 4], False
    same = plan_fixed_stage(parse_study(doc, "default"), "grid")
    assert {p.config.data_seed for p in same} == {0}
    doc["resample_data"] = True
    own = plan_fixed_stage(parse_study(doc, "default"), "grid")
    assert all(p.config.data_seed == p.config.seed for p in own) and {p.config.seed for p in own} == {3, 4}
    with pytest.raises(AblateError, match="resample_data must be true or false"):
        parse_study({**doc, "resample_data": "yes"}, "smoke")


def test_resample_data_gives_tuning_seeds_their_own_draws_never_a_confirm_seeds(tmp_path):
    from ablate.engine.planner import Planner
    from ablate.spec.study_spec import load_study

    study = load_study("residual-ablation")
    assert study.resample_data and study.tuning_seeds() == [100, 101, 102]
    planner = Planner(study, tmp_path)
    planner.refresh()
    tune = [p for p in planner.ready if p.stage == "tune"]
    assert tune and {(p.config.seed, p.config.data_seed) for p in tune} == {(s, s) for s in (100, 101, 102)}
    confirm = {s: study.trial_config(study.arms[0], {"lr": 0.01}, s).data_seed for s in study.seeds}
    assert confirm == {s: s for s in range(20)} and not set(confirm.values()) & {100, 101, 102}


@pytest.mark.parametrize("over, fragment", [
    # every choice is tried when the spec is read, not only the first
    ({"search": {**SEARCH, "space": {"depth": {"distribution": "choice", "choices": [10, 19]}}}},
     "arm residual=true: unknown depth 19"),
    # and both bounds
    ({"search": {**SEARCH, "space": {"batch_size": {"distribution": "int", "low": 16, "high": 100000}}}},
     "batch_size 100,000 is more than train_size 128"),
    ({"search": {**SEARCH, "space": {"momentum": {"distribution": "uniform", "low": 0.0, "high": 1.5}}}},
     "momentum must be in [0, 1)"),
    # two arms that would run the same trials
    ({"factors": None, "arms": [{"name": "a", "lr": 0.01}, {"name": "b", "lr": 0.01}], "search": None,
      "grid": {"momentum": [0.0, 0.5]}}, "arms a and b give identical trials"),
    ({"search": {**SEARCH, "asha": True}}, "search.asha was replaced by search.halving"),
    ({"search": {**SEARCH, "round": 3}}, "search.round (proposals per round) must be an integer from 1 to search.trials (2)"),
    ({"search": {**SEARCH, "halving": {"eta": 1}}}, "search.halving.eta must be an integer >= 2"),
    ({"base": {**BASE, "threads": 0}}, "base.threads must be an integer >= 1 in a study"),
    ({"seeds": [100, 1]}, None),
])
def test_the_whole_space_is_checked_when_the_spec_is_read(over, fragment):
    if fragment is None:  # valid
        parse_study(spec(**over))
        return
    with pytest.raises(AblateError, match=re.escape(fragment)):
        parse_study(spec(**over))


def test_int_bounds_stay_ints_and_a_spec_fixes_the_threads():
    study = parse_study(spec(search={**SEARCH, "space": {"batch_size": {"distribution": "int", "low": 16, "high": 64}}}))
    assert (study.space[0].low, study.space[0].high) == (16, 64) and isinstance(study.space[0].low, int)
    assert study.arm_config(study.arms[0], batch_size=study.space[0].high).batch_size == 64
    assert study.base["threads"] == 1 and yaml.safe_load(study.resolved_yaml())["base"]["threads"] == 1


def test_a_resolved_spec_with_asha_is_read_as_a_legacy_run():
    doc = {**spec(search={**SEARCH, "asha": True}), "budget": "default"}
    study = parse_study(doc)
    assert study.legacy and study.halving is None and "asha" not in study.raw["search"]
