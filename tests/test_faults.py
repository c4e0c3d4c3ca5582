"""Faults never change the answer: a trial that fails for a reason outside its config (its worker killed, a full
disk, no thread to be had) stops the study with one line, nothing of its round is told to Optuna or decided by
halving, and `--resume` ends with the trials.csv of an uninterrupted run. Damaged run files and read-only
folders get one line; SIGTERM is Ctrl-C."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
from ablate.run_folder.trial_state import read_heartbeat
from helpers import background
from helpers.mounts import Tmpfs, can_mount, read_only
from helpers.runs import build_run

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
TINY = {"family": "cifar", "depth": 20, "dataset": "digits", "image_size": 16, "train_size": 128, "dev_size": 64,
        "test_size": 64, "batch_size": 32, "epochs": 2, "eval_every": 2, "seed": 100}
SPEC = {"description": "faults", "base": dict(TINY), "factors": {"residual": {"values": [True, False]}},
        "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                   "trials": 3, "round": 2, "sampler_seed": 0, "halving": True},
        "seeds": [0, 1, 2]}


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
CLI = str(ROOT / "cli.py")
RAY_TRIAL_ID = re.compile(r"\b[0-9a-f]{5}_\d{5}\b")  # how Ray Tune names its trials
PROGRESS = re.compile(r"^\S+:\s+\d+%\|")  # the progress line's updates


class Study:
    """`ablate study ...` as a process, its stdout and stderr in files (nobody reads them while it runs)."""

    def __init__(self, folder: Path, name: str, *args, env=None, sigint_ignored=False):
        """`sigint_ignored`: started as `ablate study ... &` in a script is, with SIGINT ignored."""
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        flag = "--out" if "--out" in args else "--resume"
        self.run = Path(args[args.index(flag) + 1])  # its run folder
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, CLI, "study", *map(str, args)], cwd=ROOT, stdout=out,
                                         stderr=err, env={**background.environ(), "PYTHONUNBUFFERED": "1", **(env or {})},
                                         start_new_session=True, preexec_fn=ignore)

    def wait(self, timeout=900) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.err.read_text()

    def lines(self) -> list[str]:
        """stderr as the user reads it: the progress line left out."""
        return [l for l in re.split(r"[\r\n]", self.stderr()) if l.strip() and not PROGRESS.match(l)]


def fault(**spec) -> dict:
    return {fault_hook.VARIABLE: json.dumps(spec)}


def kill_workers(study: Study, signum=signal.SIGKILL) -> int:
    """SIGKILL (or `signum`) the study's Ray trial workers (processes named ray::ImplicitFunc...)."""
    from helpers.processes import cmdline, descendants

    killed = 0
    for pid in descendants(study.proc.pid):
        if cmdline(pid).startswith("ray::ImplicitFunc"):
            try:
                os.kill(pid, signum)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def stop_a_working_worker(study: Study, run: Path, trained: bool = True) -> dict | None:
    """SIGSTOP the Ray worker of a trial at work, found by the heartbeat in its trial folder (with `trained`,
    one that has taken a training step); None while there is none."""
    from helpers.processes import cmdline, descendants

    trials = run / "trials"
    ours = {p for p in descendants(study.proc.pid) if cmdline(p).startswith("ray::")}
    for folder in (trials.iterdir() if trials.exists() else []):
        beat = read_heartbeat(folder)
        if beat and beat.get("pid") in ours and (beat.get("trained") or not trained) and \
                beat.get("step", 0) < beat.get("total", 0):
            os.kill(beat["pid"], signal.SIGSTOP)
            return {"trial": folder.name, "pid": beat["pid"], "at": time.time(), "beat": beat}
    return None


def untold_rounds(run_dir: Path, failed: list[str]) -> list[tuple]:
    """(arm, round) of each failed tuning trial, checked to be untold: every Optuna trial of its round still RUNNING."""
    import optuna

    seen = []
    for trial_id in failed:
        for arm in ("residual=true", "residual=false"):
            ostudy = optuna.load_study(study_name=arm, storage=f"sqlite:///{run_dir / 'optuna.db'}")
            rounds = {t.user_attrs["round"] for t in ostudy.trials if t.user_attrs.get("trial_id") == trial_id
                      and not t.user_attrs.get("abandoned")}
            for number in rounds:
                states = {t.state.name for t in ostudy.trials if t.user_attrs.get("round") == number
                          and not t.user_attrs.get("abandoned")}
                assert states == {"RUNNING"}, (arm, number, states)
                seen.append((arm, number))
    return seen


def check_stopped(study: Study, run_dir: Path) -> list[str]:
    """Exit 3; on stderr the banner, one line per failed trial (its ablate id, the cause, where the traceback
    is), and the closing line with the resume command: no traceback, no Ray trial id. Returns the failed ids."""
    text, lines = study.stderr(), study.lines()
    assert study.proc.returncode == 3, text[-3000:]
    assert "Traceback" not in text and not RAY_TRIAL_ID.search(text), text[-3000:]
    assert lines[0] == f"study faults (default) -> {run_dir}", lines
    assert lines[-1].startswith("error: the study stopped: ") and lines[-1].endswith(
        f"once the cause is fixed, finish it with: ablate study --resume {run_dir}"), lines
    failed = lines[1:-1]
    ids = []
    for line in failed:
        match = re.match(r"trial ([0-9a-f]{12}) \((tune|confirm), residual=(true|false), (round \d+, index \d+, seed \d+|seed \d+)\) "
                         r"failed (once|twice): ", line)
        assert match, line
        folder = run_dir / "trials" / match[1]
        assert not (folder / "metrics.json").exists()  # not a result
        assert f"traceback in {folder / 'error.txt'}" in line and (folder / "error.txt").stat().st_size > 0
        ids.append(match[1])
    assert not (run_dir / ".ray_tmp").exists()
    return ids


def what_it_left(study: Study, run: Path, acted: int) -> dict:
    """What a study left when it ended (after a signal, or by itself)."""
    code, record = study.wait(timeout=120), run / RAY_TMP_RECORD
    return {"code": code, "lines": study.lines(), "stderr": study.stderr(), "acted": acted,
            "trials_csv": (run / "trials.csv").exists(),
            "ray_tmp_left": record.exists() and Path(record.read_text()).exists()}


class Sigkilled:
    """A study interrupted by Ctrl-C while Ray starts; resumed as `ablate study ... &` in a script starts it (SIGINT
    ignored) and interrupted by Ctrl-C once a trial is at work, its worker stopped (SIGSTOP); then killed with
    SIGKILL (itself and every process it started, as a machine crash would) during tuning, after tuning and
    during confirm, resumed after each stop; stepped by the fixture's watch loop. After each kill, every trial
    that had finished is still there byte for byte and the registry only grew."""

    def __init__(self, tmp: Path, spec: Path, run: Path):
        def n(rows, stage):
            return sum(r["stage"] == stage for r in rows)

        self.tmp, self.run = tmp, run
        # 6 tuning and 6 confirm trials; arm by arm, so the first arm's 3 confirm trials come before the second
        # arm's tuning ends
        self.moments = [("during tuning", lambda rows, at_start: 2 <= n(rows, "tune") < 6),
                        ("after tuning", lambda rows, at_start: n(rows, "tune") == 6 and n(rows, "confirm") <= 3),
                        ("during confirm", lambda rows, at_start: n(at_start, "confirm") < n(rows, "confirm") < 6)]
        self.seen, self.stale, self.problems = [], [], []
        self.finished: dict[str, str] = {}  # every finished trial so far -> its metrics.json text
        self.prefix: list[str] = []  # registry lines so far: the registry is append-only
        self.checked = 0
        self.at_start: list = []
        self.interrupted: dict | None = None  # what the Ctrl-C left
        self.stopped: dict | None = None  # what the Ctrl-C with a stopped worker left
        self.study = Study(tmp, "sigint", spec, "--out", run, "--cpus", "1")

    @property
    def done(self) -> bool:
        return len(self.seen) == len(self.moments)

    def step(self) -> None:
        from helpers.processes import finished_trials, kill_tree, raw_registry_lines

        if self.done:
            return
        if self.interrupted is None:
            if self.study.proc.poll() is None and not (self.run / "spec.yaml").exists():
                return
            self.study.proc.send_signal(signal.SIGINT)
            self.interrupted = what_it_left(self.study, self.run, acted=1)
            (self.run / "trials.csv").unlink(missing_ok=True)  # so that a resume shows it writes one
            self.study = Study(self.tmp, "sigint-stopped", "--resume", self.run, "--cpus", "1", sigint_ignored=True)
            return
        if self.stopped is None:
            found = stop_a_working_worker(self.study, self.run, trained=False)
            if found is None:
                if self.study.proc.poll() is not None:
                    self.stopped = {"problem": f"the study ended before a trial was seen at work: "
                                               f"{self.study.stderr()[-2000:]}"}
                return
            self.study.proc.send_signal(signal.SIGINT)
            self.stopped = {**what_it_left(self.study, self.run, acted=1), "exit_after": time.time() - found["at"],
                            "worker": found}
            self.study = Study(self.tmp, "sigkilled-0", "--resume", self.run, "--cpus", "1")
            return
        when, ready = self.moments[len(self.seen)]
        rows = read_registry(self.run) if (self.run / "spec.yaml").exists() else []
        if not ready(rows, self.at_start):
            if self.study.proc.poll() is not None:
                self.problems.append(f"the study ended before the kill {when}: {self.study.stderr()[-2000:]}")
                self.seen = list(self.moments)  # nothing more to step
            return
        kill_tree(self.study.proc)
        now = finished_trials(self.run)
        for trial_id, text in self.finished.items():
            if now.get(trial_id) != text:
                self.problems.append(f"after the kill {when}: finished trial {trial_id} changed or vanished")
            self.checked += 1
        if raw_registry_lines(self.run)[:len(self.prefix)] != self.prefix:
            self.problems.append(f"after the kill {when}: the registry was rewritten")
        self.finished.update(now)
        self.prefix = [line for line in raw_registry_lines(self.run) if line.endswith("}")]
        self.stale.append(Path((self.run / RAY_TMP_RECORD).read_text()))  # Ray's session folder, left by the kill
        self.seen.append(when)
        self.at_start = read_registry(self.run)
        self.study = Study(self.tmp, f"sigkilled-{len(self.seen)}", "--resume", self.run, "--cpus", "1")  # one
        # trial at a time: the next kill point comes before the end


class Chain:
    """One run taken through the other faults in turn, on one CPU, each stop resumed by the next link:
      threads  the first attempts of one tuning trial find no thread (test hook): exit 3;
      killed   with --retries 0, the trial worker is SIGKILLed once a trial of the link has finished, and again
               until a kill found a trial at work: exit 3;
      sigterm  with --stall-seconds 10 and --retries 1: a trial's worker is stopped (SIGSTOP) once it has taken
               a training step; the study declares the trial stalled, kills its worker and retries it; once the
               retry is at work (or done), the trial workers are stopped, then SIGTERM (exit 143);
      disk     the run's tmpfs is shrunk to leave room for one trial's weights, then fills (exit 3); where no
               tmpfs can be mounted, the test hook's ENOSPC on the first confirm trial;
      retried  with --retries 2, every trial worker is killed at once while a trial runs, after checking that
               every socket the study's processes listen on is on loopback: the retries finish the run.
    What each link left is recorded when it ends, before the next one starts (trials.csv is removed first, so
    that the next stop shows whether it wrote one). Stepped by the fixture's watch loop."""

    LINKS = ("threads", "killed", "sigterm", "disk", "retried")
    THREADS = {"fault": "threads", "stage": "tune", "arm": "residual=false", "round": 0, "index": 0}
    ENOSPC = {"fault": "enospc", "stage": "confirm", "at": "write"}
    ROOM = 1_600_000  # bytes left free for the disk link: one confirm trial's weights (~1.1 MB), not two

    def __init__(self, tmp: Path, spec: Path, run: Path, disk: Tmpfs | None):
        self.tmp, self.run, self.disk = tmp, run, disk
        self.at, self.acted, self.results = 0, 0, {}
        self.at_start: list = []  # the registry when the link started
        self.retried = {"in_flight": None, "sockets": [], "names": set(), "workers": 0}
        self.killed_csv: list = []
        self.stalled: dict = {"stopped": None, "line": None, "line_at": None, "retried": None}
        self.signalled_at: float | None = None
        self.started_at = time.time()
        self.study = Study(tmp, "chain-threads", spec, "--out", run, "--cpus", "1", env=fault(**self.THREADS))

    @property
    def done(self) -> bool:
        return self.at == len(self.LINKS)

    def grew(self) -> bool:
        """A trial of this link has finished."""
        return (self.run / "spec.yaml").exists() and len(read_registry(self.run)) > len(self.at_start)

    def step(self) -> None:
        if self.done:
            return
        link, running = self.LINKS[self.at], self.study.proc.poll() is None
        if running and link == "sigterm" and not self.acted and self._stalled_and_retried():
            self.stopped_workers = kill_workers(self.study, signal.SIGSTOP)  # stopped workers do not hold it up
            self.study.proc.send_signal(signal.SIGTERM)
            self.signalled_at, self.acted = time.time(), 1
        elif running and link == "killed" and self.grew():
            if not self.killed_csv:  # trials have finished, the study runs on: trials.csv follows the registry
                csv = self.run / "trials.csv"
                self.killed_csv.append((csv.read_text() if csv.exists() else None, read_registry(self.run),
                                        len(self.at_start)))
            self.acted += kill_workers(self.study)
        elif running and link == "retried" and self.retried["in_flight"] is None:
            self._kill_a_running_trial()
        if self.study.proc.poll() is None:
            return
        self.results[link] = self._ended(link)
        self.at += 1
        if not self.done:
            self._start(self.LINKS[self.at])

    def _stalled_and_retried(self) -> bool:
        """Steps the stall: a worker stopped, the stall said, the retry at work (a new attempt's heartbeat) or
        done; True once all of it was seen."""
        state = self.stalled
        if state["stopped"] is None:
            state["stopped"] = stop_a_working_worker(self.study, self.run)
        elif state["line"] is None:
            found = [line for line in self.study.lines() if " stalled: " in line]
            if found:
                state["line"], state["line_at"] = found[0], time.time()
        elif state["retried"] is None:
            folder = self.run / "trials" / re.match(r"trial ([0-9a-f]{12}) ", state["line"])[1]
            beat = read_heartbeat(folder)
            killed = state["stopped"]["beat"]["attempt"] if state["stopped"]["trial"] == folder.name else None
            if (folder / "metrics.json").exists():
                state["retried"] = "done"
            elif beat is not None and beat["attempt"] != killed and beat.get("ticks"):
                state["retried"] = "at work"
        return state["retried"] is not None

    def _start(self, link: str) -> None:
        (self.run / "trials.csv").unlink(missing_ok=True)
        self.at_start, self.acted, self.signalled_at = read_registry(self.run), 0, None
        self.started_at = time.time()
        extra, env = ["--cpus", "1"], None
        if link == "killed":
            extra += ["--retries", "0"]
        elif link == "sigterm":
            # 10 s: the retry's new Ray worker must start within 60 s (6 x 10) on a loaded machine
            extra += ["--stall-seconds", "10", "--retries", "1"]
        elif link == "disk":
            if self.disk is None:
                env = fault(**self.ENOSPC)
            else:
                self.disk.resize(f"{(self.disk.used() + self.ROOM) // 4096 * 4096 // 1024}k")
        elif link == "retried":
            extra += ["--retries", "2"]
        self.study = Study(self.tmp, f"chain-{link}", "--resume", self.run, *extra, env=env)

    def _ended(self, link: str) -> dict:
        # seconds from the signal to the exit, as the watch loop saw it (it looks every 0.1 s)
        exit_after = None if self.signalled_at is None else time.time() - self.signalled_at
        study, result = self.study, what_it_left(self.study, self.run, self.acted)
        result.update(exit_after=exit_after, seconds=time.time() - self.started_at)
        if link in ("threads", "killed", "disk"):
            ids = check_stopped(study, self.run)
            result.update(ids=ids, untold=untold_rounds(self.run, ids),
                          attempts={i: trial_failures.read_attempts(self.run / "trials" / i) for i in ids})
        if link == "killed":
            result["csv_while_running"] = self.killed_csv
        if link == "sigterm":
            result.update(stopped_workers=getattr(self, "stopped_workers", 0), stalled=self.stalled)
        if link == "disk":
            result["real"] = self.disk is not None
            if self.disk is not None:
                self.disk.resize("256m")
        if link == "retried":
            result.update(self.retried)
        return result

    def _kill_a_running_trial(self) -> None:
        from helpers.processes import cmdline, descendants, listening_sockets

        trials = self.run / "trials"
        running = [f for f in (trials.iterdir() if trials.exists() else [])
                   if (f / "config.yaml").exists() and not (f / "metrics.json").exists()]
        pids = [p for p in descendants(self.study.proc.pid) if cmdline(p)]
        workers = [p for p in pids if cmdline(p).startswith("ray::ImplicitFunc")]
        if not running or not workers:
            return
        self.retried["names"] = {cmdline(p).split()[0].rsplit("/", 1)[-1] for p in pids}
        self.retried["sockets"] = listening_sockets(pids + [self.study.proc.pid])
        for pid in workers:  # every trial worker dies at once
            try:
                os.kill(pid, signal.SIGKILL)
                self.retried["workers"] += 1
            except ProcessLookupError:
                pass
        self.retried["in_flight"] = running[0]


MEMORY_SPEC = {"description": "memory", "base": {**TINY, "epochs": 1}, "factors": {"residual": {"values": [True, False]}},
               "seeds": [0]}
OOM = {"fault": "oom", "arm": "residual=false"}  # a real allocation of 4x the machine's memory, on every attempt


def fault_runs(tmp: Path) -> dict:
    """Side by side: an uninterrupted run on 2 CPUs; a run on 1 CPU taken through a chain of faults and
    resumed after each (Chain); a run on 1 CPU interrupted by Ctrl-C while Ray starts, then killed with SIGKILL
    at three points, and resumed after each stop (Sigkilled). Each ends with trials.csv, compared with the
    uninterrupted one's by the tests. Beside them, a study of two trials one of which cannot fit in memory
    (OOM). Made in the background from the session's start (helpers.background)."""
    spec = tmp / "faults.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    memory_spec = tmp / "memory.yaml"
    memory_spec.write_text(yaml.safe_dump(MEMORY_SPEC))
    # The chain's run folder is on a tmpfs where one can be mounted, so that its disk can fill for real; the
    # tests read from it, so it is unmounted when the session ends.
    disk = Tmpfs(tmp / "disk", "256m") if can_mount() else None
    if disk is not None:
        background.on_exit(disk.close)
    runs = {"reference": tmp / "reference", "chain": (disk.path if disk else tmp) / "chain",
            "sigkilled": tmp / "sigkilled", "memory": tmp / "memory"}
    reference, chain, sigkilled, memory = None, None, None, None
    try:
        import optuna  # noqa: F401  (imported now, not in the middle of a watch)

        reference = Study(tmp, "reference", spec, "--out", runs["reference"], "--cpus", "2")
        memory = Study(tmp, "memory", memory_spec, "--out", runs["memory"], "--cpus", "1", env=fault(**OOM))
        chain = Chain(tmp, spec, runs["chain"], disk)
        sigkilled = Sigkilled(tmp, spec, runs["sigkilled"])
        deadline = time.time() + 900

        def watch(machine):  # each on its own thread: one's checks between links never delay the other's kill
            while not machine.done and time.time() < deadline:
                machine.step()
                time.sleep(0.1)

        with ThreadPoolExecutor(2) as pool:
            for watching in [pool.submit(watch, chain), pool.submit(watch, sigkilled)]:
                watching.result()  # re-raises what failed in it
        assert chain.done, f"the chain of faults did not end in time: {chain.results}"
        assert reference.wait() == 0, reference.stderr()[-3000:]
        assert sigkilled.study.wait() == 0, sigkilled.study.stderr()[-3000:]
        return {"runs": runs, "reference": (runs["reference"] / "trials.csv").read_text(), "chain": chain.results,
                "chain_csv": (runs["chain"] / "trials.csv").read_text(), "sigkilled": sigkilled,
                "memory": what_it_left(memory, runs["memory"], 0)}
    finally:
        for study in [s for s in (reference, chain and chain.study, sigkilled and sigkilled.study, memory) if s]:
            if study.proc.poll() is None:  # what a failed assertion left running
                os.killpg(study.proc.pid, signal.SIGKILL)
                study.wait()


background.register("faulted", fault_runs)


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    return background.result("faulted", tmp_path_factory.mktemp)


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
