"""Ctrl-C with the output piped into `tee` (`ablate study ... 2>&1 | tee log`): the same Ctrl-C ends tee, so the
study's last lines meet a pipe whose reader has gone. The run is still recorded as interrupted (exit 130, the
run folder as an interruption leaves it), never as stopped by the BrokenPipeError those lines raise."""
from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
import yaml

from ablate.cli.errors import handles_errors
from ablate.engine.interrupts import interrupt_behind
from ablate.messages import write_line

ROOT = Path(__file__).resolve().parents[1]


def broken_pipe() -> io.TextIOWrapper:
    """The write end of a real pipe whose reader has exited, as stderr is once `| tee` is gone."""
    read, write = os.pipe()
    os.close(read)
    return io.TextIOWrapper(os.fdopen(write, "wb"), line_buffering=True)


def test_a_line_to_a_pipe_whose_reader_left_is_dropped_and_the_stream_stays_usable():
    stream = broken_pipe()
    with pytest.raises(BrokenPipeError):  # what any write does: the failure the study met
        stream.write("x\n")
        stream.flush()
    stream = broken_pipe()
    assert write_line(stream, "interrupted: ...") is False
    stream.write("a later line\n")  # goes to /dev/null now: no error here or when the interpreter flushes at exit
    stream.flush()
    assert write_line(stream, "more") is True
    stream.close()


def test_an_error_raised_while_an_interrupt_is_handled_counts_as_the_interrupt():
    def failing_cleanup():
        try:
            raise KeyboardInterrupt
        finally:
            broken_pipe().write("a progress line\n")  # raises BrokenPipeError in place of the interrupt

    with pytest.raises(BrokenPipeError) as info:
        failing_cleanup()
    assert isinstance(interrupt_behind(info.value), KeyboardInterrupt)
    assert interrupt_behind(ValueError("a bug")) is None
    try:
        raise OSError("disk full")
    except OSError as exc:
        assert interrupt_behind(exc) is None
    with pytest.raises(typer.Exit) as stopped:  # a command's failing cleanup: exit 130, not a crash (exit 1)
        handles_errors(failing_cleanup)()
    assert stopped.value.exit_code == 130


def test_the_progress_line_on_a_closed_pipe_never_takes_the_place_of_the_interrupt(tmp_path, monkeypatch):
    """The study's live progress line, closed as the study stops (ablate.engine.ray_adapter.tuner), on a stderr
    whose reader has gone: the interrupt goes on; the line is dropped."""
    from helpers.runs import build_run

    from ablate.analysis.load import load_run
    from ablate.engine.planner import Planner
    from ablate.engine.progress_bar import Progress

    run = build_run(tmp_path / "run", [{"arm": "residual=true", "seed": 0, "test_acc": 0.9}])
    study = load_run(run).study
    planner = Planner(study, run)
    planner.refresh()
    monkeypatch.setattr(sys, "stderr", broken_pipe())
    progress = Progress(study, planner)
    with pytest.raises(KeyboardInterrupt):
        try:
            raise KeyboardInterrupt
        finally:
            progress.say("trial x failed once")
            progress.refresh()
            progress.close()


def _read_until(fd: int, needle: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.time() + seconds
    while needle not in seen and time.time() < deadline:
        if select.select([fd], [], [], 1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.slow
def test_ctrl_c_with_the_output_piped_into_tee_is_an_interruption(tmp_path):
    """A real study, its stdout and stderr one pipe into a reader (this test, as tee); Ctrl-C reaches both: the
    reader exits at once, the study stops: exit 130, no error.txt (a crash's record) in the run folder, and
    trials.csv there, as any interruption leaves it."""
    from helpers.background import environ
    from helpers.studies import TUNED

    spec, run = tmp_path / "tiny.yaml", tmp_path / "run"
    spec.write_text(yaml.safe_dump(TUNED))
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "study", str(spec), "--out", str(run), "--cpus", "1"],
                            cwd=ROOT, stdout=write, stderr=write, env={**environ(), "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    os.close(write)
    try:
        seen = _read_until(read, f"-> {run}".encode(), 120)  # the study holds its run folder and has work left
        assert f"-> {run}".encode() in seen, seen[-3000:]
    finally:
        os.close(read)  # tee, ended by the Ctrl-C
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: every process of the foreground group
    code = proc.wait(timeout=120)
    assert code == 130
    assert not (run / "error.txt").exists(), (run / "error.txt").read_text()[-3000:]
    assert (run / "trials.csv").is_file() and (run / "spec.yaml").is_file()
