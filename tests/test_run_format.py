"""The run folder is an interface (ablate.run_folder): manifest.json records its format_version, a folder made
before it existed (format 1) is still analysed, exported and resumed, a folder of a newer format is refused in one
line, and the analysis reads each trial's settings from the config.yaml it recorded (the spec's only where it
recorded none).

tests/fixtures/run-format-1 is a real run folder made by ablate at commit 9d49000 (before format_version): a
fixed residual-vs-plain study on digits, 2 seeds per arm, no weights, no telemetry (15 KB)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablate.analysis.load import load_run
from ablate.cli.app import app
from ablate.run_folder.layout import (CONFIG, FORMAT_KEY, FORMAT_VERSION, MANIFEST, METRICS, REGISTRY, SPEC,
                                      TRIALS_CSV, resume_manifests, trial_dir)
from ablate.run_folder.registry import read_registry
from ablate.run_folder.run_files import create_run_dir, format_version, read_manifest, read_spec, write_resume_manifest
from ablate.run_folder.trial_records import read_config
from ablate.run_folder.trial_table import trials_csv
from ablate.spec.study_spec import parse_study
from ablate.spec.trial_config import TrialConfig
from helpers.background import environ
from helpers.runs import build_run

ROOT = Path(__file__).resolve().parent.parent
FORMAT_1 = ROOT / "tests" / "fixtures" / "run-format-1"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def format_1(tmp_path) -> Path:
    return Path(shutil.copytree(FORMAT_1, tmp_path / "run"))


def test_a_format_1_run_folder_still_analyses_exports_and_gives_the_same_trials_csv(format_1, tmp_path):
    manifest = read_manifest(format_1)
    assert FORMAT_KEY not in manifest and format_version(manifest, format_1 / MANIFEST) == 1
    before = files_of(format_1)
    run = load_run(format_1)
    rows = read_registry(format_1)
    assert len(run.trials) == len(rows) == 4 and not run.integrity_notes
    # every trial's settings come from the config.yaml it recorded (hash-checked against its registry row)
    assert set(run.configs) == {r["trial_id"] for r in rows}
    for row in rows:
        recorded = run.configs[row["trial_id"]]
        assert recorded == read_config(trial_dir(format_1, row["trial_id"]), row["sha256"][CONFIG])
        assert recorded.trial_id() == row["trial_id"]
    assert list(run.trials["total_steps"]) == [2.0] * 4
    # trials.csv written by this ablate from the old registry is the file the old one wrote, byte for byte
    assert trials_csv(read_spec(format_1), rows) == (FORMAT_1 / TRIALS_CSV).read_text()
    for args in (("analyze", format_1, "--no-figures"), ("export", format_1, "--configs", tmp_path / "configs")):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    exported = sorted((tmp_path / "configs").glob(f"*/{CONFIG}"))
    assert len(exported) == 4
    for path in exported:
        trial_id = path.parent.name.rsplit("_", 1)[1]
        assert path.read_bytes() == (trial_dir(FORMAT_1, trial_id) / CONFIG).read_bytes()
    # reading wrote nothing into the run but its analysis
    assert {k: v for k, v in files_of(format_1).items() if not k.startswith("analysis/")} == before


def test_a_run_folder_of_a_newer_or_damaged_format_is_refused_in_one_line(format_1):
    manifest = json.loads((format_1 / MANIFEST).read_text())
    for value, says in ((FORMAT_VERSION + 1, f"is a run folder of format {FORMAT_VERSION + 1}, made by a newer "
                                             f"ablate; this one reads formats 1 to {FORMAT_VERSION}: upgrade ablate"),
                        ("2", f"{FORMAT_KEY} is '2', not a run folder format")):
        (format_1 / MANIFEST).write_text(json.dumps({FORMAT_KEY: value, **manifest}))
        for args in (("analyze", format_1, "--no-figures"), ("export", format_1, "--format", "csv"),
                     ("study", "--resume", format_1)):
            result = invoke(*args)
            assert result.exit_code == 2 and says in result.stderr, (args, result.output)
            assert result.stdout == "" and "Traceback" not in result.stderr
    assert not list(resume_manifests(format_1))


def test_a_new_run_folder_and_each_resume_record_this_format_first(tmp_path):
    study = parse_study({"name": "fmt", "base": {"dataset": "digits"}, "seeds": [0],
                         "factors": {"residual": {"values": [True, False]}}}, source="test")
    run_dir = create_run_dir(study, tmp_path / "run", study.resolved_yaml(), {"study": "fmt", FORMAT_KEY: 1},
                             trials_csv(study, []))
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert list(manifest)[:2] == [FORMAT_KEY, "study"] and manifest[FORMAT_KEY] == FORMAT_VERSION
    assert (run_dir / SPEC).read_text() == study.resolved_yaml() and (run_dir / TRIALS_CSV).read_text().count("\n") == 1
    resumed = json.loads(write_resume_manifest(run_dir, {"study": "fmt"}).read_text())
    assert resumed[FORMAT_KEY] == FORMAT_VERSION and resume_manifests(run_dir)


def test_the_analysis_reads_each_trials_recorded_config_and_the_spec_only_where_none_was_recorded(tmp_path):
    """A run started by an older ablate (its manifest records no spec to check spec.yaml against) whose spec.yaml
    was edited afterwards (5 epochs became 7): the trials' steps are those their config.yaml recorded; a trial
    whose folder lost its config (a row without hashes, so nothing says it had one) takes the spec's."""
    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": 0.8 + s / 100}
                                       for arm in ("residual=true", "residual=false") for s in (0, 1, 2)])
    manifest = json.loads((run / MANIFEST).read_text())
    (run / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if not k.startswith("spec")}))
    rows = [json.loads(line) for line in (run / REGISTRY).read_text().splitlines()]
    lost = rows[0]
    (run / REGISTRY).write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sha256" or r is not lost})
                                        + "\n" for r in rows))
    (trial_dir(run, lost["trial_id"]) / CONFIG).unlink()
    spec = yaml.safe_load((run / SPEC).read_text())
    ran = TrialConfig.from_dict(spec["base"]).total_steps()
    spec["base"]["epochs"] = 7
    (run / SPEC).write_text(yaml.safe_dump(spec, sort_keys=False))
    edited = TrialConfig.from_dict(spec["base"]).total_steps()
    assert edited != ran

    loaded = load_run(run)
    assert any("the spec could not be checked" in note for note in loaded.integrity_notes)
    assert set(loaded.configs) == {r["trial_id"] for r in rows} - {lost["trial_id"]}
    steps = dict(zip(loaded.trials["trial_id"], loaded.trials["total_steps"]))
    assert steps.pop(lost["trial_id"]) == edited
    assert set(steps.values()) == {ran}
    assert loaded.reported_config("residual=false").epochs == 5  # what its trials ran, not the edited spec
    assert all(c.epochs == 5 for c in loaded.configs.values())


@pytest.mark.slow
def test_a_format_1_run_folder_resumes_and_its_new_rows_are_read_with_the_old(format_1):
    rerun = read_registry(format_1)[0]
    (trial_dir(format_1, rerun["trial_id"]) / METRICS).unlink()  # lost: the resume runs that trial again
    manifest = (format_1 / MANIFEST).read_bytes()
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "study", "--resume", str(format_1), "--cpus", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=environ())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = (format_1 / REGISTRY).read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["trial_id"] == rerun["trial_id"]
    assert (format_1 / MANIFEST).read_bytes() == manifest  # the run keeps the format it was made with
    [resumed] = resume_manifests(format_1)
    assert json.loads(resumed.read_text())[FORMAT_KEY] == FORMAT_VERSION
    run = load_run(format_1)
    assert len(run.trials) == 4 and set(run.configs) == {r["trial_id"] for r in read_registry(format_1)}
    assert (format_1 / TRIALS_CSV).read_text().count("\n") == 5


def test_a_spec_without_keep_weights_keeps_none_now_and_what_it_kept_in_the_folders_format(tmp_path):
    """Format 3 changed one default: a spec that does not name keep_weights keeps no weights.pt. A folder made by an
    earlier format kept the final stage's, and a resume of it goes on doing so (read_spec follows the folder's
    format, not this ablate's)."""
    doc = {"name": "fmt", "base": {"dataset": "digits"}, "seeds": [0], "factors": {"residual": {"values": [True, False]}}}
    study = parse_study(doc, source="test")
    assert study.keep_weights == "none" and not study.keeps_weights("confirm")
    run_dir = create_run_dir(study, tmp_path / "run", study.resolved_yaml(), {"study": "fmt"}, trials_csv(study, []))
    assert read_spec(run_dir).keep_weights == "none"
    manifest = json.loads((run_dir / MANIFEST).read_text())
    for older in (1, 2):
        (run_dir / MANIFEST).write_text(json.dumps({**manifest, FORMAT_KEY: older}))
        assert read_spec(run_dir).keeps_weights("confirm") and not read_spec(run_dir).keeps_weights("tune")
    (run_dir / MANIFEST).unlink()  # a folder made before manifests: format 1
    assert read_spec(run_dir).keep_weights == "final"
    assert parse_study({**doc, "keep_weights": "all"}, source="test").keeps_weights("tune")


def test_no_shipped_study_keeps_weights_by_default():
    """The dry run's disk line counts the weights.pt each stage keeps (ablate.execute.estimate): by default none."""
    from ablate.spec.study_spec import list_studies, load_study

    for name, _ in list_studies():
        study = load_study(name)
        assert study.keep_weights == "none", name
        assert not any(study.keeps_weights(stage) for stage in ("tune", "confirm", "grid")), name
