"""The fault runs that tests/test_faults.py reads (the `faulted` background study of
helpers.background_studies): an uninterrupted study, the same study taken through a chain of faults and resumed
after each, one killed with SIGKILL at three points and resumed, and a study with a trial that cannot fit in
memory; and the machinery that drives them (a study in its own process, its faults, its watchers)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ablate.engine import fault_hook, trial_failures
from ablate.run_folder.layout import RAY_TMP as RAY_TMP_RECORD
from ablate.run_folder.registry import read_registry
from ablate.run_folder.trial_state import read_heartbeat
from helpers import background
from helpers.mounts import Tmpfs, can_mount

ROOT = Path(__file__).resolve().parents[2]
TINY = {"family": "cifar", "depth": 20, "dataset": "digits", "image_size": 16, "train_size": 128, "dev_size": 64,
        "test_size": 64, "batch_size": 32, "epochs": 2, "eval_every": 2, "seed": 100}
SPEC = {"description": "faults", "base": dict(TINY), "factors": {"residual": {"values": [True, False]}},
        "search": {"space": {"lr": {"distribution": "loguniform", "low": 0.01, "high": 0.3}},
                   "trials": 3, "round": 2, "sampler_seed": 0, "halving": True},
        "seeds": [0, 1, 2], "keep_weights": "final"}  # the disk link fills a disk with confirm trials' weights



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
    (OOM)."""
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


