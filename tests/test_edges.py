"""The edges a new user meets: devices and resources, run folders of any length, Ctrl-C, exits that tell
the truth, and the small breaks of the command line."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.engine.ray_adapter.session import ray_temp_dir
from ablate.engine.resources import Resources
from ablate.engine.run_work import trial_device
from ablate.run_folder.layout import RAY_TMP as RAY_TMP_RECORD

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / "cli.py")
TINY = {"family": "cifar", "depth": 20, "dataset": "digits", "image_size": 16, "train_size": 96, "dev_size": 48,
        "test_size": 48, "batch_size": 32, "epochs": 2, "eval_every": 1, "seed": 100}
SMALL = ["--dataset", "digits", "--family", "cifar", "--train-size", "64", "--dev-size", "32", "--test-size", "32",
         "--epochs", "1"]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def spec_file(path, **over):
    doc = {"description": "edges", "base": dict(TINY), "factors": {"residual": {"values": [True, False]}},
           "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                      "trials": 4, "round": 2, "startup": 2, "halving": {"eta": 2}},
           "seeds": [0, 1]}
    doc.update(over)
    path.write_text(yaml.safe_dump(doc))
    return path


def one_line_error(result, code=2):
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# --- devices and resources ----------------------------------------------------------------------
def test_a_trial_runs_on_the_device_ray_gave_it():
    assert trial_device([]) == "cpu"  # no GPU share: the CPU, even where CUDA is visible
    assert trial_device([0]) == "cuda"  # Ray narrows CUDA_VISIBLE_DEVICES to the trial's GPU


@pytest.mark.parametrize("cpus, gpus, share, threads, at_once, cpus_each", [
    (2, 0, None, 1, 2, 1),
    (2, 0, None, 4, 1, 2),    # a trial asking more threads than the machine has still runs, alone
    (16, 0, None, 3, 5, 3),
    (16, 1, None, 2, 4, 2),   # 4 slots on the GPU (0.25 each), CPUs would allow 8
    (16, 1, 0.5, 2, 2, 2),
    (4, 2, None, 1, 4, 1),    # 8 GPU slots, but only 4 CPUs
])
def test_trials_at_once_is_the_smaller_of_gpu_slots_and_cpus_over_threads(cpus, gpus, share, threads, at_once, cpus_each):
    r = Resources(cpus=cpus, gpus=gpus, gpus_per_trial=share, threads=threads)
    assert r.concurrency() == at_once and r.cpus_per_trial() == cpus_each


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpus_beyond_the_visible_ones_are_refused(tmp_path):
    line = one_line_error(invoke("study", "residual-ablation", "--gpus", "1", "--dry-run", "--dataset", "digits"))
    assert "--gpus 1 asked for, but this machine has 0 GPU(s) visible" in line
    line = one_line_error(invoke("study", "residual-ablation", "--gpus", "0.5", "--out", tmp_path / "run"))
    assert "Invalid value for '--gpus'" in line and "integer" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a second or more of 2 cores
def test_the_dry_run_says_what_will_happen_and_what_it_costs(tmp_path):
    result = invoke("study", "residual-ablation", "--dry-run", "--dataset", "digits", "--cpus", "2")
    assert result.exit_code == 0, result.output
    assert "1 threads per trial (from the spec), 2 trials at a time on the CPU" in result.output
    # a grid of 5 learning rates x 3 tuning seeds x 80 steps x 2 arms; at most 20 confirm seeds x 80 steps x 2 arms
    assert "estimate: tune 2,400, confirm 3,200 training steps" in result.output
    assert "disk: no weights.pt kept (keep_weights: none)" in result.output  # the shipped spec keeps none
    # the same spec keeping each confirm trial's final weights: 20 seeds x 2 arms of ResNet18 (11.2 M float32)
    spec = tmp_path / "keep.yaml"
    spec.write_text((ROOT / "studies" / "residual-ablation.yaml").read_text() + "\nkeep_weights: final\n")
    result = invoke("study", str(spec), "--dry-run", "--dataset", "digits", "--cpus", "2")
    assert result.exit_code == 0, result.output
    assert "disk: 40 weights.pt of 42.3 MB = 1693 MB kept" in result.output


# --- run folders and Ray's temporary files ------------------------------------------------------
def test_ray_session_files_live_in_a_short_folder_whatever_the_run_folders_length(tmp_path):
    # Ray adds about 60 characters (session_<date>_<time>_<us>_<pid>/sockets/plasma_store) to its temp
    # folder; AF_UNIX socket paths must stay under 107 bytes.
    ray_suffix = len("session_2026-11-28_23-59-59_999999_4194304/sockets/plasma_store")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="e", dir="/tmp"))  # short, so every length from 30 up can be made
    made = []
    for length in range(30, 121):
        run_dir = base / ("x" * (length - len(str(base)) - 1))
        run_dir.mkdir()
        assert len(str(run_dir)) == length
        tmp = ray_temp_dir(run_dir)
        made.append(tmp)
        assert len(str(tmp)) + 1 + ray_suffix < 107, (length, tmp)
        assert (run_dir / RAY_TMP_RECORD).read_text() == str(tmp)
    # a folder recorded by a run that crashed is removed when the run starts again
    again = ray_temp_dir(run_dir)
    assert not made[-1].exists() and again.exists()
    for tmp in made[:-1] + [again]:
        tmp.rmdir()
    shutil.rmtree(base)


# --- resume -------------------------------------------------------------------------------------
@pytest.fixture
def finished_run(tuned_study, tmp_path):
    """A copy of the session's real finished study (a background study) and its spec: (spec, run folder)."""
    run = shutil.copytree(tuned_study, tmp_path / "finished", symlinks=True, ignore=shutil.ignore_patterns("analysis"))
    return tuned_study.parent / "tuned.yaml", run


@pytest.mark.slow
def test_resume_accepts_the_runs_own_name_and_refuses_what_it_cannot_change(finished_run, tmp_path):
    spec, run_dir = finished_run
    again = invoke("study", spec, "--resume", run_dir)
    assert again.exit_code == 0, again.output  # the name matches: nothing left to run
    line = one_line_error(invoke("study", "residual-ablation", "--resume", run_dir))
    assert "is a run of study 'tuned', not 'residual-ablation'" in line
    for flag, value in (("--budget", "smoke"), ("--dataset", "mnist"), ("--out", tmp_path / "x")):
        line = one_line_error(invoke("study", "--resume", run_dir, flag, value))
        assert f"{flag} cannot change when resuming" in line
    assert not (tmp_path / "x").exists()


def test_out_on_a_folder_that_is_no_run_does_not_suggest_resuming_it(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    line = one_line_error(invoke("study", "residual-ablation", "--out", tmp_path / "notes", "--dataset", "digits"))
    assert "is not a study run folder" in line and "--resume" not in line


@pytest.mark.slow
def test_analyze_out_and_export_configs_are_checked_before_anything_is_written(finished_run, tmp_path):
    _, run_dir = finished_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    line = one_line_error(invoke("analyze", run_dir, "--out", tmp_path / "busy"))
    assert "holds no earlier analysis" in line and sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["thesis.tex"]
    (tmp_path / "file.yaml").write_text("x")
    result = invoke("export", run_dir, "--configs", tmp_path / "file.yaml")
    line = one_line_error(result)  # one line: the table was not printed first
    assert "is not a folder" in line


# --- the small breaks ---------------------------------------------------------------------------
def test_train_survives_a_last_batch_of_one_image_and_each_family_has_its_default_depth(tmp_path):
    result = invoke("train", *SMALL, "--train-size", "65", "--batch-size", "64", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 1
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["depth"] == 20
    summary = invoke("summary", "--family", "cifar")
    # ResNet-20 with option A shortcuts and 3 input channels has 269,722 parameters; one input channel saves
    # 3x3x2x16 = 288 stem weights; two 1x1 projections with BN add 16x32 + 2x32 + 32x64 + 2x64 = 2,752
    assert summary.exit_code == 0 and f"Total params: {269_722 - 288 + 2_752:,}" in summary.output


def test_help_shows_defaults_and_version_is_printed():
    help_text = invoke("train", "--help").output
    assert "(default 0.01)" in help_text and "(default 64)" in help_text
    from ablate import __version__

    version = invoke("--version")
    assert version.exit_code == 0 and version.output.strip() == f"ablate {__version__}"


@pytest.mark.parametrize("flag, value, fragment", [
    ("--momentum", "nan", "momentum must be a finite number"),
    ("--weight-decay", "inf", "weight_decay must be a finite number"),
])
def test_non_finite_numbers_are_refused(tmp_path, flag, value, fragment):
    assert fragment in one_line_error(invoke("train", *SMALL, flag, value, "--out", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_failure_of_ablates_own_is_one_line_exit_1_with_the_traceback_in_the_run_folder(tmp_path, monkeypatch):
    import ablate.train.loop

    def broken(*args, **kwargs):  # a fault injected into the real command, to see how it ends
        raise RuntimeError("boom inside the trial")

    monkeypatch.setattr(ablate.train.loop, "run_trial", broken)
    result = invoke("train", *SMALL, "--out", tmp_path / "run")
    assert result.exit_code == 1 and "Traceback" not in result.output
    line, = [l for l in result.output.splitlines() if not l.startswith("train:") and l.strip()]  # past the progress bar
    assert line.startswith("error: RuntimeError: boom inside the trial") and str(tmp_path / "run" / "error.txt") in line
    assert "Traceback" in (tmp_path / "run" / "error.txt").read_text()


def test_keep_weights_decides_which_trials_save_weights(tmp_path):
    from ablate.spec.study_spec import parse_study

    doc = yaml.safe_load(spec_file(tmp_path / "s.yaml").read_text())
    for keep, tune, final in (("none", False, False), ("final", False, True), ("all", True, True)):
        study = parse_study({**doc, "keep_weights": keep})
        assert (study.keeps_weights("tune"), study.keeps_weights("confirm")) == (tune, final)
    with pytest.raises(Exception, match="keep_weights must be one of none, final, all"):
        parse_study({**doc, "keep_weights": "some"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_reproduce_reruns_on_the_recorded_device_and_says_so_when_it_cannot(tmp_path):
    assert invoke("train", *SMALL, "--out", tmp_path / "run").exit_code == 0
    assert invoke("reproduce", tmp_path / "run").exit_code == 0  # recorded on the CPU: rerun there, identical
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({**metrics, "device": "cuda"}))
    line = one_line_error(invoke("reproduce", tmp_path / "run"))
    assert "this trial ran on cuda and no CUDA GPU is available here; pass --device cpu" in line
    forced = invoke("reproduce", tmp_path / "run", "--device", "cpu")
    assert "recorded with device=cuda, rerun with device=cpu" in forced.output


@pytest.mark.slow
def test_exported_configs_can_be_reproduced_anywhere(finished_run, tmp_path):
    _, run_dir = finished_run
    result = invoke("export", run_dir, "--format", "csv", "--configs", tmp_path / "sent")
    assert result.exit_code == 0, result.output
    index = (tmp_path / "sent" / "index.csv").read_text().splitlines()
    assert index[0] == "folder,arm,seed,trial_id,status,test_acc,dataset" and len(index) == 1 + 2 * 3  # arms x seeds
    folder = tmp_path / "sent" / index[1].split(",")[0]
    elsewhere = shutil.copytree(folder, tmp_path / "collaborator" / "inbox" / folder.name)  # the run folder is not there
    checked = invoke("reproduce", elsewhere / "config.yaml")
    assert checked.exit_code == 0 and "identical" in checked.output.splitlines()[0], checked.output


def test_a_mistyped_study_name_gets_a_suggestion():
    line = one_line_error(invoke("study", "residual-ablaton", "--dry-run"))
    assert "unknown study 'residual-ablaton'; did you mean 'residual-ablation'?" in line
    line = one_line_error(invoke("study", "zzz", "--dry-run"))
    assert "did you mean" not in line and "valid studies:" in line


def test_the_estimate_builds_the_model_the_dataset_needs():
    # A 100-class RGB dataset widens the stem and the classifier: the weights the estimate counts grow with them.
    from ablate.spec.trial_config import TrialConfig
    from ablate.execute.estimate import _arch, _state_bytes

    mnist, cifar = TrialConfig(dataset="mnist"), TrialConfig(dataset="cifar100")
    # 2 more input channels of the 7x7, 64-filter stem; 90 more classes of the 512-wide classifier (fp32)
    assert _state_bytes(cifar) - _state_bytes(mnist) == 4 * (2 * 64 * 7 * 7 + 90 * (512 + 1))
    assert "3x32px 100 classes" in _arch(cifar) and "1x32px 10 classes" in _arch(mnist)
    assert "block=preact" in _arch(TrialConfig(block="preact"))  # the model's registry key names every axis
