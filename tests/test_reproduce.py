"""Reproduce: rerun a trial folder's config and compare with what it recorded."""
import csv
import json
import re
import shutil

import pytest
import typer.main
import yaml

from ablate.errors import AblateError
from ablate.train.trial_files import write_trial_folder
from ablate.train.reproduce import reproduce_trial as reproduce
from ablate.spec.trial_config import TrialConfig
from ablate.train.loop import run_trial

SMALL = dict(dataset="digits", family="cifar", depth=20, image_size=16, train_size=128, dev_size=64, test_size=64,
             batch_size=32, epochs=2, eval_every=3, lr=0.05, threads=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = TrialConfig(**SMALL)
    return write_trial_folder(tmp_path_factory.mktemp("trial") / cfg.trial_id(), cfg, run_trial(cfg), plot=False)


@pytest.fixture
def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


def test_a_just_written_trial_reproduces_bit_for_bit(folder):
    report = reproduce(folder / "config.yaml")
    assert report.identical, report.format()
    assert report.differences == [] and report.trial_id == folder.name
    compared = " ".join(report.compared)
    for name in ("best_dev_acc", "best_step", "test_acc", "test_loss", "final_train_loss", "train_loss curve (8 steps)",
                 "grad_norms.csv"):
        assert name in compared
    assert "identical" in report.format().splitlines()[0]


def test_a_tampered_metric_is_reported_with_both_values(copy):
    metrics = json.loads((copy / "metrics.json").read_text())
    true_acc = metrics["test_acc"]
    metrics["test_acc"] = true_acc + 0.25
    (copy / "metrics.json").write_text(json.dumps(metrics))
    report = reproduce(copy / "config.yaml")
    assert not report.identical
    assert [d.name for d in report.differences] == ["test_acc"]
    diff = report.differences[0]
    assert (diff.recorded, diff.now) == (true_acc + 0.25, true_acc)
    assert diff.abs_diff == pytest.approx(0.25)
    assert "test_acc: recorded" in report.format()


def test_tampered_curve_and_telemetry_values_are_located(copy):
    lines = (copy / "curves.csv").read_text().splitlines()
    step, loss, *rest = lines[5].split(",")  # step 5
    lines[5] = ",".join([step, repr(float(loss) + 1e-6), *rest])
    (copy / "curves.csv").write_text("\n".join(lines) + "\n")
    with open(copy / "grad_norms.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    target = next(r for r in rows if r["step"] == "3" and r["layer"] == "stages.1.0.conv2")
    target["grad_norm"] = repr(float(target["grad_norm"]) * 2)
    with open(copy / "grad_norms.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    report = reproduce(copy)  # the folder works as well as its config.yaml
    names = [d.name for d in report.differences]
    assert names == ["train_loss [step 5]", "grad_norm [row (3, 'stages.1.0.conv2', 'layer')]"]
    assert report.differences[0].abs_diff == pytest.approx(1e-6, rel=1e-3)
    assert report.differences[1].recorded == pytest.approx(2 * report.differences[1].now)


def test_a_diverged_trial_reproduces_including_its_nans(tmp_path):
    cfg = TrialConfig(dataset="digits", family="cifar", depth=20, train_size=256, dev_size=64, test_size=64,
                      batch_size=32, epochs=2, eval_every=4, lr=1e6, threads=2)
    result = run_trial(cfg)
    assert result.status == "diverged"
    write_trial_folder(tmp_path, cfg, result, plot=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["test_acc"] is None  # NaN as JSON null
    report = reproduce(tmp_path / "config.yaml")
    assert report.identical, report.format()


def test_bad_input_is_refused_with_a_clear_message(copy, tmp_path):
    with pytest.raises(AblateError, match="no config at"):
        reproduce(tmp_path / "nowhere" / "config.yaml")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "config.yaml").write_text((copy / "config.yaml").read_text().replace("schema: 1", "schema: 99"))
    shutil.copy(copy / "metrics.json", newer / "metrics.json")
    with pytest.raises(AblateError, match="newer than this toolkit"):
        reproduce(newer / "config.yaml")
    (copy / "metrics.json").unlink()
    with pytest.raises(AblateError, match="no recorded metrics next to"):
        reproduce(copy / "config.yaml")
    (copy / "metrics.json").write_text(json.dumps({"trial_id": copy.name, "status": "stopped", "best_dev_acc": 0.5}))
    with pytest.raises(AblateError, match="not a finished trial"):
        reproduce(copy / "config.yaml")


@pytest.mark.parametrize("dataset", ["mnist", "auto"])
def test_missing_data_says_where_the_trials_data_goes_with_the_flags_reproduce_has(copy, tmp_path, dataset):
    """A trial that trained on MNIST, rerun where MNIST is not: one line naming reproduce's own --data-dir and
    $ABLATE_DATA_DIR and where the files go, never a flag reproduce does not have (such as --dataset)."""
    from typer.testing import CliRunner

    from ablate.cli.app import app

    config = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**config, "dataset": dataset}))
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "dataset": "mnist"}))
    empty = tmp_path / "no-data"
    result = CliRunner().invoke(app, ["reproduce", str(copy), "--data-dir", str(empty)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: the trial trained on MNIST, which was not found under "), line
    assert f"put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte " \
           f"in {empty.resolve() / 'MNIST' / 'raw'}, or pass --data-dir (or set $ABLATE_DATA_DIR) to a folder holding " \
           f"MNIST/raw/" in line, line
    flags = set(re.findall(r"--[a-z-]+", line))
    own = {opt for p in typer.main.get_command(app).commands["reproduce"].params for opt in p.opts}
    assert flags and flags <= own, flags - own
