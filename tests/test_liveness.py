"""Liveness and memory faults, part by part on real components: the worker's heartbeat as the training loop
ticks it, the bound a trial gets, the study's check killing a real stopped process, the judgment of a stall and
of running out of memory, and the watchdog that ends a study whose cleanup blocks. The same on real studies
(a SIGSTOPped trial worker, Ctrl-C with a stopped worker, a config that cannot fit) is in tests/test_faults.py."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ablate.engine import liveness, memory_faults, trial_failures
from ablate.engine.run_work import run_work
from ablate.engine.trial_plan import TrialPlan
from ablate.spec.study_spec import parse_study
from ablate.run_folder.layout import FAILURE, HEARTBEAT
from ablate.run_folder.trial_state import read_heartbeat

ROOT = Path(__file__).resolve().parents[1]
TINY = {"family": "cifar", "depth": 20, "dataset": "digits", "image_size": 16, "train_size": 128, "dev_size": 64,
        "test_size": 64, "batch_size": 32, "epochs": 2, "eval_every": 2, "seed": 100}
GIB = 2**30


def tiny_work():
    study = parse_study({"description": "liveness", "base": dict(TINY), "factors": {"residual": {"values": [True]}},
                         "seeds": [0]})
    cfg = study.arm_config(study.arms[0])
    return TrialPlan("confirm", study.arms[0].name, cfg, {}, None, None)


# --- the worker's heartbeat -----------------------------------------------------------------------
@pytest.mark.slow
def test_the_training_loop_ticks_the_heartbeat_at_every_step_and_evaluation_batch():
    from ablate.train.loop import run_trial

    work = tiny_work()
    ticks = []
    result = run_trial(work.config, beat=lambda phase, step: ticks.append((phase, step)))
    phases = [p for p, _ in ticks]
    assert phases[:3] == ["loading data", "building the model", "first step"]
    assert [s for p, s in ticks if p == "training"] == list(range(1, result.steps + 1))  # every step
    evaluations = len(result.eval_steps)
    assert phases.count("evaluating on dev") == evaluations  # 64 dev images: one batch per evaluation
    assert {"scoring on test", "scoring on train"} <= set(phases) and phases[-1] == "scoring on train"


def test_a_heartbeat_measures_its_slowest_step_and_is_written_on_phase_changes_or_every_few_seconds(tmp_path):
    beat = liveness.Heartbeat(tmp_path, {"host": "h", "node": "n", "pid": 1}, total=10, every=3600)
    first = read_heartbeat(tmp_path)
    assert first["phase"] == "starting" and first["ticks"] == 0 and not first["trained"] and first["host"] == "h"
    assert first["pid"] == os.getpid() and first["total"] == 10
    beat("loading data", 0)
    assert read_heartbeat(tmp_path)["phase"] == "loading data"  # a phase change is written at once
    time.sleep(0.3)  # model building: before the first step, not a step
    beat("training", 1)
    assert read_heartbeat(tmp_path)["trained"]  # the first training step is written at once
    beat("training", 2)
    time.sleep(0.2)
    beat("training", 3)
    seen = read_heartbeat(tmp_path)
    assert seen["step"] == 1 and seen["ticks"] == 2  # the same phase within `every`: not written
    assert 0.2 <= beat.record["slowest"] < 0.3  # the gap before the first step does not count
    beat("evaluating on dev", 3)
    assert read_heartbeat(tmp_path)["ticks"] == 5
    assert beat.place() == {"phase": "evaluating on dev", "step": 3}
    beat.close()
    assert read_heartbeat(tmp_path) is None and list(tmp_path.iterdir()) == []


def test_a_heartbeat_that_cannot_be_written_does_not_fail_the_trial(tmp_path):
    folder = tmp_path / "gone"
    beat = liveness.Heartbeat(folder, {}, every=0)  # its folder does not exist: every write fails
    beat("training", 1)
    assert read_heartbeat(folder) is None
    beat.close()


def test_the_bound_is_generous_before_the_first_step_and_twenty_slowest_steps_after():
    assert liveness.bound(None, 300).seconds == 1800  # worker start, data, model, torch.compile
    assert liveness.bound({"trained": False, "slowest": 0}, 5).seconds == 30
    fast = liveness.bound({"trained": True, "slowest": 0.05}, 300)
    assert fast.seconds == 300 and "--stall-seconds 300" in fast.why
    slow = liveness.bound({"trained": True, "slowest": 40.0}, 300)  # a slow step on a loaded machine
    assert slow.seconds == 800 and slow.why == "20 x its slowest step so far (40.00 s)"


def test_stall_seconds_is_bounded_in_one_line():
    from typer.testing import CliRunner

    from ablate.cli.app import app

    for bad in ("0", "604801"):
        result = CliRunner().invoke(app, ["study", "residual-ablation", "--dry-run", "--stall-seconds", bad])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and lines == [f"error: --stall-seconds must be from 1 to 604,800 (a week), "
                                                   f"got {bad}"], result.output


# --- the study's check ----------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def fake_ray_worker(tmp_path):
    """A real process whose command line reads as a Ray worker's ('ray::...'), stopped as a hung one is."""
    proc = subprocess.Popen(["bash", "-c", "exec -a ray::ImplicitFunc.train sleep 300"])
    deadline = time.time() + 10
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"ray::") and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGSTOP)
    return proc


def test_the_study_kills_a_stopped_worker_once_its_trial_passes_its_bound_and_records_a_stall(tmp_path):
    from ablate.engine.ray_adapter.liveness import Liveness

    work = tiny_work()
    folder = tmp_path / "trials" / work.trial_id
    folder.mkdir(parents=True)
    proc = fake_ray_worker(tmp_path)
    said = []
    searcher = SimpleNamespace(works={"ray_a": [work]}, planner=SimpleNamespace(run_dir=tmp_path),
                               say=said.append)
    clock = Clock()
    watch = Liveness(searcher, stall_seconds=5, clock=clock)
    try:
        assert not watch.check("ray_a", clock())  # no heartbeat yet: the bound before a first step, 30 s
        clock.now += 29
        assert not watch.check("ray_a", clock())
        beat = liveness.Heartbeat(folder, {"host": watch.host}, total=8, every=0)
        beat.record["pid"] = proc.pid  # the worker is the stopped process
        beat("training", 1)
        clock.now += 5
        assert not watch.check("ray_a", clock())  # it made progress: the clock started over
        beat.record["slowest"] = 0.5
        beat("training", 2)
        clock.now += 10
        assert not watch.check("ray_a", clock())
        clock.now += 9.9
        assert not watch.check("ray_a", clock())  # 20 x 0.5 s = 10 s, not passed yet
        clock.now += 0.2
        assert watch.check("ray_a", clock())
        assert proc.wait(timeout=10) == -signal.SIGKILL  # killed though stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert said == watch.stalls and len(said) == 1
    assert said[0].startswith(f"trial {work.trial_id} (confirm, residual=true, seed 100) stalled: no progress for 10 s "
                              "(its bound: 10 s, 20 x its slowest step so far (0.50 s)) at step 2 of 8 (training) on ")
    assert "its worker was killed" in said[0]
    [attempt] = trial_failures.read_attempts(folder)
    assert attempt["kind"] == "infrastructure" and attempt["type"] == "Stalled" and attempt["pid"] == proc.pid
    clock.now += 100
    assert not watch.check("ray_a", clock())  # killed once: Ray's retry starts it over
    watch.on_trial_recover(0, [], SimpleNamespace(trial_id="ray_a"))
    clock.now += 29
    assert not watch.check("ray_a", clock())  # the killed attempt's heartbeat is no progress of the retry
    clock.now += 2
    assert watch.check("ray_a", clock())  # the retry never started: 30 s before a first step
    assert "before its worker wrote a heartbeat" in said[-1] and "could not be reached" in said[-1]


def test_a_trial_whose_heartbeat_went_away_has_ended_and_is_not_called_stalled(tmp_path):
    from ablate.engine.ray_adapter.liveness import Liveness

    work = tiny_work()
    folder = tmp_path / "trials" / work.trial_id
    folder.mkdir(parents=True)
    searcher = SimpleNamespace(works={"ray_a": [work]}, planner=SimpleNamespace(run_dir=tmp_path),
                               say=print)
    clock = Clock()
    watch = Liveness(searcher, stall_seconds=1, clock=clock)
    beat = liveness.Heartbeat(folder, {}, every=0)
    assert not watch.check("ray_a", clock())
    beat.close()  # the attempt ended: Ray has yet to say how
    clock.now += 3600
    assert not watch.check("ray_a", clock())


# --- how a stall and running out of memory are judged --------------------------------------------------
def test_a_stall_is_a_fault_of_the_machine_whatever_ray_reports(tmp_path):
    trial_failures.record_stall(tmp_path, "no progress for 31 s at step 3 of 8 (training)", {"host": "h", "pid": 7})
    verdict = trial_failures.judge(tmp_path, 1, RuntimeError("The actor is dead because it was killed by ray.kill"))
    assert verdict.kind == "infrastructure"
    assert verdict.cause == "stalled: no progress for 31 s at step 3 of 8 (training)"
    assert "a hung read, a deadlock" in verdict.why and verdict.where == {"host": "h", "pid": 7}


def oom(place=("training", 0), requested=None, total=16 * GIB, free=12 * GIB, own=1 * GIB):
    return {"kind": "infrastructure", "type": "RuntimeError", "error": "RuntimeError: can't allocate memory",
            "memory": {"device": "cpu", "place": {"phase": place[0], "step": place[1]}, "requested": requested,
                       "total": total, "free": free, "own": own}}


def test_running_out_of_memory_is_the_configs_only_when_the_machine_cannot_explain_it(tmp_path):
    verdict = memory_faults.config_verdict
    assert verdict([oom(), oom()], 2) is not None  # twice at the same place, the machine mostly free
    cause, why = verdict([oom(requested=40 * GIB), oom(requested=40 * GIB)], 2)
    assert cause == "out of memory at step 0 (training) on every attempt (asked for 40.0 GiB of the cpu's 16.0 GiB)"
    assert "at the same place on each of its attempts" in why and "other processes held at most 3.0 GiB" in why
    cause, _ = verdict([oom(), oom()], 2)
    assert cause == "out of memory at step 0 (training) on every attempt (on the cpu's 16.0 GiB)"
    assert verdict([oom(), oom(place=("evaluating on dev", 4))], 2) is None  # different places
    assert verdict([oom(), oom(free=2 * GIB)], 2) is None  # the machine short at one attempt: 13 GiB elsewhere
    assert verdict([oom(requested=40 * GIB), oom(free=2 * GIB, requested=40 * GIB)], 2) is not None  # never fits
    assert verdict([oom()], 1) is None  # one attempt that could fit another time (--retries 0)
    assert verdict([oom(requested=40 * GIB)], 1) is not None  # one attempt that can never fit
    assert verdict([oom()], 2) is None  # a second attempt died without a word (the OOM killer)
    assert verdict([oom(), {"kind": "config", "type": "ValueError", "error": "x"}], 2) is None
    assert verdict([oom(free=None), oom(free=None)], 2) is None  # nothing known of the machine

    for n, record in enumerate([oom(requested=40 * GIB), oom(requested=40 * GIB)]):
        attempts = trial_failures.read_attempts(tmp_path) + [record]
        (tmp_path / FAILURE).write_text(json.dumps({"attempts": attempts}))
    judged = trial_failures.judge(tmp_path, 2, RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert judged.is_result and judged.cause.startswith("out of memory at step 0 (training) on every attempt")
    assert "memory" not in judged.where  # metrics.json keeps where it ran, not the memory record


def test_an_out_of_memory_record_names_the_request_the_machine_and_the_place(tmp_path, monkeypatch):
    import torch

    from ablate.engine import fault_hook

    assert memory_faults.requested_bytes("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                                         "101104730112 bytes. Error code 12") == 101104730112
    assert memory_faults.requested_bytes("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has") == 2 * GIB
    assert memory_faults.facts(ValueError("shape mismatch"), "cpu", {}) == {}
    work = tiny_work()
    monkeypatch.setenv(fault_hook.VARIABLE, json.dumps({"fault": "oom"}))  # a real refused allocation
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        run_work(work, tmp_path, None)
    [attempt] = trial_failures.read_attempts(tmp_path / "trials" / work.trial_id)
    memory = attempt["memory"]
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert memory["requested"] == 4 * pages and memory["total"] == pages and 0 < memory["free"] <= pages
    assert memory["own"] > 0 and memory["place"] == {"phase": "injected fault at start", "step": 0}
    assert not (tmp_path / "trials" / work.trial_id / HEARTBEAT).exists()  # gone with the attempt
    assert isinstance(torch.empty(1), torch.Tensor)


# --- the watchdog of a stopping study --------------------------------------------------------------
WATCHDOG = textwrap.dedent('''
    import signal, sys, time
    from ablate.engine import interrupts
    interrupts.terminate_like_ctrl_c()
    try:
        time.sleep(60)
    except KeyboardInterrupt as exc:
        interrupts.stopping(interrupts.interrupt_signal(exc), lambda: "interrupted: resume with X", grace=1.5)
        print("stopping", flush=True)
        import threading
        threading.Event().wait()  # a cleanup that never ends
''')


@pytest.mark.slow
def test_a_study_whose_cleanup_blocks_is_ended_by_the_watchdog_with_the_resume_line(tmp_path):
    for signum in (signal.SIGINT, signal.SIGTERM):
        ignored = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  as `cmd &` in a script is
        proc = subprocess.Popen([sys.executable, "-c", WATCHDOG], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                preexec_fn=ignored)
        time.sleep(1.5)  # Python up and waiting
        proc.send_signal(signum)
        assert proc.stdout.readline().strip() == "stopping"
        proc.send_signal(signal.SIGINT)  # a second Ctrl-C while stopping: noted, not raised
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signum, err
        assert err.strip() == ("interrupted: resume with X (it had not stopped 2 s after the signal: ended by force)")


# --- a trial the study cancels ---------------------------------------------------------------------------------------
def test_a_cancel_file_stops_the_attempt_at_its_next_heartbeat_and_removes_its_folder(tmp_path):
    """The study's cancel file (written for a seed run ahead of the seed rule that the rule did not ask for) stops
    the attempt at its heartbeat's next write: run_work returns None and leaves no folder. Handed out again (a later
    session), the trial's stale request is withdrawn, and it runs."""
    from ablate.engine import Planner
    from ablate.engine.ray_adapter.searcher import PlannerSearch
    from ablate.run_folder import cancel_path, request_cancel, trial_dir

    work = tiny_work()
    folder = trial_dir(tmp_path, work.trial_id)
    request_cancel(folder)  # before the attempt starts: the folder is made for it
    assert cancel_path(folder).exists()
    assert run_work(work, tmp_path, None) is None
    assert not folder.exists()
    beat = liveness.Heartbeat(tmp_path / "f", {"host": "h", "pid": 1}, 10, every=0.0)  # writes at every tick
    beat("training", 1)  # no request: the tick goes on
    request_cancel(tmp_path / "f")
    with pytest.raises(liveness.TrialCancelled):
        beat("training", 2)

    study = parse_study({"description": "liveness", "base": dict(TINY), "factors": {"residual": {"values": [True]}},
                         "seeds": [0]}, source="test")
    (tmp_path / "run").mkdir()
    planner = Planner(study, tmp_path / "run")
    planner.refresh()
    first = planner.ready[0]
    request_cancel(trial_dir(tmp_path / "run", first.trial_id))  # left by a session that crashed after writing it
    handed = PlannerSearch(planner).suggest("ray-trial-1")
    assert TrialPlan.from_dict(handed["works"][0]).trial_id == first.trial_id
    assert not cancel_path(trial_dir(tmp_path / "run", first.trial_id)).exists()
