"""Faults never change the answer: a trial that fails for a reason outside its config (its worker killed, a full
disk, no thread to be had) stops the study with one line, nothing of its round is told to Optuna or decided by
halving, and `--resume` ends with the trials.csv of an uninterrupted run. Damaged run files and read-only
folders get one line; SIGTERM is Ctrl-C."""
import errno
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli.app import app
from ablate.engine import fault_hook, trial_failures
from ablate.engine.planner import Planner
from ablate.engine.trial_plan import TrialPlan
from ablate.run_folder.registry import append_registry, read_registry
from ablate.engine.run_lock import RunLock
from ablate.engine.run_work import run_work
from ablate.errors import AblateError
from ablate.spec.study_spec import parse_study
from ablate.run_folder.layout import RAY_TMP as RAY_TMP_RECORD
from helpers.fault_runs import PROGRESS, SPEC, TINY
from helpers.mounts import Tmpfs, can_mount, read_only
from helpers.runs import build_run

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code=2):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def finished_run(tmp_path) -> Path:
    """A constructed run folder whose every planned trial has its result (no search: seeds 0-2 per arm)."""
    return build_run(tmp_path / "run", [{"arm": arm, "seed": s, "test_acc": 0.5 + s / 10, "best_dev_acc": 0.5}
                                        for arm in ("residual=true", "residual=false") for s in (0, 1, 2)])


# --- how a failure is judged --------------------------------------------------------------------
def test_faults_of_the_machine_are_told_from_failures_of_the_config():
    import sqlalchemy.exc
    import torch

    infrastructure = [OSError(errno.ENOSPC, "No space left on device"), MemoryError(),
                      torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("can't start new thread"),
                      PermissionError(errno.EACCES, "Permission denied")]
    for exc in infrastructure:
        assert trial_failures.kind_of(exc) == "infrastructure", exc
    # a library's own type around a full disk: SQLAlchemy around SQLite's "database or disk is full"
    wrapped = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database or disk is full"))
    assert trial_failures.kind_of(wrapped) == "infrastructure"
    try:
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError as cause:
            raise ValueError("could not save the checkpoint") from cause
    except ValueError as exc:
        assert trial_failures.kind_of(exc) == "infrastructure"  # its cause counts
    for exc in (ValueError("lr must be positive"), AblateError("no MNIST"), RuntimeError("shape mismatch"),
                ZeroDivisionError()):
        assert trial_failures.kind_of(exc) == "config", exc


def _attempt(folder, monkeypatch, fault, work):
    monkeypatch.setenv(fault_hook.VARIABLE, json.dumps({"fault": fault}))
    with pytest.raises(Exception):
        run_work(work, folder, None)


def test_only_a_failure_that_the_config_raises_again_is_a_result(tmp_path, monkeypatch):
    study = parse_study(SPEC)
    cfg = study.arm_config(study.arms[0], lr=0.05)
    work = TrialPlan("tune", study.arms[0].name, cfg, {"lr": 0.05}, 0, 0)
    folder = tmp_path / "run" / "trials" / cfg.trial_id()

    _attempt(tmp_path / "run", monkeypatch, "config", work)
    _attempt(tmp_path / "run", monkeypatch, "config", work)
    attempts = trial_failures.read_attempts(folder)
    assert [a["kind"] for a in attempts] == ["config", "config"] and attempts[0]["device"] == "cpu"
    assert "Traceback" in (folder / "error.txt").read_text() and not (folder / "metrics.json").exists()
    verdict = trial_failures.judge(folder, 2, ValueError(attempts[0]["error"]))
    assert verdict.is_result and "ValueError: injected failure" in verdict.cause
    assert trial_failures.judge(folder, 3, None).kind == "infrastructure"  # a third attempt died without a word

    trial_failures.clear(folder)
    _attempt(tmp_path / "run", monkeypatch, "config", work)
    _attempt(tmp_path / "run", monkeypatch, "memory", work)  # failed differently: not the config's
    assert trial_failures.judge(folder, 2, MemoryError()).kind == "infrastructure"
    trial_failures.clear(folder)
    _attempt(tmp_path / "run", monkeypatch, "threads", work)
    _attempt(tmp_path / "run", monkeypatch, "threads", work)
    verdict = trial_failures.judge(folder, 2, None)
    assert verdict.kind == "infrastructure" and verdict.cause == "RuntimeError: can't start new thread"
    trial_failures.clear(folder)
    assert trial_failures.judge(folder, 1, None).kind == "infrastructure"  # died before it could write anything

    _attempt(tmp_path / "run", monkeypatch, "enospc", work)
    monkeypatch.delenv(fault_hook.VARIABLE)  # the retry succeeds: it forgets the failure it made good
    run_work(work, tmp_path / "run", None)
    assert not (folder / "failure.json").exists() and not (folder / "error.txt").exists()
    assert json.loads((folder / "metrics.json").read_text())["status"] == "ok"


def test_the_searcher_records_a_config_failure_and_stops_on_a_fault_of_the_machine(tmp_path, monkeypatch):
    """PlannerSearch as Ray drives it (suggest, on_trial_complete with error, then TrialErrors' judge), without
    starting Ray: a config failure is recorded and the study goes on; a fault hands out nothing more and leaves
    the trial unfinished, its round untold."""
    from ray.tune.search import Searcher

    from ablate.engine.ray_adapter.searcher import PlannerSearch

    study = parse_study({**SPEC, "search": {**SPEC["search"], "halving": False}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    planner = Planner(study, run_dir)
    said = []
    searcher = PlannerSearch(planner, say=said.append)

    config = searcher.suggest("ray_a")
    [work] = [TrialPlan.from_dict(w) for w in config["works"]]
    for _ in range(2):  # two attempts: Ray's retry
        _attempt(run_dir, monkeypatch, "config", work)
    searcher.on_trial_complete("ray_a", error=True)
    searcher.judge("ray_a", 2, ValueError("injected"))
    metrics = json.loads((run_dir / "trials" / work.trial_id / "metrics.json").read_text())
    assert metrics["status"] == "error" and "injected failure" in metrics["error"]
    assert not searcher.faults and "recorded as its result" in said[-1] and work.trial_id in said[-1]

    config = searcher.suggest("ray_b")
    [other] = [TrialPlan.from_dict(w) for w in config["works"]]
    _attempt(run_dir, monkeypatch, "enospc", other)
    searcher.on_trial_complete("ray_b", error=True)
    searcher.judge("ray_b", 1, OSError(errno.ENOSPC, "No space left on device"))
    folder = run_dir / "trials" / other.trial_id
    assert not (folder / "metrics.json").exists() and other.trial_id not in planner.failed
    assert len(searcher.faults) == 1 and other.trial_id in said[-1] and str(folder / "error.txt") in said[-1]
    assert "ray_b" not in said[-1] and "No space left on device" in said[-1]
    assert searcher.suggest("ray_c") == Searcher.FINISHED
    # nothing of the failed trial's round was told: its Optuna trials still run
    ostudy = planner.optuna[(other.arm, other.repeat)].ostudy
    states = {t.state.name for t in ostudy.trials if t.user_attrs.get("round") == other.round}
    assert states == {"RUNNING"}


# --- the registry ---------------------------------------------------------------------------------
def row(trial_id, **extra):
    return {"trial_id": trial_id, "stage": "confirm", "arm": "a", "params": {}, "seed": 0, "status": "ok", **extra}


def test_an_append_after_a_line_cut_short_starts_on_a_line_of_its_own(tmp_path):
    append_registry(tmp_path, row("t1"))
    with open(tmp_path / "trials.jsonl", "a") as fh:
        fh.write('{"trial_id": "t2", "stage": "conf')  # what a crash mid-write leaves
    append_registry(tmp_path, row("t3"))
    assert [r["trial_id"] for r in read_registry(tmp_path)] == ["t1", "t3"]


@pytest.mark.skipif(not can_mount(), reason="needs a tmpfs (mount rights) to fill a disk for real")
def test_a_row_cut_short_by_a_full_disk_is_skipped_and_the_next_one_is_whole(tmp_path):
    disk = Tmpfs(tmp_path / "disk", "8k")  # two pages
    try:
        append_registry(disk.path, row("t0"))
        (disk.path / "filler").write_bytes(b"x" * 4096)  # the registry's page is the last one left
        rows, cut = 0, None
        while cut is None:
            rows += 1
            try:
                append_registry(disk.path, row(f"t{rows}", error="x" * 300))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                cut = f"t{rows}"
        text = (disk.path / "trials.jsonl").read_text()
        assert not text.endswith("\n") and text.rsplit("\n", 1)[1].startswith('{"trial_id": "%s"' % cut)  # a short write
        disk.resize("64k")
        append_registry(disk.path, row("after"))
        ids = [r["trial_id"] for r in read_registry(disk.path)]
        assert ids == [f"t{i}" for i in range(rows)] + ["after"]
    finally:
        disk.close()


@pytest.mark.skipif(not can_mount(), reason="needs a tmpfs (mount rights) to fill a disk for real")
def test_the_studys_own_write_failing_on_a_full_disk_stops_it_for_a_resume(tmp_path):
    """Finished trials whose registry rows were lost are registered again on resume; with the disk full the
    registry cannot take them: exit 3, one line with the cause and the resume command; with space, all is well."""
    disk = Tmpfs(tmp_path / "disk", "1m")
    try:
        run = finished_run(disk.path)
        (run / "trials.jsonl").write_bytes(b"")
        with open(disk.path / "filler", "wb", buffering=0) as fh, pytest.raises(OSError, match="No space left"):
            while True:
                fh.write(b"x" * 4096)
        result = invoke("study", "--resume", run)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 3, result.output
        assert lines == [f"error: the study stopped: OSError: [Errno 28] No space left on device (the traceback could "
                         f"not be written); once the cause is fixed, finish it with: ablate study --resume {run}"]
        disk.resize("16m")
        result = invoke("study", "--resume", run)
        assert result.exit_code == 0, result.output
        assert len(read_registry(run)) == 6 and len((run / "trials.csv").read_text().splitlines()) == 7
    finally:
        disk.close()


def test_a_registry_with_garbage_bytes_is_refused_naming_the_file_and_the_line(tmp_path):
    run = finished_run(tmp_path)
    lines = (run / "trials.jsonl").read_bytes().split(b"\n")
    lines[2] = b"\x00\x00\xff\xfe garbage \x13"
    (run / "trials.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(AblateError, match=r"trials.jsonl is damaged: line 3 is not a trial record"):
        read_registry(run)
    before = sorted(p.name for p in run.iterdir())
    for args in (("analyze", run), ("study", "--resume", run), ("export", run)):
        line = one_line_error(invoke(*args))
        assert f"{run / 'trials.jsonl'} is damaged: line 3" in line and "delete that line" in line, args
    assert sorted(p.name for p in run.iterdir()) == before


# --- run folders a resume cannot use --------------------------------------------------------------
@pytest.mark.slow  # a second or more of 2 cores
def test_a_damaged_optuna_db_is_one_line_on_resume_and_no_matter_to_analyze(tmp_path):
    run = finished_run(tmp_path)
    (run / "optuna.db").write_bytes(b"this is not a database" * 100)
    line = one_line_error(invoke("study", "--resume", run))
    assert f"{run / 'optuna.db'} is not a readable SQLite database" in line and "move it aside" in line
    assert not list(run.glob("manifest-resume-*"))
    result = invoke("analyze", run, "--out", tmp_path / "analysis")  # analysis reads the registry, not Optuna
    assert result.exit_code == 0, result.output


def test_an_optuna_db_whose_writer_was_killed_mid_transaction_is_not_called_damaged(tmp_path):
    """A SIGKILLed study leaves SQLite's rollback journal beside optuna.db; reading the file rolls it back first,
    which a read-only open cannot do: the check must open it as any study would."""
    import sqlite3

    from ablate.engine.storage import check_sqlite_file

    path = tmp_path / "optuna.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    writer = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, time
db = sqlite3.connect({str(path)!r}, isolation_level=None)
db.execute("PRAGMA cache_size=1")
db.execute("BEGIN")
for i in range(20000):
    db.execute("INSERT INTO t VALUES (?)", ("x" * 100,))
print("mid-transaction", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "mid-transaction"
    writer.kill()
    writer.wait()
    assert (tmp_path / "optuna.db-journal").stat().st_size > 0
    check_sqlite_file(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)  # rolled back


def test_a_read_only_run_folder_is_one_line_on_resume_and_analyze(tmp_path):
    run = finished_run(tmp_path)
    with read_only(run):
        line = one_line_error(invoke("study", "--resume", run))
        assert f"cannot write to {run}" in line and "make the run folder writable" in line
        line = one_line_error(invoke("analyze", run))
        assert str(run / "analysis") in line and "--out" in line
    assert not (run / "analysis").exists() and not list(run.glob("manifest-resume-*"))


def test_a_refused_concurrent_resume_leaves_nothing_and_a_finished_run_is_not_resumed(tmp_path):
    run = finished_run(tmp_path)
    with RunLock(run):  # another study process holds the run
        line = one_line_error(invoke("study", "--resume", run))
        assert "is in use by another study process" in line
    assert not list(run.glob("manifest-resume-*")) and not (run / "trials.csv").exists()
    result = invoke("study", "--resume", run)
    assert result.exit_code == 0, result.output
    assert not list(run.glob("manifest-resume-*"))  # nothing was left to run: no resume to record
    assert len((run / "trials.csv").read_text().splitlines()) == 7  # written on --resume all the same


@pytest.mark.slow
def test_ray_not_starting_stops_the_study_for_a_resume_not_as_a_failure_inside_ablate(tmp_path, monkeypatch):
    """Ray's node not coming up in time (seen with 7 studies starting at once on 2 cores) is the machine's fault:
    exit 3, one line with Ray's words and the resume command (which the other faults show finishing), and its
    temporary folder gone. It exited 1 as "a failure inside ablate"."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"description": "ray start", "seeds": [0],
                                    "base": {**TINY, "image_size": 8, "train_size": 64, "dev_size": 32,
                                             "test_size": 32, "epochs": 1},
                                    "factors": {"residual": {"values": [True, False]}}}))
    run = tmp_path / "run"
    monkeypatch.setenv(fault_hook.VARIABLE, json.dumps({"fault": "ray_start"}))
    result = invoke("study", spec, "--out", run)
    lines = [line for line in result.output.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert result.exit_code == 3, result.output
    assert lines[-1] == ("error: the study stopped: Ray could not start (Exception: The current node timed out during "
                         "startup. This could happen because some of the raylet failed to startup or the GCS has become "
                         f"overloaded. ({fault_hook.VARIABLE})) (the full traceback is in {run / 'error.txt'}); once the "
                         f"cause is fixed, finish it with: ablate study --resume {run}"), lines
    assert "Traceback" not in result.output and not (run / RAY_TMP_RECORD).exists()
    assert (run / "spec.yaml").exists() and not read_registry(run)


@pytest.mark.slow  # a second or more of 2 cores
def test_a_new_sqlite_storage_is_made_by_the_study_not_by_a_dry_run_or_a_refused_command(tmp_path):
    db = tmp_path / "new.db"
    result = invoke("study", "residual-ablation", "--dataset", "digits", "--dry-run", "--storage", f"sqlite:///{db}")
    assert result.exit_code == 0, result.output
    assert not db.exists()
    run = finished_run(tmp_path)
    line = one_line_error(invoke("study", "residual-ablation", "--dataset", "digits", "--out", run,
                                 "--storage", f"sqlite:///{db}"))
    assert "holds a study run already" in line and not db.exists()
    line = one_line_error(invoke("study", "residual-ablation", "--dataset", "digits", "--dry-run",
                                 "--storage", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}"))
    assert "does not exist" in line
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    line = one_line_error(invoke("study", "residual-ablation", "--dataset", "digits", "--dry-run",
                                 "--storage", f"sqlite:///{tmp_path / 'junk.db'}"))
    assert "junk.db is not a readable SQLite database" in line


# --- real studies, faulted and resumed (slow) ----------------------------------------------------
# (what `faulted` holds: helpers.fault_runs, a background study of helpers.background_studies)


@pytest.mark.slow
def test_a_killed_worker_stops_the_study_and_resume_gives_the_uninterrupted_trials(faulted):
    killed = faulted["chain"]["killed"]
    assert killed["ids"] and killed["acted"], killed["lines"]
    assert all("its worker died without a word" in line for line in killed["lines"][1:-1])
    assert all(a == [] for a in killed["attempts"].values())  # the worker could not say anything
    # trials.csv (removed before the link started) is written as the study starts and follows the registry
    [(csv, rows, at_start)] = killed["csv_while_running"]
    assert csv is not None and csv.splitlines()[0] == faulted["reference"].splitlines()[0]
    assert {line.split(",")[0] for line in csv.splitlines()[1:]} <= {r["trial_id"] for r in rows}
    assert len(csv.splitlines()) - 1 >= at_start
    assert faulted["chain_csv"] == faulted["reference"]


@pytest.mark.slow
def test_a_full_disk_stops_the_study_and_resume_gives_the_uninterrupted_trials(faulted):
    disk = faulted["chain"]["disk"]
    assert any("No space left on device" in line or "disk is full" in line for line in disk["lines"][1:]), disk["lines"]
    if not disk["real"]:
        assert len(disk["ids"]) == 1 and "(confirm, " in disk["lines"][1], disk["lines"]
    assert faulted["chain_csv"] == faulted["reference"]


@pytest.mark.slow
def test_no_thread_to_be_had_stops_the_study_and_resume_gives_the_uninterrupted_trials(faulted):
    threads = faulted["chain"]["threads"]
    assert len(threads["ids"]) == 1, threads["lines"]
    line = threads["lines"][1]
    assert "(tune, residual=false, round 0, index 0, seed 100) failed twice: RuntimeError: can't start new thread" in line
    [attempts] = threads["attempts"].values()
    assert [a["kind"] for a in attempts] == ["infrastructure", "infrastructure"]
    assert threads["untold"] == [("residual=false", 0)]  # neither told to Optuna nor decided by halving
    assert faulted["chain_csv"] == faulted["reference"]


@pytest.mark.slow
def test_a_damaged_optuna_db_moved_aside_is_asked_again_to_the_same_trials(faulted, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(faulted["runs"]["reference"], run)
    trials = sorted(p.name for p in (run / "trials").iterdir())
    (run / "optuna.db").write_bytes(b"\x00garbage" * 4096)
    line = one_line_error(invoke("study", "--resume", run))
    assert f"{run / 'optuna.db'} is not a readable SQLite database" in line
    (run / "optuna.db").rename(run / "optuna.db.damaged")
    result = invoke("study", "--resume", run)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "trials").iterdir()) == trials  # nothing ran again
    assert (run / "trials.csv").read_text() == faulted["reference"]
    import optuna

    for arm in ("residual=true", "residual=false"):
        rebuilt, first = (optuna.load_study(study_name=arm, storage=f"sqlite:///{db}")
                          for db in (run / "optuna.db", faulted["runs"]["reference"] / "optuna.db"))
        assert [(t.params, t.state, t.value) for t in rebuilt.trials] == [(t.params, t.state, t.value) for t in first.trials]


@pytest.mark.slow
def test_ctrl_c_and_sigterm_at_any_moment_say_how_to_resume_and_the_resume_finishes(faulted):
    """Ctrl-C while Ray starts exits 130, SIGTERM while trials run 143 (128 + the signal), each with the resume
    hint, no traceback, trials.csv written and Ray's session folder gone; the resume gives the uninterrupted
    trials.csv, with Ray quiet (no searcher-save warnings, no result files of its own)."""
    runs, chain = faulted["runs"], faulted["chain"]
    moments = [faulted["sigkilled"].interrupted, chain["sigterm"]]
    assert [(m["acted"], m["code"]) for m in moments] == [(1, 130), (1, 143)]
    assert chain["sigterm"]["stopped_workers"] >= 1  # its trial workers were stopped (SIGSTOP) when SIGTERM came
    assert chain["sigterm"]["exit_after"] < 10, chain["sigterm"]["exit_after"]
    for moment, word, run in zip(moments, ("interrupted", "terminated"), (runs["sigkilled"], runs["chain"])):
        assert moment["lines"][-1] == (f"{word}: what finished is kept in {run}; finish it with: "
                                       f"ablate study --resume {run}"), moment
        assert "Traceback" not in moment["stderr"] and "SIGTERM received" not in moment["stderr"], moment
        assert "Tuner.restore" not in moment["stderr"] and not moment["ray_tmp_left"], moment
        assert moment["trials_csv"]  # written when the study was interrupted
    assert faulted["chain_csv"] == faulted["reference"]
    assert (runs["sigkilled"] / "trials.csv").read_text() == faulted["reference"]
    assert "not implemented" not in chain["disk"]["stderr"], chain["disk"]["stderr"][-2000:]  # resumed after SIGTERM
    assert not (runs["chain"] / "ray").exists() and not (runs["sigkilled"] / "ray").exists()


STALL_LINE = re.compile(r"trial ([0-9a-f]{12}) \((tune|confirm), residual=(true|false), [^)]*\) stalled: no progress "
                        r"for (\d+) s \(its bound: (\d+) s, (.*?)\) (at step .*|before its worker .*); its worker was "
                        r"killed; Ray retries it as --retries says, else the study stops for a resume$")


@pytest.mark.slow
def test_a_stopped_trial_worker_is_declared_stalled_killed_and_retried_and_resume_gives_the_uninterrupted_trials(faulted):
    """A trial's Ray worker stopped (SIGSTOP) once it has taken a training step, in a study with --stall-seconds 10
    and --retries 1: one line names the trial and where it stalled, within its bound (20 x its slowest step, at
    least 10 s; 60 s before a first step, where the stop found the worker between two trials); the worker is
    killed and Ray retries the trial (a new attempt of it runs); the run (stopped by SIGTERM after that, then
    resumed) ends with the uninterrupted trials.csv."""
    stalled, said = faulted["chain"]["sigterm"]["stalled"], faulted["chain"]["sigterm"]["stderr"][-3000:]
    assert stalled["stopped"] is not None and stalled["line"] is not None, said
    match = STALL_LINE.match(stalled["line"])
    assert match, stalled["line"]
    idle, limit = int(match[4]), int(match[5])
    assert limit >= 10 and idle >= limit, stalled["line"]
    if match[1] == stalled["stopped"]["trial"]:  # stopped at work, as meant: where it was is named
        assert f"pid {stalled['stopped']['pid']}" in match[7], match[7]
        assert re.match(r"at step \d+ of \d+ \((training|evaluating on dev|scoring on \w+)\) on ", match[7]), match[7]
    # seen within its bound, give or take the study's one check a second and the watch loop's look at stderr
    assert stalled["line_at"] - stalled["stopped"]["at"] <= limit + 10, (stalled["line_at"] - stalled["stopped"]["at"])
    assert stalled["retried"] in ("at work", "done"), said  # Ray retried it: a new attempt of the trial ran
    assert sum(" stalled: " in line for line in faulted["chain"]["sigterm"]["lines"]) == 1, said
    assert faulted["chain_csv"] == faulted["reference"]


@pytest.mark.slow
def test_ctrl_c_with_a_stopped_worker_stops_a_study_that_inherited_sigint_ignored_within_10_s(faulted):
    """A study started as `ablate study ... &` in a script starts it (SIGINT ignored, which Python leaves ignored:
    Ctrl-C did nothing, for ever) gets SIGINT while a trial's worker is stopped (SIGSTOP): exit 130 within 10 s,
    with the resume line, no traceback, trials.csv written, Ray's folder removed; the resumes after it end with
    the uninterrupted trials.csv."""
    stopped, run = faulted["sigkilled"].stopped, faulted["runs"]["sigkilled"]
    assert "problem" not in stopped, stopped["problem"]
    assert stopped["code"] == 130 and stopped["exit_after"] < 10, (stopped["code"], stopped["exit_after"])
    assert stopped["lines"][-1] == f"interrupted: what finished is kept in {run}; finish it with: ablate study --resume {run}"
    assert "Traceback" not in stopped["stderr"] and stopped["trials_csv"] and not stopped["ray_tmp_left"]
    assert (run / "trials.csv").read_text() == faulted["reference"]


@pytest.mark.slow
def test_a_config_that_cannot_fit_in_memory_is_its_error_result_and_the_study_goes_on(faulted, tmp_path):
    """A trial whose every attempt asks for more memory than the machine has (a real allocation of 4x its
    memory, refused by torch's allocator) at the same place: its error result, the study goes on to exit 0 (it
    was a fault of the machine: exit 3, and the same at every --resume). The error recorded names no number
    that changes from run to run (free memory), so trials.csv stays comparable."""
    memory, run = faulted["memory"], faulted["runs"]["memory"]
    gib = r"[\d.]+ GiB"
    assert memory["code"] == 0, memory["stderr"][-3000:]
    [line] = [line for line in memory["lines"] if " failed " in line]
    cause = rf"out of memory at step 0 \(injected fault at start\) on every attempt \(asked for {gib} of the cpu's {gib}\)"
    assert re.fullmatch(rf"trial [0-9a-f]{{12}} \(confirm, residual=false, seed \d+\) failed twice: {cause}; recorded as "
                        rf"its result, a property of the config: it ran out of memory at the same place on each of its "
                        rf"attempts while the machine was not short of memory \(at each, other processes held at most "
                        rf"{gib}, at most 50% of it; or it asked for more than the machine has in all\); traceback in "
                        rf"{run}/trials/[0-9a-f]{{12}}/error.txt", line), line
    rows = {r["arm"]: r for r in read_registry(run)}
    assert rows["residual=true"]["status"] == "ok" and rows["residual=false"]["status"] == "error"
    assert re.fullmatch(cause, rows["residual=false"]["error"]), rows["residual=false"]["error"]
    assert ",error," in (run / "trials.csv").read_text()


@pytest.mark.slow
def test_sigkill_at_three_points_then_resume_loses_nothing_and_reruns_nothing(faulted):
    """The study and all its processes killed during tuning, after tuning and during confirm (it ran on 1 CPU,
    the reference on 2): each resume loses and reruns nothing, and the last one ends with the
    uninterrupted trials.csv; Ray's session folders left in /tmp by the kills are removed."""
    from helpers.processes import finished_trials, raw_registry_lines

    state, run = faulted["sigkilled"], faulted["runs"]["sigkilled"]
    assert not state.problems, state.problems
    assert state.seen == ["during tuning", "after tuning", "during confirm"]
    now = finished_trials(run)
    assert all(now.get(trial_id) == text for trial_id, text in state.finished.items())
    assert raw_registry_lines(run)[:len(state.prefix)] == state.prefix
    assert state.checked >= 3
    lines = [json.loads(line) for line in raw_registry_lines(run) if line.endswith("}")]
    keys = [(r["stage"], r["trial_id"]) for r in lines]
    assert len(keys) == len(set(keys)), "a trial was registered twice"
    assert (run / "trials.csv").read_text() == faulted["reference"]
    assert not any(p.exists() for p in state.stale) and not (run / ".ray_tmp").exists()  # nothing piles up in /tmp


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "00000000000000000000000000000001"}


@pytest.mark.slow
def test_a_local_study_listens_on_loopback_only_and_a_crashed_worker_is_retried(faulted):
    """While a trial runs, every socket the study's processes listen on is on 127.0.0.1; then every trial
    worker is killed at once, and the retries finish the study with the uninterrupted trials.csv."""
    retried = faulted["chain"]["retried"]
    assert retried["code"] == 0, retried["stderr"][-3000:]
    assert retried["in_flight"] is not None and retried["workers"], "no trial was seen running"
    assert any("gcs_server" in n for n in retried["names"]) and any("raylet" in n for n in retried["names"]), retried["names"]
    assert len(retried["sockets"]) >= 4, retried["sockets"]
    exposed = [s for s in retried["sockets"] if s[0] not in LOOPBACK]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
    assert json.loads((retried["in_flight"] / "metrics.json").read_text())["status"] == "ok"
    assert faulted["chain_csv"] == faulted["reference"]
