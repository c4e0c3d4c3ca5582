import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.spec.trial_config import TrialConfig

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
SMALL = ["--train-size", "128", "--dev-size", "64", "--test-size", "64", "--epochs", "1", "--eval-every", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow  # a second or more of 2 cores
def test_train_writes_a_run_folder_whose_config_reloads(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--dataset", "digits", "--plain", "--lr", "0.03", *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.json", "curves.csv", "curves.png", "grad_norms.csv",
                                                "predictions.csv"}
    cfg = TrialConfig.from_yaml_file(out / "config.yaml")
    assert cfg.residual is False and cfg.lr == 0.03 and cfg.dataset == "digits" and cfg.train_size == 128
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["status"] == "ok" and metrics["trial_id"] == cfg.trial_id()
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "step,train_loss,dev_loss,dev_acc" and len(lines) == 1 + metrics["steps"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"

    # --config reproduces the trial exactly
    again = tmp_path / "again"
    result = invoke("train", "--config", out / "config.yaml", "--out", again)
    assert result.exit_code == 0, result.output
    second = json.loads((again / "metrics.json").read_text())
    for key in ("best_dev_acc", "test_acc", "test_loss", "final_train_loss", "best_step"):
        assert second[key] == metrics[key]


def test_auto_dataset_records_mnist_when_available(tmp_path, fake_mnist):
    out = tmp_path / "run"
    result = invoke("train", *SMALL, "--data-dir", fake_mnist, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["dataset"] == "mnist"


@pytest.mark.parametrize("args, fragment", [
    (["--family", "vgg"], "unknown family"),
    (["--depth", "19"], "valid depths"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--lr", "0"], "lr must be a positive"),
    (["--batch-size", "-4"], "batch_size must be positive"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--dataset", "digits", "--train-size", "5000"], "train"),
    (["--dataset", "mnist", "--test-size", "20000"], "test"),
    (["--config", "does-not-exist.yaml"], "cannot read config"),
    (["--epochs", "many"], "Invalid value for '--epochs'"),
])
@pytest.mark.usefixtures("fake_mnist_env")  # MNIST is there, so the sizes are what is checked
def test_bad_train_input_is_one_line_exit_2_and_leaves_no_folder(tmp_path, args, fragment):
    out = tmp_path / "run"
    result = invoke("train", *args, "--out", out)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_malformed_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    result = invoke("train", "--config", bad, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "malformed YAML" in result.output and "line" in result.output
    bad.write_text("lr: 0.1\nwarmup: 5\n")
    result = invoke("train", "--config", bad, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "unknown setting(s) warmup" in result.output
    assert not (tmp_path / "run").exists()


def test_summary_prints_table_and_totals():
    result = invoke("summary")
    assert result.exit_code == 0, result.output
    assert "Total params: 11,175,434" in result.output
    macs = int(result.output.split("Total MACs: ")[1].split()[0].replace(",", ""))
    assert abs(macs - 35.56e6) / 35.56e6 < 0.01
    plain = invoke("summary", "--plain")
    assert "Total params: 11,001,610" in plain.output
    cifar = invoke("summary", "--family", "cifar", "--depth", "20", "--shortcut", "identity")
    assert cifar.exit_code == 0 and "stages.2.2.conv2" in cifar.output
    bad = invoke("summary", "--family", "cifar", "--depth", "18")
    assert bad.exit_code == 2 and "valid depths: 20, 32, 44, 56, 110" in bad.output


def test_verify_torchvision_exit_code():
    result = invoke("verify-torchvision")
    assert result.exit_code == 0, result.output
    assert "match" in result.output and "MISMATCH" not in result.output


def test_console_entry_point_gives_one_line_errors():
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "summary", "--depth", "x"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_save_weights_then_reproduce_exactly(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--dataset", "digits", *SMALL, "--save-weights", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "weights.pt").stat().st_size > 1_000_000
    result = invoke("reproduce", out / "config.yaml")
    assert result.exit_code == 0, result.output
    assert "identical" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["test_acc"] = metrics["test_acc"] + 0.01
    (out / "metrics.json").write_text(json.dumps(metrics))
    result = invoke("reproduce", out / "config.yaml")
    assert result.exit_code == 1 and "test_acc" in result.output


def test_analyze_on_a_folder_of_runs_lists_them_newest_first_and_names_the_latest(tmp_path):
    """`analyze runs/NAME` (the study's folder, not one of its runs): one line listing the runs in it, newest first,
    a few of them, and the command for the latest, which then works."""
    from helpers.runs import build_run

    parent = tmp_path / "runs" / "residual-ablation"
    rows = [{"arm": arm, "seed": s, "test_acc": 0.9} for arm in ("residual=true", "residual=false") for s in (0, 1, 2)]
    names = ["20260101-100000-aaaaaa", "20260301-100000-cccccc", "20260201-100000-bbbbbb", "20251201-100000-dddddd"]
    for name in names:
        build_run(parent / name, rows, doc=None)
    (parent / "notes").mkdir()  # a folder that is no run is not listed
    for command in ("analyze", "export"):
        result = invoke(command, parent)
        assert result.exit_code == 2, result.output
        line = result.output.strip()
        assert line == (f"error: {parent} is not a study run folder but holds 4 runs, newest first: "
                        f"20260301-100000-cccccc, 20260201-100000-bbbbbb, 20260101-100000-aaaaaa and 1 more; for the "
                        f"latest: ablate {command} {parent / '20260301-100000-cccccc'}")
    assert (Path(line.split("for the latest: ablate export ")[1]) / "spec.yaml").is_file()  # a run folder
    one = tmp_path / "one"
    build_run(one / "20260101-100000-aaaaaa", rows, doc=None)
    assert "holds 1 run, newest first: 20260101-100000-aaaaaa;" in invoke("analyze", one).output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is not a study run folder (no spec.yaml)" in invoke("analyze", empty).output  # nothing to list: as before


def test_resuming_a_finished_run_says_that_nothing_ran(tmp_path):
    """`study --resume` on a run whose every planned trial has its result: one line saying so, exit 0, and the run
    folder's records untouched (no resume recorded, no trial run)."""
    from helpers.runs import build_run

    run = build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": 0.5 + s / 10}
                                       for arm in ("residual=true", "residual=false") for s in (0, 1, 2)])
    before = sorted(p.relative_to(run) for p in (run / "trials").rglob("*"))
    result = invoke("study", "--resume", run)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines == [f"nothing to run: {run} is finished (no trial ran; 6 trial rows in {run / 'trials.csv'}); "
                     f"figures, statistics and a report: ablate analyze {run}"], result.output
    assert sorted(p.relative_to(run) for p in (run / "trials").rglob("*")) == before  # no trial ran
    assert not list(run.glob("manifest-resume-*"))  # and no resume was recorded
