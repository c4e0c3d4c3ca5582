"""The new model axes as trial settings and in study specs: defaults keep every existing trial id,
residual_stages round-trips through YAML, specs are checked when read, and a trial builds the variant."""
import hashlib
import json

import pytest
import yaml

from ablate.spec.trial_config import DATA_FIELDS, EXECUTION_DEFAULTS, FACTORY_FIELDS, RECIPE_DEFAULTS, TrialConfig
from ablate.errors import AblateError
from ablate.spec.study_spec import load_study, parse_study
from ablate.train.loop import run_trial

NEW = {"block": "preact", "residual_stages": [2], "norm": "none", "zero_init_residual": True, "activation": "gelu"}
# The settings a schema-1 config.yaml had, before telemetry, the new model axes, the recipe and the execution settings.
SCHEMA_1 = ("family", "depth", "residual", "shortcut", "lr", "momentum", "weight_decay", "batch_size", "epochs",
            "eval_every", "dataset", "train_size", "dev_size", "test_size", "image_size", "data_seed", "seed", "threads",
            "channels_last", "schema")


def old_id(cfg: TrialConfig) -> str:
    """The id a config.yaml written before the new axes existed had: the hash of its fields then."""
    before = {k: v for k, v in cfg.to_dict().items() if k in SCHEMA_1}
    assert not set(cfg.to_dict()) - set(SCHEMA_1) - {"telemetry", *NEW, *RECIPE_DEFAULTS, *EXECUTION_DEFAULTS,
                                                     *FACTORY_FIELDS, *DATA_FIELDS}
    return hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def test_defaults_keep_the_trial_ids_of_configs_written_before_the_axes():
    for cfg in (TrialConfig(), TrialConfig(lr=0.03, residual=False), TrialConfig(family="cifar", depth=56)):
        before = {k: v for k, v in cfg.to_dict().items() if k not in NEW}
        assert TrialConfig.from_dict(before).trial_id() == cfg.trial_id() == old_id(cfg)
    # Ids computed by the code before the axes existed (main at 64371e2):
    assert TrialConfig().trial_id() == "87d109f0cea7"
    assert TrialConfig(family="cifar", depth=56, residual=False, shortcut="identity", lr=0.05).trial_id() == "24f1bd26b501"
    base = TrialConfig()
    ids = {base.trial_id()}
    for key, value in {**NEW, "residual_stages": [3, 4]}.items():
        ids.add(base.replace(**{key: value}).trial_id())
    assert len(ids) == 1 + len(NEW)  # each non-default value names another trial


def test_to_dict_is_what_dataclasses_asdict_makes_and_the_id_is_computed_once():
    """to_dict copies the fields shallowly (the planner hashes hundreds of configs a registration): for that to be
    what asdict made, every field must be a number, string, bool, None or tuple; a field of another kind (a list,
    a dict, a nested dataclass) fails here."""
    import dataclasses

    from ablate.models.registry import MODEL_AXES

    configs = [TrialConfig(), TrialConfig(residual_stages=[2, 3], milestones=[0.5, 0.75], schedule="step"),
               TrialConfig(factory="mymodels:make", factory_file="/models/mymodels.py", factory_sha256="0" * 64,
                           axes={"width": 8, "kind": "wide"}),
               TrialConfig(block="preact", activation="gelu", norm="none", residual_stages=[2])]
    for cfg in configs:
        expected = dataclasses.asdict(cfg)
        if expected["residual_stages"] is not None:
            expected["residual_stages"] = list(expected["residual_stages"])
        expected["axes"] = dict(cfg.axes)
        if cfg.factory:
            expected = {k: v for k, v in expected.items() if k not in MODEL_AXES}
        assert cfg.to_dict() == expected
        assert json.dumps(cfg.to_dict(), sort_keys=True) == json.dumps(expected, sort_keys=True)
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            assert value is None or isinstance(value, (bool, int, float, str, tuple)), f.name
        # The id is the hash of the config's fields, computed on first use and kept with the frozen config.
        assert cfg.trial_id() == cfg._hash_id() == TrialConfig.from_dict(cfg.to_dict()).trial_id()
        assert cfg.__dict__["_trial_id"] == cfg.trial_id()
    assert len({c.trial_id() for c in configs}) == len(configs)


def test_every_setting_added_after_schema_1_stays_out_of_the_id_at_its_default():
    """A new trial setting must say so in its metadata (neutral=True), or every existing trial would change its id:
    the settings outside schema 1 are exactly the id-neutral ones, and at their defaults the id is schema 1's."""
    from dataclasses import fields

    from ablate.spec.trial_config import id_neutral_defaults, setting_meta

    neutral = {f.name for f in fields(TrialConfig) if setting_meta(f).neutral}
    assert neutral == {f.name for f in fields(TrialConfig)} - set(SCHEMA_1)
    assert id_neutral_defaults() == {f.name: f.default for f in fields(TrialConfig) if f.name in neutral}
    assert {*RECIPE_DEFAULTS, *EXECUTION_DEFAULTS} < neutral


def test_residual_stages_round_trips_through_yaml_and_is_canonical(tmp_path):
    cfg = TrialConfig(residual_stages=[4, 3])
    assert cfg.residual_stages == (3, 4) and hash(cfg) == hash(TrialConfig(residual_stages=(3, 4)))
    assert cfg.trial_id() == TrialConfig(residual_stages=[3, 4]).trial_id()
    text = cfg.to_yaml()
    assert yaml.safe_load(text)["residual_stages"] == [3, 4]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    back = TrialConfig.from_yaml_file(path)
    assert back == cfg and back.trial_id() == cfg.trial_id()
    assert TrialConfig.from_dict({"residual_stages": "3, 4"}, source="flags") == cfg  # a command line's spelling
    assert TrialConfig.from_dict({"residual_stages": None}).residual_stages is None


@pytest.mark.parametrize("data,needle", [
    ({"residual_stages": "three"}, "stage numbers such as 3,4"),
    ({"residual_stages": [1.5]}, "list of stage numbers"),
    ({"residual_stages": True}, "list of stage numbers"),
    ({"residual_stages": [0]}, "from 1 to 4"),
    ({"residual_stages": [1], "residual": False}, "needs residual: true"),
    ({"block": "preact ", }, "valid blocks"),
    ({"norm": None}, "norm must be str"),
    ({"zero_init_residual": "yes"}, "zero_init_residual must be bool"),
    ({"zero_init_residual": True, "norm": "none"}, "needs norm: batch"),
])
def test_bad_axis_settings_are_refused_in_one_line(data, needle):
    with pytest.raises(AblateError, match=needle) as info:
        TrialConfig.from_dict(data, source="x.yaml")
    assert "\n" not in str(info.value)


def test_shipped_specs_with_the_new_axes():
    where = load_study("where", "default")
    settings = {a.name: a.settings for a in where.arms}
    assert len(where.arms) == 6 and settings["residual=false"] == {"residual": False}
    stages = [where.arm_config(a).residual_stages for a in where.arms]
    assert stages == [None, (1,), (2,), (3,), (4,), None]
    assert where.base["family"] == "imagenet" and where.base["depth"] == 18
    preact = load_study("preact", "smoke")
    assert {(s["block"], s["residual"]) for s in (a.settings for a in preact.arms)} == {
        ("basic", True), ("basic", False), ("preact", True), ("preact", False)}
    shortcut = load_study("shortcut", "default")
    assert [a.settings["shortcut"] for a in shortcut.arms] == ["projection", "identity", "projection-all"]


def test_a_spec_is_checked_when_read_and_identical_arms_are_refused():
    doc = {"base": {"family": "cifar", "depth": 20}, "seeds": [0],
           "factors": {"residual_stages": {"values": [[1], [4]]}}}
    with pytest.raises(AblateError, match="from 1 to 3"):
        parse_study(doc)
    doc["factors"] = {"residual_stages": {"values": [[2, 3], [3, 2]]}}
    with pytest.raises(AblateError, match="identical trials"):
        parse_study(doc)
    doc["factors"] = {"zero_init_residual": {"values": [False, True]}, "norm": {"values": ["batch", "none"]}}
    with pytest.raises(AblateError, match="needs norm: batch"):
        parse_study(doc)


@pytest.mark.slow  # a second or more of 2 cores
def test_a_trial_builds_the_variant_its_config_names():
    small = dict(dataset="digits", family="cifar", depth=20, image_size=8, train_size=64, dev_size=32, test_size=32,
                 batch_size=32, epochs=1, eval_every=2, lr=0.05, threads=1)
    keys = {}
    for name, extra in {"default": {}, "preact": {"block": "preact"}, "no-bn": {"norm": "none"},
                        "stages": {"residual_stages": [3], "shortcut": "projection"}}.items():
        result = run_trial(TrialConfig(**small, **extra), keep_best_state=True)
        assert result.status == "ok"
        keys[name] = set(result.best_state)
    assert "final.0.weight" in keys["preact"] and "final.0.weight" not in keys["default"]
    assert not any("bn" in k or k.startswith("stem.1") for k in keys["no-bn"])
    assert sorted(k for k in keys["stages"] if "shortcut" in k and k.endswith("weight")) == [
        "stages.2.0.shortcut.0.weight", "stages.2.0.shortcut.1.weight"]  # only stage 3 keeps a projection


# ---------------------------------------------------------------- the command line


def _invoke(*args):
    from typer.testing import CliRunner

    from ablate.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_summary_shows_each_variant_with_its_hand_counted_total():
    for args, total in ((["--shortcut", "projection-all"], "11,529,738"), (["--block", "preact"], "11,173,642"),
                        (["--norm", "none"], "11,165,834"), (["--residual-stages", "3,4"], "11,166,986"),
                        (["--zero-init-residual"], "11,175,434")):
        result = _invoke("summary", *args)
        assert result.exit_code == 0, result.output
        assert f"Total params: {total}" in result.output, args


def test_train_takes_the_axes_and_writes_them_to_config_yaml(tmp_path):
    out = tmp_path / "run"
    result = _invoke("train", "--dataset", "digits", "--family", "cifar", "--depth", "20", "--block", "preact",
                     "--residual-stages", "2,3", "--zero-init-residual", "--train-size", "64", "--dev-size", "32",
                     "--test-size", "32", "--epochs", "1", "--eval-every", "2", "--out", out)
    assert result.exit_code == 0, result.output
    cfg = TrialConfig.from_yaml_file(out / "config.yaml")
    assert (cfg.block, cfg.residual_stages, cfg.norm, cfg.zero_init_residual) == ("preact", (2, 3), "batch", True)


@pytest.mark.parametrize("command,args,fragment", [
    ("train", ["--block", "dense"], "unknown block 'dense'"),
    ("train", ["--residual-stages", "1,9"], "from 1 to 4"),
    ("train", ["--norm", "none", "--zero-init-residual"], "needs norm: batch"),
    ("summary", ["--residual-stages", "x"], "stage numbers such as 3,4"),
    ("summary", ["--plain", "--residual-stages", "2"], "needs residual: true"),
])
def test_bad_axis_flags_are_one_line_exit_2(tmp_path, command, args, fragment):
    extra = ["--out", tmp_path / "run"] if command == "train" else []
    result = _invoke(command, *args, *extra)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert not (tmp_path / "run").exists()
