"""A network the user brings (docs/your-own-network.md): named in a spec by `model:`, its factory called with the
study's settings that are not ablate's own, refused before anything runs where it does not take one, recorded (its
reference and source hash in every trial config, a copy of its source in the run folder, its package's version in
the manifest), described as itself in the report, and reproduced only from the source it ran."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.errors import AblateError
from ablate.spec import TrialConfig, file_sha256, load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]

# A factory that records what it was called with (on the module, which the test reads back).
RECORDING = '''
import torch
from torch import nn

CALLS = []


def build(in_channels, num_classes, image_size, residual=True, depth=2, width=8):
    CALLS.append(dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size, residual=residual,
                      depth=depth, width=width))
    layers = [nn.Flatten(), nn.Linear(in_channels * image_size * image_size, width)]
    layers += [nn.Linear(width, width) for _ in range(depth)]
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
'''

SPEC = {"name": "mine", "model": "./mynets.py:build",
        "base": {"dataset": "digits", "image_size": 8, "width": 16, "train_size": 64, "dev_size": 32,
                 "test_size": 32, "batch_size": 32, "epochs": 1, "eval_every": 2, "lr": 0.05},
        "factors": {"residual": {"values": [True, False]}, "depth": {"values": [3, 5]}},
        "seeds": [0, 1]}


def _write(tmp_path: Path, spec: dict = SPEC, source: str = RECORDING) -> Path:
    (tmp_path / "mynets.py").write_text(source)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_user_axis_enters_the_trial_config_and_the_resnet_checks_do_not_refuse_it(tmp_path):
    study = load_study(_write(tmp_path))
    arm = next(a for a in study.arms if a.settings == {"residual": False, "depth": 3})
    cfg = study.trial_config(arm, {}, seed=0)
    assert cfg.factory == "./mynets.py:build"
    assert cfg.factory_file == str((tmp_path / "mynets.py").resolve())
    assert cfg.factory_sha256 == file_sha256(tmp_path / "mynets.py")
    assert dict(cfg.axes) == {"residual": False, "depth": 3, "width": 16}  # depth 3 is no ResNet depth: no matter
    assert cfg.lr == 0.05 and cfg.image_size == 8  # ablate's own settings stay ablate's
    text = cfg.to_yaml()
    assert "family" not in text and "shortcut" not in text  # the ResNet's axes do not describe this network
    again = TrialConfig.from_yaml_file(_dump(tmp_path, text))
    assert again == cfg and again.trial_id() == cfg.trial_id()
    assert cfg.settings()["width"] == 16 and TrialConfig.from_dict(cfg.settings()) == cfg
    # where this machine keeps the file is not part of the trial id; the source's hash and the axes are
    assert cfg.replace(factory_file="/elsewhere/mynets.py").trial_id() == cfg.trial_id()
    assert cfg.replace(width=32).trial_id() != cfg.trial_id()
    assert cfg.replace(factory_sha256="0" * 64).trial_id() != cfg.trial_id()
    # spec.yaml of the run records the resolved reference, file and hash, and reads back as the same study
    resolved = yaml.safe_load(study.resolved_yaml())
    assert resolved["model"] == {"reference": "./mynets.py:build", "file": cfg.factory_file, "sha256": cfg.factory_sha256}
    assert parse_study(resolved, source="spec.yaml").trial_config(arm, {}, seed=0) == cfg


def _dump(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_without_a_model_a_resnet_config_keeps_its_trial_id():
    cfg = TrialConfig()
    data = cfg.to_dict()
    assert data["factory"] == "" and data["axes"] == {}
    assert TrialConfig.from_dict(data) == cfg
    assert cfg.trial_id() == TrialConfig.from_dict({k: v for k, v in data.items()
                                                    if k not in ("factory", "factory_file", "factory_sha256",
                                                                 "axes")}).trial_id()


@pytest.mark.parametrize("name", ["in_channels", "num_classes", "factory_sha256"])
def test_a_setting_named_as_one_of_ablates_inputs_is_refused(tmp_path, name):
    spec = {**SPEC, "base": {**SPEC["base"], name: 3}}
    with pytest.raises(AblateError, match=name):
        load_study(_write(tmp_path, spec))


def test_a_missing_model_file_or_a_malformed_reference_is_refused_in_one_line(tmp_path):
    with pytest.raises(AblateError, match="no file"):
        load_study(_write(tmp_path, {**SPEC, "model": "./other.py:build"}))
    with pytest.raises(AblateError, match="MODULE:FUNCTION"):
        load_study(_write(tmp_path, {**SPEC, "model": "mynets"}))


def test_an_import_path_is_found_without_importing_it(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported at parse time')\n")
    (package / "nets.py").write_text(RECORDING)
    study = load_study(_write(tmp_path, {**SPEC, "model": "mypkg.nets:build"}))
    assert study.model.file == str((package / "nets.py").resolve())
    assert study.model.root == str(tmp_path.resolve()) and study.model.module == "mypkg.nets"


def test_an_import_path_is_imported_from_the_recorded_file_with_its_package_root_on_the_path(tmp_path):
    from ablate.models import build_trial_model

    package = tmp_path / "pkgroot" / "zoo_of_nets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mlp.py").write_text(RECORDING)
    spec = {**SPEC, "model": "zoo_of_nets.mlp:build"}
    study = parse_study(spec, source="spec", spec_dir=tmp_path / "pkgroot")
    cfg = study.trial_config(study.arms[0], {}, seed=0)
    model = build_trial_model(cfg, 1, 10)
    module = sys.modules["zoo_of_nets.mlp"]
    assert Path(module.__file__).resolve() == package / "mlp.py" and module.CALLS[-1]["width"] == 16
    assert model[-1].out_features == 10


def test_the_manifest_records_the_version_of_an_import_paths_distribution(tmp_path):
    from importlib import metadata

    from ablate.engine import model_record

    study = parse_study({**SPEC, "model": "yaml.constructor:SafeConstructor"}, source="spec", spec_dir=tmp_path)
    record = model_record(study)
    assert record["package"] == "PyYAML" and record["version"] == metadata.version("PyYAML")
    assert record["file"].endswith("constructor.py") and record["sha256"] == file_sha256(record["file"])
    resnet = {"base": {"dataset": "digits"}, "factors": {"residual": {"values": [True, False]}}, "seeds": [0, 1]}
    assert model_record(parse_study(resnet, source="spec")) is None
    with pytest.raises(AblateError, match="unknown base setting"):  # without a model, width is no setting
        parse_study({k: v for k, v in SPEC.items() if k != "model"}, source="spec")


def test_a_user_axis_reaches_the_factory_and_changes_the_model(tmp_path):
    from ablate.models import build_trial_model

    study = load_study(_write(tmp_path))
    arm = study.arms[0]
    narrow = study.trial_config(arm, {}, seed=0)
    wide = narrow.replace(width=32)
    counts = [sum(p.numel() for p in build_trial_model(c, 1, 10).parameters()) for c in (narrow, wide)]
    module = sys.modules[f"ablate_user_model_{narrow.factory_sha256[:16]}"]
    assert module.CALLS[-2:] == [dict(in_channels=1, num_classes=10, image_size=8, residual=True, depth=3, width=16),
                                 dict(in_channels=1, num_classes=10, image_size=8, residual=True, depth=3, width=32)]
    assert counts[1] > counts[0]


def test_a_factor_the_factory_does_not_take_is_refused_before_anything_is_written(tmp_path):
    spec = _write(tmp_path, {**SPEC, "factors": {**SPEC["factors"], "dropout": {"values": [0.0, 0.5]}}})
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["study", str(spec), "--out", str(out), "--cpus", "1"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0] == f"importing model factory ./mynets.py:build from {(tmp_path / 'mynets.py').resolve()}"
    assert len(lines) == 2
    assert "factor dropout is not a parameter of model factory ./mynets.py:build" in lines[1]
    assert "in_channels, num_classes, image_size, residual, depth, width" in lines[1]
    assert not out.exists()


def test_nothing_in_the_package_names_the_examples():
    examples = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
    assert {"residual_mlp", "vit"} <= set(examples)
    for path in (ROOT / "ablate").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "examples/" not in text, path
        for name in examples:
            assert not re.search(rf"\b{name}\b", text), (path, name)


# --- the example, end to end: one tiny real study (user_model_example, a background study) ----------------------
@pytest.mark.slow
def test_the_example_runs_and_records_what_its_result_depends_on(user_model_example):
    out, folder = user_model_example["out"], user_model_example["folder"]
    source = folder / "nets.py"
    assert f"importing model factory ./nets.py:build from {source.resolve()}" in user_model_example["study"].stderr
    assert (out / "model_source.py").read_bytes() == source.read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == {"reference": "./nets.py:build", "file": str(source.resolve()),
                                 "sha256": file_sha256(source), "package": None, "version": None}
    trials = list((out / "trials").glob("*/config.yaml"))
    assert len(trials) == 4 * 2 + 4 * 2  # 4 arms: 2 grid points, then 2 confirm seeds
    configs = [TrialConfig.from_yaml_file(p) for p in trials]
    assert {c.factory_sha256 for c in configs} == {file_sha256(source)}
    assert {(dict(c.axes)["residual"], dict(c.axes)["depth"]) for c in configs} == {(True, 2), (False, 2), (True, 16),
                                                                                  (False, 16)}
    assert len(list((out / "trials").glob("*/grad_norms.csv"))) == len(trials)  # its layers, by name


@pytest.mark.slow
def test_the_report_names_the_factory_never_a_resnet(user_model_example):
    analysis = user_model_example["out"] / "analysis"
    sha = file_sha256(user_model_example["folder"] / "nets.py")[:12]
    for name in ("report.md", "methods.md"):
        text = (analysis / name).read_text()
        assert "./nets.py:build" in text and sha in text, name
        assert "ResNet" not in text and "BatchNorm" not in text, name
    assert (analysis / "figures" / "grad_profile.png").is_file()


@pytest.mark.slow
def test_the_per_layer_gradient_figure_of_a_user_model_labels_layers_by_name(user_model_example):
    from ablate.analysis.figures import grad as G
    from ablate.analysis.load import load_grad_norms, load_run

    run = load_run(user_model_example["out"])
    grads = load_grad_norms(run)
    # examples/residual_mlp: nn.Sequential(Flatten, Linear, ReLU, blocks..., Linear), each block an ablate.Residual
    deep = ["1", *(f"{i}.branch.0" for i in range(3, 19)), "19"]
    for fig in (G.grad_profile(run, grads), G.grad_heatmap(run, grads)):
        # arms of different depths have different layers at one index: its label names each (" / ")
        labels = {name for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()
                  for name in t.get_text().split(" / ")}
        assert set(deep) <= labels, sorted(labels)
    profile = G.grad_profile(run, grads)
    assert profile.axes[-1].get_xlabel() == "layer, in forward order"


@pytest.mark.slow
def test_an_exported_trial_reproduces_and_a_changed_source_is_refused_naming_both_hashes(user_model_example):
    cli, folder = user_model_example["cli"], user_model_example["folder"]
    exported = sorted(p for p in (user_model_example["tmp"] / "exported").iterdir() if p.is_dir())[0]
    same = cli("reproduce", str(exported))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "identical" in same.stdout and "importing model factory ./nets.py:build" in same.stderr
    recorded = file_sha256(folder / "nets.py")
    with open(folder / "nets.py", "a") as f:
        f.write("\n# an edit after the run\n")
    now = file_sha256(folder / "nets.py")
    refused = cli("reproduce", str(exported))
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert str((folder / "nets.py").resolve()) in line and recorded in line and now in line
    resumed = cli("study", "--resume", str(user_model_example["out"]))  # a run goes on only with the source it started with
    assert resumed.returncode == 2 and recorded in resumed.stderr and now in resumed.stderr
    anyway = cli("reproduce", str(exported), "--allow-changed")
    assert anyway.returncode == 0, anyway.stdout + anyway.stderr  # a comment changes no number
    assert "--allow-changed: reran a changed model source" in anyway.stdout and now in anyway.stdout


@pytest.mark.slow
def test_with_more_than_two_arms_an_unstarred_table_does_not_say_no_difference_is_supported(user_model_example):
    """4 arms, 2 seeds each (no pair can be supported: the smallest sign-flip p of 2 pairs is 0.5): no arm is
    starred, and the note says only that, not that no difference is supported (a run with more seeds may support
    some pairs while no arm beats every other)."""
    from ablate.analysis import terminal_table

    table = terminal_table(user_model_example["out"])
    assert "* = better than every other arm" not in table
    assert "none is better than every other arm with support" in table and "no difference is supported" not in table

# --- the second example, a small vision transformer (vit_example, a background study) ---------------------------
@pytest.mark.slow
def test_the_vit_example_runs_its_smoke_budget_and_its_report_names_the_factory(vit_example):
    out, folder = vit_example["out"], vit_example["folder"]
    source = folder / "nets.py"
    assert f"importing model factory ./nets.py:build from {source.resolve()}" in vit_example["study"].stderr
    configs = [TrialConfig.from_yaml_file(p) for p in (out / "trials").glob("*/config.yaml")]
    assert len(configs) == 4 * 2 + 4 * 2  # 4 arms: 2 grid points, then 2 confirm seeds
    assert {c.factory for c in configs} == {"./nets.py:build"}
    assert {c.factory_sha256 for c in configs} == {file_sha256(source)}
    assert {(dict(c.axes)["residual"], dict(c.axes)["depth"]) for c in configs} == {(True, 2), (False, 2), (True, 8),
                                                                                  (False, 8)}
    assert {(dict(c.axes)["width"], dict(c.axes)["heads"], dict(c.axes)["patch"]) for c in configs} == {(32, 2, 2)}
    report = (out / "analysis" / "report.md").read_text()
    assert "./nets.py:build" in report and file_sha256(source)[:12] in report
    assert "ResNet" not in report


def test_the_shipped_resnets_are_built_through_the_same_factory_mechanism():
    import torch

    from ablate.models import build_trial_model
    from ablate.models.factory import SHIPPED, parameters
    from ablate.models.resnet import ResNet, build, build_model

    assert SHIPPED == f"{build.__module__}:{build.__name__}"
    assert parameters(build) == (["in_channels", "num_classes", "image_size"], True)
    config = TrialConfig(family="cifar", depth=20, residual=False, block="preact")
    torch.manual_seed(0)
    through_factory = build_trial_model(config, 3, 7)
    torch.manual_seed(0)
    direct = build_model(config.model, 3, 7)
    assert isinstance(through_factory, ResNet) and through_factory.fc.out_features == 7
    assert through_factory.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(through_factory.state_dict().values(), direct.state_dict().values()))


PYTHON_CYCLE = '''
import json, sys
import ablate

study = ablate.load_study(sys.argv[1], budget="smoke")
run_dir = ablate.run(study, out=sys.argv[2], cpus=1)
result = ablate.analyze(run_dir, figures=False)
tables = ablate.load_run(run_dir)
print(json.dumps({"trials": len(tables.trials), "confirm": len(tables.confirm), "arms": sorted(tables.selected),
                  "comparisons": len(tables.comparisons), "report": str(result.report)}))
'''


@pytest.mark.slow
def test_a_user_model_study_runs_from_python_search_confirm_analyze_and_tables(tmp_path):
    import shutil
    import subprocess

    from helpers.background import environ

    shutil.copytree(ROOT / "examples" / "residual_mlp", tmp_path / "mlp")
    out = subprocess.run([sys.executable, "-c", PYTHON_CYCLE, str(tmp_path / "mlp" / "study.yaml"), str(tmp_path / "run")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={**environ(), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    told = json.loads(out.stdout.strip().splitlines()[-1])
    assert "importing model factory ./nets.py:build" in out.stderr
    assert (told["trials"], told["confirm"]) == (16, 8) and told["comparisons"] >= 2
    assert told["arms"] == sorted(f"residual={r},depth={d}" for r in ("true", "false") for d in (2, 16))
    report = Path(told["report"]).read_text()
    assert "./nets.py:build" in report and "ResNet" not in report
    configs = [TrialConfig.from_yaml_file(p) for p in (tmp_path / "run" / "trials").glob("*/config.yaml")]
    assert {dict(c.axes)["depth"] for c in configs} == {2, 16}  # the user's axis reached every trial's factory call


@pytest.mark.slow
def test_a_user_models_signal_propagation_text_says_what_was_measured_on_it(user_model_example):
    from ablate.analysis.load import load_run
    from ablate.analysis.text import diagnostics_report as D
    from ablate.probes.diagnostics import SETTINGS

    run = load_run(user_model_example["out"])
    for text in (D.caption(run, "signal"), D._signal_method(run, SETTINGS)):
        assert "ablate.Residual" in text and "branch's output" in text, text
        assert "convolution" not in text and "basic block" not in text, text
