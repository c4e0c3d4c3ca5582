"""What was recorded is what is read (issue 25): a value that its field cannot hold, a trial file changed after its
trial was registered, a symbolic link in a run or an export folder, and a spec.yaml changed since the run started
are each named in one line (exit 2) by analyze, export and study --resume, which print no number from them and
write nothing. Constructed run folders (helpers.runs) for the many cases; the shared real study (`tuned_study`,
copied before it is damaged) for the ones the issue names."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.engine.manifest import hardware
from ablate.run_folder.trial_records import read_metrics
from ablate.run_folder.registry import read_registry, read_registry_lines
from ablate.errors import AblateError
from helpers.runs import build_run

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
ARMS = ("residual=true", "residual=false")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result) -> str:
    """The one line of a refusal: exit 2, nothing on stdout (no table, no number), no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path) -> Path:
    """A finished constructed run (no search: seeds 0-2 per arm), each trial with curves and predictions."""
    trials = [{"arm": arm, "seed": s, "best_dev_acc": 0.5, "correct": [1] * (6 + s) + [0] * (4 - s),
               "curves": [{"step": 1, "train_loss": 2.3, "dev_loss": 2.2, "dev_acc": 0.5}]}
              for arm in ARMS for s in (0, 1, 2)]
    return build_run(tmp_path / "run", trials)


def confirm_line(run_dir: Path, arm: str = "residual=true", seed: int = 1) -> tuple[int, dict]:
    return next((n, r) for n, r in read_registry_lines(run_dir) if r["arm"] == arm and r["seed"] == seed)


def edit_registry(run_dir: Path, line: int, field: str, raw: str) -> None:
    """Set `field` of the registry's line `line` to the JSON text `raw` (NaN and Infinity included)."""
    path = run_dir / "trials.jsonl"
    lines = path.read_text().split("\n")
    row = json.loads(lines[line - 1])
    row[field] = "@@"
    lines[line - 1] = json.dumps(row).replace('"@@"', raw)
    path.write_text("\n".join(lines))


# --- values ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, raw, shown, what", [
    ("test_acc", "1.7", "1.7", "not an accuracy in [0, 1]"), ("test_acc", "-1", "-1", "not an accuracy in [0, 1]"),
    ("test_acc", "NaN", "NaN", "not an accuracy in [0, 1]"),
    ("test_acc", "Infinity", "Infinity", "not an accuracy in [0, 1]"),
    ("test_acc", '"0.9"', "'0.9'", "not an accuracy in [0, 1]"), ("test_acc", "true", "True", "not an accuracy"),
    ("test_loss", "-Infinity", "-Infinity", "not a finite cross-entropy"),
    ("steps", "-5", "-5", "not a whole number >= 0"), ("seed", "1.5", "1.5", "not a whole number >= 0"),
    ("status", '"great"', "'great'", "not a status"), ("trial_id", '"../../elsewhere"', "'../../elsewhere'",
                                                          "not a trial id")])
def test_a_value_its_field_cannot_hold_is_named_and_nothing_is_printed_or_written(run, field, raw, shown, what):
    line, row = confirm_line(run)
    edit_registry(run, line, field, raw)
    before = files_of(run)
    for args in (("analyze", run, "--no-figures"), ("export", run, "--format", "csv"),
                 ("export", run, "--configs", run.parent / "configs"), ("study", "--resume", run)):
        message = refused(invoke(*args))
        assert f"trials.jsonl line {line}: {field} is {shown}, {what}" in message, message
    assert files_of(run) == before and not (run / "analysis").exists() and not (run.parent / "configs").exists()


def test_a_registry_line_edited_within_range_disagrees_with_its_metrics_json(run):
    line, row = confirm_line(run)
    edit_registry(run, line, "test_acc", "0.95")  # the trial recorded 0.7
    message = refused(invoke("analyze", run, "--no-figures"))
    assert f"trials.jsonl line {line}: test_acc is 0.95, but trial {row['trial_id']} recorded 0.7 in " in message
    assert "metrics.json" in message


def test_metrics_json_values_are_checked_as_they_are_read(tmp_path):
    folder = tmp_path / "trial"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"status": "ok", "test_acc": NaN}')
    with pytest.raises(AblateError, match=r"metrics.json: test_acc is NaN, not an accuracy in \[0, 1\]"):
        read_metrics(folder)
    (folder / "metrics.json").write_text('{"status": "ok", "best_dev_acc": 0.9, "test_acc": null}')
    assert read_metrics(folder)["best_dev_acc"] == 0.9
    (folder / "metrics.json").write_text('{"status": "ok", "tes')  # cut short: the trial has not finished
    assert read_metrics(folder) is None


@pytest.mark.parametrize("raw", ['{"entered": 1}', '[{"entered": -1}]', '[{"entered": "soon"}]', '[{"lunch": 1.0}]',
                                 '[{"entered": NaN}]', '[{"entered": true}]'])
def test_a_timeline_that_ablate_could_not_have_written_is_refused_and_none_is_unknown(tmp_path, raw):
    """metrics.json's timeline (ablate.run_folder.timeline) holds segments of known marks, each a time >= 0; a
    metrics.json without one (written before timelines existed) reads as it did, with no segments."""
    from ablate.run_folder import timeline_segments

    folder = tmp_path / "trial"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"status": "ok", "timeline": %s}' % raw)
    with pytest.raises(AblateError, match=r"metrics.json: timeline is .*, not a list of segments"):
        read_metrics(folder)
    (folder / "metrics.json").write_text('{"status": "ok", "timeline": [{"queued": 1.5, "entered": 2, "written": 3}]}')
    assert timeline_segments(read_metrics(folder)) == [{"queued": 1.5, "entered": 2, "written": 3}]
    (folder / "metrics.json").write_text('{"status": "ok"}')
    assert timeline_segments(read_metrics(folder)) == []


# --- hashes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["metrics.json", "config.yaml", "curves.csv", "predictions.csv"])
def test_a_trial_file_changed_after_registration_is_named_by_analyze_export_and_resume(run, name):
    line, row = confirm_line(run)
    path = run / "trials" / row["trial_id"] / name
    path.write_text(path.read_text().replace("0.7", "0.9").replace("lr: 0.1", "lr: 0.3") + "\n")
    before = files_of(run)
    for args in (("analyze", run, "--no-figures"), ("export", run, "--format", "latex"),
                 ("export", run, "--configs", run.parent / "configs"), ("study", "--resume", run),
                 ("reproduce", path.parent)):
        message = refused(invoke(*args))
        assert f"{path} changed after trial {row['trial_id']} was registered (trials.jsonl line {line}" in message
    assert files_of(run) == before and not (run.parent / "configs").exists()
    path.unlink()
    assert f"{path} is missing, but trials.jsonl line {line} recorded it" in refused(invoke("analyze", run))


def test_a_run_registered_without_hashes_still_analyses_and_says_what_it_could_not_check(run):
    path = run / "trials.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sha256"}) + "\n" for r in rows))
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if not k.startswith("spec")}))
    curves = run / "trials" / rows[0]["trial_id"] / "curves.csv"
    curves.write_text(curves.read_text() + "2,2.0,2.0,0.6\n")  # not checked: no hash to check it against
    result = invoke("analyze", run, "--no-figures")
    assert result.exit_code == 0, result.output
    assert "note: 6 trial(s) of this run were registered without file hashes" in result.stderr
    assert "note: the spec could not be checked" in result.stderr


# --- symbolic links -------------------------------------------------------------------------------------------
def test_an_export_never_writes_through_a_symlinked_trial_folder(run, tmp_path):
    dest = tmp_path / "configs"
    assert invoke("export", run, "--configs", dest).exit_code == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "metrics.json").write_text("mine\n")
    first = sorted(p for p in dest.iterdir() if p.is_dir())[0]
    shutil.rmtree(first)
    first.symlink_to(victim, target_is_directory=True)
    before = files_of(dest)
    message = refused(invoke("export", run, "--configs", dest))
    assert f"{first} is a symbolic link; ablate never reads a result through a link nor writes through one" in message
    assert (victim / "metrics.json").read_text() == "mine\n" and sorted(os.listdir(victim)) == ["metrics.json"]
    assert files_of(dest) == before
    first.unlink()  # a file in an export's trial folder that is a link is refused too
    assert invoke("export", run, "--configs", dest).exit_code == 0
    (first / "metrics.json").unlink()
    (first / "metrics.json").symlink_to(victim / "metrics.json")
    assert "metrics.json is a symbolic link" in refused(invoke("export", run, "--configs", dest))
    assert (victim / "metrics.json").read_text() == "mine\n"


def test_a_symlinked_trial_folder_in_a_run_is_never_read_or_registered(run, tmp_path):
    line, row = confirm_line(run)
    folder = run / "trials" / row["trial_id"]
    outside = tmp_path / "outside"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    registry = (run / "trials.jsonl").read_bytes()
    for args in (("analyze", run, "--no-figures"), ("export", run, "--format", "csv"), ("study", "--resume", run)):
        assert f"{folder} is a symbolic link" in refused(invoke(*args))
    # not registered: a trial folder that no row names yet, linked in, is refused by a resume before anything runs
    lines = (run / "trials.jsonl").read_text().splitlines()
    (run / "trials.jsonl").write_text("\n".join(ln for ln in lines if row["trial_id"] not in ln) + "\n")
    assert f"{folder} is a symbolic link" in refused(invoke("study", "--resume", run))
    assert row["trial_id"] not in (run / "trials.jsonl").read_text() and not list(run.glob("manifest-resume-*"))
    folder.unlink()
    (run / "trials.jsonl").write_bytes(registry)


def test_a_trial_is_never_written_through_a_symlinked_folder_and_that_is_a_fault_of_the_machine(tmp_path):
    import errno

    from ablate.engine import trial_failures
    from ablate.engine.run_work import run_work
    from ablate.engine.trial_plan import TrialPlan
    from ablate.spec.trial_config import TrialConfig

    cfg = TrialConfig.from_dict({"dataset": "digits", "image_size": 16, "train_size": 64, "dev_size": 32,
                                 "test_size": 32, "epochs": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run" / "trials").mkdir(parents=True)
    (tmp_path / "run" / "trials" / cfg.trial_id()).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError) as raised:
        run_work(TrialPlan("confirm", "residual=true", cfg, {}), tmp_path / "run", None)
    assert raised.value.errno == errno.ELOOP and "is a symbolic link" in str(raised.value)
    assert trial_failures.kind_of(raised.value) == trial_failures.INFRASTRUCTURE  # the study stops for a resume
    assert list(elsewhere.iterdir()) == []


# --- the spec a run started with ------------------------------------------------------------------------------
def test_a_resume_refuses_a_spec_yaml_changed_since_the_start_naming_each_change(run):
    spec = run / "spec.yaml"
    original = yaml.safe_load(spec.read_text())
    doc = yaml.safe_load(spec.read_text())
    doc["seeds"] = [0, 1, 2, 3]
    doc["base"]["epochs"] = 9
    spec.write_text(yaml.safe_dump(doc))
    before = files_of(run)
    message = refused(invoke("study", "--resume", run))
    assert "spec.yaml is not the spec this run started with (" in message and "a resume runs the spec it started with" \
        in message
    assert "base.epochs: 5 -> 9" in message and "seeds: [0, 1, 2] -> [0, 1, 2, 3]" in message
    assert "spec.yaml is not the spec this run started with" in refused(invoke("analyze", run, "--no-figures"))
    assert files_of(run) == before
    spec.write_text("# the same spec, laid out anew\n" + yaml.safe_dump(original, default_flow_style=True))
    assert invoke("analyze", run, "--no-figures").exit_code == 0


# --- the manifest ---------------------------------------------------------------------------------------------
def test_the_manifest_records_the_cpu_and_its_flags_without_loading_torch():
    code = ("import sys, json; from ablate.engine.manifest import hardware; h = hardware(); "
            "print(json.dumps([h, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    found, torch_loaded = json.loads(out.stdout)
    assert not torch_loaded and found["cpu_capability"] is None and found["machine"]
    if Path("/proc/cpuinfo").is_file():
        info = Path("/proc/cpuinfo").read_text()
        flags = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                      if ln.split(":")[0].strip() in ("flags", "Features")), None)
        assert found["cpu_flags"] == flags and found["cpu"]
    import torch

    assert hardware()["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


# --- a real run (the session's shared tiny study, copied before it is damaged) ----------------------------------
def real_copy(tuned_study: Path, tmp_path: Path, name: str) -> Path:
    """A copy of the run as the study left it: another test may have analysed the shared run in place already."""
    return Path(shutil.copytree(tuned_study, tmp_path / name, symlinks=True, ignore=shutil.ignore_patterns("analysis")))


@pytest.mark.slow
def test_a_real_run_names_each_changed_record_and_prints_no_number(tuned_study, tmp_path):
    manifest = json.loads((tuned_study / "manifest.json").read_text())
    assert manifest["spec_sha256"] == hashlib.sha256((tuned_study / "spec.yaml").read_bytes()).hexdigest()
    assert manifest["hardware"]["cpu"] and "cpu_flags" in manifest["hardware"]
    assert manifest["hardware"]["cpu_capability"]  # the study process had torch loaded already
    rows = read_registry(tuned_study)
    assert all(set(r["sha256"]) >= {"config.yaml", "metrics.json", "curves.csv"} for r in rows)
    confirm = next(r for r in rows if r["stage"] == "confirm" and r["status"] == "ok")
    assert "weights.pt" in confirm["sha256"]  # kept for the lesion study, and bound too
    tid, acc = confirm["trial_id"], confirm["test_acc"]

    def damage(name: str, how) -> tuple[Path, str]:
        run_dir = real_copy(tuned_study, tmp_path, name)
        return run_dir, how(run_dir)

    def registry(run_dir):
        line = next(n for n, r in read_registry_lines(run_dir) if r["trial_id"] == tid and r["stage"] == "confirm")
        edit_registry(run_dir, line, "test_acc", "1.7")
        return f"trials.jsonl line {line}: test_acc is 1.7, not an accuracy in [0, 1]"

    def metrics(run_dir):
        path = run_dir / "trials" / tid / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "test_acc": 0.999}))
        return f"{path} changed after trial {tid} was registered"

    def config(run_dir):
        path = run_dir / "trials" / tid / "config.yaml"
        path.write_text(path.read_text().replace("epochs: 2", "epochs: 3"))
        return f"{path} changed after trial {tid} was registered"

    for name, how in (("registry", registry), ("metrics", metrics), ("config", config)):
        run_dir, expected = damage(name, how)
        for args in (("analyze", run_dir, "--no-figures"), ("export", run_dir, "--configs", tmp_path / f"{name}-x"),
                     ("study", "--resume", run_dir)):
            message = refused(invoke(*args))
            assert expected in message, (args, message)
            assert f"{100 * acc:.1f}" not in message
        assert not (run_dir / "analysis").exists() and not (tmp_path / f"{name}-x").exists()
        assert not list(run_dir.glob("manifest-resume-*"))


@pytest.mark.slow
def test_a_real_run_refuses_a_symlinked_trial_and_a_changed_spec_on_resume(tuned_study, tmp_path):
    run_dir = real_copy(tuned_study, tmp_path, "interrupted")
    # interrupted before its last confirm trial finished: neither its row nor its metrics.json
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["stage"] == "confirm"
    (run_dir / "trials.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (run_dir / "trials" / last["trial_id"] / "metrics.json").unlink()
    spec = run_dir / "spec.yaml"
    original = spec.read_text()
    doc = yaml.safe_load(original)
    doc["seeds"], doc["search"]["space"]["lr"]["high"] = [0, 1, 2, 3], 0.5
    spec.write_text(yaml.safe_dump(doc))
    message = refused(invoke("study", "--resume", run_dir))
    assert "search.space.lr.high: 0.3 -> 0.5" in message and "seeds: [0, 1, 2] -> [0, 1, 2, 3]" in message
    spec.write_text(original)
    # a trial folder replaced by a link to a finished one outside the run is never registered as its result
    folder = run_dir / "trials" / last["trial_id"]
    outside = tmp_path / "outside"
    shutil.copytree(tuned_study / "trials" / last["trial_id"], outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    registry = (run_dir / "trials.jsonl").read_text()
    assert f"{folder} is a symbolic link" in refused(invoke("study", "--resume", run_dir))
    assert (run_dir / "trials.jsonl").read_text() == registry and not list(run_dir.glob("manifest-resume-*"))
    assert sorted(os.listdir(outside)) == sorted(os.listdir(tuned_study / "trials" / last["trial_id"]))


@pytest.mark.slow
def test_the_lesion_study_reads_only_the_weights_its_trial_registered(tuned_study, tmp_path):
    from ablate.probes.lesion import lesion_run

    run_dir = real_copy(tuned_study, tmp_path, "weights")
    row = next(r for r in read_registry(run_dir) if r["stage"] == "confirm" and "weights.pt" in r["sha256"])
    weights = run_dir / "trials" / row["trial_id"] / "weights.pt"
    with open(weights, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(AblateError, match=re.escape(f"{weights} changed after trial {row['trial_id']} was registered")):
        lesion_run(run_dir)
