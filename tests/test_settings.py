"""One mechanism for trial settings: every `train` flag, its help, type, shown default and upper bound come from
TrialConfig's field metadata (ablate.spec.trial_config.setting, ablate.models.registry.axis), and nothing in cli/
types a setting's option by hand. A new setting is a field with metadata: it gets its flag without touching cli/."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer
import typer.main
import yaml
from typer.testing import CliRunner

from ablate.cli import trial_options as T
from ablate.cli.app import app, summary, train
from ablate.errors import AblateError
from ablate.models.registry import MODEL_AXES
from ablate.spec.trial_config import TrialConfig, setting, setting_meta

FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
# The options of `train` that are not trial settings: where the trial's files, data and device are.
COMMAND_OPTIONS = {"config", "data_dir", "out", "device", "save_weights"}


def _params(command: str) -> dict:
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def test_every_trial_setting_has_a_train_flag_made_from_its_metadata():
    params = _params("train")
    assert set(params) == set(T.TRIAL_SETTINGS) | COMMAND_OPTIONS
    without = {name for name, f in FIELDS.items() if not getattr(setting_meta(f), "cli", True)}
    # the config file's own format version is no setting, a user model's fields come from the spec's `model` and a
    # data loader's from its reference (the dataset)
    assert without == {"schema", "factory", "factory_file", "factory_sha256", "axes", "data_file", "data_sha256"}
    assert set(T.TRIAL_SETTINGS) == set(FIELDS) - without
    for name in T.TRIAL_SETTINGS:
        f, p, meta = FIELDS[name], params[name], setting_meta(FIELDS[name])
        assert p.help.startswith(meta.help + " (default ") and p.help.endswith(").")
        assert p.default is None, name  # a flag not given leaves the --config file's value
        dashed = "--" + name.replace("_", "-")
        expected = (meta.flag.replace("/", " ").split() if meta.flag else
                    [dashed, dashed.replace("--", "--no-", 1)] if isinstance(f.default, bool) else [dashed])
        assert [*p.opts, *p.secondary_opts] == expected
        assert p.is_flag == isinstance(f.default, bool), name
    # what --help shows, for a few settings of each kind
    assert params["lr"].help == "SGD learning rate (default 0.01)."
    assert params["compile"].opts == ["--compile"] and params["nesterov"].secondary_opts == ["--no-nesterov"]
    assert params["milestones"].help.endswith("(default 0.5,0.75).")
    assert params["depth"].help.endswith("(default 18 for imagenet, 20 for cifar).")
    assert params["telemetry"].opts == ["--telemetry"] and params["telemetry"].secondary_opts == ["--no-telemetry"]


def test_the_cli_declares_no_trial_setting_option_by_hand():
    """`train` and `summary` name no setting among their own parameters: every setting's option is generated (the
    test above checks each one's help against its metadata), so none can be typed in cli/ a second time."""
    own = inspect.signature(inspect.unwrap(train)).parameters
    assert set(own) == COMMAND_OPTIONS | {T.PARAMETER}  # every setting arrives in one dict, from the metadata
    assert not set(inspect.signature(inspect.unwrap(summary)).parameters) & set(FIELDS)
    assert set(_params("summary")) == {*MODEL_AXES, "in_channels", "num_classes", "input_size"}
    summary_params, train_params = _params("summary"), _params("train")
    for name in MODEL_AXES:  # the model axes: one mechanism for both commands
        assert summary_params[name].help == train_params[name].help


def test_a_new_setting_is_a_field_with_metadata_and_gets_its_flag():
    @dataclasses.dataclass(frozen=True)
    class Extended(TrialConfig):
        label_smoothing: float = setting(0.0, "Label smoothing of the training loss", neutral=True, most=1.0)

    names = [f.name for f in T.flag_fields(Extended)]
    assert names[-1] == "label_smoothing" and set(names[:-1]) == set(T.TRIAL_SETTINGS)
    seen = {}
    demo = typer.Typer()

    @demo.command()
    @T.trial_options(names, Extended)
    def run(settings: dict = None) -> None:
        seen.update(T.given_settings(settings, config=Extended))

    help_text = CliRunner().invoke(demo, ["--help"], env={"COLUMNS": "200"}).output
    assert "--label-smoothing" in help_text and "Label smoothing of the training loss (default 0.0)." in help_text
    result = CliRunner().invoke(demo, ["--label-smoothing", "0.1", "--lr", "0.2", "--no-telemetry"])
    assert result.exit_code == 0, result.output
    assert seen == {"label_smoothing": 0.1, "lr": 0.2, "telemetry": False}  # flags not given stay out
    cfg = Extended.from_dict(seen)
    assert cfg.label_smoothing == 0.1
    with pytest.raises(AblateError, match="label_smoothing must be at most 1, got 2"):
        Extended(label_smoothing=2.0)  # its bound is its metadata's, checked with the others
    # neutral: at its default the new setting stays out of the trial id, so every existing trial keeps its id
    assert Extended().trial_id() == TrialConfig().trial_id() == "87d109f0cea7"
    assert Extended(label_smoothing=0.1).trial_id() != TrialConfig().trial_id()


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if "setting" in f.metadata
                                  and f.metadata["setting"].most is not None])
def test_every_upper_bound_in_the_metadata_is_enforced_in_one_line(name):
    most = FIELDS[name].metadata["setting"].most
    above = most + 1 if isinstance(most, int) else most * 10
    with pytest.raises(AblateError, match=rf"^{name} must be at most "):
        TrialConfig(**{name: above})


def test_flags_given_as_text_are_parsed_by_their_metadata_naming_the_flag():
    assert T.given_settings({"milestones": "0.25,0.5", "lr": None}) == {"milestones": (0.25, 0.5)}
    with pytest.raises(AblateError, match=r"^--milestones must be comma-separated numbers such as 0.5,0.75, got 'x'"):
        T.given_settings({"milestones": "x"})
    assert T.given_settings({"family": "cifar"}) == {"family": "cifar", "depth": 20}  # its own default depth
    assert T.given_settings({"family": "cifar"}, base_family="cifar") == {"family": "cifar"}


@pytest.mark.slow
def test_the_settings_that_had_no_flag_now_train_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", "digits", "--image-size", "16", "--no-telemetry",
                                      "--no-channels-last", "--train-size", "64", "--dev-size", "32", "--test-size",
                                      "32", "--batch-size", "32", "--epochs", "1", "--eval-every", "2", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["image_size"], cfg["telemetry"], cfg["channels_last"]) == (16, False, False)
    assert not (out / "grad_norms.csv").exists()
