"""Real studies through Ray Tune + Optuna on tiny budgets (MNIST-format files written by the tests)."""
import json

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.run_folder.registry import read_registry
from ablate.spec.trial_config import TrialConfig

pytestmark = pytest.mark.usefixtures("fake_mnist_env")  # `mnist` and `auto` read MNIST-format files of the tests
runner = CliRunner()
TINY = {"family": "imagenet", "depth": 18, "dataset": "mnist", "train_size": 128, "dev_size": 64,
        "test_size": 64, "batch_size": 64, "epochs": 2, "eval_every": 1, "seed": 100}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_spec(path, **over):
    doc = {"description": "tiny end-to-end study", "base": dict(TINY),
           "factors": {"residual": {"values": [True, False]}},
           "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                      "trials": 2, "round": 2, "sampler_seed": 0, "halving": {"eta": 2}},
           "seeds": [0, 1]}
    doc.update(over)
    path.write_text(yaml.safe_dump(doc))
    return path


def snapshot(run_dir):
    return {p: p.stat().st_mtime_ns for p in (run_dir / "trials").rglob("*") if p.is_file()}


def long_path(base, length):
    """A run folder whose absolute path is exactly `length` characters (Ray's socket paths once broke
    at 35-42 characters of run folder, when its session files lived inside it)."""
    base = base.resolve()
    pad = length - len(str(base)) - 1
    assert pad > 0, (base, length)
    return base / ("r" * pad)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fake_mnist):
    """One real tiny study (TensorBoard on, a run folder path of 120 characters), shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("tiny")
    spec = write_spec(tmp / "tiny.yaml")
    run_dir = long_path(tmp, 120)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_DATA_DIR", str(fake_mnist))  # as fake_mnist_env does for each test
        result = invoke("study", spec, "--out", run_dir, "--cpus", "2", "--tensorboard")
    assert result.exit_code == 0, result.output
    return spec, run_dir, result


@pytest.mark.slow
def test_every_trial_records_its_timeline_in_order_and_its_parts_add_up_to_its_time(tiny_run):
    """metrics.json's timeline (ablate.run_folder.timeline): one entry per segment, each mark after the one before,
    the steps and evaluations inside training, the trial's own clock (total_seconds) no shorter than its model
    building, steps and evaluations and no longer than its time on the worker, and the registry's registered_at
    after the last segment was written."""
    from ablate.run_folder import phase_seconds, timeline_segments

    marks = ["queued", "entered", "data", "model", "trained", "written"]

    _, run_dir, _ = tiny_run
    rows = read_registry(run_dir)
    counts = []
    for row in rows:
        metrics = json.loads((run_dir / "trials" / row["trial_id"] / "metrics.json").read_text())
        segments = timeline_segments(metrics)
        assert segments == metrics["timeline"] and len(segments) == metrics["segments"], metrics
        counts.append(len(segments))
        for before, entry in zip([None, *segments], segments):
            assert list(entry) == [*marks[:5], "step_seconds", "eval_seconds", "written"], entry
            times = [entry[k] for k in marks]
            assert times == sorted(times), entry
            if before is not None:  # a continuation is handed out after the segment before it was written
                assert entry["queued"] >= before["written"]
            phases = phase_seconds(entry)
            assert phases["steps"] > 0 and phases["evaluations"] > 0 and phases["other"] >= 0, phases
        # the loop's own clock (total_seconds, summed over segments) holds each segment's model building, steps and
        # evaluations, and lies within its time on the worker
        inside = sum(e["model"] - e["data"] + e["step_seconds"] + e["eval_seconds"] for e in segments)
        outside = sum(e["trained"] - e["entered"] for e in segments)
        assert inside - 0.05 <= metrics["total_seconds"] <= outside + 0.05, (metrics["total_seconds"], segments)
        assert row["registered_at"] >= segments[-1]["written"]
        assert metrics["started_at"] == segments[-1]["entered"] and metrics["ended_at"] >= segments[-1]["trained"]
    # halving paused one proposal per round at its rung and continued the other: some trials ran in two segments
    assert 2 in counts and 1 in counts, counts


@pytest.mark.slow
def test_the_efficiency_benchmark_says_where_a_runs_seconds_went_and_that_an_older_run_recorded_none(tiny_run):
    """benchmarks/study_efficiency.py --run reads the timelines (every phase, the workers, the waits); a run folder
    written before timelines existed (format 1) gives its efficiency and says it has none."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    _, run_dir, _ = tiny_run
    script = [sys.executable, str(root / "benchmarks" / "study_efficiency.py"), "--cpus", "2", "--run"]
    out = subprocess.run([*script, str(run_dir)], capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "where a trial's seconds go (8 trials, " in out.stdout, out.stdout
    for phase in ("dispatch", "data", "model", "steps", "evaluations", "other", "files"):
        assert f"\n  {phase} " in out.stdout, out.stdout
    assert "worker processes: " in out.stdout and "slot-seconds no trial held" in out.stdout, out.stdout
    old = subprocess.run([*script, str(root / "tests" / "fixtures" / "run-format-1")], capture_output=True, text=True,
                         timeout=300, cwd=root)
    assert old.returncode == 0, old.stderr[-2000:]
    assert "efficiency: " in old.stdout and "no timelines in this run's trials" in old.stdout, old.stdout


@pytest.mark.slow
def test_end_to_end_study_then_resume_runs_nothing_new(tiny_run):
    spec, run_dir, result = tiny_run
    assert len(str(run_dir)) == 120

    rows = read_registry(run_dir)
    assert sorted((r["stage"], r["arm"]) for r in rows) == sorted(
        [("tune", "residual=true")] * 2 + [("tune", "residual=false")] * 2
        + [("confirm", "residual=true")] * 2 + [("confirm", "residual=false")] * 2)
    assert all(r["status"] in ("ok", "stopped") for r in rows)
    confirm = [r for r in rows if r["stage"] == "confirm"]
    assert all(r["status"] == "ok" and 0 <= r["test_acc"] <= 1 for r in confirm)
    assert {r["seed"] for r in confirm} == {0, 1}

    # every trial folder reproduces its config, and its name is the config's hash
    for r in rows:
        folder = run_dir / "trials" / r["trial_id"]
        cfg = TrialConfig.from_yaml_file(folder / "config.yaml")
        assert cfg.trial_id() == r["trial_id"] and (folder / "curves.csv").exists()
        assert cfg.threads == 1 and cfg.dataset == "mnist"
    # confirm reruns use each arm's best tuned lr: a trial that ran to the end before one halving stopped, then the
    # higher dev accuracy, the lower dev loss at it, the earlier proposal
    for arm in ("residual=true", "residual=false"):
        tuned = [r for r in rows if r["stage"] == "tune" and r["arm"] == arm]
        best = max(tuned, key=lambda r: (r["status"] == "ok", r["best_dev_acc"], -(r["best_dev_loss"] or 0.0),
                                         -r["round"], -r["index"]))
        assert {r["params"]["lr"] for r in confirm if r["arm"] == arm} == {best["params"]["lr"]}

    csv_lines = (run_dir / "trials.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:8] == ["trial_id", "stage", "arm", "round", "index", "residual", "lr", "seed"]
    assert len(csv_lines) == 1 + 8
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dataset"] == "mnist" and manifest["packages"]["ray"] and manifest["packages"]["optuna"]
    assert manifest["sampler"].startswith("all 2 proposals random") and "rounds of 2" in manifest["sampler"]
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["base"]["threads"] == 1

    # Optuna's SQLite storage opens from another process's point of view: one study per arm
    storage = f"sqlite:///{run_dir / 'optuna.db'}"
    for arm in ("residual=true", "residual=false"):
        study = optuna.load_study(study_name=arm, storage=storage)
        # one round of 2 with halving: one proposal ran to the end, the other was stopped at the rung
        assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "PRUNED"]
        assert sorted(t.user_attrs["index"] for t in study.trials) == [0, 1]
    # Ray's own logs and session files live in a temporary folder that is gone when the study ends
    assert not (run_dir / "ray").exists() and not (run_dir / ".ray_tmp").exists()

    # every trial ran where Ray put it: no GPU share, so the CPU
    assert {json.loads((run_dir / "trials" / r["trial_id"] / "metrics.json").read_text())["device"] for r in rows} == {"cpu"}
    # the closing table is analyze's own table
    from ablate.analysis import terminal_table

    assert terminal_table(run_dir) in result.output
    analysed = invoke("analyze", run_dir, "--no-figures")
    assert analysed.exit_code == 0 and terminal_table(run_dir) in analysed.output
    # TensorBoard event files per trial: curves and hyper-parameters
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p.parent for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    names = {str(p.relative_to(run_dir / "tensorboard")) for p in runs}
    assert {"confirm/residual=true/seed0", "tune/residual=false/r0-i1"} <= names and len(names) == 8
    acc = EventAccumulator(str(run_dir / "tensorboard" / "confirm" / "residual=true" / "seed0")).Reload()
    assert {"train/loss", "dev/accuracy", "dev/loss"} <= set(acc.Tags()["scalars"])
    assert len(acc.Scalars("train/loss")) == TrialConfig.from_dict({**TINY, "seed": 0}).total_steps()

    before, registry = snapshot(run_dir), (run_dir / "trials.jsonl").read_text()
    again = invoke("study", "--resume", run_dir)
    assert again.exit_code == 0, again.output
    assert (run_dir / "trials.jsonl").read_text() == registry
    assert snapshot(run_dir) == before

    # a confirm trial lost before it finished is the only one that runs on resume
    lost = confirm[0]["trial_id"]
    (run_dir / "trials" / lost / "metrics.json").unlink()
    kept = {p: t for p, t in before.items() if lost not in str(p)}
    again = invoke("study", "--resume", run_dir)
    assert again.exit_code == 0, again.output
    after = snapshot(run_dir)
    assert all(after[p] == t for p, t in kept.items())
    assert json.loads((run_dir / "trials" / lost / "metrics.json").read_text())["status"] == "ok"
    assert len(read_registry(run_dir)) == 8
    # registered again with the new metrics.json's hash (same numbers, new times): the run still analyses
    import hashlib

    row = next(r for r in read_registry(run_dir) if r["trial_id"] == lost and r["stage"] == "confirm")
    recorded = (run_dir / "trials" / lost / "metrics.json").read_bytes()
    assert row["sha256"]["metrics.json"] == hashlib.sha256(recorded).hexdigest()
    assert invoke("analyze", run_dir, "--no-figures").exit_code == 0


@pytest.mark.slow
def test_diverging_trial_is_recorded_and_the_study_goes_on(tmp_path):
    spec = write_spec(tmp_path / "grid.yaml", search=None, grid={"lr": [1.0e6, 0.05]}, seeds=[0],
                      factors={"residual": {"values": [True]}},
                      base={**TINY, "family": "cifar", "depth": 20, "dataset": "digits", "epochs": 3})
    run_dir = tmp_path / "run"
    result = invoke("study", spec, "--out", run_dir, "--cpus", "1")
    assert result.exit_code == 0, result.output
    status = {r["params"]["lr"]: r["status"] for r in read_registry(run_dir)}
    assert status == {1.0e6: "diverged", 0.05: "ok"}


@pytest.mark.parametrize("args, fragment", [
    (["nope"], "unknown study 'nope'; valid studies:"),
    (["residual-ablation", "--budget", "huge"], "unknown budget 'huge'"),
    (["residual-ablation", "--dataset", "svhn"], "unknown dataset"),
    (["residual-ablation", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
    (["residual-ablation", "--cpus", "0"], "--cpus must be at least 1"),
    (["--resume", "."], "is not a study run folder"),
])
@pytest.mark.slow
def test_bad_study_input_is_one_line_exit_2_and_creates_nothing(tmp_path, args, fragment):
    out = tmp_path / "run"
    extra = [] if args[0] == "--resume" else ["--out", out]
    result = invoke("study", *args, *extra)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert not out.exists()


@pytest.mark.slow
def test_malformed_spec_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nseeds: [0, 1\n")
    result = invoke("study", bad, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "bad.yaml, line" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = invoke("study", "residual-ablation", "--dry-run", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "grid: lr 0.003, 0.00949, 0.03, 0.0949, 0.3" in result.output
    assert "stage tune: 5 points x 3 tuning seeds = 15 trials per arm x 2 arms = 30 trials" in result.output
    assert "stage confirm: at most 20 trials per arm x 2 arms = 40 trials" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_optuna_dashboard_shows_each_arms_study_with_its_trials(tiny_run):
    """The real optuna-dashboard, on loopback, serves the run's optuna.db: one study per arm, each trial
    labelled with its arm, stage, round, index, trial id and run folder."""
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    exe = shutil.which("optuna-dashboard")
    if exe is None:
        pytest.skip("optuna-dashboard is not installed (pip install optuna-dashboard)")
    _, run_dir, _ = tiny_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([exe, f"sqlite:///{run_dir / 'optuna.db'}", "--host", "127.0.0.1", "--port", str(port),
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        summaries = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    summaries = json.load(r)["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        assert summaries is not None, "the dashboard did not answer"
        assert sorted(s["study_name"] for s in summaries) == ["residual=false", "residual=true"]
        for s in summaries:
            attrs = {a["key"]: a["value"] for a in s["user_attrs"]}
            assert attrs["arm"] == s["study_name"] and attrs["run_dir"] == str(run_dir.resolve())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{s['study_id']}", timeout=5) as r:
                trials = json.load(r)["trials"]
            rows = {r["trial_id"]: r for r in read_registry(run_dir) if r["stage"] == "tune" and r["arm"] == s["study_name"]}
            assert len(trials) == 2
            for t in trials:
                attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
                assert attrs["stage"] == "tune" and attrs["arm"] == s["study_name"] and attrs["trial_id"] in rows
                assert {"round", "index", "run_dir"} <= attrs.keys()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_a_seed_the_rule_did_not_ask_for_leaves_nothing_in_a_ray_study(tmp_path):
    """On Ray with 2 CPUs, the free slot at the seed rule's pilot runs a seed ahead of the rule; here the rule
    stops at its pilot (the arms differ on 6 of its 7 seeds, the interval asked for is wide), so what ran ahead is
    cancelled: the study ends with the pilot's trials registered, a folder for each of them and nothing else (no
    folder, no cancel file of a trial the rule did not ask for)."""
    spec = write_spec(tmp_path / "ahead.yaml", search=None, factors={"lr": {"values": [0.05, 1e-6]}},
                      seeds={"min": 7, "max": 9, "half_width": 1000.0},
                      base={**TINY, "family": "cifar", "depth": 20, "dataset": "digits", "image_size": 16,
                            "dev_size": 48, "test_size": 48, "batch_size": 32, "epochs": 4, "eval_every": 4,
                            "momentum": 0.9})
    run_dir = tmp_path / "run"
    result = invoke("study", spec, "--out", run_dir, "--cpus", "2")
    assert result.exit_code == 0, result.output
    rows = read_registry(run_dir)
    assert sorted({r["seed"] for r in rows}) == list(range(7)) and len(rows) == 14
    assert {p.name for p in (run_dir / "trials").iterdir()} == {r["trial_id"] for r in rows}
    assert not list((run_dir / "trials").rglob("cancel"))
