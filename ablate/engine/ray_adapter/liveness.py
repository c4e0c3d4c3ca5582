"""The study's side of liveness (ablate.engine.liveness): a Ray Tune callback that reads the heartbeats of the
running trials about once a second and declares a trial stalled when it made no progress for longer than its
bound. A stalled trial's worker is killed: SIGKILL by its pid when it runs on this host (it may be stopped,
or stuck in a C call), and `ray.kill` of its actor (so that Ray sees it fail at once, wherever it runs); the
stall is recorded in the trial folder's failure.json as a fault of the machine, and Ray retries the trial as
`--retries` says (PlannerSearch judges it once the retries are spent). One line names the trial and where it
stalled."""
from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ablate.engine import liveness, trial_failures
from ablate.run_folder import read_heartbeat, trial_dir

CHECK_EVERY = 1.0  # seconds between two reads of the heartbeats


@dataclass
class _Watch:
    since: float  # when the trial last made progress (or started), on the study's clock
    key: tuple | None = None  # (attempt, ticks) of the last heartbeat seen
    beat: dict[str, Any] | None = None
    ended: bool = False  # its heartbeat went away: the attempt ended, Ray has yet to say how
    killed: bool = False
    stale: set = field(default_factory=set)  # attempts that ended (or were killed): their heartbeats are no progress


class Liveness(Callback):
    """Declares stalled trials (see the module's docstring). `searcher` maps Ray trial ids to the planner's work."""

    def __init__(self, searcher, stall_seconds: float, clock=time.monotonic):
        self.searcher, self.stall_seconds, self.clock = searcher, stall_seconds, clock
        self.watches: dict[str, _Watch] = {}
        self.last_check = 0.0
        self.host = socket.gethostname()
        self.stalls: list[str] = []  # one line per stall declared

    # --- Ray Tune's hooks ---------------------------------------------------------------------------
    def on_step_end(self, iteration, trials, **info):
        now = self.clock()
        if now - self.last_check < CHECK_EVERY:
            return
        self.last_check = now
        running = {t.trial_id: t for t in trials if t.status == "RUNNING"}
        for trial_id in list(self.watches):
            if trial_id not in running:
                del self.watches[trial_id]
        for trial_id, trial in running.items():
            self.check(trial_id, now, trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._restart(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.watches.pop(trial.trial_id, None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.watches.pop(trial.trial_id, None)

    # --- the check ----------------------------------------------------------------------------------
    def check(self, trial_id: str, now: float, trial=None) -> bool:
        """Look at one running trial's heartbeat; kill it when it stalled. True when it was declared stalled."""
        works = self.searcher.works.get(trial_id)
        if not works:
            return False
        watch = self.watches.get(trial_id)
        if watch is None:
            watch = self.watches[trial_id] = _Watch(since=now)
        if watch.killed:
            return False
        beat = read_heartbeat(trial_dir(self.searcher.planner.run_dir, works[0].trial_id))
        if beat is None:
            if watch.key is not None:  # it had a heartbeat: the attempt ended, Ray will say how
                watch.ended = True
        elif beat["attempt"] not in watch.stale:
            key = (beat["attempt"], beat["ticks"])
            if key != watch.key:
                watch.key, watch.beat, watch.since, watch.ended = key, beat, now, False
        if watch.ended:
            return False
        limit = liveness.bound(watch.beat, self.stall_seconds)
        idle = now - watch.since
        if idle <= limit.seconds:
            return False
        self._stalled(trial_id, works, watch, idle, limit, trial)
        return True

    def _restart(self, trial_id: str) -> None:
        """Ray starts the trial again (a retry): the clock starts over, before a first step."""
        watch = self.watches.get(trial_id)
        if watch is None:
            return
        stale = watch.stale | ({watch.key[0]} if watch.key else set())
        self.watches[trial_id] = _Watch(since=self.clock(), stale=stale)

    def _stalled(self, trial_id: str, works: list, watch: _Watch, idle: float, limit, trial) -> None:
        from ablate.engine.ray_adapter.searcher import work_label

        beat = watch.beat
        description = (f"no progress for {idle:.0f} s (its bound: {limit.seconds:.0f} s, {limit.why}) "
                       f"{liveness.where_text(beat)}")
        where = {k: beat[k] for k in ("host", "node", "pid") if beat and k in beat}
        for work in works:
            trial_failures.record_stall(trial_dir(self.searcher.planner.run_dir, work.trial_id), description, where)
        killed = self._kill(beat, trial)
        watch.killed = True
        if watch.key:
            watch.stale.add(watch.key[0])
        line = f"trial {work_label(works[0])} stalled: {description}; {killed}"
        self.stalls.append(line)
        self.searcher.say(line)

    def _kill(self, beat: dict[str, Any] | None, trial) -> str:
        said = []
        pid = beat.get("pid") if beat else None
        if isinstance(pid, int) and beat.get("host") == self.host and _is_ray_worker(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                said.append("its worker was killed")
            except OSError:
                pass
        actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
        if actor is not None:
            try:
                import ray

                ray.kill(actor, no_restart=True)
                if not said:
                    said.append("its worker was killed (ray.kill)")
            except Exception:  # noqa: BLE001  already gone
                pass
        what = said[0] if said else "its worker could not be reached to be killed"
        return f"{what}; Ray retries it as --retries says, else the study stops for a resume"


def _is_ray_worker(pid: int) -> bool:
    """The pid is a Ray worker process still (not a pid reused since the heartbeat was written)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    except OSError:
        return not Path("/proc").is_dir()  # no /proc to ask: trust the heartbeat
